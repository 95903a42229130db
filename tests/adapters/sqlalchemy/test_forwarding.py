"""Forwarding through the transactional outbox, against real HTTP receivers on loopback, on every database."""

from __future__ import annotations

import os
import textwrap
import threading
import time
import uuid

import pytest
from sqlalchemy import event, func, select

from audit_middleware import Actor, acting_as, in_workspace
from audit_middleware.forwarding import (
    Relay,
    SegmentDestination,
    SlackDestination,
    WebhookDestination,
    verify,
)
from audit_middleware.signals import delivery_failed, destination_disabled

from ...forking import exit_code_of_forked
from ...forwarding.receivers import SECRET, WRITE_KEY, Fault, Receiver
from .conftest import make_app

ADA = Actor.user("7", "ada@example.com")


def destinations(receiver: Receiver, **options):
    return [
        SegmentDestination(WRITE_KEY, host=receiver.base, allow_private=True, timeout=2, **options),
        WebhookDestination(receiver.base + "/hook", SECRET, allow_private=True, timeout=2),
        SlackDestination(receiver.base + "/slack", rules=["* Disabled"], allow_private=True, timeout=2,
                         min_interval=0.05, admin_url="https://app.example.com/admin/audit-trail/"),
    ]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.release.set()
    r.stop()


@pytest.fixture
def fapp(database_url, receiver):
    application = make_app(database_url, destinations=destinations(receiver))
    outbox = application.auditor.outbox
    for name in ("segment", "webhook", "slack"):
        outbox.set_enabled("ws_1", name, True)
    yield application
    application.auditor.remove()
    application.engine.dispose()


def fast_relay(app, **options) -> Relay:
    return app.auditor.relay(backoff_base=0.01, backoff_cap=0.05, **options)


def add_warehouses(app, count: int, workspace: str = "ws_1") -> None:
    with in_workspace(workspace), acting_as(ADA), app.Session() as s:
        s.add_all([app.Warehouse(name=f"w{i}") for i in range(count)])
        s.commit()


def event_ids(app, **filters) -> list[str]:
    return [e.id for e in app.events(**filters)]


def deliveries(app) -> int:
    table = app.auditor.outbox.tables.deliveries
    with app.engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_committed_change_reaches_segment_webhook_and_slack_with_the_event_id_as_key(fapp, receiver):
    with in_workspace("ws_1"), acting_as(ADA), fapp.Session() as s:
        w = fapp.Warehouse(name="Production BigQuery", enabled=True)
        s.add(w)
        s.commit()
        w.enabled = False
        s.commit()
    ids = event_ids(fapp)
    assert deliveries(fapp) == 2 + 2 + 1  # Slack's rule takes only "* Disabled"
    assert fast_relay(fapp).drain() == 5
    assert receiver.segment_ids == [f"audit-{i}" for i in ids]
    assert sorted(receiver.webhook_ids) == sorted(ids)  # posted four at a time: in any order, each once
    assert receiver.violations == []
    (message,) = receiver.slack_messages
    assert "Warehouse Disabled" in message["text"] and "ada@example.com" in message["text"]
    assert f"#event-{ids[1]}" in json_text(message)
    assert deliveries(fapp) == 0
    states = {s.name: s for s in fapp.auditor.outbox.states("ws_1")}
    assert states["segment"].enabled and states["segment"].backlog == 0
    assert states["segment"].last_success_at is not None and states["segment"].last_error is None


def json_text(value) -> str:
    import json

    return json.dumps(value)


def test_rolled_back_events_are_never_forwarded(fapp, receiver):
    with in_workspace("ws_1"), acting_as(ADA), fapp.Session() as s:
        s.add(fapp.Warehouse(name="doomed"))
        s.flush()
        s.rollback()
        s.add(fapp.Warehouse(name="kept"))
        s.commit()
    assert fast_relay(fapp).drain() == 2
    (kept,) = fapp.events()
    assert receiver.segment_ids == [f"audit-{kept.id}"] and receiver.webhook_ids == [kept.id]


def test_only_workspaces_that_turned_a_destination_on_get_delivery_rows(fapp, receiver):
    add_warehouses(fapp, 2, workspace="ws_other")
    assert deliveries(fapp) == 0
    fapp.auditor.outbox.set_enabled("ws_1", "webhook", False)
    add_warehouses(fapp, 1)
    assert deliveries(fapp) == 1  # segment only
    fapp.auditor.outbox.set_enabled("ws_1", "segment", False)
    state = {s.name: s for s in fapp.auditor.outbox.states("ws_1")}["segment"]
    assert (state.enabled, state.backlog, state.paused) == (False, 0, 1)
    assert fast_relay(fapp).drain() == 0  # paused: nothing is sent while Off
    fapp.auditor.outbox.set_enabled("ws_1", "segment", True)
    assert fast_relay(fapp).drain() == 1
    assert len(receiver.segment_ids) == 1 and receiver.webhook_ids == []


