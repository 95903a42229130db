"""The demo workspace's data model: a customer-data platform shaped like Segment's.

Resources whose Created/Modified/Deleted (and Enabled/Disabled) events come from generic capture carry an
``__audit__`` dict naming them the way Segment's audit catalog does ("Warehouses Created", "Integrations
Enabled", "Source Function Modified", "Destination Filters Deleted", ...). Bookkeeping tables (workspaces,
users, memberships, tokens, invites, runs, joins) opt out with ``__audit__ = False``: what happens to them is
recorded with ``audit.record(...)`` under Segment's own verbs (User Invite Sent, User Removed, ...).
"""

from __future__ import annotations

from datetime import datetime, timezone

from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# -- tenancy, people, credentials (recorded by the app, never captured) -----------------------------------


class Workspace(db.Model):
    __audit__ = False
    id = db.Column(db.String(40), primary_key=True)  # "ws_acme"
    name = db.Column(db.String(120), nullable=False)
    slug = db.Column(db.String(60), unique=True, nullable=False)


class User(db.Model):
    __audit__ = False
    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(200), unique=True, nullable=False)
    name = db.Column(db.String(120), nullable=False)
    created_at = db.Column(db.DateTime, default=utcnow, nullable=False)


class Membership(db.Model):
    __audit__ = False
    id = db.Column(db.Integer, primary_key=True)
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False, index=True)
    user_id = db.Column(db.Integer, db.ForeignKey("user.id"), nullable=False)
    role = db.Column(db.String(20), nullable=False, default="member")  # "owner" | "member"
    via = db.Column(db.String(20), nullable=False, default="seed")  # "seed" | "invite" | "sso"
    user = db.relationship(User)
    __table_args__ = (db.UniqueConstraint("workspace_id", "user_id"),)


class AccessToken(db.Model):
    """A workspace's API token. Only the secret's SHA-256 is kept; the audit actor keeps its id and label."""

    __audit__ = False
    id = db.Column(db.String(40), primary_key=True)  # "tok_..."
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False)
    label = db.Column(db.String(120), nullable=False)
    secret_sha256 = db.Column(db.String(64), unique=True, nullable=False)
    last4 = db.Column(db.String(4), nullable=False)


class Invite(db.Model):
    __audit__ = False
    id = db.Column(db.Integer, primary_key=True)
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False, index=True)
    email = db.Column(db.String(200), nullable=False)
    role = db.Column(db.String(20), nullable=False, default="member")
    code = db.Column(db.String(64), unique=True, nullable=False)
    invited_by = db.Column(db.Integer, db.ForeignKey("user.id"))
    accepted_at = db.Column(db.DateTime)


class UserGroup(db.Model):
    __audit__ = False  # Segment's verbs are "User Group Created" / "User Group Updated": recorded by the app
    id = db.Column(db.Integer, primary_key=True)
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False, index=True)
    name = db.Column(db.String(120), nullable=False)
    description = db.Column(db.String(500), nullable=False, default="")


class UserGroupMember(db.Model):
    __audit__ = False
    group_id = db.Column(db.Integer, db.ForeignKey("user_group.id"), primary_key=True)
    user_id = db.Column(db.Integer, db.ForeignKey("user.id"), primary_key=True)


# -- connections --------------------------------------------------------------------------------------------


class Source(db.Model):
    __audit__ = {"resource": "Source", "category": "Source", "toggle": "enabled"}
    id = db.Column(db.Integer, primary_key=True)
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False, index=True)
    name = db.Column(db.String(120), nullable=False)
    kind = db.Column(db.String(40), nullable=False, default="Javascript")
    enabled = db.Column(db.Boolean, nullable=False, default=True)
    write_key = db.Column(db.String(64), nullable=False)  # masked in the trail (a default masked field)


