"""The text till's look-ups that ring nothing: other stores' stock, the offline guide, power.

Kept apart from meshpos/cli/till.py so its command table only gains one line for them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from meshpos.core.clock import wall_ms
from meshpos.domain.storetime import ago
from meshpos.service import cheatsheet, transfers
from meshpos.service.power import power_of
from meshpos.service.terminal import Terminal

HELP = """\
  stores SKU            other stores' stock of SKU (HQ's view, with its age)
  guide                 the store's offline cheat sheet;  power  battery and UPS state"""


def info_command(t: Terminal, cmd: str, args: Sequence[str], out: Callable[[str], None]) -> bool:
    """Answer `stores SKU`, `guide` or `power`; False for any other command."""
    if cmd == "stores" and len(args) == 1:
        now = wall_ms()
        rows = transfers.elsewhere(t, args[0], now)
        if not rows:
            out("no other stores' stock here yet: it comes from HQ while the till reaches it")
        for r in rows:
            seen = f"HQ saw it {ago(r['as_of_ms'], now)} ago" if r["as_of_ms"] else "HQ never heard"
            out(f"  {r['store']:<10} {r['qty']:>5}  {r['name']}  ({seen})")
        return True
    if cmd == "guide" and not args:
        for line in cheatsheet.text_lines(cheatsheet.gather(t, wall_ms())):
            out(line)
        return True
    if cmd == "power" and not args:
        out(power_of(t.cfg).text)
        return True
    return False
