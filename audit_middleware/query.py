"""Event filters, their validation from query strings, and keyset cursors.

Every store answers an :class:`EventQuery` newest first, by ``(occurred_at, id)`` descending, in pages of
1 to 500 rows; the next page starts after an opaque cursor (never OFFSET).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from .actors import ACTOR_TYPES
from .commit_pipeline import is_psycopg3
from .errors import InvalidFilterError
from .events import AuditEvent, utc_iso, utc_naive

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_FILTER_VALUES = 50
MAX_TEXT = 200

QUERY_PARAMETERS: tuple[str, ...] = (
    "event", "category", "actor", "actor_type", "resource_type", "resource_id", "since", "until",
    "limit", "cursor",
)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ends: the last row's ``occurred_at`` (naive UTC) and ``id``."""

    occurred_at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps([utc_iso(self.occurred_at), self.id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            padded = text + "=" * (-len(text) % 4)
            when, event_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
            # Only what this server issues: an id the databases can compare (no NUL, no lone surrogate) and
            # a time in the range every backend stores (year 1 with an offset would overflow converting).
            if (not isinstance(when, str) or not isinstance(event_id, str) or len(event_id) > 64
                    or not event_id.isprintable()):
                raise ValueError
            event_id.encode("utf-8")
            moment = utc_naive(datetime.fromisoformat(when.replace("Z", "+00:00")))
            if not 1970 <= moment.year <= 9998:
                raise ValueError
        except (ValueError, TypeError, OverflowError, RecursionError, binascii.Error, UnicodeError):
            raise InvalidFilterError("cursor", "not a cursor this server issued; start again from the first page") from None
        return cls(moment, event_id)

    @classmethod
    def after(cls, event: AuditEvent) -> Cursor:
        return cls(utc_naive(event.occurred_at), event.id)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters over events; every field left empty matches everything.

    ``actor`` matches an actor id or name exactly; ``since`` is inclusive and ``until`` exclusive.
    ``workspace_id`` set to a value restricts to that workspace (the admin view always sets it from the
    viewer, never from the query string).
    """

    events: tuple[str, ...] = ()
    category: str | None = None
    actor: str | None = None
    actor_type: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    workspace_id: str | None = None
    limit: int = DEFAULT_LIMIT
    cursor: Cursor | None = None
    _workspace_set: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidFilterError("limit", f"must be between 1 and {MAX_LIMIT}, got {self.limit}")
        if self.actor_type is not None and self.actor_type not in ACTOR_TYPES:
            raise InvalidFilterError("actor_type", f"must be one of {', '.join(ACTOR_TYPES)}")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidFilterError("until", "must be later than since")

    def for_workspace(self, workspace_id: str | None) -> EventQuery:
        """The same filters restricted to ``workspace_id`` (None: events without a workspace)."""
        return replace(self, workspace_id=workspace_id, _workspace_set=True)

    @property
    def workspace_filtered(self) -> bool:
        return self._workspace_set or self.workspace_id is not None

    def with_cursor(self, cursor: Cursor | None) -> EventQuery:
        return replace(self, cursor=cursor)

    def matches(self, event: AuditEvent) -> bool:
        """Whether ``event`` passes these filters (used by the in-memory store and by tests)."""
        if self.events and event.event not in self.events:
            return False
        if self.category is not None and event.category != self.category:
            return False
        if self.actor is not None and self.actor not in (event.actor.id, event.actor.name):
            return False
        if self.actor_type is not None and event.actor.type != self.actor_type:
            return False
        if self.resource_type is not None and event.resource_type != self.resource_type:
            return False
        if self.resource_id is not None and event.resource_id != self.resource_id:
            return False
        when = utc_naive(event.occurred_at)
        if self.since is not None and when < self.since:
            return False
        if self.until is not None and when >= self.until:
            return False
        if self.workspace_filtered and event.workspace_id != self.workspace_id:
            return False
        if self.cursor is not None and (when, event.id) >= (self.cursor.occurred_at, self.cursor.id):
            return False
        return True

    def to_params(self) -> list[tuple[str, str]]:
        """Query-string pairs that reproduce these filters (without cursor and workspace)."""
        pairs: list[tuple[str, str]] = [("event", name) for name in self.events]
        for key in ("category", "actor", "actor_type", "resource_type", "resource_id"):
            value = getattr(self, key)
            if value is not None:
                pairs.append((key, value))
        if self.since is not None:
            pairs.append(("since", utc_iso(self.since)))
        if self.until is not None:
            pairs.append(("until", utc_iso(self.until)))
        if self.limit != DEFAULT_LIMIT:
            pairs.append(("limit", str(self.limit)))
        return pairs


@dataclass(frozen=True, slots=True)
class Page:
    """One page of events, newest first, and the cursor of the next (older) page if there is one."""

    events: list[AuditEvent]
    next_cursor: str | None


def parse_timestamp(parameter: str, text: str, *, end_of_day: bool = False) -> datetime:
    """An ISO 8601 date or datetime as naive UTC; a bare date means its start (or, for ``until``, the next
    day's start, so ``until=2026-11-25`` includes that whole day)."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if not 1970 <= day.year <= 9998:
                raise InvalidFilterError(parameter, "must be a year between 1970 and 9998")
            moment = datetime.combine(day, time.min)
            return moment + timedelta(days=1) if end_of_day else moment
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise InvalidFilterError(
            parameter, f"{text[:40]!r} is not an ISO 8601 date or datetime (e.g. 2026-11-25 or 2026-11-25T19:07:41Z)"
        ) from None
    if not 1970 <= moment.year <= 9998:
        raise InvalidFilterError(parameter, "must be a year between 1970 and 9998")
    return utc_naive(moment)


def _single(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = [v for v in params.get(name, ()) if v != ""]
    if not values:
        return None
    if len(values) > 1:
        raise InvalidFilterError(name, "give it at most once")
    value = values[0]
    if len(value) > MAX_TEXT:
        raise InvalidFilterError(name, f"longer than {MAX_TEXT} characters")
    if "\x00" in value:
        raise InvalidFilterError(name, "contains a NUL character")
    return value


def parse_query(
    params: Mapping[str, Sequence[str]],
    *,
    known_events: Callable[[str], bool] | None = None,
    default_limit: int = DEFAULT_LIMIT,
) -> EventQuery:
    """Build an :class:`EventQuery` from query-string values (each key mapped to its list of values).

    Raises :class:`InvalidFilterError` naming the parameter for anything wrong. ``workspace`` is never taken
    from here: the caller scopes the query to the viewer's workspace.
    """
    events: list[str] = []
    for value in params.get("event", ()):
        if value == "":
            continue
        if len(value) > MAX_TEXT or "\x00" in value:
            raise InvalidFilterError("event", "not an event name")
        if known_events is not None and not known_events(value):
            raise InvalidFilterError("event", f"{value[:60]!r} is not an event in the catalog")
        events.append(value)
    if len(events) > MAX_FILTER_VALUES:
        raise InvalidFilterError("event", f"at most {MAX_FILTER_VALUES} event names at once")
    limit_text = _single(params, "limit")
    limit = default_limit
    if limit_text is not None:
        try:
            limit = int(limit_text)
        except ValueError:
            raise InvalidFilterError("limit", f"must be a whole number from 1 to {MAX_LIMIT}") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidFilterError("limit", f"must be between 1 and {MAX_LIMIT}, got {limit}")
    actor_type = _single(params, "actor_type")
    if actor_type is not None and actor_type not in ACTOR_TYPES:
        raise InvalidFilterError("actor_type", f"must be one of {', '.join(ACTOR_TYPES)}")
    since_text = _single(params, "since")
    until_text = _single(params, "until")
    since = parse_timestamp("since", since_text) if since_text else None
    until = parse_timestamp("until", until_text, end_of_day=True) if until_text else None
    if since is not None and until is not None and since >= until:
        raise InvalidFilterError("until", "must be later than since")
    cursor_text = _single(params, "cursor")
    return EventQuery(
        events=tuple(dict.fromkeys(events)),
        category=_single(params, "category"),
        actor=_single(params, "actor"),
        actor_type=actor_type,
        resource_type=_single(params, "resource_type"),
        resource_id=_single(params, "resource_id"),
        since=since,
        until=until,
        limit=limit,
        cursor=Cursor.decode(cursor_text) if cursor_text else None,
    )


def params_from_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Group ``(key, value)`` pairs into the mapping :func:`parse_query` takes."""
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped


ACTOR_MATCHES: tuple[str, str] = ("id", "name")
"""The actor filter matches an actor's id or name: stores run one ordered query per match (each an index
range scan in time order, where an OR of the two would read and sort every row of the actor), merged newest
first in the same statement (UNION ALL); the ``name`` query leaves out rows the ``id`` query has."""


def actor_matches_of(query: EventQuery) -> tuple[str | None, ...]:
    """The :data:`ACTOR_MATCHES` a store reads ``query`` in, one member each: both for an actor's page, else
    one (None)."""
    return ACTOR_MATCHES if query.actor is not None else (None,)


KEYED_MERGES: frozenset[str] = frozenset({"sqlite", "mysql", "mariadb"})
"""The databases (SQLAlchemy dialect or Django vendor names) that run each member of a merged page to its end
before merging (SQLite sorts each member's rows again, MariaDB gathers them in a temporary table): there a page
merged over several workspaces reads only each member's times and ids, from its index alone, and the page's rows
by id once the merge has chosen them, instead of every member's full rows (on SQLite an event's page over 20
workspaces, 1,020 rows for 51, took 5.1 ms, now 1.6). The two members of an actor's page in one workspace still
read their rows (reading them again by id cost 0.1 ms more there). PostgreSQL's Merge Append reads each member
only as far as the page needs."""


#: the filters that narrow a page beyond a time window (the workspace-first indexes answer actor, event and
#: resource; the time index, walked and checked row by row, answers them only when matches are common)
_NARROWING = ("events", "category", "actor", "actor_type", "resource_type", "resource_id")

MERGED_WORKSPACES = 32
"""The most workspaces a filtered page over every workspace is read workspace by workspace for (see
:func:`per_workspace`); on a trail of more, the page is read as one query (the time index walked)."""

HeldWorkspaces = Callable[[int], Sequence[str | None]]
"""A store's probe of what its trail's workspace column holds: ``listed(n)`` gives the workspaces in ascending
order, at most ``n + 1`` of them (one index seek each), then None if some event has none."""


def held_from_distinct(distinct: Sequence[str | None], at_most: int) -> list[str | None]:
    """``listed(at_most)`` (see :data:`HeldWorkspaces`) from the trail's first ``at_most + 2`` distinct workspaces
    in ascending order, NULL among them where the database sorts it: MariaDB reads those with one index seek each
    (a loose index scan, ``Using index for group-by``), where the recursive listing the other databases run
    scans the index again at each step (3 s for 20 workspaces at 1,000,000 events)."""
    return [w for w in distinct if w is not None][: at_most + 1] + ([None] if None in distinct else [])


def within_only_workspace(query: EventQuery, listed: HeldWorkspaces) -> EventQuery:
    """``query`` over every workspace, restricted to the one workspace the trail holds, when it holds one
    (an app without workspaces: every event has none). The events are the same; the query is answered by the
    indexes that start with the workspace (actor, event, resource, each in time order) instead of walking the
    time index or sorting every match: at 1,000,000 events on SQLite an actor's or a resource's first page took
    2 s without this, 1 ms with it. ``listed`` (the store's probe) is only called for a query over every
    workspace with a filter those indexes serve; a query for one workspace, one with only a time window, or a
    trail of several workspaces is given back as it is.

    An event of another workspace committed between the probe and the query is not in that page, as if the
    page had been read just before it: a page is never a snapshot across pages anyway."""
    return _read_as(query, listed, 1)[0] if _narrowing_over_every_workspace(query) else query


def per_workspace(query: EventQuery, listed: HeldWorkspaces) -> list[EventQuery]:
    """``query`` as the queries a store reads for it: restricted to the trail's only workspace as
    :func:`within_only_workspace` does, or, on a trail of two to :data:`MERGED_WORKSPACES` workspaces (the
    events without one counting as one), one query per workspace: each is answered by the filter's index,
    which starts with the workspace, in page order, and the store merges their pages into one, newest first.
    Without this a filtered page over every workspace walks the time index: at 1,000,000 events in 20
    workspaces on PostgreSQL an actor's or a resource's first page took 2 to 3 s. Otherwise (a query for one
    workspace, one without a filter those indexes serve, a trail of more workspaces) ``[query]``: it is read
    as it is. One probe (``listed``) either way."""
    if not _narrowing_over_every_workspace(query):
        return [query]
    return _read_as(query, listed, MERGED_WORKSPACES)


ACTOR_MATCHES_APART: frozenset[str] = frozenset({"sqlite"})
"""The databases whose count and export per workspace (:func:`per_workspace_for_rows`) read an actor's id and name
matches apart (:data:`ACTOR_MATCHES`), as pages do: SQLite orders a workspace's rows matched by the two together
by walking the workspace's time index (an actor's export over 20 workspaces took 2.1 s), where each match's
index gives them in order. The others match the two together (``actor_id = %s OR actor_name = %s``), which the
indexes of both answer without reading the rows the id's match already has."""


def actor_matches_for_rows(query: EventQuery, database: str) -> tuple[str | None, ...]:
    """The actor matches ``database`` (a SQLAlchemy dialect or Django vendor name) reads ``query``'s rows in for
    a count or an export per workspace: apart where :data:`ACTOR_MATCHES_APART` says so, else together (None)."""
    return actor_matches_of(query) if database in ACTOR_MATCHES_APART else (None,)


def per_workspace_for_rows(query: EventQuery, listed: HeldWorkspaces) -> list[EventQuery]:
    """The queries a count or an export (every matching row, not a page) reads for ``query``: an actor's or a
    resource's over a trail of several workspaces one per workspace (the events without one counting as one), as
    :func:`per_workspace` gives them, each through the filter's index, which leads with the workspace; over
    every workspace at once the filter has no index of its own to use. Any other query as
    :func:`within_only_workspace` gives it: an event's matches lie in every workspace, and one scan of them is
    faster than an index scan per workspace (on PostgreSQL at 1,000,000 events in 20 workspaces, 86 ms against
    733 for an event's count). One probe (``listed``) either way.

    At 1,000,000 events in 20 workspaces an actor + event count took 89 ms on PostgreSQL, 1.4 s on MariaDB and
    0.55 s on SQLite without planner statistics (an app's database that never ran ``ANALYZE``), 6, 40 and 22 ms
    this way; with statistics SQLite's skip-scan answered the one query a few ms faster (a resource's export 1.3
    against 5.5 ms, an actor + event export 26 against 58)."""
    members = per_workspace(query, listed)
    return members if len(members) == 1 or _in_few_workspaces(query) else [query]


def _narrowing_over_every_workspace(query: EventQuery) -> bool:
    return not query.workspace_filtered and any(getattr(query, name) for name in _NARROWING)


def _read_as(query: EventQuery, listed: HeldWorkspaces, at_most: int) -> list[EventQuery]:
    held = list(listed(at_most)) or [None]  # no event at all: none to find, read as without a workspace
    if len(held) <= at_most:  # the trail's only workspace ("none" included), or each of a few
        return [query.for_workspace(workspace) for workspace in held]
    return [query]


def without_workspace(query: EventQuery) -> bool:
    """Whether ``query`` asks for the events without a workspace (``workspace_id IS NULL``). Its page statement
    also orders by the workspace, a constant there: PostgreSQL takes ``IS NULL`` for an index condition but not
    for an equality, so without that key it does not see that the filter's index, led by the workspace, gives
    the rows in page order, and walks the time index instead (seconds for a rare actor at a million events)."""
    return query.workspace_filtered and query.workspace_id is None


def page_from_rows(rows: list[AuditEvent], limit: int) -> Page:
    """Turn ``limit + 1`` fetched rows into a page and its next cursor."""
    if len(rows) > limit:
        rows = rows[:limit]
        return Page(rows, Cursor.after(rows[-1]).encode())
    return Page(rows, None)


def to_json_page(page: Page) -> dict[str, Any]:
    return {"events": [e.to_json() for e in page.events], "next_cursor": page.next_cursor}


def page_parameters(query: EventQuery) -> dict[str, Any]:
    """The values of ``query``'s filters, by the names the stores' page statements give their parameters
    (``f_workspace``, ``f_event`` or ``f_events``, ``f_actor``, ..., ``f_at`` and ``f_last_id`` for the cursor):
    a statement built once per shape of query (:func:`page_shape`) is run with these values."""
    values: dict[str, Any] = {}
    if query.workspace_filtered and query.workspace_id is not None:
        values["f_workspace"] = query.workspace_id
    if query.events:
        if len(query.events) == 1:
            values["f_event"] = query.events[0]
        else:
            values["f_events"] = list(query.events)
    for name in ("category", "actor", "actor_type", "resource_type", "resource_id", "since", "until"):
        value = getattr(query, name)
        if value is not None:
            values[f"f_{name}"] = value
    if query.cursor is not None:
        values["f_at"], values["f_last_id"] = query.cursor.occurred_at, query.cursor.id
    return values


def member_parameters(members: Sequence[EventQuery]) -> dict[str, Any]:
    """:func:`page_parameters` of one query read as ``members`` (:func:`per_workspace`): their shared values,
    and each member's workspace as ``f_workspace_<i>`` (none for the member of the events without one)."""
    values = page_parameters(members[0])
    if len(members) > 1:
        values.pop("f_workspace", None)
        for i, member in enumerate(members):
            if member.workspace_id is not None:
                values[workspace_parameter(members, i)] = member.workspace_id
    return values


def workspace_parameter(members: Sequence[EventQuery], i: int) -> str:
    """The name of member ``i``'s workspace among :func:`member_parameters`."""
    return "f_workspace" if len(members) == 1 else f"f_workspace_{i}"


def read_laterally(members: Sequence[EventQuery], planned_each_time: bool = False) -> list[int]:
    """Which of a page's ``members`` (:func:`per_workspace`) a store with LATERAL (PostgreSQL) reads as one
    member joined laterally to the list of their workspaces: those with a workspace, when there are two or more
    and the page is an actor's or a resource's, whose rows lie in few workspaces, or any page when the driver
    has PostgreSQL plan each statement it sends (``planned_each_time``, see :func:`plans_each_statement`); else
    none. Planned once for every workspace (40 members, an actor's page over 20 workspaces, took 3 to 5 ms to
    plan) and cheaper to run than a merge of 40 index scans. An event's page stays merged where its statement
    is prepared: laterally it reads a page's times and ids in every workspace (see :func:`read_by_id`), where
    the merge reads only the page's rows (at 1,000,000 events in 20 workspaces 0.9 against 0.6 ms prepared;
    planned each time, 1.4 to 2.4 against 2.0 to 4.6 ms)."""
    named = [i for i, member in enumerate(members) if member.workspace_id is not None]
    return named if len(named) > 1 and (planned_each_time or _in_few_workspaces(members[0])) else []


def read_by_id(members: Sequence[EventQuery], database: str, lateral: Sequence[int]) -> bool:
    """Whether a page read as ``members`` on ``database`` (a SQLAlchemy dialect or Django vendor name), with the
    ``lateral`` ones of :func:`read_laterally`, reads only its members' times and ids, from their indexes, and
    then its rows by the ids chosen: a page merged over several workspaces where :data:`KEYED_MERGES` says so,
    and an event's page read laterally (each workspace's 51 newest times and ids from the event's index alone,
    then 51 rows, instead of 51 rows in every workspace: 1.4 to 2.4 against 2.0 to 3.1 ms over 20 workspaces).
    An actor's or a resource's lateral page reads its rows (reading them again by id cost 0.3 to 0.5 ms more)."""
    if len(members) < 2:
        return False
    return database in KEYED_MERGES or (bool(lateral) and not _in_few_workspaces(members[0]))


def plans_each_page(members: Sequence[EventQuery], database: str, driver_connection: Callable[[], Any]) -> bool:
    """Whether a page read as ``members`` (:func:`per_workspace`) on ``database`` (a SQLAlchemy dialect or Django
    vendor name) is planned at each run, as :func:`read_laterally` asks: only a PostgreSQL page over several members
    asks the driver (``driver_connection()``, see :func:`plans_each_statement`); one member reads as it is."""
    return database == "postgresql" and len(members) > 1 and plans_each_statement(driver_connection())


def plans_each_statement(driver_connection: Any) -> bool:
    """Whether PostgreSQL plans again each statement sent on ``driver_connection`` (a DB-API connection,
    duck-typed): psycopg 2 never prepares one, nor do psycopg 3's client-side-binding cursors (Django's default
    unless ``OPTIONS["server_side_binding"]``), nor a psycopg 3 connection whose ``prepare_threshold`` is None (as
    behind a pooler in transaction mode). Otherwise psycopg prepares a statement run ``prepare_threshold``
    times (5 by default) on the connection, and the server plans it no more."""
    if not is_psycopg3(driver_connection) or driver_connection.prepare_threshold is None:
        return True
    from psycopg import ClientCursor  # type: ignore[import-not-found,unused-ignore]

    return issubclass(driver_connection.cursor_factory, ClientCursor)


def _in_few_workspaces(query: EventQuery) -> bool:
    """An actor's or a resource's rows: they lie in few workspaces, where an event's lie in every one."""
    return query.actor is not None or query.resource_id is not None


#: the parameters holding a time (naive UTC)
TIME_PARAMETERS = frozenset({"f_since", "f_until", "f_at"})


def page_shape(query: EventQuery, parameters: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a page statement depends on besides its :func:`page_parameters` values: which filters are set,
    whether the workspace filter asks for events without one, how many events are listed, the page size."""
    return (query.workspace_filtered, tuple(parameters), len(query.events), query.limit)
