"""``manage.py audit_export [filters] [--output FILE]``: the filtered events as CSV (newest first)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit_middleware.errors import InvalidFilterError
from audit_middleware.export import CsvExport
from audit_middleware.query import parse_query

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
        export = CsvExport(DjangoStore(options["database"]), query)
        if options["output"]:
            with open(options["output"], "w", newline="", encoding="utf-8") as handle:
                for chunk in export:
                    handle.write(chunk)
        else:
            for chunk in export:
                self.stdout.write(chunk, ending="")
        self.stderr.write(f"exported {export.rows} event(s)")
