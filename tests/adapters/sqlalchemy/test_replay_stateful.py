"""Hypothesis stateful test: whatever sequence of writes, bulk statements, savepoints, rollbacks and commits,
replaying the committed audit trail's diffs reproduces exactly the committed rows, and rolled-back work has
no event."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import delete, select, update

from audit_middleware import Actor, acting_as

from ...conftest import long_tests
from .conftest import make_app

LONG = long_tests()
FIELDS = ("name", "schedule", "enabled")
names = st.text(alphabet="abcxyz", min_size=1, max_size=6)
ACTORS = [Actor.user("1", "ada"), Actor.token("tok_1", "ci"), Actor.system("job")]


def replay(events) -> dict[str, dict[str, object]]:
    """The rows the trail says exist: fold Created/Modified/Enabled/Disabled/Deleted in id order."""
    rows: dict[str, dict[str, object]] = {}
    for e in sorted(events, key=lambda e: e.id):
        if e.action == "created":
            rows[e.resource_id] = {f: e.changes.get(f, [None, None])[1] for f in FIELDS}
        elif e.action == "deleted":
            del rows[e.resource_id]
        else:
            for field, (_, new) in e.changes.items():
                if field in FIELDS:
                    rows[e.resource_id][field] = new
    return rows


def run_machine(database_url: str) -> None:
    class Trail(RuleBasedStateMachine):
        @initialize()
        def setup(self) -> None:
            self.app = make_app(database_url)
            self.session = self.app.Session()
            self.savepoints: list = []
            self.actor = 0

        def teardown(self) -> None:
            self.session.close()
            self.app.auditor.remove()
            self.app.engine.dispose()

        def objects(self):
            return list(self.session.scalars(select(self.app.Warehouse).order_by(self.app.Warehouse.id)))

        @rule(name=names, actor=st.integers(0, 2))
        def create(self, name, actor):
            with acting_as(ACTORS[actor]):
                self.session.add(self.app.Warehouse(name=name, schedule="hourly"))
                self.session.flush()

        @rule(pick=st.integers(0, 50), name=names, schedule=st.sampled_from(["hourly", "daily", None]))
        def modify(self, pick, name, schedule):
            objs = self.objects()
            if objs:
                w = objs[pick % len(objs)]
                w.name, w.schedule = name, schedule
                self.session.flush()

        @rule(pick=st.integers(0, 50))
        def toggle(self, pick):
            objs = self.objects()
            if objs:
                w = objs[pick % len(objs)]
                w.enabled = not w.enabled
                self.session.flush()

        @rule(pick=st.integers(0, 50))
        def remove(self, pick):
            objs = self.objects()
            if objs:
                self.session.delete(objs[pick % len(objs)])
                self.session.flush()

        @rule(schedule=st.sampled_from(["weekly", "daily"]), enabled=st.booleans(), cut=st.integers(0, 50))
        def bulk_update(self, schedule, enabled, cut):
            W = self.app.Warehouse
            self.session.execute(update(W).where(W.id % 3 == cut % 3).values(schedule=schedule, enabled=enabled),
                                 execution_options={"synchronize_session": "fetch"})

        @rule(cut=st.integers(0, 50))
        def bulk_delete(self, cut):
            W = self.app.Warehouse
            self.session.execute(delete(W).where(W.id % 4 == cut % 4), execution_options={"synchronize_session": "fetch"})

        @precondition(lambda self: len(self.savepoints) < 3)
        @rule()
        def savepoint(self):
            self.savepoints.append(self.session.begin_nested())

        @precondition(lambda self: self.savepoints)
        @rule(keep=st.booleans())
        def end_savepoint(self, keep):
            sp = self.savepoints.pop()
            if keep:
                sp.commit()
            else:
                sp.rollback()

        @rule()
        def commit(self):
            self.savepoints.clear()
            self.session.commit()

        @rule()
        def rollback(self):
            self.savepoints.clear()
            self.session.rollback()

        @invariant()
        def trail_replays_to_the_committed_rows(self):
            if not hasattr(self, "app"):
                return
            W = self.app.Warehouse
            with self.app.engine.connect() as c:
                committed = {str(r.id): {"name": r.name, "schedule": r.schedule, "enabled": r.enabled}
                             for r in c.execute(select(W.id, W.name, W.schedule, W.enabled))}
            assert replay(self.app.events()) == committed

    Trail.TestCase.settings = settings(
        max_examples=60 if LONG else 6, stateful_step_count=40 if LONG else 15, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    Trail.TestCase().runTest()


def test_replaying_the_trail_reproduces_the_committed_rows(database_url, backend):
    run_machine(database_url)
