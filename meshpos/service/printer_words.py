"""Printer trouble in the cashier's words.

The print queue keeps each failure as the driver reported it ("network printer 10.0.0.9:9100 is
unavailable: [Errno 111] Connection refused"), which is right for the log and wrong for a counter.
`explain` turns it into what happened and what to do; the raw text stays available for details.
The till (web and text) offers the three ways out beside it: Retry, Reprint last, and Print on
another counter. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# (pattern in the driver's text, what happened, what to do): first match wins.
_CAUSES: tuple[tuple[str, str, str], ...] = (
    (r"paper", "is out of paper", "load a new roll, then press Retry"),
    (
        r"refused",
        "is switched off or not ready",
        "check it is on, its lid is closed and it has paper, then press Retry",
    ),
    (
        r"timed out|no route|unreachable|network is down",
        "cannot be reached over the network",
        "check its network cable and that it is on, then press Retry",
    ),
    (
        r"no such (file|device)|not found|could not (find|open)|no libusb",
        "is not connected",
        "check its cable and that it is switched on, then press Retry",
    ),
    (
        r"permission|access denied|not permitted",
        "may not be used by this till (permission denied)",
        "call whoever looks after the tills",
    ),
    (r"busy", "is busy with another program", "wait a moment, then press Retry"),
    (
        r"interrupted",
        "stopped in the middle of a receipt",
        "press Retry: it prints again, marked as a possible duplicate",
    ),
    (
        r"printing is off",
        "is switched off in this counter's settings",
        "print on another counter, or ask for `[printer]` to be set up",
    ),
)
_DEVICE = re.compile(r"^(?P<device>.+?) is unavailable: ")


@dataclass(frozen=True)
class PrinterTrouble:
    """What went wrong with the receipt printer, said for a cashier."""

    what: str  # "The receipt printer (network printer 10.0.0.9:9100) is switched off..."
    todo: str  # what to do about it
    raw: str  # the driver's words, for the details and the log
    waiting: int = 0  # slips waiting for it

    @property
    def text(self) -> str:
        waiting = f" {self.waiting} slip(s) are waiting." if self.waiting else ""
        return f"{self.what}: {self.todo}.{waiting}"


def explain(raw: str, waiting: int = 0) -> PrinterTrouble:
    """The driver's error text (a print job's `last_error`) in plain words."""
    found = _DEVICE.match(raw)
    device = f" ({found.group('device')})" if found else ""
    low = raw.lower()
    for pattern, what, todo in _CAUSES:
        if re.search(pattern, low):
            return PrinterTrouble(f"The receipt printer{device} {what}", todo, raw, waiting)
    return PrinterTrouble(
        f"The receipt printer{device} is not working",
        "check it is on and has paper, then press Retry; or print on another counter",
        raw,
        waiting,
    )
