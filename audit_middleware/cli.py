"""The ``audit-middleware`` console command: export, purge (and more subcommands as they arrive).

Every subcommand takes ``--database-url`` (or the ``AUDIT_DATABASE_URL`` environment variable), a SQLAlchemy
URL of the database holding the audit tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TextIO

from .errors import InvalidFilterError
from .export import CsvExport
from .forwarding import command as forward_command
from .query import parse_query
from .store import retention_cutoff

FILTER_OPTIONS = ("category", "actor", "actor_type", "resource_type", "resource_id", "since", "until", "workspace")


@contextmanager
def open_store(url: str | None, signer: Any = None) -> Iterator[Any]:
    """The SQLAlchemy store at ``url`` (signing with ``signer`` when given), disposed of afterwards."""
    if not url:
        raise SystemExit("audit-middleware: give --database-url URL (or set AUDIT_DATABASE_URL)")
    try:
        from audit_middleware.adapters.sqlalchemy import SQLAlchemyStore  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise SystemExit('audit-middleware: the command needs SQLAlchemy: pip install "audit-middleware[sqlalchemy]"') from None
    store = SQLAlchemyStore.from_url(url, signer=signer)
    try:
        yield store
    finally:
        store.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audit-middleware", description="Work with an audit trail's database.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_db(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--database-url", default=os.environ.get("AUDIT_DATABASE_URL"),
                       help="SQLAlchemy URL of the audit database (default: $AUDIT_DATABASE_URL)")
        return p

    export = with_db(sub.add_parser("export", help="write events as CSV (newest first)"))
    export.add_argument("--event", action="append", default=[], help="event name (repeatable)")
    for name in FILTER_OPTIONS:
        export.add_argument(f"--{name.replace('_', '-')}", dest=name)
    export.add_argument("--output", "-o", help="file to write (default: standard output)")

    purge = with_db(sub.add_parser("purge", help="delete events older than the retention"))
    purge.add_argument("--retention-days", type=int, default=90)
    purge.add_argument("--before", help="delete events before this ISO date instead")
    purge.add_argument("--batch-size", type=int, default=1000)
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    forward_command.add_parser(sub, with_db)

    integrity_parsers = {}
    for name, text in (("verify", "check that no event was changed, deleted or inserted out of band"),
                       ("seal", "write sealed digests of the events old enough (verify and purge do it too)")):
        p = integrity_parsers[name] = with_db(sub.add_parser(name, help=text))
        p.add_argument("--seal-delay", type=float, default=300.0, metavar="SECONDS",
                       help="seal only events older than this (longer than any write transaction; default 300)")
        p.add_argument("--signing-key-env", default="AUDIT_SIGNING_KEY", metavar="NAME",
                       help="environment variable holding the signing key (default AUDIT_SIGNING_KEY)")
    integrity_parsers["verify"].add_argument("--no-seal", action="store_true",
                                             help="only read: do not seal before verifying")
    integrity_parsers["verify"].add_argument("--all", action="store_true",
                                             help="list every problem, not only the first")
    integrity_parsers["verify"].add_argument(
        "--heads", metavar="FILE",
        help="JSON file of each chain's newest digest: checked when it exists, then updated; keep it outside "
             "the database (it catches chains truncated or rewritten from the end)")
    return parser


def _export(args: argparse.Namespace, out: TextIO) -> int:
    params: dict[str, list[str]] = {"event": args.event}
    for name in FILTER_OPTIONS:
        value = getattr(args, name)
        if value is not None and name != "workspace":
            params[name] = [value]
    try:
        query = parse_query(params)
    except InvalidFilterError as error:
        raise SystemExit(f"audit-middleware export: --{error.parameter.replace('_', '-')}: {error.message}") from None
    if args.workspace is not None:
        query = query.for_workspace(args.workspace)
    with open_store(args.database_url) as store:
        if args.output:
            with open(args.output, "w", newline="", encoding="utf-8") as handle:
                return _write(handle, store, query)
        return _write(out, store, query)


def _write(handle: TextIO, store: Any, query: Any) -> int:
    export = CsvExport(store, query)
    for chunk in export:
        handle.write(chunk)
    print(f"exported {export.rows} event(s)", file=sys.stderr)
    return 0


def _purge(args: argparse.Namespace) -> int:
    if args.before:
        from .query import parse_timestamp

        try:
            cutoff = parse_timestamp("before", args.before)
        except InvalidFilterError as error:
            raise SystemExit(f"audit-middleware purge: --before: {error.message}") from None
    else:
        if args.retention_days < 1:
            raise SystemExit("audit-middleware purge: --retention-days must be at least 1")
        cutoff = retention_cutoff(args.retention_days)
    if not 1 <= args.batch_size <= 100_000:
        raise SystemExit("audit-middleware purge: --batch-size must be between 1 and 100000")
    if not args.yes:
        answer = input(f"Delete every audit event before {cutoff.replace(tzinfo=timezone.utc).isoformat()}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return 1
    with open_store(args.database_url) as store:
        removed = store.purge(cutoff, args.batch_size)
    print(f"purged {removed} event(s) before {cutoff.isoformat()}Z", file=sys.stderr)
    return 0


def _integrity(args: argparse.Namespace) -> int:
    """``verify``: exit 0 and a summary when the trail is intact, else exit 1 naming the first problem."""
    from datetime import timedelta

    from .integrity import PREVIOUS_KEYS_ENV, Signer

    key = os.environ.get(args.signing_key_env) or None
    signer = Signer(key, os.environ.get(PREVIOUS_KEYS_ENV, "").split())  # earlier keys still verify
    with open_store(args.database_url, signer) as store:
        try:
            integrity = store.integrity()
        except RuntimeError as error:
            raise SystemExit(f"audit-middleware {args.command}: {error}") from None
        delay = timedelta(seconds=args.seal_delay)
        if args.command == "seal":
            print(f"wrote {integrity.seal(delay=delay)} digest(s)", file=sys.stderr)
            return 0
        expected = None
        if args.heads and os.path.exists(args.heads):
            with open(args.heads, encoding="utf-8") as handle:
                expected = json.load(handle)
        report = integrity.verify(seal_first=not args.no_seal, delay=delay, expected_heads=expected)
    if args.heads and report.ok:
        with open(args.heads, "w", encoding="utf-8") as handle:
            json.dump(report.heads, handle, indent=1, sort_keys=True)
    if args.all:
        for problem in sorted(report.problems, key=lambda p: (p.occurred_at or datetime.min, p.event_id or "")):
            print(problem)
    print(report.summary())
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "export":
        return _export(args, sys.stdout)
    if args.command == "purge":
        return _purge(args)
    if args.command in ("verify", "seal"):
        return _integrity(args)
    if args.command == "forward":
        return forward_command.run(args)
    raise SystemExit(f"unknown command {args.command}")  # pragma: no cover - argparse refuses first


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