def test_app_verbs_recorded_outside_a_transaction_are_forwarded_too(fapp, receiver):
    fapp.auditor.catalog.define("Warehouse Run Failed", "Warehouses", resource="Warehouse")
    with in_workspace("ws_1"), acting_as(Actor.system("scheduler")):
        event = fapp.auditor.record("Warehouse Run Failed", resource_type="Warehouse", resource_id=3)
    fast_relay(fapp).drain()
    assert receiver.segment_ids == [f"audit-{event.id}"]


def test_a_destination_down_then_back_drains_its_backlog(fapp, receiver):
    receiver.stop()  # connection refused
    add_warehouses(fapp, 30)
    relay = fast_relay(fapp)
    relay.run_once()
    state = {s.name: s for s in fapp.auditor.outbox.states("ws_1")}["segment"]
    assert state.backlog == 30 and "Connection" in (state.last_error or "")
    receiver.start()  # same port
    deadline = time.monotonic() + 30
    while deliveries(fapp) and time.monotonic() < deadline:
        relay.drain()
        time.sleep(0.05)
    ids = event_ids(fapp)
    assert sorted(receiver.segment_counts()) == sorted(f"audit-{i}" for i in ids)
    assert set(receiver.webhook_counts()) == set(ids)
    assert max(receiver.segment_counts().values()) == 1


@pytest.mark.parametrize("lost", ["before its commit", "after its commit"])
def test_a_failed_settle_is_tried_again_so_nothing_sent_is_sent_twice(fapp, receiver, lost):
    """Recording a round's outcomes fails once after the sends (the connection drops, before the settle's
    commit or after it, its answer lost): the relay tries again, so every event reaches each destination once and
    no delivery is left to be sent again when its lease runs out. The second try of a settle that had committed
    changes nothing."""
    from sqlalchemy.exc import OperationalError

    add_warehouses(fapp, 12)
    relay = fast_relay(fapp)
    settle = relay.store.settle
    tries: list[int] = []

    def flaky_settle(token, settlements):  # type: ignore[no-untyped-def]
        tries.append(len(settlements))
        if len(tries) == 1:
            if lost == "after its commit":
                settle(token, settlements)
            raise OperationalError("UPDATE audit_deliveries ...", {}, ConnectionError("server closed the connection"))
        settle(token, settlements)

    relay.store.settle = flaky_settle  # type: ignore[method-assign]
    try:
        relay.drain()
    finally:
        del relay.store.settle
    ids = event_ids(fapp)
    assert tries == [12, 12, 12]  # Segment's round tried twice, then the webhook's (Slack's rule takes no Created)
    assert sorted(receiver.segment_counts().values()) == [1] * 12
    assert sorted(receiver.webhook_counts()) == sorted(ids) and max(receiver.webhook_counts().values()) == 1
    assert deliveries(fapp) == 0
    assert relay.sent == 24 and relay.failed == 0


def test_retry_waits_for_retry_after_and_backs_off_from_one_second(fapp, receiver):
    receiver.faults = lambda path, n, body: Fault(status=429, retry_after="3") if path == "/v1/batch" else None
    add_warehouses(fapp, 3)
    relay = fapp.auditor.relay()  # the real schedule: base 1 s, cap 10 min
    before = time.time()
    relay.run_once()
    table = fapp.auditor.outbox.tables.deliveries
    with fapp.engine.connect() as c:
        rows = c.execute(select(table.c.due_at, table.c.attempts, table.c.last_status)
                         .where(table.c.destination == "segment")).all()
    from datetime import datetime, timezone

    for due_at, attempts, status in rows:
        wait = due_at.replace(tzinfo=timezone.utc).timestamp() - before
        assert attempts == 1 and status == 429 and wait >= 2.9
    relay.run_once()  # the relay holds Segment back until Retry-After has passed
    assert receiver.segment_ids == [] and receiver.requests == 1 + 3  # one batch, three webhooks
    assert datetime.now(timezone.utc).timestamp() - before < 3


def test_a_4xx_is_dead_with_a_retry_button_and_signals_say_so(fapp, receiver):
    failed = []
    delivery_failed.connect(lambda sender, **kw: failed.append(kw), weak=False)
    try:
        receiver.faults = lambda path, n, body: Fault(status=400) if path == "/v1/batch" else None
        add_warehouses(fapp, 2)
        fast_relay(fapp).drain()
    finally:
        delivery_failed.receivers.clear()
    outbox = fapp.auditor.outbox
    dead = outbox.dead("ws_1")
    assert [d["destination"] for d in dead] == ["segment", "segment"]
    assert dead[0]["last_status"] == 400 and dead[0]["event"] == "Warehouse Created"
    assert failed and failed[0]["dead"] is True and failed[0]["destination"] == "segment"
    receiver.faults = None
    assert outbox.retry("ws_1") == 2
    fast_relay(fapp).drain()
    assert len(receiver.segment_ids) == 2 and outbox.dead("ws_1") == []