class Integration(db.Model):
    """A destination connected to a source ("Integrations" in Segment's audit catalog)."""

    __audit__ = {"resource": "Integrations", "category": "Integrations", "toggle": "enabled"}
    id = db.Column(db.Integer, primary_key=True)
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False, index=True)
    source_id = db.Column(db.Integer, db.ForeignKey("source.id"))
    name = db.Column(db.String(120), nullable=False)
    destination = db.Column(db.String(60), nullable=False, default="Google Analytics 4")
    enabled = db.Column(db.Boolean, nullable=False, default=True)
    api_key = db.Column(db.String(120), nullable=False, default="")


class SourceFunction(db.Model):
    __audit__ = {"resource": "Source Function", "category": "Functions", "toggle": None}
    id = db.Column(db.Integer, primary_key=True)
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False, index=True)
    name = db.Column(db.String(120), nullable=False)
    description = db.Column(db.String(500), nullable=False, default="")
    code = db.Column(db.Text, nullable=False, default="async function onRequest(request, settings) {}")


class DestinationFunction(db.Model):
    __audit__ = {"resource": "Destination Function", "category": "Functions", "toggle": None}
    id = db.Column(db.Integer, primary_key=True)
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False, index=True)
    name = db.Column(db.String(120), nullable=False)
    description = db.Column(db.String(500), nullable=False, default="")
    code = db.Column(db.Text, nullable=False, default="async function onTrack(event, settings) {}")


class DestinationFilter(db.Model):
    # Segment's catalog has no "Destination Filters Enabled": the flag's flip is part of "Modified".
    __audit__ = {"resource": "Destination Filters", "category": "Destination Filters", "toggle": None}
    id = db.Column(db.Integer, primary_key=True)
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False, index=True)
    integration_id = db.Column(db.Integer, db.ForeignKey("integration.id"))
    name = db.Column(db.String(120), nullable=False)
    condition = db.Column(db.String(500), nullable=False, default='event = "Order Completed"')
    action = db.Column(db.String(20), nullable=False, default="drop")
    enabled = db.Column(db.Boolean, nullable=False, default=True)


class Warehouse(db.Model):
    __audit__ = {"resource": "Warehouses", "category": "Warehouses", "toggle": "enabled"}
    id = db.Column(db.Integer, primary_key=True)
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False, index=True)
    name = db.Column(db.String(120), nullable=False)
    kind = db.Column(db.String(40), nullable=False, default="BigQuery")
    host = db.Column(db.String(200), nullable=False, default="")
    database = db.Column(db.String(120), nullable=False, default="analytics")
    sync_schedule = db.Column(db.String(40), nullable=False, default="every 6 hours")
    password = db.Column(db.String(200), nullable=False, default="")  # masked in the trail
    enabled = db.Column(db.Boolean, nullable=False, default=True)


class WarehouseRun(db.Model):
    __audit__ = False
    id = db.Column(db.Integer, primary_key=True)
    warehouse_id = db.Column(db.Integer, db.ForeignKey("warehouse.id"), nullable=False, index=True)
    started_at = db.Column(db.DateTime, default=utcnow, nullable=False)
    status = db.Column(db.String(20), nullable=False)  # "succeeded" | "failed"
    rows = db.Column(db.Integer, nullable=False, default=0)
    error = db.Column(db.String(500))


# -- protocols ---------------------------------------------------------------------------------------------


class TrackingPlan(db.Model):
    __audit__ = {"resource": "Tracking Plan", "category": "Protocols", "toggle": None}
    id = db.Column(db.Integer, primary_key=True)
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False, index=True)
    name = db.Column(db.String(120), nullable=False)
    description = db.Column(db.String(500), nullable=False, default="")


class TrackingPlanEvent(db.Model):
    """One planned event (the plan's rules); adding or removing one records "Tracking Plan Updated"."""

    __audit__ = False
    id = db.Column(db.Integer, primary_key=True)
    plan_id = db.Column(db.Integer, db.ForeignKey("tracking_plan.id"), nullable=False, index=True)
    name = db.Column(db.String(120), nullable=False)


