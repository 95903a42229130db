"""``auditor.revert(event_id, actor=...)`` on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

from audit_middleware import Actor, acting_as, in_workspace
from audit_middleware.revert import RevertConflict, RevertError, RevertNeedsConfirmation

from .conftest import Tier

ADA = Actor.user("7", "ada@example.com")
OWNER = Actor.user("1", "owner@example.com")


def create(app, **values):
    with app.Session() as session, acting_as(ADA), in_workspace("ws_1"):
        warehouse = app.Warehouse(**{"name": "Production", **values})
        session.add(warehouse)
        session.commit()
        return warehouse.id


def change(app, warehouse_id, **values):
    with app.Session() as session, acting_as(ADA), in_workspace("ws_1"):
        warehouse = session.get(app.Warehouse, warehouse_id)
        for name, value in values.items():
            setattr(warehouse, name, value)
        session.commit()


def load(app, warehouse_id):
    with app.Session() as session:
        return session.get(app.Warehouse, warehouse_id)


def test_reverting_a_disabled_event_enables_the_warehouse_and_is_recorded(app):
    warehouse_id = create(app)
    change(app, warehouse_id, enabled=False)
    disabled = app.events(event="Warehouse Disabled")[0]
    result = app.auditor.revert(disabled.id, actor=OWNER)
    assert load(app, warehouse_id).enabled is True
    assert result.restored == ["enabled"]
    recorded = app.events(event="Warehouse Enabled")
    assert [(e.actor, e.workspace_id, e.context["reverted_event_id"], e.changes) for e in recorded] == [
        (OWNER, "ws_1", disabled.id, {"enabled": [False, True]})]
    assert [e.id for e in result.recorded] == [recorded[0].id]
    with pytest.raises(RevertError, match="already holds the values from before 'Warehouse Disabled'"):
        app.auditor.revert(disabled.id, actor=OWNER, force=True)


def test_reverting_a_modified_event_restores_typed_values(app):
    original = dict(schedule="hourly", amount=decimal.Decimal("12.500000"), tier=Tier.FREE,
                    external_id=uuid.UUID("12345678-1234-5678-1234-567812345678"), blob=b"\x00\xffraw",
                    settings={"region": "eu", "retries": [1, 2]}, created_at=dt.datetime(2026, 1, 2, 3, 4, 5))  # MariaDB DATETIME keeps no microseconds
    warehouse_id = create(app, **original)
    change(app, warehouse_id, schedule="daily", amount=decimal.Decimal("99"), tier=Tier.BUSINESS,
           external_id=uuid.uuid4(), blob=b"new", settings={"region": "us"},
           created_at=dt.datetime(2027, 1, 1))
    modified = app.events(event="Warehouse Modified")[0]
    with acting_as(OWNER):
        result = app.auditor.revert(modified.id)
    restored = load(app, warehouse_id)
    assert {k: getattr(restored, k) for k in original} == original
    assert set(result.restored) == set(original) and result.not_restorable == []
    (revert_event,) = [e for e in app.events(event="Warehouse Modified") if e.id != modified.id]
    assert revert_event.actor == OWNER and revert_event.context == {"reverted_event_id": modified.id}


def test_a_resource_changed_since_the_event_is_a_conflict_unless_forced(app):
    warehouse_id = create(app, name="a", schedule="hourly")
    change(app, warehouse_id, name="b", schedule="daily")
    event = app.events(event="Warehouse Modified")[0]
    change(app, warehouse_id, name="c")
    count = len(app.events())
    with pytest.raises(RevertConflict) as caught:
        app.auditor.revert(event.id, actor=OWNER)
    assert [(c.field, c.expected, c.current) for c in caught.value.plan.conflicts] == [("name", "b", "c")]
    assert "name is now 'c' (the event left 'b')" in str(caught.value) and "force=True" in str(caught.value)
    assert len(app.events()) == count and load(app, warehouse_id).name == "c"
    app.auditor.revert(event.id, actor=OWNER, force=True)
    assert (load(app, warehouse_id).name, load(app, warehouse_id).schedule) == ("a", "hourly")


def test_reverting_a_deleted_event_recreates_the_row_but_not_its_masked_fields(app):
    warehouse_id = create(app, schedule="hourly", password="hunter2", amount=decimal.Decimal("1.5"))
    with app.Session() as session, acting_as(ADA), in_workspace("ws_1"):
        session.delete(session.get(app.Warehouse, warehouse_id))
        session.commit()
    deleted = app.events(event="Warehouse Deleted")[0]
    result = app.auditor.revert(deleted.id, actor=OWNER)
    assert result.not_restorable == ["password"]
    back = load(app, warehouse_id)
    assert (back.name, back.schedule, back.amount, back.password) == (
        "Production", "hourly", decimal.Decimal("1.5"), None)
    created = app.events(event="Warehouse Created")[-1]
    assert created.context["reverted_event_id"] == deleted.id and created.actor == OWNER
    with pytest.raises(RevertError, match="exists again with the deleted row's values"):
        app.auditor.revert(deleted.id, actor=OWNER)
    change(app, warehouse_id, schedule="daily")
    with pytest.raises(RevertConflict, match="exists again since") as caught:
        app.auditor.revert(deleted.id, actor=OWNER)
    assert [(c.field, c.expected, c.current) for c in caught.value.plan.conflicts] == [
        ("schedule", "hourly", "daily")]
    app.auditor.revert(deleted.id, actor=OWNER, force=True)
    assert load(app, warehouse_id).schedule == "hourly"


def test_reverting_a_created_event_deletes_only_when_confirmed(app):
    warehouse_id = create(app)
    created = app.events(event="Warehouse Created")[0]
    with pytest.raises(RevertNeedsConfirmation, match="deletes Warehouse .* pass confirm=True"):
        app.auditor.revert(created.id, actor=OWNER)
    assert load(app, warehouse_id) is not None
    app.auditor.revert(created.id, actor=OWNER, confirm=True)
    assert load(app, warehouse_id) is None
    assert app.events(event="Warehouse Deleted")[0].context["reverted_event_id"] == created.id
    with pytest.raises(RevertError, match="deleted already"):
        app.auditor.revert(created.id, actor=OWNER, confirm=True)


def test_composite_keys_and_models_with_their_own_resource_name(app):
    warehouse_id = create(app)
    with app.Session() as session, in_workspace("ws_1"):
        session.add(app.Membership(user_id=3, warehouse_id=warehouse_id, role="viewer"))
        tag = app.Label(title="prod", visible=True)
        session.add(tag)
        session.commit()
        membership = session.get(app.Membership, (3, warehouse_id))
        membership.role = "admin"
        tag.visible = False
        session.commit()
        tag_id = tag.id
    app.auditor.revert(app.events(event="Membership Modified")[0].id, actor=OWNER)
    app.auditor.revert(app.events(event="Tag Disabled")[0].id, actor=OWNER)
    with app.Session() as session:
        assert session.get(app.Membership, (3, warehouse_id)).role == "viewer"
        assert session.get(app.Label, tag_id).visible is True


def test_what_cannot_be_reverted_says_why(app):
    warehouse_id = create(app)
    change(app, warehouse_id, name="renamed")
    modified = app.events(event="Warehouse Modified")[0]
    app.auditor.catalog.define("Warehouse Run Failed", category="Warehouses")
    with in_workspace("ws_1"):
        verb = app.auditor.record("Warehouse Run Failed", resource_type="Warehouse", resource_id=warehouse_id)
    with pytest.raises(RevertError, match="only Created, Modified, Enabled, Disabled and Deleted"):
        app.auditor.revert(verb.id)
    with pytest.raises(RevertError, match="no audit event 'nope'"):
        app.auditor.revert("nope")
    with pytest.raises(RevertError, match="in this workspace"):
        app.auditor.revert(modified.id, workspace_id="ws_2")
    with app.Session() as session:
        session.delete(session.get(app.Warehouse, warehouse_id))
        session.commit()
    with pytest.raises(RevertError, match="no longer exists.*revert its Deleted event first"):
        app.auditor.revert(modified.id)


def test_a_revert_inside_the_callers_session_stands_or_falls_with_it(app):
    warehouse_id = create(app)
    change(app, warehouse_id, enabled=False)
    disabled = app.events(event="Warehouse Disabled")[0]
    with app.Session() as session:
        result = app.auditor.revert(disabled.id, actor=OWNER, session=session)
        assert [e.event for e in result.recorded] == ["Warehouse Enabled"]
        session.rollback()
    assert load(app, warehouse_id).enabled is False and not app.events(event="Warehouse Enabled")


def test_a_revert_is_forwarded_like_any_event(database_url):
    from audit_middleware.forwarding import WebhookDestination

    from ...forwarding.receivers import SECRET, Receiver
    from .conftest import make_app

    receiver = Receiver()
    forwarding = make_app(database_url, destinations=[
        WebhookDestination(receiver.base + "/hook", SECRET, allow_private=True, timeout=2)])
    try:
        forwarding.auditor.outbox.set_enabled("ws_1", "webhook", True)
        warehouse_id = create(forwarding)
        change(forwarding, warehouse_id, enabled=False)
        disabled = forwarding.events(event="Warehouse Disabled")[0]
        result = forwarding.auditor.revert(disabled.id, actor=OWNER)
        assert forwarding.auditor.relay(backoff_base=0.01, backoff_cap=0.05).drain() == 3
        # a webhook's events are posted four at a time: they arrive in any order, each once
        assert result.recorded[0].id in receiver.webhook_ids
        assert len(receiver.webhook_ids) == len(set(receiver.webhook_ids)) == 3
        assert receiver.violations == []
    finally:
        receiver.release.set()
        receiver.stop()
        forwarding.auditor.remove()
        forwarding.engine.dispose()