def test_410_and_slack_404_disable_the_destination_and_pause_its_backlog(fapp, receiver):
    disabled = []
    destination_disabled.connect(lambda sender, **kw: disabled.append(kw), weak=False)
    try:
        receiver.faults = lambda path, n, body: (Fault(status=410) if path == "/hook" else
                                                 Fault(status=404) if path == "/slack" else None)
        with in_workspace("ws_1"), acting_as(ADA), fapp.Session() as s:
            w = fapp.Warehouse(name="x")
            s.add(w)
            s.commit()
            w.enabled = False
            s.commit()
        fast_relay(fapp).drain()
    finally:
        destination_disabled.receivers.clear()
    assert {d["destination"] for d in disabled} == {"webhook", "slack"}
    states = {s.name: s for s in fapp.auditor.outbox.states("ws_1")}
    assert not states["webhook"].enabled and "410" in states["webhook"].disabled_reason
    assert not states["slack"].enabled and "404" in states["slack"].disabled_reason
    assert states["webhook"].paused == 2 and states["segment"].enabled
    add_warehouses(fapp, 1)  # no new rows for a disabled destination
    assert states["webhook"].paused == {s.name: s for s in fapp.auditor.outbox.states("ws_1")}["webhook"].paused
    receiver.faults = None
    fapp.auditor.outbox.set_enabled("ws_1", "webhook", True)
    fast_relay(fapp).drain()
    assert len(receiver.webhook_ids) == 2


def test_a_segment_item_over_32kb_is_refused_when_recorded(fapp, receiver):
    fapp.auditor.catalog.define("Warehouse Exported", "Warehouses", resource="Warehouse")
    with in_workspace("ws_1"), fapp.Session() as s:
        big = fapp.auditor.record("Warehouse Exported", resource_type="Warehouse", resource_id=1,
                                  details={"blob": "x" * 40_000}, session=s)
        s.commit()
    (dead,) = fapp.auditor.outbox.dead("ws_1", "segment")
    assert dead["event_id"] == big.id and "32768" in dead["last_error"] and dead["attempts"] == 0
    fast_relay(fapp).drain()
    assert receiver.segment_ids == [] and receiver.webhook_ids == [big.id]


def test_webhook_requests_verify_with_the_helper(fapp, receiver):
    seen = []
    original = receiver.webhook

    def capture(body, raw, request):
        seen.append((raw, dict(request.headers)))
        return original(body, raw, request)

    receiver.webhook = capture
    add_warehouses(fapp, 1)
    fast_relay(fapp).drain()
    raw, headers = seen[0]
    assert verify(raw, headers, SECRET)["data"]["event"] == "Warehouse Created"


