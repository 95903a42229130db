import asyncio
import csv
import io
import json
import random
import threading
from datetime import datetime, timezone

import pytest

from audit_middleware import Actor, RequestContext, acting_as, current_actor, in_workspace, request_context
from audit_middleware.catalog import EventCatalog
from audit_middleware.context import (
    RequestScope,
    client_ip,
    current_context,
    current_workspace,
    request_scope,
)
from audit_middleware.events import AuditEvent
from audit_middleware.export import (
    CSV_COLUMNS,
    _Line,
    csv_row_from_stored,
    csv_text_from_stored,
    iter_csv,
    neutralise,
)
from audit_middleware.recorder import Recorder

from ..awkward_csv import AWKWARD_TEXTS, CONTEXTS


def test_csv_has_the_documented_columns_and_neutralises_formulas():
    e = AuditEvent("id-1", datetime(2026, 11, 25, 19, 7, 41, tzinfo=timezone.utc), "Source Created", "Source",
                   "created", Actor.user("7", "=HYPERLINK(\"http://evil\")"), resource_type="Source",
                   resource_id="-1", resource_name="@SUM(A1)", workspace_id="+ws",
                   changes={"name": [None, "=1+1"]},
                   context={"ip": "203.0.113.9", "user_agent": "\tua", "request_id": "\rr"})
    rows = list(csv.reader(io.StringIO("".join(iter_csv([e])))))
    assert tuple(rows[0]) == CSV_COLUMNS
    row = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert row["occurred_at"] == "2026-11-25T19:07:41.000000Z"
    assert row["actor_name"].startswith("'=")
    assert row["resource_id"] == "'-1" and row["resource_name"] == "'@SUM(A1)" and row["workspace_id"] == "'+ws"
    assert row["user_agent"] == "'\tua" and row["request_id"] == "'\rr"
    assert row["changes"] == '{"name":[null,"=1+1"]}'
    for cell in rows[1]:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_neutralise_leaves_ordinary_text_alone():
    assert neutralise("Production BigQuery") == "Production BigQuery"
    assert neutralise("") == ""


def test_csv_is_streamed_one_row_at_a_time():
    def endless():
        n = 0
        while True:
            n += 1
            yield AuditEvent(str(n), datetime.now(timezone.utc), "Source Created", "Source", "created",
                             Actor.anonymous())
    chunks = iter_csv(endless())
    assert next(chunks).startswith("occurred_at,")
    assert next(chunks).endswith(",1\r\n")


class _CountingWriter:
    """A csv.writer that counts the rows it is asked to write."""

    def __init__(self, line: _Line) -> None:
        self.writer = csv.writer(line.buffer, lineterminator="\r\n")
        self.rows = 0

    def writerow(self, row: list[str | None]) -> None:
        self.rows += 1
        self.writer.writerow(row)


def test_stored_rows_are_written_as_csv_writer_writes_them_whichever_way_each_row_goes():
    rng = random.Random(5)
    plain = ["Warehouse Created", "ws_1", "7", "ada@example.com", "a b", "é 🙂", "x-y", "1=2", "'q", "\\N"]
    texts = plain * 3 + AWKWARD_TEXTS + [",", "a,b,c", "nul\x00x", "\x1f", "a\rb"]
    contexts = [None, "", "{}", json.dumps({"ip": "203.0.113.9", "user_agent": "Mozilla/5.0", "request_id": "r-1"})]
    contexts += [json.dumps(c, separators=(",", ":")) for c in CONTEXTS]
    contexts += [json.dumps({"ip": t, "user_agent": "ua", "request_id": None}) for t in texts]
    contexts += [json.dumps({"ip": "203.0.113.9", "user_agent": t}, ensure_ascii=False) for t in texts]
    times = ["2026-11-25 19:07:41.123456", "2026-11-25 19:07:41", datetime(2026, 11, 25, 19, 7, 41, 5)]
    rows = []
    for n in range(4000):
        cell = [rng.choice(texts) if rng.random() < 0.15 else rng.choice(plain) for _ in range(9)]
        nullable = [None if rng.random() < 0.1 else c for c in cell]
        changes = rng.choice([None, "", "-1", json.dumps({rng.choice(texts): [rng.choice(texts), None]})])
        rows.append((rng.choice(times), cell[0], cell[1], cell[2], *nullable[3:], changes, rng.choice(contexts),
                     f"evt_{n}"))
    line = _Line()
    csv.writer(line.buffer, lineterminator="\r\n").writerows(csv_row_from_stored(row) for row in rows)
    expected = line.take()
    writer = _CountingWriter(line)
    assert csv_text_from_stored(rows, writer, line) == expected
    assert 400 < writer.rows < 3600  # both ways taken: rows handed to csv.writer and rows joined directly


