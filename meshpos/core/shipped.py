"""Compression dictionaries shipped in the package under numbers that never change once released.

The sync wire (meshpos/sync/compression.py) and the ledger's stored op bodies
(meshpos/ledger/body_codec.py) each keep their own numbered set; data names the number it was
compressed with, so a number this meshpos lacks is refused by name rather than misread.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files

from meshpos.core.errors import EncodingError


def shipped_dictionary(names: Mapping[int, str], number: int, stored_with: str) -> bytes:
    """The bytes of dictionary `number` of `names` (file names under meshpos/data/).
    `stored_with` begins the refusal: "<stored_with> dictionary N, which this version ..."."""
    name = names.get(number)
    if name is None:
        raise EncodingError(
            f"{stored_with} dictionary {number}, which this version of meshpos does not have "
            f"(it has {', '.join(map(str, sorted(names)))}): upgrade meshpos to read it"
        )
    return files("meshpos").joinpath("data", name).read_bytes()
