"""Store settings whose values every replica must be able to read: checked where they are made.

A `setting.set` op is stored by every replica whatever it holds, so a value no till can use (a
misspelt time zone, a band without a rate) would be ignored at every counter. Whoever signs one
(HQ, `meshpos hq setting`) calls `check_setting` first and stores the normalised value.
"""

from __future__ import annotations

from typing import Any

from meshpos.core.errors import InputError
from meshpos.domain.gst import BANDS_SETTING, bands_value, check_band_key, parse_bands
from meshpos.domain.storetime import SETTING as TIMEZONE_SETTING
from meshpos.domain.storetime import zone


def check_setting(key: str, value: Any) -> Any:
    """The value to store for setting `key`; InputError naming what is wrong with it."""
    if key == TIMEZONE_SETTING:
        if not isinstance(value, str):
            raise InputError(f'{key} must be text, a time zone name like "Asia/Kolkata"')
        return zone(value, key).key
    if key.startswith(BANDS_SETTING):
        check_band_key(key[len(BANDS_SETTING) :], f"{key}: the part after {BANDS_SETTING}")
        if value is None:
            return None  # removes the key's bands: its products keep their catalogue rate
        return bands_value(parse_bands(value, key))
    return value
