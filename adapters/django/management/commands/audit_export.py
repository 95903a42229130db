"""``manage.py audit_export [filters] [--output FILE]``: the filtered events as CSV (newest first)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit_middleware.errors import InvalidFilterError
from audit_middleware.export import iter_csv
from audit_middleware.query import parse_query
from audit_middleware.store import iter_events

from ...store import DjangoStore

FILTERS = ("category", "actor", "actor_type", "resource_type", "resource_id", "since", "until")


class Command(BaseCommand):
    help = "Write audit events as CSV (DESIGN's columns, newest first), filtered like the admin view."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--event", action="append", default=[], help="event name (repeatable)")
        for name in FILTERS:
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name)
        parser.add_argument("--workspace", help="only this workspace's events")
        parser.add_argument("--output", "-o", help="file to write (default: standard output)")
        parser.add_argument("--database", default=None, help="database alias holding the audit table")

    def handle(self, *args: Any, **options: Any) -> None:
        params: dict[str, list[str]] = {"event": options["event"]}
        for name in FILTERS:
            if options[name] is not None:
                params[name] = [options[name]]
        try:
            query = parse_query(params)
        except InvalidFilterError as error:
            raise CommandError(f"--{error.parameter.replace('_', '-')}: {error.message}") from None
        if options["workspace"] is not None:
            query = query.for_workspace(options["workspace"])
        rows = iter_csv(iter_events(DjangoStore(options["database"]), query))
        count = -1
        if options["output"]:
            with open(options["output"], "w", newline="", encoding="utf-8") as handle:
                for chunk in rows:
                    handle.write(chunk)
                    count += 1
        else:
            for chunk in rows:
                self.stdout.write(chunk, ending="")
                count += 1
        self.stderr.write(f"exported {count} event(s)")
