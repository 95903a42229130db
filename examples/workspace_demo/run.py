"""Start the demo workspace: ``python examples/workspace_demo/run.py [--port 8000] [--simulate] [--reset]``.

Creates the SQLite file (``examples/workspace_demo/demo.sqlite3`` unless ``--db``), seeds two workspaces,
optionally writes 90 days of simulated activity, and serves the app with the audit trail at
``/admin/audit-trail``. Forwarding goes to the built-in receiver (``/receiver/segment``, ``/receiver/slack``)
through an in-process relay; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # so that `workspace_demo` imports as a package from any directory

from workspace_demo.app import create_app  # noqa: E402
from workspace_demo.seed import DEMO_TOKEN_SECRET, PEOPLE, seed  # noqa: E402
from workspace_demo.simulate import simulate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The audit-middleware demo workspace (Flask + SQLite).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--db", default=str(HERE / "demo.sqlite3"), help="SQLite file (created if missing)")
    parser.add_argument("--reset", action="store_true", help="delete the database file first")
    parser.add_argument("--simulate", action="store_true", help="write --days of realistic activity first")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--no-forwarding", action="store_true", help="no destinations, no relay")
    parser.add_argument("--setup-only", action="store_true", help="create, seed (and simulate), then exit")
    args = parser.parse_args(argv)

    path = Path(args.db).resolve()
    if args.reset and path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    public_url = None if args.no_forwarding else f"http://{args.host}:{args.port}"
    app = create_app(f"sqlite:///{path}", public_url=public_url, forward_in_process=not args.setup_only,
                     secret_key=os.environ.get("DEMO_SECRET_KEY"))
    with app.app_context():
        fresh = seed()
        if fresh:
            print(f"Created and seeded {path}")
    if args.simulate and not fresh:
        # Backdated events written after the trail was sealed would be (rightly) reported as tampering by
        # `audit-middleware verify`: history is only simulated into a new database.
        print("--simulate skipped: this database has a history already (add --reset to start afresh)")
    elif args.simulate:
        count = simulate(app, days=args.days)
        print(f"Simulated {args.days} days of activity: {count} events")
    if args.setup_only:
        return 0
    base = f"http://{args.host}:{args.port}"
    print(f"\nWorkspace demo on {base}/login  (audit trail: {base}/admin/audit-trail/)")
    for _ws, (name, _slug, people) in PEOPLE.items():
        print(f"  {name}: " + ", ".join(f"{email} ({role})" for email, _n, role in people))
    print(f"  API token (Acme Analytics): curl -H 'Authorization: Bearer {DEMO_TOKEN_SECRET}' {base}/api/v1/sources")
    app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
