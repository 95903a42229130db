"""``--simulate``: 90 days of realistic activity, written straight into the trail with past timestamps.

Owners, members, the ``ci-deploy`` access token and the schedulers act on the workspaces' real resources.
The events are built by the auditor's own recorder (the same names, categories, diffs and masking as live
capture) inside ``acting_as`` / ``in_workspace`` / ``request_context`` and appended through the store in
batches, so nothing sleeps and the app's tables are left as they are.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import inspect

from audit_middleware import Actor, RequestContext, acting_as, in_workspace, request_context
from audit_middleware.adapters.flask import AuditTrail
from audit_middleware.events import AuditEvent

from .app import KINDS, Kind
from .models import Membership, User, Workspace, db
from .seed import DEMO_TOKEN_ID, DEMO_TOKEN_SECRET

AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
]
NEW_NAMES = {
    "sources": ["Android app", "Marketing site", "Support widget", "Partner API", "Checkout service"],
    "integrations": ["Mixpanel (web)", "Braze (iOS)", "Webhooks (billing)", "Slack (alerts)"],
    "source-functions": ["Shopify webhook parser", "Typeform responses", "HubSpot forms"],
    "destination-functions": ["Salesforce leads", "Internal data lake", "Jira issues"],
    "destination-filters": ["Sample 10% of page views", "Drop PII properties", "Only EU traffic"],
    "warehouses": ["Staging Postgres", "EU Redshift", "Databricks lakehouse"],
    "tracking-plans": ["iOS tracking plan", "Server events plan", "Checkout v2 plan"],
    "spaces": ["B2B accounts", "Sandbox"],
    "computed-traits": ["lifetime_value", "last_product_viewed", "sessions_last_7_days"],
    "audiences": ["Cart abandoners", "Churn risk", "Newsletter subscribers"],
    "engage-warehouse-sources": ["Subscriptions table", "Support tickets"],
}
TEXT_EDITS = {
    "description": ["Owned by the data team", "Do not edit without review", "Migrated from v1", ""],
    "code": ["async function onTrack(event) { return event }", "async function onRequest(req) { /* v2 */ }"],
    "condition": ['type = "page"', 'event = "Order Completed" and properties.total < 1', 'context.locale = "de-DE"'],
    "definition": ['count(event = "Order Completed", 90d)', 'sum(properties.total, 365d)', 'last(properties.sku)'],
    "host": ["eu-west-1.redshift.amazonaws.com", "db.internal.example:5432"],
    "database": ["analytics", "warehouse_v2", "prod"],
    "query": ["select user_id, plan, mrr from accounts", "select * from subscriptions where active"],
}


class Simulator:
    def __init__(self, audit: AuditTrail, rng: random.Random, now: datetime) -> None:
        self.audit = audit
        self.recorder = audit.auditor.recorder
        self.catalog = audit.catalog
        self.rng = rng
        self.now = now
        self.next_id = 10_000
        self.created: list[tuple[str, Kind, int, str]] = []  # hypothetical rows created earlier: deletable

    def options(self, kind: Kind) -> Any:
        info = self.audit.auditor.capture.info(inspect(kind.model).mapper)
        assert info is not None
        return info.options

    def generic(self, ws: str, when: datetime) -> list[AuditEvent]:
        kind = self.rng.choice(list(KINDS.values()))
        options = self.options(kind)
        rows = db.session.scalars(db.select(kind.model).filter_by(workspace_id=ws)).all()
        roll = self.rng.random()
        if roll < 0.12 or not rows:
            self.next_id += 1
            name = self.rng.choice(NEW_NAMES[kind.slug])
            values = {c.key: getattr(rows[0], c.key) if rows else None for c in kind.model.__table__.columns}
            values.update(id=self.next_id, name=name, workspace_id=ws)
            if kind.toggle:
                values["enabled"] = True
            self.created.append((ws, kind, self.next_id, name))
            return self.recorder.change_events(options, "created", self.next_id, {}, values, occurred_at=when)
        if roll < 0.2 and any(c[0] == ws for c in self.created):
            entry = next(c for c in self.created if c[0] == ws)
            self.created.remove(entry)
            _, dead_kind, dead_id, name = entry
            values = {"id": dead_id, "name": name, "workspace_id": ws}
            return self.recorder.change_events(self.options(dead_kind), "deleted", dead_id, values, {},
                                               occurred_at=when)
        obj = self.rng.choice(rows)
        if kind.toggle and roll < 0.45:
            on = self.rng.random() < 0.5
            return self.recorder.change_events(options, "modified", obj.id, {"enabled": not on, "name": obj.name},
                                               {"enabled": on, "name": obj.name}, occurred_at=when)
        editable = [f for f in kind.fields if f.type in ("text", "select", "textarea", "secret") and f.name != "name"]
        if not editable:
            editable = [f for f in kind.fields if f.name == "name"]
        f = self.rng.choice(editable)
        old = getattr(obj, f.name)
        if f.type == "select":
            new = self.rng.choice([c for c in f.choices if c != old] or list(f.choices))
        elif f.type == "secret":
            new = uuid.uuid4().hex
        elif f.name == "name":
            new = old + " (old)" if self.rng.random() < 0.5 else old
        else:
            new = self.rng.choice(TEXT_EDITS.get(f.name, ["updated"]))
        return self.recorder.change_events(options, "modified", obj.id, {f.name: old, "name": obj.name},
                                           {f.name: new, "name": obj.name}, occurred_at=when)

    def verb(self, name: str, resource: Any = None, when: datetime | None = None, **details: Any) -> AuditEvent:
        definition = self.catalog.get(name)
        if resource is not None:
            info = self.audit.auditor.capture.info(inspect(type(resource)).mapper)
            assert info is not None
            rtype, rid, rname = info.options.resource, resource.id, resource.name
        else:
            rtype, rid, rname = details.pop("resource_type"), details.pop("resource_id"), details.pop("resource_name")
        return self.recorder.event(definition, resource_type=rtype, resource_id=rid, resource_name=rname,
                                   details=details, occurred_at=when)

    def pick(self, ws: str, slug: str) -> Any:
        rows = db.session.scalars(db.select(KINDS[slug].model).filter_by(workspace_id=ws)).all()
        return self.rng.choice(rows) if rows else None

    def app_verb(self, ws: str, when: datetime, people: list[User]) -> list[AuditEvent]:
        r = self.rng.random()
        if r < 0.25:
            plan, source = self.pick(ws, "tracking-plans"), self.pick(ws, "sources")
            name = self.rng.choice(["Tracking Plan Updated", "Source Connected to Tracking Plan",
                                    "Source Disconnected From Tracking Plan", "Tracking Plan Inferred",
                                    "Tracking Plan New Event Blocked", "Tracking Plan New Event Allowed",
                                    "Tracking Plan New Track Property Omitted", "Tracking Plan Operations Updated"])
            return [self.verb(name, plan, when, source_id=source.id, source=source.name)]
        if r < 0.45:
            slug = self.rng.choice(["computed-traits", "audiences"])
            obj = self.pick(ws, slug)
            resource = "Computed Trait" if slug == "computed-traits" else "Audience"
            return [self.verb(f"{resource} CSV Downloaded", obj, when, rows=self.rng.randint(20, 5000))]
        if r < 0.6:
            space, source = self.pick(ws, "spaces"), self.pick(ws, "sources")
            name = self.rng.choice(["Source Connected To Space", "Source Disconnected From Space"])
            return [self.verb(name, space, when, source_id=source.id, source=source.name)]
        if r < 0.8:
            email = f"{self.rng.choice(['sam', 'lee', 'kim', 'alex', 'jo', 'max'])}{self.rng.randint(1, 99)}@" \
                    f"{ws.removeprefix('ws_')}.example"
            invite_id = self.rng.randint(100, 999)
            events = [self.verb("User Invite Sent", when=when, resource_type="User Invite", resource_id=invite_id,
                                resource_name=email, email=email, role="member")]
            later = when + timedelta(hours=self.rng.randint(1, 40))
            if later < self.now:
                follow = self.rng.choice(["User Invite Accepted", "User Invite Deleted"])
                if follow == "User Invite Accepted":
                    with acting_as(Actor.user(str(5000 + invite_id), email)):
                        events.append(self.verb(follow, when=later, resource_type="User Invite", resource_id=invite_id,
                                                resource_name=email, email=email, role="member"))
                else:
                    events.append(self.verb(follow, when=later, resource_type="User Invite", resource_id=invite_id,
                                            resource_name=email, email=email, role="member"))
            return events
        group = self.rng.choice(["Admins", "Data engineers", "Marketing"])
        name = self.rng.choice(["User Group Updated", "User Group Created", "User Removed"])
        if name == "User Removed":
            email = f"contractor{self.rng.randint(1, 20)}@{ws.removeprefix('ws_')}.example"
            return [self.verb(name, when=when, resource_type="User", resource_id=self.rng.randint(200, 400),
                              resource_name=email, email=email, role="member")]
        return [self.verb(name, when=when, resource_type="User Group", resource_id=self.rng.randint(1, 9),
                          resource_name=group, changes={"members": [[1], [1, people[-1].id]]})]

    def system(self, ws: str, when: datetime) -> list[AuditEvent]:
        r = self.rng.random()
        if r < 0.35:
            wh = self.pick(ws, "warehouses")
            with acting_as(Actor.system("warehouse-scheduler")):
                return [self.verb("Warehouse Run Failed", wh, when, run_id=self.rng.randint(1000, 9999),
                                  error=self.rng.choice(["authentication failed", "query timed out after 3600 s",
                                                         "schema change: column type mismatch on orders.total"]))]
        if r < 0.6:
            plan, source = self.pick(ws, "tracking-plans"), self.pick(ws, "sources")
            with acting_as(Actor.system("protocols-validator")):
                return [self.verb("Violations Detected", plan, when, source_id=source.id, source=source.name,
                                  event=self.rng.choice(["Coupon Applied", "order_completed", "Page Viewed v2"]),
                                  violation="Unplanned event", blocked=False)]
        slug = self.rng.choice(["computed-traits", "audiences"])
        obj = self.pick(ws, slug)
        resource = "Computed Trait" if slug == "computed-traits" else "Audience"
        with acting_as(Actor.system("engage-scheduler")):
            if self.rng.random() < 0.5:
                return [self.verb(f"{resource} Run Failed", obj, when, error="query timed out after 900 s")]
            return [self.verb(f"{resource} Destination Sync Failed", obj, when, destination="Braze",
                              error="HTTP 401 from the destination: invalid API key")]


def simulate(app: Any, days: int = 90, seed: int = 7, now: datetime | None = None) -> int:
    """Write ``days`` of activity for every workspace; returns how many events."""
    audit: AuditTrail = app.extensions["demo_audit"]
    rng = random.Random(seed)
    now = now or datetime.now(timezone.utc)
    total = 0
    with app.app_context():
        sim = Simulator(audit, rng, now)
        for ws in db.session.scalars(db.select(Workspace)).all():
            members = db.session.scalars(db.select(Membership).filter_by(workspace_id=ws.id)).all()
            people = [db.session.get(User, m.user_id) for m in members]
            owners = [p for p, m in zip(people, members, strict=True) if m.role == "owner"]
            actors: list[tuple[Actor, float]] = [(Actor.user(p.id, p.email), 1.0) for p in people]
            actors += [(Actor.user(p.id, p.email), 1.0) for p in owners]  # owners do more
            if ws.id == "ws_acme":
                actors.append((Actor.token(DEMO_TOKEN_ID, "ci-deploy", secret=DEMO_TOKEN_SECRET), 1.5))
            ips = {a.id: f"203.0.113.{rng.randint(2, 250)}" for a, _ in actors}
            batch: list[AuditEvent] = []
            for day in range(days, 0, -1):
                date = now - timedelta(days=day)
                weekend = date.weekday() >= 5
                for _ in range(rng.randint(0, 4) if weekend else rng.randint(6, 22)):
                    when = date.replace(hour=rng.choice(range(7, 20)), minute=rng.randint(0, 59),
                                        second=rng.randint(0, 59), microsecond=rng.randint(0, 999999))
                    actor = rng.choices([a for a, _ in actors], [w for _, w in actors])[0]
                    token = actor.type == "token"
                    facts = RequestContext(
                        ip=ips[actor.id] if not token else "198.51.100.7",
                        user_agent="ci-deploy/2.4 (GitHub Actions)" if token else rng.choice(AGENTS),
                        request_id=uuid.uuid4().hex, method="POST", path="/api/v1/..." if token else "/",
                    )
                    with acting_as(actor), in_workspace(ws.id), request_context(facts):
                        roll = rng.random()
                        if roll < 0.62 or token:
                            batch += sim.generic(ws.id, when)
                        elif roll < 0.85 and actor.id in {str(o.id) for o in owners}:
                            batch += sim.app_verb(ws.id, when, people)
                        else:
                            batch += sim.generic(ws.id, when)
                if rng.random() < 0.5:  # the schedulers' failures, at night
                    when = date.replace(hour=rng.randint(0, 5), minute=rng.randint(0, 59))
                    with in_workspace(ws.id):
                        batch += sim.system(ws.id, when)
                if len(batch) >= 500:
                    audit.store.append(batch)
                    total += len(batch)
                    batch = []
            if batch:
                audit.store.append(batch)
                total += len(batch)
    return total
