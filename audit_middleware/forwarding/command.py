"""``audit-middleware forward``: a relay process over the SQLAlchemy outbox.

Destinations come from configuration, never from the command line or the database: ``--config
myapp.audit:DESTINATIONS`` names a list of destinations (or a callable returning one) in an importable module.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from .relay import DEFAULT_LEASE, Relay, as_forwarding, load_object


def add_parser(sub: Any, with_db: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    forward = with_db(sub.add_parser("forward", help="send recorded events to the configured destinations"))
    forward.add_argument("--config", default=os.environ.get("AUDIT_FORWARD_CONFIG"),
                         help="module:attribute of the destinations list (default: $AUDIT_FORWARD_CONFIG)")
    forward.add_argument("--once", action="store_true", help="send what is due now, then exit")
    forward.add_argument("--batch", type=int, default=100, help="deliveries claimed at once (default 100)")
    forward.add_argument("--lease", type=float, default=DEFAULT_LEASE,
                         help=f"seconds before another relay may take over a claim (default {DEFAULT_LEASE:g})")
    forward.add_argument("--poll", type=float, default=1.0, help="seconds between polls when idle (default 1)")
    forward.add_argument("--quiet", action="store_true", help="log only errors")


def run(args: argparse.Namespace) -> int:
    if not args.database_url:
        raise SystemExit("audit-middleware forward: give --database-url URL (or set AUDIT_DATABASE_URL)")
    if not args.config:
        raise SystemExit("audit-middleware forward: give --config module:attribute naming your destinations "
                         "(e.g. --config myapp.audit:DESTINATIONS), or set AUDIT_FORWARD_CONFIG")
    if not 1 <= args.batch <= 10_000:
        raise SystemExit("audit-middleware forward: --batch must be between 1 and 10000")
    if args.lease < 5:
        raise SystemExit("audit-middleware forward: --lease must be at least 5 seconds")
    try:
        from sqlalchemy import create_engine  # type: ignore[import-not-found,unused-ignore]

        from audit_middleware.adapters.sqlalchemy import SQLAlchemyOutbox  # type: ignore[import-not-found,unused-ignore]
        from audit_middleware.adapters.sqlalchemy.schema import tables  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise SystemExit('audit-middleware forward needs SQLAlchemy: pip install "audit-middleware[sqlalchemy]"') from None
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        forwarding = as_forwarding(load_object(args.config))
    except (ImportError, ValueError, TypeError) as error:
        raise SystemExit(f"audit-middleware forward: --config {args.config}: {error}") from None
    if not forwarding:
        raise SystemExit(f"audit-middleware forward: --config {args.config} names no destination")
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    options: dict[str, Any] = {}
    if args.database_url.startswith("sqlite"):
        options["connect_args"] = {"timeout": 60}  # relays and the app take turns at SQLite's write lock
    engine = create_engine(args.database_url, **options)
    try:
        relay = Relay(SQLAlchemyOutbox(engine, forwarding, tables), forwarding,
                      batch=args.batch, lease=args.lease, poll=args.poll)
        if args.once:
            relay.drain()
        else:
            stop = threading.Event()

            def on_signal(signum: int, frame: Any) -> None:
                stop.set()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            relay.run(stop)
    finally:
        engine.dispose()
    print(f"forwarded {relay.sent} delivery(ies); {relay.failed} failed attempt(s)", file=sys.stderr)
    return 0
