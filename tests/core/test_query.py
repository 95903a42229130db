import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from audit_middleware import Actor, EventQuery, InvalidFilterError
from audit_middleware.events import AuditEvent
from audit_middleware.ids import event_id_time, new_event_id, new_request_id
from audit_middleware.query import (
    MERGED_WORKSPACES,
    Cursor,
    actor_matches_for_rows,
    actor_matches_of,
    held_from_distinct,
    member_parameters,
    parse_query,
    per_workspace,
    per_workspace_for_rows,
    plans_each_page,
    read_by_id,
    read_laterally,
    within_only_workspace,
)
from audit_middleware.store import iter_events
from audit_middleware.testing import MemoryStore


def event(n: int, **kw) -> AuditEvent:
    base = datetime(2026, 11, 1, tzinfo=timezone.utc)
    return AuditEvent(new_event_id(), base + timedelta(minutes=n), kw.pop("name", "Source Created"), "Source",
                      "created", kw.pop("actor", Actor.user("7", "ada@example.com")), **kw)


def test_filters_parse_from_query_strings():
    q = parse_query({"event": ["Source Created", "Source Deleted"], "actor": ["ada@example.com"],
                     "actor_type": ["user"], "since": ["2026-11-01"], "until": ["2026-11-02T10:00:00+01:00"],
                     "limit": ["20"], "resource_type": ["Source"], "resource_id": ["42"]})
    assert q.events == ("Source Created", "Source Deleted")
    assert q.since == datetime(2026, 11, 1)
    assert q.until == datetime(2026, 11, 2, 9)
    assert q.limit == 20 and q.resource_id == "42"


def test_a_bare_until_date_includes_that_whole_day():
    assert parse_query({"until": ["2026-11-25"]}).until == datetime(2026, 11, 26)


@pytest.mark.parametrize("params, parameter", [
    ({"limit": ["0"]}, "limit"), ({"limit": ["501"]}, "limit"), ({"limit": ["ten"]}, "limit"),
    ({"since": ["yesterday"]}, "since"), ({"until": ["2026-13-01"]}, "until"),
    ({"since": ["2026-11-02"], "until": ["2026-11-01"]}, "until"),
    ({"cursor": ["garbage!!"]}, "cursor"), ({"cursor": ["e30"]}, "cursor"),
    ({"actor_type": ["robot"]}, "actor_type"), ({"actor": ["a", "b"]}, "actor"),
    ({"since": ["9999-12-31"]}, "since"), ({"resource_id": ["x" * 300]}, "resource_id"),
])
def test_bad_filter_values_name_the_parameter(params, parameter):
    with pytest.raises(InvalidFilterError) as info:
        parse_query(params)
    assert info.value.parameter == parameter
    assert parameter in str(info.value)


def test_unknown_event_names_are_rejected_when_a_catalog_is_given():
    with pytest.raises(InvalidFilterError, match="not an event in the catalog"):
        parse_query({"event": ["Nope"]}, known_events=lambda name: name == "Source Created")


def test_cursor_round_trips():
    c = Cursor(datetime(2026, 11, 25, 19, 7, 41, 123456), new_event_id())
    assert Cursor.decode(c.encode()) == c


def test_event_query_validates_limit_directly():
    with pytest.raises(InvalidFilterError):
        EventQuery(limit=0)


def test_ids_are_time_ordered_and_unique():
    ids = [new_event_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == 5000
    assert abs(event_id_time(ids[0]) - datetime.now(timezone.utc)) < timedelta(seconds=5)


def test_event_ids_are_uuid7_text_with_62_random_bits():
    """The id's text is put together from pieces (the millisecond's prefix, the counter, hex digits of the random
    pool): each must still be what ``str(uuid.UUID(...))`` gives for a version 7, RFC 4122 UUID, and every one of
    the 62 random bits must vary (the variant's digit keeps two of them)."""
    ids = [new_event_id() for _ in range(5000)]
    combined = 0
    for text in ids:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 7, uuid.RFC_4122)
        assert parsed.int >> 80 == int(text[:8] + text[9:13], 16)  # the millisecond, in the first 48 bits
        combined |= parsed.int & ((1 << 62) - 1)
    assert combined == (1 << 62) - 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX's")