class PlanConnection(db.Model):
    """A source connected to a tracking plan, with its schema controls and violation operations."""

    __audit__ = False
    id = db.Column(db.Integer, primary_key=True)
    plan_id = db.Column(db.Integer, db.ForeignKey("tracking_plan.id"), nullable=False, index=True)
    source_id = db.Column(db.Integer, db.ForeignKey("source.id"), nullable=False)
    block_new_events = db.Column(db.Boolean, nullable=False, default=False)
    omit_track_properties = db.Column(db.Boolean, nullable=False, default=False)
    omit_identify_traits = db.Column(db.Boolean, nullable=False, default=False)
    omit_group_traits = db.Column(db.Boolean, nullable=False, default=False)
    forward_violations_to = db.Column(db.Integer, db.ForeignKey("source.id"))
    forward_blocked_to = db.Column(db.Integer, db.ForeignKey("source.id"))


class ObservedEvent(db.Model):
    """Track events a source has received (what "Infer tracking plan" learns from)."""

    __audit__ = False
    id = db.Column(db.Integer, primary_key=True)
    source_id = db.Column(db.Integer, db.ForeignKey("source.id"), nullable=False, index=True)
    name = db.Column(db.String(120), nullable=False)
    count = db.Column(db.Integer, nullable=False, default=0)
    violations = db.Column(db.Integer, nullable=False, default=0)


# -- engage ------------------------------------------------------------------------------------------------


class Space(db.Model):
    __audit__ = {"resource": "Space", "category": "Engage", "toggle": None}
    id = db.Column(db.Integer, primary_key=True)
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False, index=True)
    name = db.Column(db.String(120), nullable=False)
    description = db.Column(db.String(500), nullable=False, default="")


class SpaceSource(db.Model):
    __audit__ = False
    space_id = db.Column(db.Integer, db.ForeignKey("space.id"), primary_key=True)
    source_id = db.Column(db.Integer, db.ForeignKey("source.id"), primary_key=True)


class ComputedTrait(db.Model):
    __audit__ = {"resource": "Computed Trait", "category": "Engage", "toggle": None}
    id = db.Column(db.Integer, primary_key=True)
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False, index=True)
    space_id = db.Column(db.Integer, db.ForeignKey("space.id"))
    name = db.Column(db.String(120), nullable=False)
    kind = db.Column(db.String(40), nullable=False, default="Event counter")
    definition = db.Column(db.String(500), nullable=False, default='count(event = "Order Completed", 30d)')


class Audience(db.Model):
    __audit__ = {"resource": "Audience", "category": "Engage", "toggle": None}
    id = db.Column(db.Integer, primary_key=True)
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False, index=True)
    space_id = db.Column(db.Integer, db.ForeignKey("space.id"))
    name = db.Column(db.String(120), nullable=False)
    definition = db.Column(db.String(500), nullable=False, default='performed "Order Completed" at least 3 times')


class EngageWarehouseSource(db.Model):
    __audit__ = {"resource": "Engage Warehouse Source", "category": "Engage", "toggle": None}
    id = db.Column(db.Integer, primary_key=True)
    workspace_id = db.Column(db.String(40), db.ForeignKey("workspace.id"), nullable=False, index=True)
    space_id = db.Column(db.Integer, db.ForeignKey("space.id"))
    warehouse_id = db.Column(db.Integer, db.ForeignKey("warehouse.id"))
    name = db.Column(db.String(120), nullable=False)
    query = db.Column(db.String(1000), nullable=False, default="select user_id, plan from accounts")


# -- the built-in receiver for forwarded events --------------------------------------------------------------


class ReceivedMessage(db.Model):
    """A message the local receiver got: a Segment track call or a Slack incoming-webhook post."""

    __audit__ = False
    id = db.Column(db.Integer, primary_key=True)
    channel = db.Column(db.String(20), nullable=False, index=True)  # "segment" | "slack"
    received_at = db.Column(db.DateTime, default=utcnow, nullable=False)
    body = db.Column(db.Text, nullable=False)  # JSON
