"""Hypothesis stateful test on the Django ORM: whatever sequence of saves, toggles, deletes, QuerySet.update,
bulk_update, bulk_create, QuerySet.delete, nested atomic blocks (some rolled back by an exception), commits
and rollbacks from several actors, replaying the committed audit trail's diffs reproduces exactly the
committed rows, and rolled-back work has no event.

The committed state is read after every step through a second connection (alias ``observer``, same
database), so an open transaction's rows and events stay invisible to the check, as they are to any other
reader. ``AUDIT_LONG_TESTS=1`` runs more and longer sequences.
"""

from __future__ import annotations

import os
import sys
from decimal import Decimal

from django.db import connections, transaction
from django.db.models import F
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from testapp.models import Item, Warehouse

from audit_middleware import Actor, acting_as, suspend_auditing
from audit_middleware.adapters.django.models import AuditEvent

LONG = os.environ.get("AUDIT_LONG_TESTS", "") not in ("", "0", "false", "no")
FIELDS = ("name", "kind", "enabled", "capacity")
OBSERVER = "observer"
names = st.text(alphabet="abcxyz", min_size=1, max_size=6)
kinds = st.sampled_from(["bigquery", "snowflake", "other"])
actors = st.integers(0, 2)
picks = st.integers(0, 50)
ACTORS = [Actor.user("1", "ada"), Actor.token("tok_1", "ci"), Actor.system("job")]


class Rollback(Exception):
    """Raised into an atomic block to roll it back, as an error in host code would."""


def observer() -> str:
    """A second connection to the same database, for reading only what is committed."""
    if OBSERVER not in connections.settings:
        connections.settings[OBSERVER] = dict(connections.settings["default"])
    return OBSERVER


def value(field: str, v: object) -> object:
    """Compare decimals by value: capacity=1 is recorded as "1" and stored as 1.00."""
    return None if v is None else Decimal(str(v)) if field == "capacity" else v


def replay(events) -> dict[str, dict[str, object]]:
    """The rows the trail says exist: fold Created/Modified/Enabled/Disabled/Deleted in id order."""
    rows: dict[str, dict[str, object]] = {}
    for e in sorted(events, key=lambda e: e.id):
        if e.action == "created":
            assert e.resource_id not in rows, f"second Created for {e.resource_id}"
            rows[e.resource_id] = {f: value(f, e.changes.get(f, [None, None])[1]) for f in FIELDS}
        elif e.action == "deleted":
            del rows[e.resource_id]
        else:
            for field, (_, new) in e.changes.items():
                if field in FIELDS:
                    rows[e.resource_id][field] = value(field, new)
    return rows


