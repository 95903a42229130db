"""``manage.py audit_verify [--no-seal] [--seal-delay SECONDS] [--all]``: check the trail for tampering."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...integrity import DjangoIntegrity


class Command(BaseCommand):
    help = ("Report the first audit event that was changed, deleted from the middle or inserted out of band "
            "(exit status 1), or confirm that the trail is intact. Seals what is old enough first.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-seal", action="store_true", help="only read: do not seal before verifying")
        parser.add_argument("--seal-delay", type=float, default=300.0, metavar="SECONDS",
                            help="seal only events older than this (longer than any write transaction)")
        parser.add_argument("--all", action="store_true", help="list every problem, not only the first")
        parser.add_argument("--database", default=None, help="database alias holding the audit tables")
        parser.add_argument("--heads", metavar="FILE",
                            help="JSON file of each chain's newest digest: checked when it exists, then updated; "
                                 "keep it outside the database")

    def handle(self, *args: Any, **options: Any) -> None:
        integrity = DjangoIntegrity(options["database"])
        heads = options["heads"]
        expected = None
        if heads and os.path.exists(heads):
            with open(heads, encoding="utf-8") as handle:
                expected = json.load(handle)
        report = integrity.verify(seal_first=not options["no_seal"],
                                  delay=timedelta(seconds=options["seal_delay"]), expected_heads=expected)
        if heads and report.ok:
            with open(heads, "w", encoding="utf-8") as handle:
                json.dump(report.heads, handle, indent=1, sort_keys=True)
        if options["all"]:
            for problem in sorted(report.problems,
                                  key=lambda p: (p.occurred_at or datetime.min, p.event_id or "")):
                self.stdout.write(str(problem))
        if not report.ok:
            raise CommandError(report.summary(), returncode=1)
        self.stdout.write(report.summary())
