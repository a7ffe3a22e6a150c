"""UPI at the counter: the payment request for what is due, shown as a QR code (web till) or
printed on the receipt printer (text till), and confirmed by the UTR (meshpos/domain/upi.py)."""

from __future__ import annotations

from dataclasses import dataclass

from meshpos.core.errors import ConfigError
from meshpos.domain.upi import VPA_SETTING, check_vpa, pay_uri
from meshpos.service.terminal import Terminal


@dataclass(frozen=True)
class UpiRequest:
    """What the customer's phone is asked to pay: to the store's VPA, `amount` paise, carrying
    `reference` (the id the sale will be recorded under) for the bank's settlement file."""

    uri: str
    vpa: str
    amount: int
    reference: str


def store_vpa(t: Terminal) -> str:
    """The store's UPI id, `[store] upi_vpa`; ConfigError says where to set it."""
    vpa = t.cfg.section("store").get(VPA_SETTING)
    if not isinstance(vpa, str) or not vpa.strip():
        raise ConfigError(
            "UPI needs the store's UPI id: set upi_vpa = 'shop@okaxis' under [store] in "
            f"{t.cfg.dir / 'meshpos.toml'}"
        )
    return check_vpa(vpa)


def request(t: Terminal, amount: int) -> UpiRequest:
    """The request for `amount` paise of the sale this terminal records next."""
    vpa = store_vpa(t)
    reference = t.sale_id_of(t.ledger.views.next_number(t.node_id))
    payee = str(t.cfg.section("store").get("name") or t.cfg.store_name or vpa)
    return UpiRequest(pay_uri(vpa, payee, amount, reference), vpa, amount, reference)
