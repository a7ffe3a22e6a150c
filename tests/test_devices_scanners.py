"""Scanner adapters at the narrowest boundaries: a pyusb backend (below pyusb's real `Device`), a
bare object with pyusb's `read()`, a real pyserial `loop://` port, and a text stream."""

from __future__ import annotations

import array
import io
import threading
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest
import serial
import usb.backend
import usb.core

from meshpos.devices.hid import text_to_reports
from meshpos.devices.scanners import (
    HidScanner,
    ScannerUnavailable,
    SerialScanner,
    WedgeScanner,
    decode_lines,
)

VID, PID = 0x0C2E, 0x0200  # a Honeywell-style HID scanner id


class RecordedBackend(usb.backend.IBackend):  # type: ignore[misc]
    """A pyusb backend with one HID boot keyboard whose interrupt endpoint replays recorded
    reports, then times out the way libusb does. pyusb's own find/Device/read run on top."""

    def __init__(self, reports: list[bytes], unplug_after: bool = False) -> None:
        self.reports = deque(reports)
        self.unplug_after = unplug_after
        self.detached: list[int] = []
        self.configured: list[int] = []
        self.reads: list[tuple[int, int]] = []

    def enumerate_devices(self) -> Any:
        yield "scanner"

    def get_device_descriptor(self, dev: Any) -> Any:
        return SimpleNamespace(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0, bDeviceSubClass=0,
            bDeviceProtocol=0, bMaxPacketSize0=8, idVendor=VID, idProduct=PID, bcdDevice=0x0100,
            iManufacturer=0, iProduct=0, iSerialNumber=0, bNumConfigurations=1, address=5,
            bus=1, port_number=2, port_numbers=(2,), speed=2,
        )  # fmt: skip

    def get_configuration_descriptor(self, dev: Any, config: int) -> Any:
        return SimpleNamespace(
            bLength=9, bDescriptorType=2, wTotalLength=34, bNumInterfaces=1, bConfigurationValue=1,
            iConfiguration=0, bmAttributes=0x80, bMaxPower=50, extra_descriptors=[],
        )  # fmt: skip

    def get_interface_descriptor(self, dev: Any, intf: int, alt: int, config: int) -> Any:
        return SimpleNamespace(
            bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0,
            bNumEndpoints=1, bInterfaceClass=3, bInterfaceSubClass=1, bInterfaceProtocol=1,
            iInterface=0, extra_descriptors=[],
        )  # fmt: skip

    def get_endpoint_descriptor(self, dev: Any, ep: int, intf: int, alt: int, config: int) -> Any:
        return SimpleNamespace(
            bLength=7, bDescriptorType=5, bEndpointAddress=0x81, bmAttributes=0x03,
            wMaxPacketSize=8, bInterval=1, bRefresh=0, bSynchAddress=0, extra_descriptors=[],
        )  # fmt: skip

    def open_device(self, dev: Any) -> Any:
        return "handle"

    def close_device(self, handle: Any) -> None:
        pass

    def set_configuration(self, handle: Any, value: int) -> None:
        self.configured.append(value)

    def get_configuration(self, handle: Any) -> int:
        return 1

    def claim_interface(self, handle: Any, intf: int) -> None:
        pass

    def release_interface(self, handle: Any, intf: int) -> None:
        pass

    def is_kernel_driver_active(self, handle: Any, intf: int) -> bool:
        return intf not in self.detached

    def detach_kernel_driver(self, handle: Any, intf: int) -> None:
        self.detached.append(intf)

    def intr_read(
        self, handle: Any, ep: int, intf: int, buff: array.array[int], timeout: int
    ) -> int:
        self.reads.append((ep, timeout))
        if not self.reports:
            if self.unplug_after:
                raise usb.core.USBError("No such device (it may have been disconnected)", -4, 19)
            raise usb.core.USBTimeoutError("Operation timed out", -7, 110)
        data = self.reports.popleft()
        buff[: len(data)] = array.array("B", data)
        return len(data)


def drain(scanner: HidScanner | SerialScanner, polls: int) -> list[str]:
    codes: list[str] = []
    for _ in range(polls):
        codes += scanner.poll()
    return codes


def test_hid_scanner_found_by_vendor_and_product_through_pyusb() -> None:
    backend = RecordedBackend(text_to_reports("8901234567890\nSKU-Abc-1\n"))
    scanner = HidScanner(vendor_id=VID, product_id=PID, backend=backend, timeout_ms=20)
    assert scanner.endpoint == 0x81
    assert backend.detached == [0]  # the kernel keyboard driver let go of the scanner
    assert backend.configured == [1]
    codes = drain(scanner, 60)
    assert codes == ["8901234567890", "SKU-Abc-1"]
    assert all(r == (0x81, 20) for r in backend.reads)
    scanner.close()