def test_the_in_process_drainer_sends_after_commit_and_never_holds_up_the_committing_thread(fapp, receiver):
    arrived = threading.Event()
    receiver.release.clear()

    def hold(path, number, body):
        arrived.set()
        return Fault(hang=30, process_first=True)  # the receiver keeps the drainer waiting

    receiver.faults = hold
    drainer = fapp.auditor.start_drainer(poll=0.1, backoff_base=0.01, backoff_cap=0.05)
    try:
        add_warehouses(fapp, 1)  # returns although the only delivery attempt so far is stuck
        assert arrived.wait(10)
        add_warehouses(fapp, 1)  # and again while the drainer is still stuck
        receiver.faults = None
        receiver.release.set()
        deadline = time.monotonic() + 20
        while len(set(receiver.segment_ids)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(receiver.segment_ids) == {f"audit-{i}" for i in event_ids(fapp)}
    finally:
        drainer.disconnect()
        drainer.stop()


def test_forward_command_once_sends_what_is_due_and_exits(fapp, receiver, database_url, tmp_path, monkeypatch,
                                                        capsys):
    from audit_middleware.cli import main

    module = f"relay_config_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(f"""
        from audit_middleware.forwarding import SegmentDestination
        def destinations():
            return [SegmentDestination({WRITE_KEY!r}, host={receiver.base!r}, allow_private=True)]
    """))
    monkeypatch.chdir(tmp_path)
    add_warehouses(fapp, 3)
    assert main(["forward", "--database-url", database_url, "--config", f"{module}:destinations", "--once",
                 "--quiet"]) == 0
    assert "forwarded 3 delivery(ies)" in capsys.readouterr().err
    assert sorted(receiver.segment_ids) == sorted(f"audit-{i}" for i in event_ids(fapp))
    with pytest.raises(SystemExit, match="give --config module:attribute"):
        main(["forward", "--database-url", database_url])
    with pytest.raises(SystemExit, match="has no attribute 'NOPE'"):
        main(["forward", "--database-url", database_url, "--config", f"{module}:NOPE"])


def test_the_forwarding_page_logic_toggles_retries_and_sends_a_test_event(fapp, receiver):
    from audit_middleware.errors import InvalidFilterError
    from audit_middleware.forwarding.page import TEST_EVENT, apply_forwarding_form, build_forwarding_page

    outbox = fapp.auditor.outbox
    page = build_forwarding_page(outbox, "ws_2")
    assert [(d.name, d.enabled) for d in page.destinations] == [("segment", False), ("webhook", False),
                                                                 ("slack", False)]
    message = apply_forwarding_form(outbox, "ws_2", {"action": ["save"], "destination": ["webhook"],
                                                     "enabled": ["on"]})
    assert message == "Saved: forwarding to webhook is On."
    receiver.faults = lambda path, n, body: Fault(status=422)
    add_warehouses(fapp, 1, workspace="ws_2")
    fast_relay(fapp).drain()
    page = build_forwarding_page(outbox, "ws_2")
    (dead,) = page.dead
    assert dead.destination == "webhook" and dead.answer.startswith("HTTP 422")
    assert {d.name: d.dead for d in page.destinations}["webhook"] == 1
    receiver.faults = None
    assert apply_forwarding_form(outbox, "ws_2", {"action": ["retry"], "delivery": [str(dead.id)]}) == (
        "1 dead delivery queued again.")
    apply_forwarding_form(outbox, "ws_2", {"action": ["test"], "destination": ["segment"]})
    fast_relay(fapp).drain()
    test_events = fapp.events(event=TEST_EVENT)
    assert len(test_events) == 1 and receiver.segment_ids == [f"audit-{test_events[0].id}"]
    assert len(receiver.webhook_ids) == 1 and build_forwarding_page(outbox, "ws_2").dead == ()
    with pytest.raises(InvalidFilterError, match="no destination named 'nope'"):
        apply_forwarding_form(outbox, "ws_2", {"action": ["save"], "destination": ["nope"]})
    with pytest.raises(InvalidFilterError, match="expected save, retry or test"):
        apply_forwarding_form(outbox, "ws_2", {"action": ["drop"]})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_waits_for_the_drainers_transaction_so_the_child_can_write(fapp, receiver):
    """A fork copies the process as it is: with the drainer thread in the middle of a transaction on the outbox,
    the child got a copy of its connection holding the database's locks, and on SQLite (which keeps them per
    process) found the database locked for good ("database is locked" at its first write). The fork now waits for
    that transaction to end. Here the drainer's first UPDATE of the outbox is held open for 0.5 s and the fork
    happens then."""
    table = fapp.auditor.outbox.tables.deliveries.name
    in_transaction = threading.Event()

    def hold_open(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
        if (threading.current_thread().name == "audit-forwarding" and not in_transaction.is_set()
                and statement.lstrip().upper().startswith("UPDATE") and table in statement):
            in_transaction.set()
            time.sleep(0.5)

    event.listen(fapp.engine, "after_cursor_execute", hold_open)
    drainer = fapp.auditor.start_drainer(poll=0.1, backoff_base=0.01, backoff_cap=0.05)
    try:
        add_warehouses(fapp, 1)
        assert in_transaction.wait(10)

        def child() -> int:  # write at once
            add_warehouses(fapp, 1)
            return 0

        assert exit_code_of_forked(child) == 0
    finally:
        drainer.disconnect()
        drainer.stop()
        event.remove(fapp.engine, "after_cursor_execute", hold_open)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_drainer_restarts_in_a_forked_child_with_its_own_connections(fapp, receiver):
    drainer = fapp.auditor.start_drainer(poll=0.1, backoff_base=0.01, backoff_cap=0.05)
    try:
        add_warehouses(fapp, 1)  # the parent's drainer thread is running now
        deadline = time.monotonic() + 10
        while not receiver.segment_ids and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(receiver.segment_ids) == 1

        def child() -> int:  # record, and let the child's own drainer thread send it
            add_warehouses(fapp, 1)
            end = time.monotonic() + 15
            while deliveries(fapp) and time.monotonic() < end:
                time.sleep(0.05)
            return 0 if deliveries(fapp) == 0 else 2

        assert exit_code_of_forked(child) == 0
        assert sorted(receiver.segment_ids) == sorted(f"audit-{i}" for i in event_ids(fapp))
        assert len(receiver.segment_ids) == 2
    finally:
        drainer.disconnect()
        drainer.stop()
