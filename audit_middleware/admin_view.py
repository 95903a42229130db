"""The admin view's logic, shared by the Flask blueprint and the Django views.

Everything but routing and rendering lives here, once: each adapter maps its request's query string to
:func:`parse_request`, calls :func:`build_page`, :func:`json_body` or :func:`csv_body`, and renders the result
in its own template language (escaping every value). The viewer's workspace is forced onto every query,
never read from the query string, and nothing older than the retention window is ever shown.

Paging is keyset only. "Older" follows the store's ``next_cursor``; since stores read newest first only, the
"newer" link walks back through the cursors of the pages already seen, carried in the ``newer`` parameter
(at most :data:`MAX_NEWER` of them; past that, "newer" leads to the newest page).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from .actors import ACTOR_TYPES
from .catalog import EventCatalog
from .diff import MASK
from .errors import InvalidFilterError
from .events import AuditEvent, utc_iso, utc_naive
from .export import export_csv, export_filename, iter_csv
from .query import DEFAULT_LIMIT, Cursor, EventQuery, Page, parse_query, to_json_page
from .store import EventStore, retention_cutoff
from .values import dumps

__all__ = [
    "MAX_EXPORT_ROWS",
    "SECURITY_HEADERS",
    "STYLESHEET",
    "AdminPage",
    "AdminRequest",
    "Change",
    "EventOption",
    "EventRow",
    "FilterForm",
    "Viewer",
    "build_page",
    "csv_body",
    "csv_filename",
    "error_body",
    "event_row",
    "json_body",
    "parse_request",
    "security_headers",
    "stylesheet_text",
]

STYLESHEET: Path = Path(__file__).resolve().parent / "static" / "admin.css"
"""The admin view's one stylesheet; adapters serve it as ``admin.css``."""

FILTER_KEYS: tuple[str, ...] = (
    "event", "category", "actor", "actor_type", "resource_type", "resource_id", "since", "until",
)
MAX_NEWER = 25
MAX_NEWER_TEXT = MAX_NEWER * 120  # 25 cursors of at most ~110 characters, dot-separated
MAX_EXPORT_ROWS = 100_000
"""At most this many events in one CSV download from the admin view (a 400 asks to narrow the filters
beyond it); the ``audit-middleware export`` command has no cap. Read at each export, so it can be changed."""

