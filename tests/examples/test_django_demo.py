"""Smoke test of the Django demo, started the README's way (``run.py`` as a subprocess on a free port):
sign in, change things, and find the events in the Django admin view with the right actors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import EXAMPLES, Client, demo_server

pytest.importorskip("django")
pytest.importorskip("wrapt")

RUN = EXAMPLES / "django_demo" / "run.py"
TOKEN = "demo_secret_django_ci_9c1e"


def test_django_demo(tmp_path: Path) -> None:
    with demo_server(tmp_path, run=RUN, ready="/login/") as base:
        ada = Client(base, csrf_field="csrfmiddlewaretoken")
        status, text, _ = ada.request("/login/")
        assert status == 200 and "Sign in as Ada" in text
        status, text, url = ada.request("/login/", {"username": "ada"})
        assert status == 200 and url == base + "/" and "Acme Analytics" in text and "Audit Trail" in text
        assert ada.request("/warehouses/", {"name": "EU Redshift"})[0] == 200
        assert ada.request("/warehouses/1/disable", {})[0] == 200
        assert ada.request("/warehouses/1/run", {})[0] == 200
        assert ada.request("/sources/1/rename", {"name": "acme.com (new)"})[0] == 200
        status, text, _ = ada.request("/api/warehouses/1/enable", headers={"Authorization": f"Bearer {TOKEN}"},
                                      body=b"")
        assert status == 200 and json.loads(text) == {"id": 1, "enabled": True}
        assert ada.request("/api/warehouses/1/enable", body=b"")[0] == 401  # the session is no API credential

        status, text, _ = ada.request("/admin/audit-trail/")
        assert status == 200 and "Warehouses Disabled" in text
        events = json.loads(ada.request("/admin/audit-trail/events.json")[1])["events"]
        seen = [(e["event"], e["actor"]["type"], e["actor"]["name"], e["workspace_id"]) for e in events]
        assert seen == [
            ("Warehouses Enabled", "token", "ci-deploy (...9c1e)", "ws_acme"),
            ("Source Modified", "user", "ada@acme.example", "ws_acme"),
            ("Warehouse Run Failed", "system", "warehouse-scheduler", "ws_acme"),
            ("Warehouses Disabled", "user", "ada@acme.example", "ws_acme"),
            ("Warehouses Created", "user", "ada@acme.example", "ws_acme"),
        ]
        assert events[3]["changes"] == {"enabled": [True, False]}

        grace = Client(base, csrf_field="csrfmiddlewaretoken")
        grace.request("/login/")
        grace.request("/login/", {"username": "grace"})
        assert grace.request("/admin/audit-trail/")[0] == 403
        hank = Client(base, csrf_field="csrfmiddlewaretoken")
        hank.request("/login/")
        hank.request("/login/", {"username": "hank"})
        assert json.loads(hank.request("/admin/audit-trail/events.json")[1])["events"] == []
