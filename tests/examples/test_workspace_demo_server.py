"""The README's one command, for real: ``run.py`` as a subprocess on a free port (SQLite file created, seeded,
90 days simulated), then its pages over HTTP, the admin view on the simulated history, the API with the
access token, and forwarding to the built-in receiver through the in-process relay."""

from __future__ import annotations

import base64
import csv
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from audit_middleware import cli

from .conftest import Client, demo_server

pytest.importorskip("flask")
pytest.importorskip("flask_sqlalchemy")

TOKEN = "demo_secret_ci_deploy_7f3a"


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("demo")
    with demo_server(tmp, "--simulate") as base:
        yield base
    # 90 backdated days and a live session later, the trail still verifies (row hashes, sealed digests)
    assert cli.main(["verify", "--database-url", f"sqlite:///{tmp / 'demo.sqlite3'}", "--seal-delay", "0"]) == 0


def test_one_command_serves_the_demo(server: str) -> None:
    ada = Client(server)
    status, text, _ = ada.request("/login")
    assert status == 200 and "Sign in as Ada" in text and "Sign in to Globex Retail with SSO" in text
    status, text, url = ada.request("/login", {"email": "ada@acme.example"})
    assert status == 200 and url == server + "/" and "Acme Analytics" in text and "Latest audit events" in text
    for path, marker in [("/sources", "acme.com website"), ("/warehouses", "Production BigQuery"),
                         ("/tracking-plans/1", "Planned events"), ("/settings/team", "Pending invites"),
                         ("/receiver/segment", "Debugger"), ("/receiver/slack", "#audit-alerts"),
                         ("/admin/audit-trail/forwarding", "Save Changes")]:
        status, text, _ = ada.request(path)
        assert status == 200 and marker in text, path

    # 90 simulated days: the admin view pages through them, filtered, and exports them
    status, text, _ = ada.request("/admin/audit-trail/")
    assert status == 200 and "Warehouses Disabled" in text
    status, text, _ = ada.request("/admin/audit-trail/events.json?limit=500")
    events = json.loads(text)["events"]
    assert len(events) == 500 and json.loads(text)["next_cursor"]
    assert {e["workspace_id"] for e in events} == {"ws_acme"}
    assert {e["actor"]["type"] for e in events} >= {"user", "token", "system"}
    oldest = min(e["occurred_at"] for e in events)
    status, text, _ = ada.request("/admin/audit-trail/events.json?actor_type=token&limit=5")
    assert {e["actor"]["name"] for e in json.loads(text)["events"]} == {"ci-deploy (...7f3a)"}
    status, text, _ = ada.request("/admin/audit-trail/export.csv?since=2000-01-01")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) > 500 and min(r["occurred_at"] for r in rows) < oldest
    assert min(r["occurred_at"] for r in rows)[:10] <= time.strftime("%Y-%m-%d", time.gmtime(time.time() - 80 * 86400))

    # a member is refused the trail
    grace = Client(server)
    grace.request("/login")
    grace.request("/login", {"email": "grace@acme.example"})
    assert grace.request("/admin/audit-trail/")[0] == 403

    # forwarding: turn both destinations On, disable a warehouse with the API token, watch the receiver
    for destination in ("segment", "slack"):
        status, text, _ = ada.request("/admin/audit-trail/forwarding",
                                      {"action": "save", "destination": destination, "enabled": "on"})
        assert status == 200 and f"forwarding to {destination} is On" in text
    api = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, text, _ = ada.request("/api/v1/warehouses/1/disable", headers=api, body=b"{}")
    assert status == 200 and json.loads(text)["item"]["enabled"] is False
    deadline = time.monotonic() + 30
    segment: list[dict[str, Any]] = []
    slack: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        segment = json.loads(ada.request("/receiver/segment?format=json")[1])["messages"]
        slack = json.loads(ada.request("/receiver/slack?format=json")[1])["messages"]
        if any(m["event"] == "Warehouses Disabled" for m in segment) and slack:
            break
        time.sleep(0.3)
    track = next(m for m in segment if m["event"] == "Warehouses Disabled")
    assert track["userId"] == "tok_ci_deploy" and track["properties"]["actor_name"] == "ci-deploy (...7f3a)"
    assert track["properties"]["changes"] == {"enabled": [True, False]}
    assert any("Warehouses Disabled" in m["text"] for m in slack), slack
    status, text, _ = ada.request("/receiver/slack")
    assert "Production BigQuery" in text

    # ... and the owner reverts it from the trail: the warehouse is enabled again, by her, pointing back
    disabled = json.loads(ada.request("/admin/audit-trail/events.json?event=Warehouses+Disabled&limit=1")[1])
    event_id = disabled["events"][0]["id"]
    status, text, url = ada.request(f"/admin/audit-trail/events/{event_id}/revert", {})
    assert status == 200 and f"reverted={event_id}" in url
    status, text, _ = ada.request("/api/v1/warehouses/1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert json.loads(text)["item"]["enabled"] is True
    newest = json.loads(ada.request("/admin/audit-trail/events.json?limit=1")[1])["events"][0]
    assert (newest["event"], newest["actor"]["name"], newest["context"]["reverted_event_id"]) == (
        "Warehouses Enabled", "ada@acme.example", event_id)

    # the ingestion API answers with the source's write key only
    key = base64.b64encode(b"wk_acme_web:").decode()
    status, text, _ = ada.request("/v1/track", headers={"Authorization": f"Basic {key}",
                                                        "Content-Type": "application/json"},
                                  body=json.dumps({"event": "Order Completed"}).encode())
    assert status == 200 and json.loads(text)["success"] is True