BROWSERS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15',
    'curl/8.5.0 "quoted"', "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
]


def test_a_browsers_user_agent_and_the_changes_json_are_quoted_without_csv_writer():
    """Real browsers' user agents hold a comma (``(KHTML, like Gecko)``) and the changes' JSON quotes and
    commas: such rows are written with the common rows' quick path (each of those two cells quoted on its own),
    not handed to csv.writer (three times the time a row), to the bytes csv.writer writes. Any other cell
    with a comma, and a user agent starting like a formula, still go to csv.writer."""
    base = ("2026-11-25 19:07:41.123456", "Warehouse Created", "Warehouses", "user", "7", "ada@example.com",
            "Warehouse", "12", "Main", "ws_1", '{"name":[null,"Main, EU"]}')
    rows = [(*base, json.dumps({"ip": "203.0.113.9", "request_id": "r-1", "user_agent": agent}), f"evt_{n}")
            for n, agent in enumerate(BROWSERS)]
    general = [(*base[:8], "Acme, Inc.", *base[9:], rows[0][11], "evt_a"),  # a comma in another cell
               (*base, json.dumps({"user_agent": "=cmd|' /C calc'!A0"}), "evt_f"),
               (*base, json.dumps({"user_agent": "\tx"}), "evt_t")]
    line = _Line()
    csv.writer(line.buffer, lineterminator="\r\n").writerows(csv_row_from_stored(row) for row in rows + general)
    expected = line.take()
    writer = _CountingWriter(line)
    assert csv_text_from_stored(rows + general, writer, line) == expected
    assert writer.rows == len(general)
    assert '"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"' in expected
    assert ",'=cmd|' /C calc'!A0," in expected


def test_acting_as_nests_and_resets():
    assert current_actor().type == "anonymous"
    with acting_as(Actor.system("nightly-sync")):
        with acting_as(Actor.token("tok_1", "ci-deploy", secret="sk_live_abcd1234")) as token_actor:
            assert current_actor() == token_actor
            assert token_actor.name == "ci-deploy (...1234)"
        assert current_actor() == Actor("system", "nightly-sync", "nightly-sync")
    assert current_actor().type == "anonymous"
    with pytest.raises(TypeError):
        with acting_as("ada"):  # type: ignore[arg-type]
            pass


def test_client_ip_ignores_forwarded_addresses_unless_proxies_are_trusted():
    assert client_ip("10.0.0.2", "6.6.6.6", 0) == "10.0.0.2"
    assert client_ip("10.0.0.2", "6.6.6.6, 198.51.100.7", 1) == "198.51.100.7"
    assert client_ip("10.0.0.2", "198.51.100.7, 10.0.0.9", 2) == "198.51.100.7"
    assert client_ip("10.0.0.2", "198.51.100.7", 2) == "10.0.0.2"  # fewer hops than proxies: spoofable
    assert client_ip("10.0.0.2", "not-an-ip", 1) == "10.0.0.2"
    assert client_ip("10.0.0.2", "<script>", 1) == "10.0.0.2"
    assert client_ip("10.0.0.2", None, 1) == "10.0.0.2"


def test_client_ip_normalises_addresses_and_drops_text_that_is_none():
    assert client_ip("2001:DB8:0:0::1", None, 0) == "2001:db8::1"
    assert client_ip("10.0.0.2", "6.6.6.6, 2001:DB8::0001 ", 1) == "2001:db8::1"
    assert client_ip("not-an-ip", None, 0) is None
    assert client_ip(None, "198.51.100.7", 1) == "198.51.100.7"
    assert client_ip("", "", 0) is None


def test_request_scope_is_lazy_and_resolved_once():
    calls = []

    def load():
        calls.append(1)
        return Actor.user("1", "ada")

    with request_scope(RequestScope(actor_loader=load, workspace_loader=lambda: "ws_1")):
        assert calls == []
        assert current_actor().name == "ada" and current_actor().name == "ada"
        assert calls == [1]
        assert current_workspace() == "ws_1"
        with in_workspace("ws_2"):
            assert current_workspace() == "ws_2"