class Trail(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.blocks: list = []  # open transaction.atomic() blocks, outermost first
        with suspend_auditing():
            Item._base_manager.all().delete()
            Warehouse._base_manager.all().delete()
        AuditEvent._base_manager.all().delete()

    def teardown(self) -> None:
        self._close_all(keep=False)

    def _close(self, keep: bool) -> None:
        block = self.blocks.pop()
        if keep:
            block.__exit__(None, None, None)
            return
        try:
            raise Rollback
        except Rollback:
            block.__exit__(*sys.exc_info())

    def _close_all(self, keep: bool) -> None:
        while getattr(self, "blocks", None):
            self._close(keep)

    def objects(self) -> list[Warehouse]:
        return list(Warehouse.objects.order_by("pk"))

    def some(self, cut: int) -> list[int]:
        return [pk for pk in Warehouse.objects.order_by("pk").values_list("pk", flat=True) if pk % 3 == cut % 3]

    @rule(name=names, kind=kinds, actor=actors)
    def create(self, name, kind, actor):
        with acting_as(ACTORS[actor]):
            Warehouse.objects.create(name=name, kind=kind, capacity=len(name))

    @rule(pick=picks, name=names, kind=kinds, actor=actors)
    def modify(self, pick, name, kind, actor):
        if objs := self.objects():
            w = objs[pick % len(objs)]
            w.name, w.kind = name, kind
            with acting_as(ACTORS[actor]):
                w.save()

    @rule(pick=picks, actor=actors)
    def toggle(self, pick, actor):
        if objs := self.objects():
            w = objs[pick % len(objs)]
            w.enabled = not w.enabled
            with acting_as(ACTORS[actor]):
                w.save()

    @rule(pick=picks, actor=actors)
    def remove(self, pick, actor):
        if objs := self.objects():
            with acting_as(ACTORS[actor]):
                objs[pick % len(objs)].delete()

    @rule(cut=picks, kind=kinds, enabled=st.booleans(), actor=actors)
    def queryset_update(self, cut, kind, enabled, actor):
        with acting_as(ACTORS[actor]):
            Warehouse.objects.filter(pk__in=self.some(cut)).update(kind=kind, enabled=enabled)

    @rule(cut=picks, actor=actors)
    def queryset_update_expression(self, cut, actor):
        with acting_as(ACTORS[actor]):
            Warehouse.objects.filter(pk__in=self.some(cut)).update(capacity=F("capacity") + 1)

    @rule(cut=picks, name=names, actor=actors)
    def bulk_update(self, cut, name, actor):
        objs = self.objects()
        for i, w in enumerate(objs):
            if i % 2 == cut % 2:
                w.name = name + str(i)
                w.enabled = not w.enabled
        with acting_as(ACTORS[actor]):
            Warehouse.objects.bulk_update(objs, ["name", "enabled"])

    @rule(new=st.lists(names, min_size=1, max_size=3), actor=actors)
    def bulk_create(self, new, actor):
        with acting_as(ACTORS[actor]):
            Warehouse.objects.bulk_create([Warehouse(name=n, capacity=1) for n in new])

    @rule(cut=picks, actor=actors)
    def queryset_delete(self, cut, actor):
        with acting_as(ACTORS[actor]):
            Warehouse.objects.filter(pk__in=self.some(cut + 1)).delete()

    @precondition(lambda self: len(self.blocks) < 4)
    @rule()
    def begin(self):
        """The outermost block starts a transaction; the nested ones are savepoints."""
        block = transaction.atomic()
        block.__enter__()
        self.blocks.append(block)

    @precondition(lambda self: len(self.blocks) > 1)
    @rule(keep=st.booleans())
    def end_savepoint(self, keep):
        self._close(keep)

    @precondition(lambda self: self.blocks)
    @rule(name=names, pick=picks, keep=st.booleans(), actor=actors)
    def savepoint_block(self, name, pick, keep, actor):
        """A nested atomic block around a create and a change, left normally or by an exception."""
        try:
            with acting_as(ACTORS[actor]), transaction.atomic():
                Warehouse.objects.create(name=name, capacity=2)
                objs = self.objects()
                w = objs[pick % len(objs)]
                w.enabled = not w.enabled
                w.save()
                if not keep:
                    raise Rollback
        except Rollback:
            pass

    @precondition(lambda self: self.blocks)
    @rule()
    def commit(self):
        self._close_all(keep=True)

    @precondition(lambda self: self.blocks)
    @rule()
    def rollback(self):
        self._close_all(keep=False)

    @invariant()
    def trail_replays_to_the_committed_rows(self):
        if not hasattr(self, "blocks"):
            return
        using = observer()
        committed = {str(r["pk"]): {f: value(f, r[f]) for f in FIELDS}
                     for r in Warehouse._base_manager.using(using).values("pk", *FIELDS)}
        trail = [row.to_event() for row in AuditEvent._base_manager.using(using).all()]
        assert replay(trail) == committed


def test_replaying_the_trail_reproduces_the_committed_rows():
    Trail.TestCase.settings = settings(
        max_examples=500 if LONG else 100, stateful_step_count=50 if LONG else 30, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    Trail.TestCase().runTest()
