"""Turn an ESC/POS byte stream back into printed lines and commands.

Nothing on the registry renders ESC/POS back to text, and tests (and `meshpos print` diagnostics)
need to say what a printer was told: which lines, in which style, which barcode, whether the paper
was cut and the drawer kicked. This decodes the command subset python-escpos emits plus the common
commands around it, knows every command's length so an unfamiliar one cannot swallow text, and
decodes text through the same code page tables python-escpos encodes with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from escpos.capabilities import get_profile
from escpos.codepages import CodePages

from meshpos.core.errors import EncodingError


@dataclass(frozen=True)
class Init:
    pass


@dataclass(frozen=True)
class Align:
    align: str


@dataclass(frozen=True)
class Bold:
    on: bool


@dataclass(frozen=True)
class Underline:
    mode: int


@dataclass(frozen=True)
class TextSize:
    width: int
    height: int


@dataclass(frozen=True)
class Font:
    font: int


@dataclass(frozen=True)
class Codepage:
    slot: int


@dataclass(frozen=True)
class Line:
    """A printed line of text with the style it was printed in."""

    text: str
    align: str = "left"
    bold: bool = False
    width: int = 1
    height: int = 1


@dataclass(frozen=True)
class Barcode:
    symbology: str
    data: str


@dataclass(frozen=True)
class QRCode:
    data: str


@dataclass(frozen=True)
class Image:
    width_dots: int
    height_dots: int


@dataclass(frozen=True)
class Feed:
    lines: int


@dataclass(frozen=True)
class Cut:
    partial: bool


@dataclass(frozen=True)
class CashDrawer:
    pin: int
    on_ms: int
    off_ms: int


@dataclass(frozen=True)
class Buzzer:
    times: int
    duration: int


@dataclass(frozen=True)
class Bell:
    pass


@dataclass(frozen=True)
class Other:
    """A recognised command this decoder does not model (line spacing, density, status...)."""

    raw: bytes


Command = (
    Init
    | Align
    | Bold
    | Underline
    | TextSize
    | Font
    | Codepage
    | Line
    | Barcode
    | QRCode
    | Image
    | Feed
    | Cut
    | CashDrawer
    | Buzzer
    | Bell
    | Other
)


@dataclass
class Decoded:
    """The result: every command in stream order, with text lines among them as `Line`s."""

    commands: list[Command] = field(default_factory=list)

    @property
    def styled_lines(self) -> list[Line]:
        return [c for c in self.commands if isinstance(c, Line)]

    @property
    def lines(self) -> list[str]:
        return [c.text for c in self.commands if isinstance(c, Line)]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def barcodes(self) -> list[Barcode]:
        return [c for c in self.commands if isinstance(c, Barcode)]

    @property
    def qr_codes(self) -> list[str]:
        return [c.data for c in self.commands if isinstance(c, QRCode)]

    @property
    def cuts(self) -> list[Cut]:
        return [c for c in self.commands if isinstance(c, Cut)]

    @property
    def drawer_kicks(self) -> list[CashDrawer]:
        return [c for c in self.commands if isinstance(c, CashDrawer)]

    @property
    def buzzes(self) -> list[Buzzer]:
        return [c for c in self.commands if isinstance(c, Buzzer)]

    def of(self, kind: type) -> list[Command]:
        return [c for c in self.commands if isinstance(c, kind)]


BARCODE_A = {0: "UPC-A", 1: "UPC-E", 2: "EAN13", 3: "EAN8", 4: "CODE39", 5: "ITF", 6: "NW7"}
BARCODE_B = {
    65: "UPC-A",
    66: "UPC-E",
    67: "EAN13",
    68: "EAN8",
    69: "CODE39",
    70: "ITF",
    71: "NW7",
    72: "CODE93",
    73: "CODE128",
    74: "GS1-128",
    75: "GS1 DATABAR OMNIDIRECTIONAL",
    76: "GS1 DATABAR TRUNCATED",
    77: "GS1 DATABAR LIMITED",
    78: "GS1 DATABAR EXPANDED",
}
ALIGN = {0: "left", 1: "center", 2: "right", 48: "left", 49: "center", 50: "right"}

# ESC and GS commands whose arguments are a fixed number of bytes, excluding those modelled below.
ESC_FIXED = {
    b" ": 1, b"$": 2, b"%": 1, b"&": 0, b"2": 0, b"3": 1, b"+": 1, b"A": 1, b"=": 1, b"?": 1,
    b"G": 1, b"J": 1, b"K": 1, b"L": 0, b"R": 1, b"S": 0, b"T": 1, b"U": 1, b"V": 1, b"W": 8,
    b"\\": 2, b"c": 2, b"e": 1, b"r": 1, b"{": 1, b"i": 0, b"m": 0, b"<": 0,
}  # fmt: skip
GS_FIXED = {
    b"B": 1, b"b": 1, b"h": 1, b"w": 1, b"H": 1, b"f": 1, b"|": 1, b"L": 2, b"W": 2, b"$": 2,
    b"\\": 2, b"P": 2, b"I": 1, b"a": 1, b"r": 1, b":": 0, b"^": 3, b"T": 1, b"g": 2,
}  # fmt: skip


@cache
def _codepage_table(profile: str | None, slot: int) -> tuple[str, ...] | None:
    """Characters 128-255 of the code page in `slot` of a python-escpos printer profile."""
    pages = get_profile(profile).get_code_pages()
    names = [name for name, number in pages.items() if int(number) == slot]
    if not names:
        return None
    try:
        page = CodePages.get_encoding(names[0])
    except KeyError:
        return None
    if "data" in page:
        chars = "".join(page["data"])
        return tuple(chars) if len(chars) == 128 else None
    if "python_encode" in page:
        out = []
        for b in range(128, 256):
            try:
                out.append(bytes([b]).decode(page["python_encode"]))
            except UnicodeDecodeError:
                out.append("\ufffd")
        return tuple(out)
    return None


def _code128_text(data: bytes) -> str:
    """Human text of CODE128 data as ESC/POS takes it: `{A`/`{B`/`{C` pick a code set, `{{` is a
    brace, in code set C each byte is two digits, and function codes are dropped."""
    out: list[str] = []
    code_set = "B"
    i = 0
    while i < len(data):
        b = data[i]
        if b == 0x7B and i + 1 < len(data):
            nxt = chr(data[i + 1])
            i += 2
            if nxt in "ABC":
                code_set = nxt
            elif nxt == "{":
                out.append("{")
            elif nxt == "S" and i < len(data):
                out.append(chr(data[i]))
                i += 1
            continue
        out.append(f"{b:02d}" if code_set == "C" else chr(b))
        i += 1
    return "".join(out)


class _State:
    def __init__(self, profile: str | None) -> None:
        self.profile = profile
        self.out = Decoded()
        self.reset()
        self.qr_store = b""
        self.after_image = False

    def reset(self) -> None:
        self.align = "left"
        self.bold = False
        self.width = 1
        self.height = 1
        self.codepage = 0
        self.buf: list[str] = []
        self.line_style: tuple[str, bool, int, int] | None = None

    def emit(self, cmd: Command) -> None:
        self.out.commands.append(cmd)
        # Column-format images end each band with LF; that LF prints image, not an empty line.
        self.after_image = isinstance(cmd, Image)

    def char(self, b: int) -> None:
        self.after_image = False
        if not self.buf:
            self.line_style = (self.align, self.bold, self.width, self.height)
        if b < 0x80:
            self.buf.append(chr(b))
            return
        table = _codepage_table(self.profile, self.codepage)
        self.buf.append(table[b - 128] if table else "\ufffd")

    def flush(self, force: bool = False) -> None:
        if not self.buf and not force:
            return
        align, bold, width, height = self.line_style or (
            self.align,
            self.bold,
            self.width,
            self.height,
        )
        self.emit(Line("".join(self.buf), align, bold, width, height))
        self.buf = []
        self.line_style = None


def _need(data: bytes, i: int, n: int) -> bytes:
    if i + n > len(data):
        raise EncodingError(f"ESC/POS stream ends inside a command at byte {i}")
    return data[i : i + n]


def decode(data: bytes, profile: str | None = None, strict: bool = False) -> Decoded:
    """Decode an ESC/POS byte stream. Unknown command bytes are kept as `Other`; with `strict`,
    a truncated command raises EncodingError, otherwise the tail is kept as `Other`."""
    st = _State(profile)
    try:
        _decode(data, st)
    except EncodingError:
        if strict:
            raise
    st.flush()
    return st.out


def _decode(data: bytes, st: _State) -> None:
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        if b == 0x0A:
            st.flush(force=not (st.after_image and not st.buf))
            st.after_image = False
            i += 1
        elif b == 0x0D:
            i += 1
        elif b == 0x0C:
            st.flush()
            i += 1
        elif b == 0x07:
            st.emit(Bell())
            i += 1
        elif b == 0x09:
            st.char(b)
            i += 1
        elif b == 0x1B:
            i = _esc(data, i, st)
        elif b == 0x1D:
            i = _gs(data, i, st)
        elif b == 0x10:
            cmd = _need(data, i + 1, 1)
            size = 4 if cmd == b"\x14" else 2
            st.emit(Other(_need(data, i, size + 1)))
            i += size + 1
        elif b == 0x1C:
            arg = data[i + 1 : i + 2]
            size = 2 if arg in (b".", b"&") else 1
            st.emit(Other(data[i : i + size]))
            i += size
        elif b < 0x20 or b == 0x7F:
            i += 1
        else:
            st.char(b)
            i += 1


def _esc(data: bytes, i: int, st: _State) -> int:
    op = _need(data, i + 1, 1)
    a = i + 2
    if op == b"@":
        st.flush()
        st.reset()
        st.emit(Init())
        return a
    if op == b"!":
        (mode,) = _need(data, a, 1)
        st.bold = bool(mode & 0x08)
        st.width = 2 if mode & 0x20 else 1
        st.height = 2 if mode & 0x10 else 1
        st.emit(TextSize(st.width, st.height))
        return a + 1
    if op in (b"E", b"G"):
        (on,) = _need(data, a, 1)
        if op == b"E":
            st.bold = bool(on & 1)
            st.emit(Bold(st.bold))
        return a + 1
    if op == b"-":
        (mode,) = _need(data, a, 1)
        st.emit(Underline(mode % 48 if mode >= 48 else mode))
        return a + 1
    if op == b"a":
        (mode,) = _need(data, a, 1)
        st.align = ALIGN.get(mode, "left")
        st.emit(Align(st.align))
        return a + 1
    if op == b"M":
        (font,) = _need(data, a, 1)
        st.emit(Font(font % 48 if font >= 48 else font))
        return a + 1
    if op == b"t":
        (slot,) = _need(data, a, 1)
        st.codepage = slot
        st.emit(Codepage(slot))
        return a + 1
    if op == b"d":
        (lines,) = _need(data, a, 1)
        st.flush()
        st.emit(Feed(lines))
        return a + 1
    if op == b"p":
        pin, t1, t2 = _need(data, a, 3)
        st.emit(CashDrawer(5 if pin in (1, 49) else 2, t1 * 2, t2 * 2))
        return a + 3
    if op == b"B":
        times, duration = _need(data, a, 2)
        st.emit(Buzzer(times, duration))
        return a + 2
    if op == b"D":
        end = data.find(b"\x00", a)
        end = len(data) if end < 0 else end + 1
        st.emit(Other(data[i:end]))
        return end
    if op == b"*":
        m, nl, nh = _need(data, a, 3)
        cols = nl + 256 * nh
        size = cols * (3 if m in (32, 33) else 1)
        _need(data, a + 3, size)
        st.emit(Image(cols, 24 if m in (32, 33) else 8))
        return a + 3 + size
    if op in ESC_FIXED:
        size = ESC_FIXED[op]
        st.emit(Other(_need(data, i, 2 + size)))
        return a + size
    st.emit(Other(data[i:a]))
    return a


def _gs(data: bytes, i: int, st: _State) -> int:
    op = _need(data, i + 1, 1)
    a = i + 2
    if op == b"!":
        (mode,) = _need(data, a, 1)
        st.width = (mode >> 4) + 1
        st.height = (mode & 0x0F) + 1
        st.emit(TextSize(st.width, st.height))
        return a + 1
    if op == b"V":
        (mode,) = _need(data, a, 1)
        st.flush()
        if mode in (65, 66, 97, 98, 103, 104):
            _need(data, a + 1, 1)
            st.emit(Cut(partial=mode in (66, 98, 104)))
            return a + 2
        st.emit(Cut(partial=mode in (1, 49)))
        return a + 1
    if op == b"k":
        (m,) = _need(data, a, 1)
        st.flush()
        if m <= 6:
            end = data.find(b"\x00", a + 1)
            if end < 0:
                raise EncodingError(f"ESC/POS barcode at byte {i} is not terminated")
            st.emit(Barcode(BARCODE_A[m], data[a + 1 : end].decode("latin-1")))
            return end + 1
        (length,) = _need(data, a + 1, 1)
        payload = _need(data, a + 2, length)
        name = BARCODE_B.get(m, f"type {m}")
        text = _code128_text(payload) if m in (73, 74) else payload.decode("latin-1")
        st.emit(Barcode(name, text))
        return a + 2 + length
    if op == b"(":
        fn_class = _need(data, a, 1)
        pl, ph = _need(data, a + 1, 2)
        size = pl + 256 * ph
        body = _need(data, a + 3, size)
        end = a + 3 + size
        if fn_class == b"k" and len(body) >= 2 and body[0] == 0x31:
            fn = body[1]
            if fn == 80:
                st.qr_store = body[3:]
            elif fn == 81:
                st.flush()
                st.emit(QRCode(st.qr_store.decode("utf-8", errors="replace")))
            else:
                st.emit(Other(data[i:end]))
            return end
        if fn_class == b"L" and len(body) >= 2 and body[1] == 0x70 and len(body) >= 10:
            st.emit(Image(body[6] + 256 * body[7], body[8] + 256 * body[9]))
            return end
        st.emit(Other(data[i:end]))
        return end
    if op == b"v":
        _zero, _m, xl, xh, yl, yh = _need(data, a, 6)
        width_bytes, height = xl + 256 * xh, yl + 256 * yh
        _need(data, a + 6, width_bytes * height)
        st.flush()
        st.emit(Image(width_bytes * 8, height))
        return a + 6 + width_bytes * height
    if op == b"8":
        _l, p1, p2, p3, p4 = _need(data, a, 5)
        size = p1 + (p2 << 8) + (p3 << 16) + (p4 << 24)
        _need(data, a + 5, size)
        st.emit(Other(data[i : a + 5]))
        return a + 5 + size
    if op in GS_FIXED:
        size = GS_FIXED[op]
        st.emit(Other(_need(data, i, 2 + size)))
        return a + size
    st.emit(Other(data[i:a]))
    return a
