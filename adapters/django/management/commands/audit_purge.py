"""``manage.py audit_purge [--before DATE] [--yes]``: delete events older than the retention."""

from __future__ import annotations

from datetime import timezone
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit_middleware.errors import InvalidFilterError
from audit_middleware.query import parse_timestamp
from audit_middleware.store import retention_cutoff

from ...auditor import get_auditor
from ...store import DjangoStore


class Command(BaseCommand):
    help = "Delete audit events older than AUDIT_TRAIL['RETENTION_DAYS'] (90 days), or than --before."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--before", help="delete events before this ISO 8601 date or datetime instead")
        parser.add_argument("--retention-days", type=int, default=None)
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.add_argument("--noinput", "--no-input", action="store_false", dest="interactive",
                            help="never prompt: refuse unless --yes is given")
        parser.add_argument("--database", default=None, help="database alias holding the audit table")

    def handle(self, *args: Any, **options: Any) -> None:
        config = get_auditor().config
        if options["before"]:
            try:
                cutoff = parse_timestamp("before", options["before"])
            except InvalidFilterError as error:
                raise CommandError(f"--before: {error.message}") from None
        else:
            days = options["retention_days"] if options["retention_days"] is not None else config.retention_days
            if days < 1:
                raise CommandError("--retention-days must be at least 1")
            cutoff = retention_cutoff(days)
        batch_size = options["batch_size"] or config.purge_batch_size
        if not 1 <= batch_size <= 100_000:
            raise CommandError("--batch-size must be between 1 and 100000")
        if not options["yes"]:
            if not options["interactive"]:
                raise CommandError("refusing to purge without --yes")
            when = cutoff.replace(tzinfo=timezone.utc).isoformat()
            answer = input(f"Delete every audit event before {when}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                self.stderr.write("nothing deleted")
                return
        removed = DjangoStore(options["database"]).purge(cutoff, batch_size)
        self.stdout.write(f"purged {removed} event(s) before {cutoff.isoformat()}Z")
