"""The apps ``benchmarks/http_load.py`` serves with gunicorn: a Flask app and a Django site, each with and
without audit-middleware (``HTTP_BENCH_AUDITED``), on the database in ``HTTP_BENCH_DATABASE``.

Both have the same two routes: ``GET /hello`` (changes nothing, touches neither the user nor the database)
and ``POST /warehouses/<id>`` (``login_required``; loads one Warehouse, changes ``schedule`` and
``settings``, commits in one transaction). A signed-in user's session cookie comes from ``setup()``.

``admin_flask`` and ``admin_django`` (with ``django_workspaces``) are ``benchmarks/admin_pages.py``'s: the
admin views on ``benchmarks/read_side.py``'s events database, opened by each workspace's owner.
"""

from __future__ import annotations

import json
import os
from typing import Any

ROWS = 100  # warehouses seeded; the write route's ids go round-robin over them
USER_EMAIL = "ada@example.com"
# Django's CSRF check on the write route: the cookie and the header carry this (unmasked) secret.
CSRF_SECRET = "benchCsrfSecret0123456789abcdefX"
WAREHOUSE_AUDIT = {"resource": "Warehouse", "exclude": ["updated_at"], "toggle": "enabled", "label": "name"}


def database() -> dict[str, Any]:
    """``{"backend": "sqlite", "name": path}`` or ``{"backend": "postgresql", "name", "host", "port",
    "user"}``, from the environment."""
    return dict(json.loads(os.environ["HTTP_BENCH_DATABASE"]))


def audited() -> bool:
    return os.environ.get("HTTP_BENCH_AUDITED") == "1"


def seed_rows() -> list[dict[str, Any]]:
    return [{"name": f"Warehouse {i}", "slug": f"warehouse-{i}", "enabled": True, "schedule": "@hourly",
             "settings": {"retries": 3, "batch_size": 1000}, "owner_id": 1} for i in range(1, ROWS + 1)]
