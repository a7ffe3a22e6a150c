"""The offline cheat sheet: one page for the counter, from this store's own config and settings.

What a cashier needs when the internet is down: how to tell, which payments still work and their
limits (cash; card on the store's card machine; cards taken offline up to the per-sale floor
limit and the store's card float; loyalty points where the rights are; UPI when the store has a
VPA), how to sync, what to do on battery, and who to call (`[store] contacts`). Rendered as HTML
(also what the web till's Guide link serves) or as a PDF (fpdf2, with a font that has ₹).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

from meshpos.core.errors import ConfigError, InputError
from meshpos.domain.money import rupees
from meshpos.domain.staff import policy_from
from meshpos.service import cards
from meshpos.service.config import CONFIG_FILE, NodeConfig
from meshpos.service.power import PowerSetup
from meshpos.service.terminal import Terminal
from meshpos.service.training import is_practice

CONTACT_KEYS = ("role", "name", "phone", "hours", "note")
FORMATS = ("html", "pdf")


@dataclass(frozen=True)
class Contact:
    role: str
    name: str
    phone: str
    hours: str = ""
    note: str = ""


@dataclass(frozen=True)
class Payment:
    name: str
    works: str  # yes | limited | no
    how: str


@dataclass(frozen=True)
class Section:
    title: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class CheatSheet:
    store: str
    store_name: str
    address: str
    terminals: tuple[str, ...]
    generated: str
    payments: tuple[Payment, ...]
    sections: tuple[Section, ...]
    contacts: tuple[Contact, ...]
    training: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


def contacts_of(cfg: NodeConfig) -> tuple[Contact, ...]:
    """`[store] contacts`: a list of tables with a name and a phone (role, hours, note optional)."""
    raw = cfg.section("store").get("contacts", [])
    where = f"{cfg.dir / CONFIG_FILE}: [store] contacts"
    if not isinstance(raw, list):
        raise ConfigError(
            f'{where} must be a list like [{{ role = "Manager", name = "Asha", phone = "98..." }}]'
        )
    out = []
    for i, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: entry {i} must be a table with name and phone")
        unknown = set(item) - set(CONTACT_KEYS)
        if unknown:
            raise ConfigError(f"{where}: entry {i} has unknown key(s) {', '.join(sorted(unknown))}")
        if not all(isinstance(v, str) for v in item.values()):
            raise ConfigError(f"{where}: entry {i}: every value must be text")
        if not item.get("name") or not item.get("phone"):
            raise ConfigError(f"{where}: entry {i} needs a name and a phone")
        out.append(Contact(**{k: str(item.get(k, "")) for k in CONTACT_KEYS}))
    return tuple(out)


def _payments(t: Terminal) -> tuple[Payment, ...]:
    card = cards.status(t)
    rule = t.loyalty_rule()
    pays = [
        Payment("Cash", "yes", "Always. The drawer opens and the till works out the change."),
        Payment(
            "Card on the card machine",
            "limited",
            "Works while the machine has its own signal. Note its approval code and the card's "
            "last 4 digits at the till.",
        ),
    ]
    limit = int(card.get("per_sale_limit") or 0)
    if limit and card.get("minted"):
        pays.append(
            Payment(
                "Card taken by the till",
                "limited",
                f"Up to {rupees(limit)} a sale, within the store's offline card float of "
                f"{rupees(int(card['minted']))} (this counter holds {rupees(int(card['held_here']))}). "
                "Cards on HQ's blocklist are refused. Pending until HQ answers.",
            )
        )
    else:
        pays.append(
            Payment(
                "Card taken by the till",
                "no",
                "Not set up here: HQ has opened no offline card float. Use the card machine or cash.",
            )
        )
    pays.append(
        Payment(
            "Loyalty points",
            "limited",
            f"1 point = {rupees(rule.point_value)}. Redeemed at the counter holding the customer's "
            "points; another counter's need the shop network, another store's need HQ.",
        )
    )
    vpa = str(t.cfg.section("store").get("upi_vpa") or "")
    if vpa:
        pays.append(
            Payment(
                "UPI",
                "limited",
                f"To {vpa}, when the customer's phone has data: show the QR, type the UTR the "
                "phone or sound box shows. Checked against the bank's file later.",
            )
        )
    else:
        pays.append(Payment("UPI", "no", "Not set up here ([store] upi_vpa)."))
    return tuple(pays)


def gather(t: Terminal, now_ms: int) -> CheatSheet:
    """The sheet of the store `t` belongs to, as this terminal's config and views say."""
    cfg = t.cfg
    policy = policy_from(t.ledger.views.settings("staff."))
    power = PowerSetup.from_config(cfg)
    ups = f"UPS {power.ups} is watched" if power.ups else "No UPS is watched ([power] ups)"
    sections = (
        Section(
            "Is the till offline?",
            (
                "The bar at the top turns amber: \u201cOffline \u2014 sales are safe \u00b7 N "
                "waiting to sync\u201d. The text till prints the same line.",
                "Keep selling: every sale is saved on this counter at once and copied to the "
                "other counters over the shop network.",
                "Red means act now (printer, battery). `meshpos status` shows counters and HQ.",
            ),
        ),
        Section(
            "How to sync",
            (
                "Nothing to do: counters copy each other within seconds; HQ gets everything "
                "when the internet is back.",
                "Force it: `meshpos sync now`. No network at all: `meshpos sync export FILE` "
                "on one till, `meshpos sync import FILE` on the other (USB stick).",
                "Receipts waiting for the printer: `meshpos print retry`; "
                "a copy: `meshpos print reprint T1-000123`.",
            ),
        ),
        Section(
            "Power cut",
            (
                "On battery the bar says \u201cOn battery (45%)\u201d. At "
                f"{power.policy.low_percent}% or {power.policy.low_minutes} minutes left: finish "
                "the sale, the till prints what is waiting, then shut down. No sale is lost.",
                ups + ".",
            ),
        ),
        Section(
            "Needs a supervisor",
            (
                f"Refunds above {rupees(policy.refund_limit)}, discounts above "
                f"{policy.discount_limit_bp / 100:g}%, stock adjustments and transfers, "
                "resolving conflicts.",
                "Every counter down: write each sale on paper (slip number, time, items, "
                "amount, payment) and enter it when a counter is back.",
            ),
        ),
    )
    names = tuple(
        sorted(n.name for n in t.ledger.nodes() if n.cert is not None or n.node_id == t.node_id)
    )
    store_cfg = cfg.section("store")
    return CheatSheet(
        store=cfg.store,
        store_name=str(store_cfg.get("name") or cfg.store_name or cfg.store),
        address=str(store_cfg.get("address") or ""),
        terminals=names,
        generated=datetime.fromtimestamp(now_ms / 1000).strftime("%d %b %Y %H:%M"),
        payments=_payments(t),
        sections=sections,
        contacts=contacts_of(cfg),
        training=is_practice(cfg),
    )


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.DictLoader(
            {"sheet": resources.files("meshpos").joinpath("data/cheatsheet.html").read_text()}
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["code"] = _code_html
    return env


def _code_html(text: str) -> str:
    """`commands` in a line as <code>."""
    parts = str(escape(text)).split("`")
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


def render_html(sheet: CheatSheet) -> str:
    return _env().get_template("sheet").render(s=sheet)


def _font() -> Path | None:
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    return path if (path / "DejaVuSans.ttf").exists() else None


def render_pdf(sheet: CheatSheet) -> bytes:
    """One A4 page. DejaVu (shipped with matplotlib) has ₹; without it, amounts say Rs."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_margins(12, 10, 12)
    pdf.add_page()
    fonts = _font()
    if fonts is not None:
        pdf.add_font("sheet", "", str(fonts / "DejaVuSans.ttf"))
        pdf.add_font("sheet", "B", str(fonts / "DejaVuSans-Bold.ttf"))
        pdf.add_font("mono", "", str(fonts / "DejaVuSansMono.ttf"))
        family, mono = "sheet", "mono"
    else:
        family, mono = "helvetica", "courier"

    def clean(text: str) -> str:
        if fonts is not None:
            return text
        for a, b in (
            ("₹", "Rs."),
            ("\u2014", "-"),
            ("\u00b7", "-"),
            ("\u201c", '"'),
            ("\u201d", '"'),
        ):
            text = text.replace(a, b)
        return text.encode("latin-1", "replace").decode("latin-1")

    width = pdf.w - pdf.l_margin - pdf.r_margin

    def para(text: str, size: float = 8.6, style: str = "", h: float = 4.1) -> None:
        pdf.set_font(family, style, size)
        pdf.multi_cell(
            width, h, clean(text.replace("`", "")), align="L", new_x="LMARGIN", new_y="NEXT"
        )

    if sheet.training:
        pdf.set_fill_color(180, 83, 9)
        pdf.set_text_color(255, 255, 255)
        pdf.set_font(family, "B", 10)
        pdf.cell(
            width,
            6,
            "TRAINING - practice till",
            fill=True,
            align="C",
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.set_text_color(0, 0, 0)
    pdf.set_font(family, "B", 17)
    pdf.cell(
        width,
        9,
        clean(f"{sheet.store_name}: when the internet is down"),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    para(
        f"Store {sheet.store}"
        + (f" \u00b7 {sheet.address}" if sheet.address else "")
        + (f" \u00b7 counters {', '.join(sheet.terminals)}" if sheet.terminals else "")
        + f" \u00b7 printed {sheet.generated}",
        8,
    )
    pdf.ln(1.5)
    pdf.set_font(family, "B", 11.5)
    pdf.cell(width, 6.5, "Payments that work offline", new_x="LMARGIN", new_y="NEXT")
    mark = {"yes": "YES", "limited": "LIMITS", "no": "NO"}
    for pay in sheet.payments:
        pdf.set_font(family, "B", 8.6)
        pdf.cell(50, 4.4, clean(pay.name))
        pdf.cell(16, 4.4, mark[pay.works])
        pdf.set_font(family, "", 8.6)
        pdf.multi_cell(width - 66, 4.4, clean(pay.how), align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(0.6)
    for sec in sheet.sections:
        pdf.ln(1.2)
        pdf.set_font(family, "B", 11.5)
        pdf.cell(width, 6.5, clean(sec.title), new_x="LMARGIN", new_y="NEXT")
        for line in sec.lines:
            para("\u2022 " + line if fonts is not None else "- " + line)
    pdf.ln(1.2)
    pdf.set_font(family, "B", 11.5)
    pdf.cell(width, 6.5, "Who to call", new_x="LMARGIN", new_y="NEXT")
    if not sheet.contacts:
        para("No contacts set: add [store] contacts to meshpos.toml and print this sheet again.")
    for c in sheet.contacts:
        pdf.set_font(family, "B", 9.5)
        pdf.cell(48, 5, clean(c.role or "Contact"))
        pdf.set_font(family, "", 9.5)
        pdf.cell(52, 5, clean(c.name))
        pdf.set_font(mono, "", 9.5)
        pdf.cell(40, 5, clean(c.phone))
        pdf.set_font(family, "", 8.2)
        pdf.multi_cell(
            0, 5, clean(" ".join(x for x in (c.hours, c.note) if x)), new_x="LMARGIN", new_y="NEXT"
        )
    if pdf.page_no() != 1:  # pragma: no cover - the layout is sized for one page
        raise InputError("the cheat sheet no longer fits on one page")
    return bytes(pdf.output())


def render(sheet: CheatSheet, fmt: str) -> bytes:
    if fmt not in FORMATS:
        raise InputError(f"cheat sheet format {fmt!r} must be one of {', '.join(FORMATS)}")
    return render_pdf(sheet) if fmt == "pdf" else render_html(sheet).encode()


def format_of(path: str, given: str | None) -> str:
    """The format asked (--format), else the file's extension."""
    if given:
        return given
    ext = Path(path).suffix.lower().lstrip(".")
    if ext in ("htm", "html"):
        return "html"
    if ext == "pdf":
        return "pdf"
    raise InputError(f"cannot tell the format of {path!r}: name it .html or .pdf, or give --format")


def text_lines(sheet: CheatSheet) -> list[str]:
    """The sheet as plain lines, for the text till's `guide` command."""
    out = [f"{sheet.store_name}: when the internet is down", ""]
    out.append("Payments that work offline:")
    for p in sheet.payments:
        out += textwrap.wrap(f"  {p.name} [{p.works}]: {p.how}")
    for sec in sheet.sections:
        out += ["", f"{sec.title}:"]
        for line in sec.lines:
            out += textwrap.wrap(f"  - {line}")
    out += ["", "Who to call:"]
    out += [
        f"  {c.role or 'Contact'}: {c.name} {c.phone} {c.hours}".rstrip() for c in sheet.contacts
    ]
    if not sheet.contacts:
        out.append("  (none set: [store] contacts in meshpos.toml)")
    return out