def test_a_forked_child_does_not_repeat_the_parents_random_bits():
    """The random bits come from a pool of os.urandom bytes: a forked worker (gunicorn's) must not reuse the
    pool its parent still holds, or the two would make ids with the same random bits."""
    new_event_id()  # the parent holds a pool now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, "\n".join(new_event_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split("\n")
    os.waitpid(pid, 0)
    parent = [new_event_id() for _ in range(100)]
    assert len(child) == 100
    assert not {i[19:] for i in child} & {i[19:] for i in parent}  # the variant and random bits


def test_request_ids_are_random_uuid4_hex():
    """What ``uuid.uuid4().hex`` gives: 32 lowercase hex digits of a version 4, RFC 4122 UUID, each new."""
    ids = [new_request_id() for _ in range(5000)]
    assert len(set(ids)) == 5000
    for text in ids:
        parsed = uuid.UUID(hex=text)
        assert (parsed.hex, parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)
    # every random bit varies: OR-ing all ids sets each bit but the fixed version and variant ones
    combined = 0
    for text in ids:
        combined |= int(text, 16)
    assert combined == (1 << 128) - 1 & ~((0xB000 << 64) | (0x4000 << 48))


def test_memory_store_pages_newest_first_with_keyset_cursor():
    store = MemoryStore()
    store.append([event(n) for n in range(25)])
    first = store.query(EventQuery(limit=10))
    assert [e.occurred_at.minute for e in first.events] == list(range(24, 14, -1))
    second = store.query(EventQuery(limit=10, cursor=Cursor.decode(first.next_cursor)))
    assert [e.occurred_at.minute for e in second.events] == list(range(14, 4, -1))
    assert len(list(iter_events(store, EventQuery(), batch_size=7))) == 25


def test_workspace_filter_distinguishes_none_from_unset():
    store = MemoryStore()
    store.append([event(1, workspace_id="ws_1"), event(2, workspace_id=None)])
    assert len(store.query(EventQuery()).events) == 2
    assert [e.workspace_id for e in store.query(EventQuery().for_workspace("ws_1")).events] == ["ws_1"]
    assert [e.workspace_id for e in store.query(EventQuery().for_workspace(None)).events] == [None]


@pytest.mark.parametrize(("held", "pinned"), [
    ([None], None),             # an app without workspaces
    ([], None),                 # no event yet: nothing to find either way
    (["ws_1"], "ws_1"),
    (["ws_1", None], ...),      # ws_1 and events without a workspace
    (["ws_1", "ws_2"], ...),
])
def test_a_filtered_query_over_every_workspace_is_pinned_to_the_trails_only_workspace(held, pinned):
    query = EventQuery(actor="ada@example.com", limit=5)
    asked: list[int] = []
    narrowed = within_only_workspace(query, lambda n: asked.append(n) or held)
    assert asked == [1]  # two workspaces at most: enough to tell one from several
    if pinned is ...:
        assert narrowed is query
    else:
        assert narrowed == query.for_workspace(pinned) and narrowed.workspace_filtered
        assert per_workspace(query, lambda n: held) == [narrowed]  # a page is pinned the same way


def test_the_workspaces_are_only_listed_to_pin_a_filtered_query_over_every_workspace():
    def listed(at_most: int) -> list[str | None]:
        raise AssertionError("listed for a query that does not need it")

    for query in (EventQuery(actor="ada").for_workspace("ws_1"), EventQuery(events=("A B",)).for_workspace(None),
                  EventQuery(), EventQuery(since=datetime(2026, 1, 1), until=datetime(2026, 2, 1))):
        assert within_only_workspace(query, listed) is query
    for name, value in (("events", ("A B",)), ("category", "C"), ("actor", "a"), ("actor_type", "user"),
                        ("resource_type", "R"), ("resource_id", "1")):
        assert within_only_workspace(EventQuery(**{name: value}), lambda n: [None]).workspace_filtered, name


