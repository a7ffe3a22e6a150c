"""Terminal devices that must work with no network: receipt printer, cash drawer, scanners.

Modules are imported directly (`meshpos.devices.printers`, `.scanners`, `.barcodes`, ...) so that
code needing only check digits or HID decoding does not load python-escpos and its imaging stack.
"""
