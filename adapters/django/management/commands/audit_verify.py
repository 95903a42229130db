"""``manage.py audit_verify [--no-seal] [--seal-delay SECONDS] [--all]``: check the trail for tampering."""

from __future__ import annotations

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

    def handle(self, *args: Any, **options: Any) -> None:
        integrity = DjangoIntegrity(options["database"])
        report = integrity.verify(seal_first=not options["no_seal"],
                                  delay=timedelta(seconds=options["seal_delay"]))
        if options["all"]:
            for problem in sorted(report.problems,
                                  key=lambda p: (p.occurred_at or datetime.min, p.event_id or "")):
                self.stdout.write(str(problem))
        if not report.ok:
            raise CommandError(report.summary(), returncode=1)
        self.stdout.write(report.summary())
