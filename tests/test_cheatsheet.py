"""The offline cheat sheet: from this store's config (limits, UPI, contacts), as one page of HTML
or PDF, at the CLI, at the web till's Guide link (no sign-in) and in the text till."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import tomli_w

from meshpos.web.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

CONTACTS = [
    {"role": "Store manager", "name": "Asha Rao", "phone": "+91 98450 00001", "hours": "10-21"},
    {"role": "IT helpdesk", "name": "HQ IT", "phone": "1800 425 0000", "note": "say BLR1"},
]


def configure(node, **store: object) -> None:
    path = node.path / "meshpos.toml"
    doc = tomllib.loads(path.read_text())
    doc["store"].update(store)
    path.write_text(tomli_w.dumps(doc))


def pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?!s)", pdf))


def test_html_from_the_stores_config(node, tmp_path: Path):
    configure(node, name="Kala Fashions", upi_vpa="kala@okhdfc", contacts=CONTACTS)
    out = tmp_path / "sheet.html"
    assert "written to" in node.ok("cheatsheet", "--out", str(out)).out
    html = out.read_text()
    assert "Kala Fashions: when the internet is down" in html
    assert "+91 98450 00001" in html and "Asha Rao" in html and "say BLR1" in html
    assert "To kala@okhdfc, when the customer" in html
    assert "HQ has opened no offline card float" in html  # none minted at this store
    assert "Refunds above" in html and "discounts above 10%" in html
    assert "<code>meshpos sync now</code>" in html
    assert "No contacts set" not in html


def test_pdf_is_one_page_with_the_rupee_sign(node, tmp_path: Path):
    configure(node, contacts=CONTACTS)
    out = tmp_path / "sheet.pdf"
    node.ok("cheatsheet", "--out", str(out))
    data = out.read_bytes()
    assert data.startswith(b"%PDF-") and pages(data) == 1
    assert b"DejaVu" in data  # a font with the rupee sign is embedded


def test_no_contacts_is_said_on_the_sheet_and_at_the_cli(node, tmp_path: Path):
    r = node.ok("cheatsheet", "--out", str(tmp_path / "s.html"))
    assert "no contacts on it" in r.out
    assert "No contacts set" in (tmp_path / "s.html").read_text()
    assert (
        "UPI" in (tmp_path / "s.html").read_text()
        and "Not set up here ([store] upi_vpa)" in (tmp_path / "s.html").read_text()
    )


def test_bad_input_is_refused(node, tmp_path: Path):
    assert "name it .html or .pdf" in node.fail("cheatsheet", "--out", str(tmp_path / "s.txt"))
    configure(node, contacts=[{"name": "Asha"}])
    assert "entry 1 needs a name and a phone" in node.fail(
        "cheatsheet", "--out", str(tmp_path / "s.html")
    )
    configure(node, contacts=[{"name": "Asha", "phone": "1", "mobile": "2"}])
    assert "unknown key(s) mobile" in node.fail("cheatsheet", "--out", str(tmp_path / "s.html"))
    configure(node, contacts="Asha 98450")
    assert "must be a list" in node.fail("cheatsheet", "--out", str(tmp_path / "s.html"))
    assert not list(tmp_path.glob("s.*"))  # nothing written


def test_the_web_till_links_to_it_without_sign_in(node):
    configure(node, contacts=CONTACTS)
    with TestClient(create_app(node.path, live_interval=0.02), base_url="http://127.0.0.1") as c:
        r = c.get("/guide")
        assert r.status_code == 200 and "Asha Rao" in r.text
        assert c.post("/signin").status_code == 200
        assert 'href="/guide"' in c.get("/till").text


def test_the_text_till_shows_it(node):
    configure(node, contacts=CONTACTS)
    with contextlib.suppress(subprocess.TimeoutExpired):
        done = subprocess.run(
            [sys.executable, "-c", "from meshpos.cli.app import main; main()", "--dir",
             str(node.path), "till", "--no-print"],
            input="guide\nquit\n", capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        "Payments that work offline:" in done.stdout and "Asha Rao +91 98450 00001" in done.stdout
    )