def test_hid_scanner_timeouts_are_idle_not_errors() -> None:
    backend = RecordedBackend([])
    scanner = HidScanner(vendor_id=VID, product_id=PID, backend=backend, timeout_ms=5)
    assert drain(scanner, 3) == []


def test_unplugged_hid_scanner_raises_scanner_unavailable() -> None:
    backend = RecordedBackend(text_to_reports("12\n"), unplug_after=True)
    scanner = HidScanner(vendor_id=VID, product_id=PID, backend=backend)
    assert drain(scanner, 6) == ["12"]
    with pytest.raises(ScannerUnavailable, match="0c2e:0200 stopped responding"):
        scanner.poll()


def test_hid_scanner_not_plugged_in() -> None:
    backend = RecordedBackend([])
    with pytest.raises(ScannerUnavailable, match="USB scanner 0c2e:0201 not found"):
        HidScanner(vendor_id=VID, product_id=PID + 1, backend=backend)


def test_hid_scanner_without_ids_or_device() -> None:
    with pytest.raises(ScannerUnavailable, match="vendor_id and product_id"):
        HidScanner()


def test_hid_scanner_without_libusb_says_what_to_install() -> None:
    try:
        found = usb.core.find()
    except usb.core.NoBackendError:
        found = None
    else:
        pytest.skip(f"libusb is installed here (found {found!r})")
    with pytest.raises(ScannerUnavailable, match=r"libusb-1\.0-0"):
        HidScanner(vendor_id=VID, product_id=PID)


class RecordedDevice:
    """The narrowest boundary: any object with pyusb's `read(endpoint, size, timeout)`."""

    def __init__(self, reports: list[bytes]) -> None:
        self.reports = deque(reports)

    def read(self, endpoint: int, size_or_buffer: int, timeout: int | None = None) -> Any:
        if not self.reports:
            raise usb.core.USBTimeoutError("Operation timed out", -7, 110)
        return array.array("B", self.reports.popleft())


def test_hid_scanner_on_a_given_device_object() -> None:
    device = RecordedDevice(text_to_reports("  4006381333931\n\n"))
    scanner = HidScanner(device)
    assert drain(scanner, 40) == ["4006381333931"]  # blank scans are dropped, framing stripped


def test_hid_codes_iterator_stops_on_event() -> None:
    device = RecordedDevice(text_to_reports("1\n2\n"))
    stop = threading.Event()
    got: list[str] = []
    for code in HidScanner(device, timeout_ms=1).codes(stop):
        got.append(code)
        if len(got) == 2:
            stop.set()
    assert got == ["1", "2"]


def test_serial_scanner_on_a_real_pyserial_loop_port() -> None:
    port = serial.serial_for_url("loop://", timeout=0.05)
    scanner = SerialScanner(port)
    port.write(b"8901234567890\r\n")
    port.write(b"SKU-Abc-1\r")
    port.write(b"\n96385")  # a code split across reads
    assert drain(scanner, 3) == ["8901234567890", "SKU-Abc-1"]
    port.write(b"074\n")
    assert drain(scanner, 2) == ["96385074"]
    assert scanner.poll() == []  # idle: the read timed out, nothing happened
    scanner.close()


def test_serial_scanner_open_by_url_and_failure() -> None:
    scanner = SerialScanner.open("loop://", timeout=0.05)
    assert scanner.poll() == []
    scanner.close()
    with pytest.raises(ScannerUnavailable, match="/dev/nonexistent-scanner"):
        SerialScanner.open("/dev/nonexistent-scanner")


def test_serial_scanner_closed_port_is_unavailable() -> None:
    port = serial.serial_for_url("loop://", timeout=0.05)
    scanner = SerialScanner(port, "serial scanner loop")
    port.close()
    with pytest.raises(ScannerUnavailable, match="serial scanner loop"):
        scanner.poll()


def test_decode_lines_replays_a_capture() -> None:
    assert decode_lines([b"12", b"3\r", b"\n45\n", b"\r\n"]) == ["123", "45"]


def test_wedge_scanner_reads_stdin_lines() -> None:
    stream = io.StringIO("8901234567890\n\n   \nSKU-Abc-1\r\nTSH-BLK-M")
    scanner = WedgeScanner(stream)
    assert list(scanner.codes()) == ["8901234567890", "SKU-Abc-1", "TSH-BLK-M"]
    assert scanner.read_code() is None
    assert scanner.poll() == []
