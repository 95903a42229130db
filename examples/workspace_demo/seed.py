"""Demo data: two workspaces, an owner and a member in each, one access token, and a few resources of
every kind. Seeding is not audited (``suspend_auditing``): the trail starts with what people do."""

from __future__ import annotations

from typing import Any

from audit_middleware import suspend_auditing

from .app import token_digest
from .models import (
    AccessToken,
    Audience,
    ComputedTrait,
    DestinationFilter,
    DestinationFunction,
    EngageWarehouseSource,
    Integration,
    Membership,
    ObservedEvent,
    PlanConnection,
    Source,
    SourceFunction,
    Space,
    SpaceSource,
    TrackingPlan,
    TrackingPlanEvent,
    User,
    UserGroup,
    UserGroupMember,
    Warehouse,
    Workspace,
    db,
)

#: the demo's one access token (a real app shows a secret once; the demo prints it at startup)
DEMO_TOKEN_ID = "tok_ci_deploy"
DEMO_TOKEN_SECRET = "demo_secret_ci_deploy_7f3a"

PEOPLE = {
    "ws_acme": ("Acme Analytics", "acme", [("ada@acme.example", "Ada Lovelace", "owner"),
                                            ("grace@acme.example", "Grace Hopper", "member")]),
    "ws_globex": ("Globex Retail", "globex", [("hank@globex.example", "Hank Scorpio", "owner"),
                                              ("marge@globex.example", "Marge Bouvier", "member")]),
}

EVENTS = ["Order Completed", "Product Viewed", "Signed Up", "Cart Viewed", "Checkout Started"]


def seed() -> bool:
    """Fill an empty database (inside an app context); returns False when it was seeded already."""
    if db.session.get(Workspace, "ws_acme") is not None:
        return False
    with suspend_auditing():
        for ws_id, (name, slug, people) in PEOPLE.items():
            db.session.add(Workspace(id=ws_id, name=name, slug=slug))
            for email, person, role in people:
                user = User(email=email, name=person)
                db.session.add(user)
                db.session.flush()
                db.session.add(Membership(workspace_id=ws_id, user_id=user.id, role=role))
            resources(ws_id, slug)
        db.session.add(AccessToken(id=DEMO_TOKEN_ID, workspace_id="ws_acme", label="ci-deploy",
                                   secret_sha256=token_digest(DEMO_TOKEN_SECRET), last4=DEMO_TOKEN_SECRET[-4:]))
        db.session.commit()
    return True


def add(obj: Any) -> Any:
    db.session.add(obj)
    db.session.flush()
    return obj


def resources(ws: str, slug: str) -> None:
    web = add(Source(workspace_id=ws, name=f"{slug}.com website", kind="Javascript", write_key=f"wk_{slug}_web"))
    ios = add(Source(workspace_id=ws, name=f"{slug.title()} iOS", kind="iOS", write_key=f"wk_{slug}_ios"))
    add(Source(workspace_id=ws, name="Billing webhooks", kind="HTTP API", write_key=f"wk_{slug}_billing",
               enabled=False))
    ga = add(Integration(workspace_id=ws, source_id=web.id, name="GA4 (web)", destination="Google Analytics 4",
                         api_key="ga-secret"))
    add(Integration(workspace_id=ws, source_id=ios.id, name="Amplitude (iOS)", destination="Amplitude",
                    api_key="amp-secret"))
    add(SourceFunction(workspace_id=ws, name="Stripe webhook parser", description="Turns Stripe events into track calls"))
    add(DestinationFunction(workspace_id=ws, name="Zendesk tickets", description="Opens a ticket on Refund Requested"))
    add(DestinationFilter(workspace_id=ws, integration_id=ga.id, name="Drop internal traffic",
                          condition='context.ip = "10.0.0.1"', action="drop"))
    bq = add(Warehouse(workspace_id=ws, name="Production BigQuery", kind="BigQuery", host="bigquery.googleapis.com",
                       database=f"{slug}_prod", password="bq-secret"))
    add(Warehouse(workspace_id=ws, name="Analytics Snowflake", kind="Snowflake", host=f"{slug}.snowflakecomputing.com",
                  database="ANALYTICS", password="sf-secret", sync_schedule="every day"))
    plan = add(TrackingPlan(workspace_id=ws, name="Web tracking plan", description="Events of the website"))
    for name in EVENTS[:3]:
        add(TrackingPlanEvent(plan_id=plan.id, name=name))
    add(PlanConnection(plan_id=plan.id, source_id=web.id))
    for i, name in enumerate(EVENTS):
        add(ObservedEvent(source_id=web.id, name=name, count=1000 - 150 * i))
        add(ObservedEvent(source_id=ios.id, name=name, count=400 - 50 * i))
    space = add(Space(workspace_id=ws, name="Customers", description="B2C profiles"))
    add(SpaceSource(space_id=space.id, source_id=web.id))
    add(ComputedTrait(workspace_id=ws, space_id=space.id, name="orders_last_30_days"))
    add(Audience(workspace_id=ws, space_id=space.id, name="High-value customers"))
    add(EngageWarehouseSource(workspace_id=ws, space_id=space.id, warehouse_id=bq.id, name="CRM accounts"))
    owner = db.session.scalar(db.select(Membership).filter_by(workspace_id=ws, role="owner"))
    group = add(UserGroup(workspace_id=ws, name="Admins", description="Full access"))
    add(UserGroupMember(group_id=group.id, user_id=owner.user_id))
