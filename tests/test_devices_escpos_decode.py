"""The ESC/POS decoder against python-escpos' own encoder (its Dummy printer)."""

from __future__ import annotations

import pytest
from escpos.printer import Dummy
from hypothesis import given, settings
from hypothesis import strategies as st

from meshpos.core.errors import EncodingError
from meshpos.devices import escpos_decode as ed

# Characters python-escpos can encode through one of the default profile's code pages.
ENCODABLE = (
    "".join(chr(c) for c in range(0x20, 0x7F))
    + "àáâäçèéêëìíîïñòóôöùúûüÿÀÉÑÖÜßæøåÆØÅ£¥§°±²µ¶·¼½¾¿¡«»"
    + "АБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдежзийклмнопрстуфхцчшщъыьэюя"
    + "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩαβγδεζηθικλμνξοπρστυφχψω"
    + "€"
)
line_text = st.text(alphabet=ENCODABLE, max_size=60)


@settings(max_examples=200)
@given(st.lists(line_text, min_size=1, max_size=8))
def test_text_round_trips_through_python_escpos(lines: list[str]) -> None:
    printer = Dummy()
    for line in lines:
        printer.textln(line)
    assert ed.decode(printer.output).lines == lines


def test_unencodable_characters_come_back_as_python_escpos_placeholder() -> None:
    printer = Dummy()
    printer.textln("Kurta ₹ 499 कुर्ता")
    assert ed.decode(printer.output).lines == ["Kurta ? 499 ??????"]


styles = st.tuples(
    st.sampled_from(["left", "center", "right"]),
    st.booleans(),
    st.sampled_from([(1, 1), (2, 1), (1, 2), (2, 2)]),
)


@given(st.lists(st.tuples(styles, line_text), min_size=1, max_size=6))
def test_styled_lines_carry_their_style(
    items: list[tuple[tuple[str, bool, tuple[int, int]], str]],
) -> None:
    printer = Dummy()
    printer.hw("INIT")
    for (align, bold, (width, height)), text in items:
        printer.set(
            double_width=width == 2,
            double_height=height == 2,
            normal_textsize=(width, height) == (1, 1),
        )
        printer.set(align=align, bold=bold)
        printer.textln(text)
    got = ed.decode(printer.output).styled_lines
    assert [(line.text, line.align, line.bold, (line.width, line.height)) for line in got] == [
        (text, align, bold, size) for (align, bold, size), text in items
    ]


code128_data = st.text(alphabet="".join(chr(c) for c in range(0x21, 0x7F)), min_size=1, max_size=40)


@given(st.lists(code128_data, min_size=1, max_size=3), st.sampled_from(["FULL", "PART"]))
def test_barcodes_qr_and_cut_decode(codes: list[str], mode: str) -> None:
    printer = Dummy()
    for code in codes:
        printer._hw_barcode("{B" + code.replace("{", "{{"), "CODE128", function_type="B")
        printer.qr(code, native=True)
    printer.cut(mode=mode)
    decoded = ed.decode(printer.output)
    assert [(b.symbology, b.data) for b in decoded.barcodes] == [("CODE128", c) for c in codes]
    assert decoded.qr_codes == codes
    assert decoded.cuts == [ed.Cut(partial=mode == "PART")]
    assert isinstance(decoded.commands[-1], ed.Cut)
    assert decoded.of(ed.Feed) == [ed.Feed(6)]


def test_function_a_barcodes_and_code_set_c() -> None:
    printer = Dummy()
    printer.barcode("4006381333931", "EAN13", function_type="A")
    printer._hw_barcode("{C" + "".join(chr(v) for v in (12, 34, 5)), "CODE128", function_type="B")
    decoded = ed.decode(printer.output)
    assert [(b.symbology, b.data) for b in decoded.barcodes] == [
        ("EAN13", "4006381333931"),
        ("CODE128", "123405"),
    ]


def test_drawer_buzzer_bell_and_status_commands() -> None:
    printer = Dummy()
    printer.cashdraw(2)
    printer.cashdraw(5)
    printer.buzzer(3, 1)
    printer._raw(b"\x07\x10\x04\x01\x10\x14\x01\x00\x05")
    printer.textln("after")
    decoded = ed.decode(printer.output)
    assert decoded.drawer_kicks == [ed.CashDrawer(2, 100, 100), ed.CashDrawer(5, 100, 100)]
    assert decoded.buzzes == [ed.Buzzer(3, 1)]
    assert decoded.of(ed.Bell) == [ed.Bell()]
    assert decoded.lines == ["after"]


def test_images_are_skipped_whole() -> None:
    from PIL import Image

    img = Image.new("1", (64, 24), 0)
    printer = Dummy()
    printer.textln("logo:")
    printer.image(img, impl="bitImageRaster")
    printer.image(img, impl="graphics")
    printer.image(img, impl="bitImageColumn")
    printer.textln("below")
    decoded = ed.decode(printer.output)
    assert decoded.lines == ["logo:", "below"]
    assert ed.Image(64, 24) in decoded.of(ed.Image)


def test_unknown_commands_do_not_swallow_text() -> None:
    printer = Dummy()
    printer.line_spacing(30)
    printer.set(density=3, invert=True, smooth=True, flip=False, underline=1, font="b")
    printer.panel_buttons(False)
    printer.control("HT")
    printer.textln("still here")
    printer.line_spacing()
    assert ed.decode(printer.output).lines == ["still here"]


def test_truncated_stream() -> None:
    data = b"ok\n\x1dkI\x10{BBLR1"
    assert ed.decode(data).lines == ["ok"]
    with pytest.raises(EncodingError, match="ends inside a command"):
        ed.decode(data, strict=True)


def test_init_resets_style_and_unterminated_text_is_a_line() -> None:
    decoded = ed.decode(b"\x1bE\x01\x1ba\x01bold\n\x1b@plain")
    assert decoded.styled_lines == [ed.Line("bold", "center", True), ed.Line("plain")]
    assert decoded.text == "bold\nplain"