SECURITY_HEADERS: Mapping[str, str] = {
    # No script at all (the page has none), nothing framed, no MIME sniffing, no referrer leak off-site.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
"""The headers every admin response carries, in both adapters (see :func:`security_headers`)."""
MAX_SHOWN_VALUE = 300
GENERIC_ACTIONS = frozenset({"created", "modified", "deleted", "enabled", "disabled"})


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose trail is shown.

    ``scoped`` (the default) forces ``workspace_id`` onto every query, ``None`` meaning events recorded
    outside any workspace. An app without workspaces uses :meth:`unscoped`.
    """

    workspace_id: str | None = None
    scoped: bool = True

    @classmethod
    def unscoped(cls) -> Viewer:
        return cls(None, False)


@dataclass(frozen=True, slots=True)
class AdminRequest:
    """A validated admin request.

    ``query`` is what the store is asked (workspace forced, clamped to the retention window); ``pairs`` are
    the filters as the user gave them, reused verbatim in every link; ``newer`` the cursors of the pages
    seen before this one; ``empty`` is true when the asked range lies wholly outside the retention window.
    """

    query: EventQuery
    pairs: tuple[tuple[str, str], ...]
    newer: tuple[str, ...]
    cursor: str | None
    empty: bool
    retention_days: int
    retention_start: datetime
    now: datetime
    default_limit: int = DEFAULT_LIMIT

    @property
    def export_query(self) -> EventQuery:
        """The same filters without paging: every matching event, for the CSV."""
        return replace(self.query, cursor=None)


class _Fields:
    """A view object whose fields a template can also read as ``obj[name]``. Django's template engine tries
    ``obj[name]`` before ``getattr``; answering it spares the exception it otherwise raises and catches for
    every variable it renders (the events page renders about 12% faster). Jinja reads attributes first."""

    __slots__ = ()

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self, name)
        except (AttributeError, TypeError):  # no such field, or a name that is not text
            raise KeyError(name) from None


@dataclass(frozen=True, slots=True)
class Change(_Fields):
    """One changed field as shown: ``old``/``new`` are None when that side does not apply."""

    field: str
    old: str | None
    new: str | None
    masked: bool = False


@dataclass(frozen=True, slots=True)
class EventRow(_Fields):
    """One table row; every value is plain text for the template to escape."""

    id: str
    occurred_at: str
    date: str
    time: str
    event: str
    category: str
    action: str
    badge: str
    actor_type: str
    actor_name: str
    actor_id: str
    resource_type: str
    resource_id: str
    resource_name: str
    changes: tuple[Change, ...]
    details: tuple[tuple[str, str], ...]
    ip: str
    user_agent: str
    request_id: str


@dataclass(frozen=True, slots=True)
class EventOption(_Fields):
    name: str
    selected: bool


@dataclass(frozen=True, slots=True)
class FilterForm(_Fields):
    """The filter form's current values (raw, as given) and choices."""

    events: tuple[str, ...]
    category: str
    actor: str
    actor_type: str
    resource_type: str
    resource_id: str
    since: str
    until: str
    limit: str  # empty when it is the default page size
    event_groups: tuple[tuple[str, tuple[EventOption, ...]], ...]
    categories: tuple[str, ...]
    actor_types: tuple[str, ...]
    resource_types: tuple[str, ...]

    @property
    def multiple_events(self) -> bool:
        return len(self.events) > 1

    @property
    def since_is_date(self) -> bool:
        return self.since == "" or len(self.since) == 10

    @property
    def until_is_date(self) -> bool:
        return self.until == "" or len(self.until) == 10


@dataclass(frozen=True, slots=True)
class AdminPage(_Fields):
    """Everything the events page renders. Links are query strings (without ``?``) for the adapter to put
    after the URL of the right route; None means there is no such link."""

    rows: tuple[EventRow, ...]
    form: FilterForm
    filtered: bool
    older: str | None
    newer: str | None
    newest: str | None
    export_query: str
    json_query: str
    retention_days: int
    retention_start: str
    out_of_retention: bool


# -- parsing -------------------------------------------------------------------------------------------------


def _first(params: Mapping[str, Sequence[str]], key: str) -> str:
    values = [v for v in params.get(key, ()) if v != ""]
    return values[0] if values else ""


def _parse_newer(params: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    text = _first(params, "newer")
    if not text:
        return ()
    if len(text) > MAX_NEWER_TEXT:
        raise InvalidFilterError("newer", "not a page link this server issued; start again from the first page")
    parts = text.split(".")
    if len(parts) > MAX_NEWER:
        raise InvalidFilterError("newer", f"at most {MAX_NEWER} pages back")
    for part in parts:
        try:
            Cursor.decode(part)
        except InvalidFilterError:
            raise InvalidFilterError("newer", "not a page link this server issued; start again from the first page") from None
    return tuple(parts)


def parse_request(
    params: Mapping[str, Sequence[str]],
    *,
    catalog: EventCatalog,
    viewer: Viewer,
    retention_days: int,
    default_limit: int = DEFAULT_LIMIT,
    now: datetime | None = None,
) -> AdminRequest:
    """Validate a query string (each key mapped to its list of values) for the viewer.

    Raises :class:`~audit_middleware.errors.InvalidFilterError` naming the bad parameter. Any
    ``workspace``-like parameter is ignored: the workspace always comes from ``viewer``.
    """
    if retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, got {retention_days}")
    query = parse_query(params, known_events=catalog.__contains__, default_limit=default_limit)
    newer = _parse_newer(params)
    moment = now or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    cutoff = retention_cutoff(retention_days, moment)
    empty = query.until is not None and query.until <= cutoff
    if not empty and (query.since is None or query.since < cutoff):
        query = replace(query, since=cutoff)
    query = query.for_workspace(viewer.workspace_id) if viewer.scoped else replace(query, workspace_id=None)
    pairs = tuple((key, value) for key in FILTER_KEYS for value in params.get(key, ()) if value != "")
    cursor = _first(params, "cursor") or None
    return AdminRequest(query, pairs, newer, cursor, empty, retention_days, cutoff, moment, default_limit)


# -- display -------------------------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else dumps(value)
    if len(text) > MAX_SHOWN_VALUE:
        text = text[:MAX_SHOWN_VALUE] + "…"
    return text


def _changes(event: AuditEvent) -> tuple[Change, ...]:
    shown: list[Change] = []
    for field in sorted(event.changes):
        pair = event.changes[field]
        old, new = (pair[0], pair[1]) if isinstance(pair, list) and len(pair) == 2 else (None, pair)
        masked = old == MASK or new == MASK
        if event.action == "created":
            shown.append(Change(field, None, _shown(new), masked))
        elif event.action == "deleted":
            shown.append(Change(field, _shown(old), None, masked))
        else:
            shown.append(Change(field, _shown(old), _shown(new), masked))
    return tuple(shown)


def event_row(event: AuditEvent) -> EventRow:
    """The display row of one event."""
    when = utc_naive(event.occurred_at)
    actor = event.actor
    context = event.context
    return EventRow(
        id=event.id,
        occurred_at=utc_iso(event.occurred_at),
        date=when.strftime("%Y-%m-%d"),
        time=when.strftime("%H:%M:%S"),
        event=event.event,
        category=event.category,
        action=event.action,
        badge=event.action if event.action in GENERIC_ACTIONS else "other",
        actor_type=actor.type,
        actor_name=actor.name or actor.id or ("Anonymous" if actor.type == "anonymous" else ""),
        actor_id=actor.id or "",
        resource_type=event.resource_type or "",
        resource_id=event.resource_id or "",
        resource_name=event.resource_name or "",
        changes=_changes(event),
        details=tuple((str(k), _shown(v)) for k, v in sorted(event.details.items())),
        ip=str(context.get("ip") or ""),
        user_agent=str(context.get("user_agent") or ""),
        request_id=str(context.get("request_id") or ""),
    )


def _form(request: AdminRequest, catalog: EventCatalog, default_limit: int) -> FilterForm:
    params: dict[str, list[str]] = {}
    for key, value in request.pairs:
        params.setdefault(key, []).append(value)
    selected = set(request.query.events)
    groups = tuple(
        (category, tuple(EventOption(d.name, d.name in selected) for d in definitions))
        for category, definitions in catalog.grouped()
    )
    resources = sorted({d.resource for d in catalog if d.resource})
    limit = request.query.limit
    return FilterForm(
        events=request.query.events,
        category=_first(params, "category"),
        actor=_first(params, "actor"),
        actor_type=_first(params, "actor_type"),
        resource_type=_first(params, "resource_type"),
        resource_id=_first(params, "resource_id"),
        since=_first(params, "since"),
        until=_first(params, "until"),
        limit="" if limit == default_limit else str(limit),
        event_groups=groups,
        categories=tuple(catalog.categories()),
        actor_types=ACTOR_TYPES,
        resource_types=tuple(resources),
    )


def _link(pairs: Sequence[tuple[str, str]]) -> str:
    return urlencode(list(pairs))


def build_page(store: EventStore, catalog: EventCatalog, request: AdminRequest) -> AdminPage:
    """Run the request's query and build the events page."""
    page = Page([], None) if request.empty else store.query(request.query)
    base = list(request.pairs)
    default_limit = request.default_limit
    if request.query.limit != default_limit:
        base.append(("limit", str(request.query.limit)))
    older = None
    if page.next_cursor is not None:
        stack = request.newer + ((request.cursor,) if request.cursor else ())
        stack = stack[-MAX_NEWER:]
        pairs = [*base, ("cursor", page.next_cursor)]
        if stack:
            pairs.append(("newer", ".".join(stack)))
        older = _link(pairs)
    newer = newest = None
    if request.cursor:
        newest = _link(base)
        if request.newer:
            pairs = [*base, ("cursor", request.newer[-1])]
            if len(request.newer) > 1:
                pairs.append(("newer", ".".join(request.newer[:-1])))
            newer = _link(pairs)
        else:
            newer = newest
    json_pairs = [*base, ("cursor", request.cursor)] if request.cursor else base
    return AdminPage(
        rows=tuple(event_row(e) for e in page.events),
        form=_form(request, catalog, default_limit),
        filtered=bool(request.pairs),
        older=older,
        newer=newer,
        newest=newest,
        export_query=_link(request.pairs),
        json_query=_link(json_pairs),
        retention_days=request.retention_days,
        retention_start=request.retention_start.strftime("%Y-%m-%d"),
        out_of_retention=request.empty,
    )


# -- JSON and CSV bodies -------------------------------------------------------------------------------------


def json_body(store: EventStore, request: AdminRequest) -> dict[str, Any]:
    """``{"events": [...], "next_cursor": "..." | null}`` for the request."""
    page = Page([], None) if request.empty else store.query(request.query)
    return to_json_page(page)


def csv_body(store: EventStore, request: AdminRequest, *, max_rows: int | None = None) -> Iterator[str]:
    """The CSV of every event matching the request's filters (all pages), streamed row by row.

    Raises :class:`~audit_middleware.errors.InvalidFilterError` (before anything is streamed) when more than
    ``max_rows`` (default :data:`MAX_EXPORT_ROWS`) events match and the store can count them."""
    if request.empty:
        return iter_csv(())
    cap = MAX_EXPORT_ROWS if max_rows is None else max_rows
    count = getattr(store, "count", None)
    if cap > 0 and callable(count):
        matching = int(count(request.export_query))
        if matching > cap:
            raise InvalidFilterError(
                "since",
                f"{matching:,} events match, more than the {cap:,} one export may hold: narrow the dates "
                "(since/until) or the other filters, or use the audit-middleware export command",
            )
    return export_csv(store, request.export_query)


def csv_filename(request: AdminRequest) -> str:
    """``audit-trail-<today>.csv`` (UTC)."""
    return export_filename(request.now.astimezone(timezone.utc).strftime("%Y-%m-%d"))


def error_body(error: InvalidFilterError) -> dict[str, Any]:
    """The JSON of a 400: ``{"error": {"parameter": "since", "message": "..."}}``."""
    return {"error": {"parameter": error.parameter, "message": error.message}}


def security_headers(*, cacheable: bool = False) -> dict[str, str]:
    """:data:`SECURITY_HEADERS`, plus ``Cache-Control: no-store`` unless ``cacheable`` (the stylesheet):
    audit pages, JSON and CSV exports hold data no shared or browser cache should keep."""
    headers = dict(SECURITY_HEADERS)
    if not cacheable:
        headers["Cache-Control"] = "no-store"
    return headers


def stylesheet_text() -> str:
    return STYLESHEET.read_text(encoding="utf-8")
