"""The demo in a real browser (headless Debian Chromium driven by Playwright): sign in, turn forwarding On,
disable a warehouse, and take the README's screenshots of the admin view, the Forwarding page, the local
Slack-style receiver and the workspace overview.

Screenshots go to ``$AUDIT_SCREENSHOT_DIR`` when set (the README's are made with
``AUDIT_SCREENSHOT_DIR=docs/screenshots``), else to a temporary directory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import demo_server

pytest.importorskip("flask")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"


def test_screenshots(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    out = Path(os.environ.get("AUDIT_SCREENSHOT_DIR") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    with demo_server(tmp_path, "--simulate") as base, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 960})
            page.goto(base + "/login")
            page.get_by_role("button", name="Sign in as Ada").click()
            page.wait_for_url(base + "/")

            # Forwarding: both destinations On (the checkbox and Save Changes, as an owner would)
            page.goto(base + "/admin/audit-trail/forwarding")
            for name in ("segment", "slack"):
                row = page.locator(f"#fw-{name}")
                row.get_by_label("On").check()
                row.get_by_role("button", name="Save Changes").click()
                assert f"forwarding to {name} is On" in page.locator("#fw-message").inner_text()

            # Someone disables the production warehouse
            page.goto(base + "/warehouses/1")
            page.get_by_role("button", name="Disable").click()
            assert "disabled" in page.locator(".flash").inner_text()

            # The trail, filtered to the Warehouses category, then unfiltered for the screenshot
            page.goto(base + "/admin/audit-trail/?category=Warehouses")
            first = page.locator("table tbody tr").first
            assert "Warehouses Disabled" in first.inner_text() and "ada@acme.example" in first.inner_text()
            page.goto(base + "/admin/audit-trail/")
            assert page.locator("table tbody tr").count() >= 20
            shot(page, out / "admin-audit-trail.png")

            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                page.goto(base + "/receiver/slack")
                if "Warehouses Disabled" in page.locator("#messages").inner_text():
                    break
                time.sleep(0.5)
            assert "Production BigQuery" in page.locator("#messages").inner_text()
            shot(page, out / "receiver-slack.png")

            page.goto(base + "/admin/audit-trail/forwarding")
            assert page.locator("#fw-segment").get_by_label("On").is_checked()
            deadline = time.monotonic() + 20
            while "never" in page.locator("#fw-segment").inner_text() and time.monotonic() < deadline:
                time.sleep(0.5)
                page.reload()
            shot(page, out / "admin-forwarding.png")

            page.goto(base + "/")
            shot(page, out / "demo-overview.png")
        finally:
            browser.close()
    for name in ("admin-audit-trail", "admin-forwarding", "receiver-slack", "demo-overview"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name


def shot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path))
