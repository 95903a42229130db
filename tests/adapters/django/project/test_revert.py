"""Revert on Django: the Python API and the admin view's Revert button (POST with CSRF)."""

import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings
from testapp.models import Membership, Warehouse

from audit_middleware import Actor, acting_as, in_workspace
from audit_middleware.adapters.django.revert import revert
from audit_middleware.revert import RevertConflict, RevertError, RevertNeedsConfirmation

from .conftest import events

OWNER = Actor.user("1", "owner@example.com")
INDEX = "/admin/audit-trail/"


def url(event_id):
    return f"/admin/audit-trail/events/{event_id}/revert"


def viewer(username="viewer", workspace="ws_1"):
    user = User.objects.create_user(username, f"{username}@example.com", "pw")
    Membership.objects.create(user=user, workspace_id=workspace)
    user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.get(pk=user.pk))
    return client


def token(client):
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(INDEX).content.decode()).group(1)


def make(**values):
    with in_workspace("ws_1"), acting_as(Actor.user("7", "ada@example.com")):
        return Warehouse.objects.create(**{"name": "Production", "capacity": Decimal("10.50"), **values})


def test_api_restores_modified_values_recreates_deleted_rows_and_deletes_created_ones():
    w = make(write_key="wk_secret")
    with in_workspace("ws_1"):
        w.name, w.capacity = "Renamed", Decimal("99.00")
        w.save()
    modified = events(event="Warehouse Modified")[0]
    result = revert(modified.id, actor=OWNER)
    w.refresh_from_db()
    assert (w.name, w.capacity) == ("Production", Decimal("10.50"))
    assert [(e.event, e.actor, e.workspace_id, e.context["reverted_event_id"]) for e in result.recorded] == [
        ("Warehouse Modified", OWNER, "ws_1", modified.id)]
    pk = w.pk
    with in_workspace("ws_1"):
        w.delete()
    deleted = events(event="Warehouse Deleted")[0]
    result = revert(deleted.id, actor=OWNER)
    back = Warehouse.objects.get(pk=pk)
    assert (back.name, back.capacity, back.write_key) == ("Production", Decimal("10.50"), "")
    assert result.not_restorable == ["write_key"]
    created = events(event="Warehouse Created")[0]
    with pytest.raises(RevertNeedsConfirmation):
        revert(created.id)
    Warehouse.objects.filter(pk=pk).update(name="Changed")
    with pytest.raises(RevertConflict, match="name is now 'Changed'"):
        revert(created.id, confirm=True)
    revert(created.id, confirm=True, force=True)
    assert not Warehouse.objects.filter(pk=pk).exists()


def test_conflicts_name_the_fields_and_force_overwrites():
    w = make()
    with in_workspace("ws_1"):
        w.name = "Renamed"
        w.save()
        w.name = "Renamed again"
        w.save()
        w.enabled = False
        w.save()
        w.enabled = True
        w.save()
    renamed = events(event="Warehouse Modified")[0]
    with pytest.raises(RevertConflict) as caught:
        revert(renamed.id)
    assert [(c.field, c.expected, c.current) for c in caught.value.plan.conflicts] == [
        ("name", "Renamed", "Renamed again")]
    with pytest.raises(RevertError, match="in this workspace"):
        revert(renamed.id, workspace_id="ws_2")
    revert(renamed.id, force=True)
    w.refresh_from_db()
    assert w.name == "Production"
    with pytest.raises(RevertError, match="already holds the values from before 'Warehouse Disabled'"):
        revert(events(event="Warehouse Disabled")[0].id)


def test_the_revert_button_in_the_admin_view():
    w = make()
    with in_workspace("ws_1"):
        w.enabled = False
        w.save()
    disabled = events(event="Warehouse Disabled")[0]
    client = viewer()
    page = client.get(INDEX).content.decode()
    assert f'action="{url(disabled.id)}"' in page
    assert client.post(url(disabled.id)).status_code == 403  # no CSRF token
    response = client.post(url(disabled.id), {"csrfmiddlewaretoken": token(client)})
    assert response.status_code == 303
    assert f"Event {disabled.id} was reverted." in client.get(response["Location"]).content.decode()
    w.refresh_from_db()
    assert w.enabled is True
    enabled = events(event="Warehouse Enabled")[-1]
    assert enabled.actor.name == "viewer@example.com" and enabled.context["reverted_event_id"] == disabled.id
    again = client.post(url(disabled.id), {"csrfmiddlewaretoken": token(client)})
    assert again.status_code == 400 and b"nothing to revert" in again.content
    with in_workspace("ws_1"):
        w.name = "Renamed"
        w.save()
        w.name = "Renamed again"
        w.save()
    renamed = events(event="Warehouse Modified")[0]
    conflict = client.post(url(renamed.id), {"csrfmiddlewaretoken": token(client)})
    assert conflict.status_code == 409
    assert b"<td>name</td><td>Renamed</td><td>Renamed again</td>" in conflict.content
    forced = client.post(url(renamed.id), {"csrfmiddlewaretoken": token(client), "force": "1"})
    assert forced.status_code == 303
    w.refresh_from_db()
    assert w.name == "Production"
    other = viewer("other", workspace="ws_2")
    with in_workspace("ws_2"):
        Warehouse.objects.create(name="Theirs")  # a row of their own, so their page has a form
    refused = other.post(url(disabled.id), {"csrfmiddlewaretoken": token(other)})
    assert refused.status_code == 404


def test_can_revert_setting_hides_the_button_and_refuses():
    from django.conf import settings

    w = make()
    with in_workspace("ws_1"):
        w.enabled = False
        w.save()
    disabled = events(event="Warehouse Disabled")[0]
    client = viewer()
    csrf = token(client)  # a valid token, so only CAN_REVERT can refuse below
    with override_settings(AUDIT_TRAIL={**settings.AUDIT_TRAIL, "CAN_REVERT": lambda request: False}):
        assert "/revert" not in client.get(INDEX).content.decode()
        response = client.post(url(disabled.id), {"csrfmiddlewaretoken": csrf})
        assert response.status_code == 403 and b"not revert" in response.content
    w.refresh_from_db()
    assert w.enabled is False
