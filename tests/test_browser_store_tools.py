"""The new till screens in real headless Chromium against a real daemon: other stores' stock on the
stock screen, the Guide link (the offline cheat sheet), battery state and low battery in the
banner, and a till in training mode (the TRAINING watermark on every page). Screenshots go to
$MESHPOS_SCREENSHOTS (docs/screenshots when refreshing the docs), else tmp."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hq_helpers import free_port
from mesh_procs import Daemons, wait_serving

from bench.common import CHROMIUM, chromium, screenshot_dir
from meshpos.cli.app import main
from meshpos.node import membership
from meshpos.service.config import init_node, load_config
from meshpos.service.terminal import Terminal

sync_api = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed (see .ci/run)"),
]
CONTACTS = [
    {"role": "Store manager", "name": "Asha Rao", "phone": "+91 98450 00001", "hours": "10-21"},
    {"role": "IT helpdesk (HQ)", "name": "meshpos support", "phone": "1800 425 0000"},
]


def battery(root: Path, capacity: int, online: int) -> None:
    for name, files in (
        ("AC", {"type": "Mains", "online": online}),
        ("BAT0", {"type": "Battery", "capacity": capacity,
                  "status": "Charging" if online else "Discharging"}),
    ):  # fmt: skip
        (root / name).mkdir(parents=True, exist_ok=True)
        for key, value in files.items():
            (root / name / key).write_text(f"{value}\n")


def cli(d: Path, *args: str) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--dir", str(d), *args])
        raise SystemExit(0)
    assert done.value.code in (0, None)


@pytest.fixture(scope="module")
def till(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("tools")
    d = base / "T1"
    init_node(d, "BLR1", "T1")
    cli(d, "store", "init")
    cli(d, "catalog", "import", "--sample")
    power = base / "power_supply"
    battery(power, 64, online=0)
    cfg = load_config(d)
    web = free_port()
    for table, key, value in (
        ("mesh", "host", "127.0.0.1"), ("mesh", "discovery", False), ("web", "port", web),
        ("power", "sysfs", str(power)), ("power", "check_s", 1), ("printer", "kind", "none"),
        ("store", "name", "Kala Fashions"), ("store", "contacts", CONTACTS),
    ):  # fmt: skip
        membership.set_config(cfg, table, key, value)
    t = Terminal.open(d)
    try:  # what the relay would have pulled from HQ an hour ago
        now = t.now_ms()
        t.ledger.other_stores.replace(
            [{"store": "BLR2", "name": "Kala Fashions, Indiranagar", "version": 90,
              "as_of_ms": now - 3_600_000, "stock": {"TSH-NAV-M": 7, "TSH-NAV-L": 2}},
             {"store": "MYS1", "name": "Kala Fashions, Mysuru", "version": 40,
              "as_of_ms": now - 5_400_000, "stock": {"TSH-NAV-M": 0, "TSH-NAV-S": 3}}],
            now - 600_000,
        )  # fmt: skip
    finally:
        t.close()
    shots = screenshot_dir(base / "screenshots")
    with Daemons() as daemons, chromium(1280, 860) as context:
        yield {"dir": d, "url": f"http://127.0.0.1:{web}", "power": power, "shots": shots,
               "daemons": daemons, "page": context.new_page()}  # fmt: skip


def start(till: dict[str, Any]) -> Any:
    """(Re)start the till's daemon and open /till. The shared page leaves the last test's till
    first: its refresh would meet the restarted daemon's 401 and go to /signin mid-`goto`."""
    page = till["page"]
    page.goto("about:blank")
    daemons: Daemons = till["daemons"]
    daemons.start(till["dir"])
    wait_serving(till["url"], daemons)
    page.set_default_timeout(10_000)
    page.goto(till["url"] + "/till")
    if page.url.endswith("/signin"):
        page.click("#open-till")
        page.wait_for_url("**/till")
    return page


def test_stock_guide_and_power_on_the_web_till(till: dict[str, Any]):
    page = start(till)
    banner = page.locator("#banner")
    assert "On battery (64%): mains power is off" in banner.inner_text()
    page.goto(till["url"] + "/stock?q=TSH-NAV")
    row = page.locator('tr[data-sku="TSH-NAV-M"] td.elsewhere')
    assert row.inner_text() == "BLR2 7"  # MYS1 has none: not listed
    age = page.locator(".elsewhere-age").inner_text()
    assert "BLR2 60 min ago, MYS1 90 min ago (this till pulled it 10 min ago)" in age
    page.screenshot(path=str(till["shots"] / "stock-other-stores.png"), full_page=True)
    with page.expect_popup() as popup:
        page.click("a.guide")
    guide = popup.value
    guide.wait_for_load_state()
    assert "Kala Fashions: when the internet is down" in guide.inner_text("h1")
    assert "+91 98450 00001" in guide.inner_text("table.call")
    guide.set_viewport_size({"width": 820, "height": 1160})
    guide.screenshot(path=str(till["shots"] / "guide.png"), full_page=True)
    guide.close()
    battery(till["power"], 8, online=0)
    page.goto(till["url"] + "/till")
    page.wait_for_function(
        "document.querySelector('#banner').innerText.includes('Battery low (8%)')", timeout=15_000
    )
    assert "print queue flushed" in page.locator("#banner").inner_text()
    page.screenshot(path=str(till["shots"] / "power-low.png"))
    battery(till["power"], 9, online=1)


def test_training_mode_marks_every_page(till: dict[str, Any]):
    till["daemons"][till["dir"]].stop()
    cli(till["dir"], "training", "start")
    try:
        page = start(till)
        for path in ("/till", "/stock", "/manager"):
            page.goto(till["url"] + path)
            mark = page.locator(".training-mark")
            assert mark.is_visible() and "TRAINING" in mark.inner_text(), path
        page.goto(till["url"] + "/till")
        page.fill("#scan", "TSH-NAV-M")
        page.press("#scan", "Enter")
        page.wait_for_selector("text=TSH-NAV-M")
        page.screenshot(path=str(till["shots"] / "training-till.png"))
    finally:
        cli(till["dir"], "training", "stop")