def test_a_filtered_query_over_several_workspaces_is_read_workspace_by_workspace_up_to_the_limit():
    query = EventQuery(actor="ada@example.com", events=("A B",), limit=5)
    asked: list[int] = []

    def listed(held: list[str | None]):
        def probe(at_most: int) -> list[str | None]:
            asked.append(at_most)
            return held
        return probe

    members = per_workspace(query, listed(["ws_1", "ws_2", None]))
    assert asked == [MERGED_WORKSPACES]
    assert members == [query.for_workspace("ws_1"), query.for_workspace("ws_2"), query.for_workspace(None)]
    assert all(m.workspace_filtered for m in members)
    assert member_parameters(members) == {
        "f_event": "A B", "f_actor": "ada@example.com", "f_workspace_0": "ws_1", "f_workspace_1": "ws_2"}
    assert member_parameters([query.for_workspace("ws_1")]) == {
        "f_workspace": "ws_1", "f_event": "A B", "f_actor": "ada@example.com"}
    many = [f"ws_{n}" for n in range(MERGED_WORKSPACES)]
    assert len(per_workspace(query, listed(many))) == MERGED_WORKSPACES
    assert per_workspace(query, listed([*many, None])) == [query]  # one more than are read one by one
    assert per_workspace(query, listed(["ws_1"])) == [query.for_workspace("ws_1")]  # the only one: pinned
    assert per_workspace(query, listed([])) == [query.for_workspace(None)]


def test_workspaces_are_only_listed_for_a_filtered_query_over_every_workspace():
    def listed(at_most: int) -> list[str | None]:
        raise AssertionError("listed for a query that does not need it")

    for query in (EventQuery(actor="ada").for_workspace("ws_1"), EventQuery(events=("A B",)).for_workspace(None),
                  EventQuery(), EventQuery(since=datetime(2026, 1, 1), until=datetime(2026, 2, 1))):
        assert per_workspace(query, listed) == [query]


def test_the_listing_from_distinct_workspaces_is_the_recursive_listings():
    """MariaDB's distinct workspaces (NULL sorted first, ``at_most + 2`` of them) give what the recursive
    listing gives: at most ``at_most + 1`` workspaces in order, then None if some event has none."""
    assert held_from_distinct([], 3) == []
    assert held_from_distinct([None], 3) == [None]
    assert held_from_distinct(["a", "b"], 3) == ["a", "b"]
    assert held_from_distinct([None, "a", "b"], 3) == ["a", "b", None]
    assert held_from_distinct(["a", "b", "c"], 1) == ["a", "b"]
    assert held_from_distinct([None, "a", "b"], 1) == ["a", "b", None]
    assert held_from_distinct([None, "a"], 0) == ["a", None]
    assert held_from_distinct(["a", "b", None], 1) == ["a", "b", None]  # a database sorting NULL last


def test_an_actors_or_a_resources_page_over_several_workspaces_is_read_laterally():
    """``read_laterally`` names the members with a workspace, when two or more, of an actor's or a resource's
    page (their rows lie in few workspaces); an event's page, one workspace's, or a trail of one workspace and
    the events without one, none."""
    listed = ["ws_a", "ws_b", None]
    for query in (EventQuery(actor="ada"), EventQuery(resource_type="Warehouse", resource_id="7"),
                  EventQuery(actor="ada", events=("Warehouse Disabled",))):
        assert read_laterally(per_workspace(query, lambda n: listed)) == [0, 1]
    assert read_laterally(per_workspace(EventQuery(events=("Warehouse Disabled",)), lambda n: listed)) == []
    assert read_laterally(per_workspace(EventQuery(actor="ada"), lambda n: ["ws_a", None])) == []
    assert read_laterally(per_workspace(EventQuery(actor="ada").for_workspace("ws_a"), lambda n: listed)) == []
    assert actor_matches_of(EventQuery(actor="ada")) == ("id", "name")


