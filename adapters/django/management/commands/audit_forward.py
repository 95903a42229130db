"""``manage.py audit_forward [--once] [--batch N]``: a relay sending recorded events to
``AUDIT_TRAIL["DESTINATIONS"]``. Run as many as you like, on as many hosts."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit_middleware.forwarding.relay import DEFAULT_LEASE, Relay

from ...outbox import get_outbox


class Command(BaseCommand):
    help = "Send recorded audit events to the destinations in AUDIT_TRAIL['DESTINATIONS']."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="send what is due now, then exit")
        parser.add_argument("--batch", type=int, default=100, help="deliveries claimed at once (default 100)")
        parser.add_argument("--lease", type=float, default=DEFAULT_LEASE,
                            help=f"seconds before another relay may take over a claim (default {DEFAULT_LEASE:g})")
        parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls when idle")
        parser.add_argument("--database", default=None, help="database alias holding the audit tables")

    def handle(self, *args: Any, **options: Any) -> None:
        outbox = get_outbox(options["database"])
        if outbox is None:
            raise CommandError("no destination is configured: set AUDIT_TRAIL['DESTINATIONS'] in settings")
        if not 1 <= options["batch"] <= 10_000:
            raise CommandError("--batch must be between 1 and 10000")
        if options["lease"] < 5:
            raise CommandError("--lease must be at least 5 seconds")
        relay = Relay(outbox, outbox.forwarding, batch=options["batch"], lease=options["lease"],
                      poll=options["poll"])
        if options["once"]:
            relay.drain()
        else:
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            relay.run(stop)
        self.stdout.write(f"forwarded {relay.sent} delivery(ies); {relay.failed} failed attempt(s)")
