"""HID keyboard-report decoding, from report sequences written out byte by byte as scanners send
them (USB HID Usage Tables, keyboard page: a=0x04 .. z=0x1D, 1=0x1E .. 9=0x26, 0=0x27,
Enter=0x28, '-'=0x2D; modifier bit 0x02 is left shift, 0x20 right shift)."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from meshpos.devices.hid import HidDecoder, decode_reports, report, text_to_reports

UP = bytes(8)  # all keys released

# "8901234567897" then Enter: one press report and one release report per character.
EAN_REPORTS = [
    bytes.fromhex("0000250000000000"), UP,  # 8
    bytes.fromhex("0000260000000000"), UP,  # 9
    bytes.fromhex("0000270000000000"), UP,  # 0
    bytes.fromhex("00001e0000000000"), UP,  # 1
    bytes.fromhex("00001f0000000000"), UP,  # 2
    bytes.fromhex("0000200000000000"), UP,  # 3
    bytes.fromhex("0000210000000000"), UP,  # 4
    bytes.fromhex("0000220000000000"), UP,  # 5
    bytes.fromhex("0000230000000000"), UP,  # 6
    bytes.fromhex("0000240000000000"), UP,  # 7
    bytes.fromhex("0000250000000000"), UP,  # 8
    bytes.fromhex("0000260000000000"), UP,  # 9
    bytes.fromhex("0000240000000000"), UP,  # 7
    bytes.fromhex("0000280000000000"), UP,  # Enter
]  # fmt: skip

# "SKU-Abc-1" then Enter, shift held in the same report as each capital.
SKU_REPORTS = [
    bytes.fromhex("0200160000000000"), UP,  # S
    bytes.fromhex("02000e0000000000"), UP,  # K
    bytes.fromhex("0200180000000000"), UP,  # U
    bytes.fromhex("00002d0000000000"), UP,  # -
    bytes.fromhex("0200040000000000"), UP,  # A
    bytes.fromhex("0000050000000000"), UP,  # b
    bytes.fromhex("0000060000000000"), UP,  # c
    bytes.fromhex("00002d0000000000"), UP,  # -
    bytes.fromhex("00001e0000000000"), UP,  # 1
    bytes.fromhex("0000280000000000"), UP,  # Enter
]  # fmt: skip


def test_ean13_scan() -> None:
    assert decode_reports(EAN_REPORTS) == ["8901234567897"]


def test_mixed_case_sku_with_shift() -> None:
    assert decode_reports(SKU_REPORTS) == ["SKU-Abc-1"]


def test_shift_sent_in_its_own_reports_around_the_key() -> None:
    # Some scanners press shift, then the key, release the key, then release shift.
    reports = [
        bytes.fromhex("0200000000000000"),
        bytes.fromhex("0200160000000000"),  # S
        bytes.fromhex("0200000000000000"),
        UP,
        bytes.fromhex("2000180000000000"),  # right shift + u = U
        UP,
        bytes.fromhex("0000050000000000"),  # b, shift released
        UP,
        bytes.fromhex("02001e0000000000"),  # shift+1 = !
        UP,
        bytes.fromhex("0000280000000000"),
        UP,
    ]
    assert decode_reports(reports) == ["SUb!"]


def test_repeated_report_of_a_held_key_types_once() -> None:
    held = bytes.fromhex("0000270000000000")  # 0, reported three times while held
    enter = bytes.fromhex("0000280000000000")
    assert decode_reports([held, held, held, UP, enter, UP]) == ["0"]


def test_doubled_character_needs_a_release_between() -> None:
    zero = bytes.fromhex("0000270000000000")
    enter = bytes.fromhex("0000280000000000")
    assert decode_reports([zero, UP, zero, UP, zero, UP, enter, UP]) == ["000"]


def test_rollover_next_key_down_before_previous_key_up() -> None:
    reports = [
        bytes.fromhex("0000250000000000"),  # 8 down
        bytes.fromhex("0000252600000000"),  # 8 still down, 9 down
        bytes.fromhex("0000260000000000"),  # 8 up
        bytes.fromhex("0000262700000000"),  # 0 down
        bytes.fromhex("0000280000000000"),  # 9 and 0 up, Enter down
        UP,
    ]
    assert decode_reports(reports) == ["890"]


def test_error_rollover_report_is_ignored() -> None:
    reports = [
        bytes.fromhex("00001e0000000000"),
        bytes.fromhex("0000010101010101"),  # phantom state: says nothing about keys
        bytes.fromhex("00001e0000000000"),  # 1 is still the held key, not a new press
        UP,
        bytes.fromhex("0000280000000000"),
        UP,
    ]
    assert decode_reports(reports) == ["1"]


def test_two_scans_and_a_partial_one() -> None:
    decoder = HidDecoder()
    codes: list[str] = []
    for r in EAN_REPORTS + SKU_REPORTS + SKU_REPORTS[:6]:
        codes += decoder.feed(r)
    assert codes == ["8901234567897", "SKU-Abc-1"]
    assert decoder.pending == "SKU"


def test_keypad_digits_and_keypad_enter() -> None:
    reports = [
        bytes.fromhex("0000620000000000"),  # keypad 0
        UP,
        bytes.fromhex("0000590000000000"),  # keypad 1
        UP,
        bytes.fromhex("0000630000000000"),  # keypad .
        UP,
        bytes.fromhex("0000580000000000"),  # keypad Enter
        UP,
    ]
    assert decode_reports(reports) == ["01."]


def test_caps_lock_inverts_letters_only() -> None:
    caps = bytes.fromhex("0000390000000000")
    reports = [caps, UP, *text_to_reports("aB1\n")]
    assert decode_reports(reports) == ["Ab1"]


def test_several_reports_in_one_transfer() -> None:
    blob = b"".join(EAN_REPORTS)
    assert HidDecoder().feed(blob[:64]) == []
    assert HidDecoder().feed(blob) == ["8901234567897"]


def test_ctrl_right_bracket_is_the_gs1_separator() -> None:
    reports = [*text_to_reports("01"), bytes.fromhex("0100300000000000"), UP]
    reports += text_to_reports("10\n")
    assert decode_reports(reports) == ["01\x1d10"]


def test_short_and_unknown_reports_are_harmless() -> None:
    reports = [b"", b"\x00", bytes.fromhex("0000e80000000000"), UP, *text_to_reports("7\n")]
    assert decode_reports(reports) == ["7"]


def test_backspace_and_escape_edit_the_pending_code() -> None:
    reports = [*text_to_reports("12"), report(0, 42), UP, *text_to_reports("3\n")]
    assert decode_reports(reports) == ["13"]
    reports = [*text_to_reports("12"), report(0, 41), UP, *text_to_reports("4\n")]
    assert decode_reports(reports) == ["4"]


def test_runaway_input_without_enter_is_dropped_not_hoarded() -> None:
    decoder = HidDecoder(max_length=10)
    for r in text_to_reports("x" * 25):
        decoder.feed(r)
    assert len(decoder.pending) <= 10
    assert decoder.dropped == 2


typable = string.ascii_letters + string.digits + string.punctuation + " "


@given(st.lists(st.text(alphabet=typable, min_size=1, max_size=40), min_size=1, max_size=5))
def test_any_typable_text_round_trips(codes: list[str]) -> None:
    reports = [r for code in codes for r in text_to_reports(code + "\n")]
    assert decode_reports(reports) == codes
