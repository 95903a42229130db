"""Start the Django demo: ``python examples/django_demo/run.py [--port 8001] [--db FILE] [--reset]``.

Migrates the SQLite file (``examples/django_demo/demo.sqlite3`` unless ``--db``), seeds two workspaces with
an owner and a member each and one access token, and serves the app with the audit trail at
``/admin/audit-trail/``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKEN_SECRET = "demo_secret_django_ci_9c1e"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The audit-middleware Django demo (SQLite).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--db", default=str(HERE / "demo.sqlite3"))
    parser.add_argument("--reset", action="store_true", help="delete the database file first")
    args = parser.parse_args(argv)
    path = Path(args.db).resolve()
    if args.reset and path.exists():
        path.unlink()
    sys.path.insert(0, str(HERE))
    os.environ["DJANGO_SETTINGS_MODULE"] = "demo_site.settings"
    os.environ["DJANGO_DEMO_DB"] = str(path)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    seed()
    base = f"http://{args.host}:{args.port}"
    print(f"Django demo on {base}/login/  (audit trail: {base}/admin/audit-trail/)")
    print(f"  API: curl -X POST -H 'Authorization: Bearer {TOKEN_SECRET}' {base}/api/warehouses/1/disable")
    call_command("runserver", f"{args.host}:{args.port}", use_reloader=False)
    return 0


def seed() -> None:
    from demo_site.models import AccessToken, Membership, Source, Warehouse, Workspace
    from django.contrib.auth import get_user_model

    from audit_middleware import suspend_auditing

    if Workspace.objects.exists():
        return
    User = get_user_model()  # noqa: N806
    with suspend_auditing():
        for ws_id, name, people in (
            ("ws_acme", "Acme Analytics", [("ada", "Ada", "owner"), ("grace", "Grace", "member")]),
            ("ws_globex", "Globex Retail", [("hank", "Hank", "owner"), ("marge", "Marge", "member")]),
        ):
            ws = Workspace.objects.create(id=ws_id, name=name)
            domain = ws_id.removeprefix("ws_")
            for username, first, role in people:
                user = User.objects.create(username=username, first_name=first, email=f"{username}@{domain}.example")
                user.set_unusable_password()
                user.save()
                Membership.objects.create(workspace=ws, user=user, role=role)
            Source.objects.create(workspace=ws, name=f"{domain}.com website")
            Warehouse.objects.create(workspace=ws, name="Production BigQuery", password="bq-secret")
        AccessToken.objects.create(id="tok_django_ci", workspace_id="ws_acme", label="ci-deploy",
                                   secret_sha256=hashlib.sha256(TOKEN_SECRET.encode()).hexdigest())


if __name__ == "__main__":
    sys.exit(main())