def test_where_each_statement_is_planned_any_page_over_several_workspaces_is_read_laterally():
    """``planned_each_time`` (the driver prepares nothing): an event's page over several workspaces is read
    laterally too (one member planned once, not a member per workspace); one workspace's page, or a trail of one
    workspace and the events without one, still not."""
    listed = ["ws_a", "ws_b", None]
    events = EventQuery(events=("Warehouse Disabled",))
    assert read_laterally(per_workspace(events, lambda n: listed), planned_each_time=True) == [0, 1]
    assert read_laterally(per_workspace(EventQuery(category="Warehouses"), lambda n: listed), True) == [0, 1]
    assert read_laterally(per_workspace(EventQuery(actor="ada"), lambda n: listed), True) == [0, 1]
    assert read_laterally(per_workspace(events, lambda n: ["ws_a", None]), True) == []
    assert read_laterally(per_workspace(events.for_workspace("ws_a"), lambda n: listed), True) == []


def test_only_a_postgresql_page_over_several_members_asks_whether_the_driver_plans_each_statement():
    """``plans_each_page`` consults the driver only for a PostgreSQL page read as several members."""
    import sqlite3

    def not_asked() -> None:
        raise AssertionError("the driver was consulted")

    several = per_workspace(EventQuery(events=("Warehouse Disabled",)), lambda n: ["ws_a", "ws_b"])
    one = per_workspace(EventQuery(events=("Warehouse Disabled",)).for_workspace("ws_a"), lambda n: [])
    assert plans_each_page(several, "sqlite", not_asked) is False
    assert plans_each_page(one, "postgresql", not_asked) is False
    with sqlite3.connect(":memory:") as driver:  # not psycopg 3: nothing is prepared
        assert plans_each_page(several, "postgresql", lambda: driver) is True


def test_which_pages_read_times_and_ids_first_and_their_rows_by_id():
    """``read_by_id``: a page merged over several workspaces on SQLite and MariaDB, and an event's page read
    laterally (PostgreSQL); not an actor's or a resource's lateral page, nor a page of one member."""
    listed = ["ws_a", "ws_b", None]
    events = per_workspace(EventQuery(events=("Warehouse Disabled",)), lambda n: listed)
    actors = per_workspace(EventQuery(actor="ada"), lambda n: listed)
    one = per_workspace(EventQuery(events=("Warehouse Disabled",)).for_workspace("ws_a"), lambda n: listed)
    for database in ("sqlite", "mysql", "mariadb"):
        assert read_by_id(events, database, []) and read_by_id(actors, database, [])
        assert not read_by_id(one, database, [])
    assert read_by_id(events, "postgresql", [0, 1])
    assert not read_by_id(events, "postgresql", [])
    assert not read_by_id(actors, "postgresql", [0, 1])
    assert not read_by_id(one, "postgresql", [])
    assert actor_matches_of(EventQuery(resource_type="Warehouse")) == (None,)
    assert actor_matches_for_rows(EventQuery(actor="ada"), "sqlite") == ("id", "name")
    assert actor_matches_for_rows(EventQuery(actor="ada"), "postgresql") == (None,)
    assert actor_matches_for_rows(EventQuery(resource_type="Warehouse"), "sqlite") == (None,)


def test_a_count_or_an_export_reads_an_actors_or_a_resources_rows_workspace_by_workspace():
    """``per_workspace_for_rows``: an actor's or a resource's rows over a trail of several workspaces one query
    per workspace (the events without one counting as one); an event's rows, and any query on a trail of one
    workspace, as ``within_only_workspace`` gives them."""
    listed = ["ws_a", "ws_b", None]
    actor = EventQuery(actor="ada")
    assert per_workspace_for_rows(actor, lambda n: listed) == [
        actor.for_workspace("ws_a"), actor.for_workspace("ws_b"), actor.for_workspace(None)]
    event = EventQuery(events=("Warehouse Disabled",))
    assert per_workspace_for_rows(event, lambda n: listed) == [event]
    assert per_workspace_for_rows(actor, lambda n: ["ws_a"]) == [actor.for_workspace("ws_a")]
    assert per_workspace_for_rows(actor, lambda n: ["ws_a", None]) == [actor.for_workspace("ws_a"),
                                                                      actor.for_workspace(None)]
    assert per_workspace_for_rows(event, lambda n: ["ws_a", None]) == [event]
    scoped = actor.for_workspace("ws_b")
    assert per_workspace_for_rows(scoped, lambda n: listed) == [scoped]
