"""Decode USB HID keyboard boot-protocol reports from a barcode scanner into scanned codes.

A scanner in HID keyboard mode "types" each code: every report is 8 bytes (modifier bits, a
reserved byte, up to six pressed key usages), sent on every change of the pressed-key set. A
character is typed when its key appears in a report it was absent from, so a repeated report of a
held key types nothing, and a doubled digit arrives as press, release, press. Enter (or keypad
Enter) ends a code. Usages follow the USB HID Usage Tables, keyboard page 0x07, US layout, which is
what scanners emit whatever the host's layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

REPORT_SIZE = 8

LEFT_CTRL, LEFT_SHIFT, LEFT_ALT, LEFT_GUI = 0x01, 0x02, 0x04, 0x08
RIGHT_CTRL, RIGHT_SHIFT, RIGHT_ALT, RIGHT_GUI = 0x10, 0x20, 0x40, 0x80
SHIFT = LEFT_SHIFT | RIGHT_SHIFT
CTRL = LEFT_CTRL | RIGHT_CTRL

ENTER, ESCAPE, BACKSPACE, TAB, CAPS_LOCK, KEYPAD_ENTER = 0x28, 0x29, 0x2A, 0x2B, 0x39, 0x58
ERROR_ROLL_OVER = 0x01
RIGHT_BRACKET = 0x30

# usage -> (unshifted, shifted)
KEYMAP: dict[int, tuple[str, str]] = {
    **{0x04 + i: (chr(ord("a") + i), chr(ord("A") + i)) for i in range(26)},
    **{0x1E + i: (d, s) for i, (d, s) in enumerate(zip("1234567890", "!@#$%^&*()", strict=True))},
    0x2C: (" ", " "),
    0x2D: ("-", "_"),
    0x2E: ("=", "+"),
    0x2F: ("[", "{"),
    0x30: ("]", "}"),
    0x31: ("\\", "|"),
    0x32: ("#", "~"),
    0x33: (";", ":"),
    0x34: ("'", '"'),
    0x35: ("`", "~"),
    0x36: (",", "<"),
    0x37: (".", ">"),
    0x38: ("/", "?"),
    0x54: ("/", "/"),
    0x55: ("*", "*"),
    0x56: ("-", "-"),
    0x57: ("+", "+"),
    **{0x59 + i: (d, d) for i, d in enumerate("123456789")},
    0x62: ("0", "0"),
    0x63: (".", "."),
}
# char -> (usage, needs shift), for turning text back into reports.
_REVERSE: dict[str, tuple[int, bool]] = {}
for _usage, (_plain, _shifted) in KEYMAP.items():
    if _usage == 0x32 or _usage >= 0x54:
        continue  # the non-US key and the keypad duplicate main-block characters
    _REVERSE.setdefault(_shifted, (_usage, True))
    _REVERSE.setdefault(_plain, (_usage, False))


class HidDecoder:
    """Feed raw reports, get completed codes; keeps the pressed-key state between reports."""

    def __init__(
        self,
        terminators: Iterable[int] = (ENTER, KEYPAD_ENTER),
        max_length: int = 512,
    ) -> None:
        self.terminators = frozenset(terminators)
        self.max_length = max_length
        self.pressed: frozenset[int] = frozenset()
        self.caps_lock = False
        self._buf: list[str] = []
        self.dropped = 0

    @property
    def pending(self) -> str:
        return "".join(self._buf)

    def reset(self) -> None:
        self.pressed = frozenset()
        self._buf.clear()

    def feed(self, report: Sequence[int] | bytes) -> list[str]:
        """Take one transfer (one 8-byte report, or several back to back); return codes ended."""
        data = bytes(report)
        if len(data) > REPORT_SIZE and len(data) % REPORT_SIZE == 0:
            codes: list[str] = []
            for start in range(0, len(data), REPORT_SIZE):
                codes += self._one(data[start : start + REPORT_SIZE])
            return codes
        return self._one(data)

    def _one(self, data: bytes) -> list[str]:
        if len(data) < 3:
            return []
        modifiers = data[0]
        keys = [k for k in data[2:REPORT_SIZE] if k]
        if any(k == ERROR_ROLL_OVER for k in keys):
            return []  # too many keys down: the report says nothing about which
        now = frozenset(keys)
        new = [k for k in keys if k not in self.pressed]
        self.pressed = now
        codes: list[str] = []
        for usage in new:
            code = self._press(usage, modifiers)
            if code is not None:
                codes.append(code)
        return codes

    def _press(self, usage: int, modifiers: int) -> str | None:
        if usage in self.terminators:
            code, self._buf = "".join(self._buf), []
            return code
        if usage == CAPS_LOCK:
            self.caps_lock = not self.caps_lock
            return None
        if usage == BACKSPACE:
            if self._buf:
                self._buf.pop()
            return None
        if usage == ESCAPE:
            self._buf.clear()
            return None
        if modifiers & CTRL:
            if usage == RIGHT_BRACKET:
                self._append("\x1d")  # Ctrl+] is GS, the GS1 field separator
            return None
        if modifiers & (LEFT_ALT | RIGHT_ALT | LEFT_GUI | RIGHT_GUI) or usage not in KEYMAP:
            return None
        plain, shifted = KEYMAP[usage]
        shift = bool(modifiers & SHIFT)
        if self.caps_lock and plain.isalpha():
            shift = not shift
        self._append(shifted if shift else plain)
        return None

    def _append(self, ch: str) -> None:
        if len(self._buf) >= self.max_length:
            self._buf.clear()
            self.dropped += 1
        self._buf.append(ch)


def decode_reports(reports: Iterable[Sequence[int] | bytes]) -> list[str]:
    """Every completed code in a recorded sequence of reports."""
    decoder = HidDecoder()
    codes: list[str] = []
    for report in reports:
        codes += decoder.feed(report)
    return codes


def report(modifiers: int = 0, *keys: int) -> bytes:
    if len(keys) > 6:
        raise ValueError("a boot report holds at most six keys")
    return bytes([modifiers, 0, *keys, *([0] * (6 - len(keys)))])


def text_to_reports(text: str) -> list[bytes]:
    """The reports a scanner sends to type `text` ("\\n" is Enter): press, release per character.

    For virtual scanners, benchmarks and tests; raises ValueError for characters a US keyboard
    cannot type.
    """
    out: list[bytes] = []
    for ch in text:
        if ch in "\r\n":
            usage, shift = ENTER, False
        elif ch in _REVERSE:
            usage, shift = _REVERSE[ch]
        else:
            raise ValueError(f"{ch!r} cannot be typed by a HID keyboard scanner")
        out.append(report(LEFT_SHIFT if shift else 0, usage))
        out.append(report())
    return out
