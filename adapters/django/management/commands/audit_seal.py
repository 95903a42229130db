"""``manage.py audit_seal [--seal-delay SECONDS]``: write sealed digests (run it from cron every few minutes)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ...integrity import DjangoIntegrity


class Command(BaseCommand):
    help = "Seal the audit events older than --seal-delay into each workspace's digest chain."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seal-delay", type=float, default=300.0, metavar="SECONDS")
        parser.add_argument("--database", default=None, help="database alias holding the audit tables")

    def handle(self, *args: Any, **options: Any) -> None:
        written = DjangoIntegrity(options["database"]).seal(delay=timedelta(seconds=options["seal_delay"]))
        self.stdout.write(f"wrote {written} digest(s)")
