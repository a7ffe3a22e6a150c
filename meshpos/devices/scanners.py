"""Barcode scanner adapters: USB HID (pyusb), serial (pyserial) and keyboard wedge (a text stream).

Each adapter turns its device's input into completed, normalised codes. `poll()` does one bounded
read and returns what completed (often nothing); `codes()` loops until a stop event is set, so the
caller's thread owns the loop. A read timeout is the normal idle state, never an error; an
unplugged device raises ScannerUnavailable with a message naming the device.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TextIO

import serial
import usb.core
import usb.util

from meshpos.core.errors import MeshposError
from meshpos.devices.barcodes import normalise
from meshpos.devices.hid import REPORT_SIZE, HidDecoder

LIBUSB_ERROR_TIMEOUT = -7


class ScannerUnavailable(MeshposError):
    """The scanner is missing, unplugged or cannot be opened."""


class UsbReadable(Protocol):
    """The one pyusb `Device` method a HID scanner needs."""

    def read(self, endpoint: int, size_or_buffer: int, timeout: int | None = None) -> Any: ...


class CodeSource(Protocol):
    def poll(self) -> list[str]: ...


def _codes(source: CodeSource, stop: threading.Event | None) -> Iterator[str]:
    while stop is None or not stop.is_set():
        yield from source.poll()


def _is_timeout(err: usb.core.USBError) -> bool:
    return (
        isinstance(err, usb.core.USBTimeoutError)
        or err.errno == errno.ETIMEDOUT
        or getattr(err, "backend_error_code", None) == LIBUSB_ERROR_TIMEOUT
    )


class HidScanner:
    """A scanner in USB HID keyboard mode, read through pyusb.

    Given no device, finds it with `usb.core.find(idVendor=..., idProduct=...)`, detaches the
    kernel's keyboard driver (else the codes would also be typed into the console) and reads the
    interface's interrupt IN endpoint.
    """

    def __init__(
        self,
        device: UsbReadable | None = None,
        *,
        vendor_id: int | None = None,
        product_id: int | None = None,
        endpoint: int | None = None,
        packet_size: int = REPORT_SIZE,
        timeout_ms: int = 100,
        backend: Any = None,
    ) -> None:
        self.name = "USB scanner"
        self._found = device is None
        if device is None:
            if vendor_id is None or product_id is None:
                raise ScannerUnavailable("a USB scanner needs vendor_id and product_id")
            self.name = f"USB scanner {vendor_id:04x}:{product_id:04x}"
            device, found_ep, found_size = _open_hid(vendor_id, product_id, backend, self.name)
            endpoint = endpoint if endpoint is not None else found_ep
            packet_size = found_size or packet_size
        self.device = device
        self.endpoint = endpoint if endpoint is not None else 0x81
        self.packet_size = packet_size
        self.timeout_ms = timeout_ms
        self.decoder = HidDecoder()

    def poll(self) -> list[str]:
        """One interrupt read (up to `timeout_ms`); the codes it completed."""
        try:
            data = self.device.read(self.endpoint, self.packet_size, self.timeout_ms)
        except usb.core.USBError as err:
            if _is_timeout(err):
                return []
            raise ScannerUnavailable(f"{self.name} stopped responding: {err}") from err
        return [code for code in map(normalise, self.decoder.feed(bytes(data))) if code]

    def codes(self, stop: threading.Event | None = None) -> Iterator[str]:
        return _codes(self, stop)

    def close(self) -> None:
        if self._found:
            usb.util.dispose_resources(self.device)


def _open_hid(
    vendor_id: int, product_id: int, backend: Any, name: str
) -> tuple[Any, int | None, int | None]:
    try:
        dev = usb.core.find(idVendor=vendor_id, idProduct=product_id, backend=backend)
    except usb.core.NoBackendError as err:
        raise ScannerUnavailable(
            f"{name}: no libusb backend (install Debian's libusb-1.0-0)"
        ) from err
    if dev is None:
        raise ScannerUnavailable(f"{name} not found; is it plugged in?")
    try:
        if dev.is_kernel_driver_active(0):
            dev.detach_kernel_driver(0)
    except (NotImplementedError, usb.core.USBError):
        pass
    try:
        dev.set_configuration()
        intf = dev.get_active_configuration()[(0, 0)]
        ep = usb.util.find_descriptor(
            intf,
            custom_match=lambda e: (
                usb.util.endpoint_direction(e.bEndpointAddress) == usb.util.ENDPOINT_IN
            ),
        )
    except usb.core.USBError as err:
        raise ScannerUnavailable(f"{name} could not be opened: {err}") from err
    if ep is None:
        raise ScannerUnavailable(f"{name} has no IN endpoint; is it in HID keyboard mode?")
    return dev, int(ep.bEndpointAddress), int(ep.wMaxPacketSize)


class _LineSplitter:
    """Bytes in, codes out: scanners end a code with CR, LF or CR LF."""

    def __init__(self, max_length: int = 512) -> None:
        self._buf = bytearray()
        self.max_length = max_length

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        codes: list[str] = []
        while True:
            cut = min(
                (i for i in (self._buf.find(b"\r"), self._buf.find(b"\n")) if i >= 0), default=-1
            )
            if cut < 0:
                break
            line, self._buf = bytes(self._buf[:cut]), self._buf[cut + 1 :]
            code = normalise(line.decode("utf-8", errors="replace"))
            if code:
                codes.append(code)
        if len(self._buf) > self.max_length:
            self._buf.clear()
        return codes


class SerialLike(Protocol):
    """The pyserial `Serial` methods a serial scanner needs."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...


class SerialScanner:
    """A scanner on a serial port (RS-232 or USB-CDC), read through pyserial.

    Reads block for at most the port's own `timeout`; open ports with a short one (0.1 s).
    """

    def __init__(self, port: SerialLike, name: str = "serial scanner") -> None:
        self.port = port
        self.name = name
        self._lines = _LineSplitter()

    @classmethod
    def open(cls, url: str, baudrate: int = 9600, timeout: float = 0.1) -> SerialScanner:
        """Open `url` (a device path like /dev/ttyACM0, or any pyserial URL)."""
        try:
            port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
        except (serial.SerialException, ValueError) as err:
            raise ScannerUnavailable(f"serial scanner {url} could not be opened: {err}") from err
        return cls(port, f"serial scanner {url}")

    def poll(self) -> list[str]:
        try:
            data = self.port.read(max(1, self.port.in_waiting))
        except serial.SerialException as err:
            raise ScannerUnavailable(f"{self.name} stopped responding: {err}") from err
        return self._lines.feed(data) if data else []

    def codes(self, stop: threading.Event | None = None) -> Iterator[str]:
        return _codes(self, stop)

    def close(self) -> None:
        close = getattr(self.port, "close", None)
        if close is not None:
            close()


class WedgeScanner:
    """A keyboard-wedge scanner (or a person typing): one code per line of a text stream."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def read_code(self) -> str | None:
        """The next non-blank code, or None at end of input."""
        while True:
            line = self.stream.readline()
            if not line:
                return None
            code = normalise(line)
            if code:
                return code

    def poll(self) -> list[str]:
        code = self.read_code()
        return [] if code is None else [code]

    def codes(self, stop: threading.Event | None = None) -> Iterator[str]:
        while stop is None or not stop.is_set():
            code = self.read_code()
            if code is None:
                return
            yield code


def decode_lines(chunks: Sequence[bytes]) -> list[str]:
    """Codes in a recorded serial byte stream, for replaying captures."""
    splitter = _LineSplitter()
    codes: list[str] = []
    for chunk in chunks:
        codes += splitter.feed(chunk)
    return codes
