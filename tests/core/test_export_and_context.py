import asyncio
import csv
import io
import threading
from datetime import datetime, timezone

import pytest

from audit_middleware import Actor, RequestContext, acting_as, current_actor, in_workspace, request_context
from audit_middleware.catalog import EventCatalog
from audit_middleware.context import RequestScope, current_context, current_workspace, request_scope
from audit_middleware.events import AuditEvent
from audit_middleware.export import CSV_COLUMNS, iter_csv, neutralise
from audit_middleware.recorder import Recorder


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