def test_an_events_origin_asks_a_scope_finder_once_and_not_at_all_when_everything_is_explicit():
    """A framework's scope finder (Flask's looks the request up) runs once per event origin, however many of
    actor, workspace and request it supplies, and not at all when acting_as, in_workspace and
    request_context say everything."""
    from audit_middleware.context import add_scope_finder, remove_scope_finder

    found: list[int] = []
    scope = RequestScope(actor_loader=lambda: Actor.user("1", "ada"), workspace_loader=lambda: "ws_1",
                         request_loader=lambda: RequestContext(ip="203.0.113.9"))

    def finder():
        found.append(1)
        return scope

    add_scope_finder(finder)
    try:
        origin = Recorder.origin()
        assert (origin.actor.name, origin.workspace_id, origin.context) == ("ada", "ws_1", {"ip": "203.0.113.9"})
        assert found == [1]
        with acting_as(Actor.system("job")), in_workspace("ws_2"), request_context(RequestContext(ip="10.0.0.1")):
            origin = Recorder.origin()
        assert (origin.actor.id, origin.workspace_id, origin.context) == ("job", "ws_2", {"ip": "10.0.0.1"})
        assert found == [1]
    finally:
        remove_scope_finder(finder)


def test_an_origin_is_made_again_whenever_one_of_its_facts_changes():
    """The last origin is given again while its facts are the same objects; any change of actor (a login in the
    middle of a request: the scope forgets its actor), workspace, request or extra context makes a new one."""
    from audit_middleware.context import extra_context

    users = iter([Actor.user("1", "ada"), Actor.user("2", "grace")])
    scope = RequestScope(actor_loader=lambda: next(users), workspace_loader=lambda: "ws_1",
                         request_loader=lambda: RequestContext(ip="203.0.113.9"))
    with request_scope(scope):
        first = Recorder.origin()
        assert Recorder.origin() is first  # nothing changed
        scope.forget_actor()  # the user logged in as someone else
        second = Recorder.origin()
        assert (second.actor.id, second.workspace_id, second.context) == ("2", "ws_1", {"ip": "203.0.113.9"})
        with in_workspace("ws_2"):
            assert Recorder.origin().workspace_id == "ws_2"
        with request_context(RequestContext(ip="10.0.0.1")):
            assert Recorder.origin().context == {"ip": "10.0.0.1"}
        with extra_context(reverted_event_id="e-1"):
            assert Recorder.origin().context == {"ip": "203.0.113.9", "reverted_event_id": "e-1"}
            with extra_context(reason="typo"):
                assert Recorder.origin().context == {"ip": "203.0.113.9", "reverted_event_id": "e-1",
                                                     "reason": "typo"}
        with acting_as(Actor.system("job")):
            assert Recorder.origin().actor.id == "job"
        back = Recorder.origin()
        assert (back.actor.id, back.workspace_id, back.context) == ("2", "ws_1", {"ip": "203.0.113.9"})
    outside = Recorder.origin()
    assert (outside.actor, outside.workspace_id, outside.context) == (Actor.anonymous(), None, {})
    # a workspace loader may give ids that are not text: equal ones of other types are other workspaces
    for workspace in (1, 1.0, True, "1"):
        with request_scope(RequestScope(workspace_loader=lambda w=workspace: w)):
            assert type(Recorder.origin().workspace_id) is type(workspace)


def test_context_is_per_thread_and_per_task():
    seen = {}

    def worker(n):
        with acting_as(Actor.user(str(n))), request_context(RequestContext(ip=f"10.0.0.{n}")):
            threading.Event().wait(0.01)
            seen[n] = (current_actor().id, current_context()["ip"])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {n: (str(n), f"10.0.0.{n}") for n in range(8)}

    async def task(n):
        with acting_as(Actor.user(str(n))):
            await asyncio.sleep(0.01)
            return current_actor().id

    async def main():
        return await asyncio.gather(*(task(n) for n in range(5)))

    assert asyncio.run(main()) == [str(n) for n in range(5)]


def test_recorder_attaches_actor_workspace_and_request_context():
    recorder = Recorder(catalog=EventCatalog())
    recorder.catalog.define("Warehouse Run Failed", "Warehouses", resource="Warehouse")
    with acting_as(Actor.system("scheduler")), in_workspace("ws_1"), \
            request_context(RequestContext(ip="203.0.113.9", user_agent="curl", request_id="r1")):
        e = recorder.event(recorder.catalog.get("Warehouse Run Failed"), resource_type="Warehouse",
                           resource_id=42, resource_name="Prod", details={"when": datetime(2026, 1, 1)})
    assert e.to_json()["actor"] == {"type": "system", "id": "scheduler", "name": "scheduler"}
    assert e.workspace_id == "ws_1" and e.resource_id == "42"
    assert e.context == {"ip": "203.0.113.9", "user_agent": "curl", "request_id": "r1"}
    assert e.details == {"when": "2026-01-01T00:00:00"}
