"""Pages of the Django demo: a workspace's sources and warehouses, created, renamed, enabled, disabled and
deleted by its people (captured automatically), a failing warehouse run (recorded with ``record()`` by the
scheduler), and one API route for the access token."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model, login, logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from audit_middleware import Actor, acting_as
from audit_middleware.adapters.django import record

from .audit import membership, token_of
from .models import Membership, Source, Warehouse

KINDS: dict[str, Any] = {"sources": Source, "warehouses": Warehouse}


def login_view(request: Any) -> Any:
    """No passwords in the demo: pick a person."""
    if request.method == "POST":
        user = get_user_model().objects.filter(username=request.POST.get("username", "")).first()
        if user is None:
            messages.error(request, "No such user.")
            return redirect("login")
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("home")
    people = Membership.objects.select_related("user", "workspace").order_by("workspace_id", "-role")
    return render(request, "demo_site/login.html", {"people": people})


@require_POST
def logout_view(request: Any) -> Any:
    logout(request)
    return redirect("login")


@login_required
def home(request: Any) -> Any:
    member = membership(request)
    if member is None:
        return HttpResponse("You are not a member of any workspace.", status=403)
    return render(request, "demo_site/home.html", {
        "member": member,
        "sources": Source.objects.filter(workspace=member.workspace).order_by("id"),
        "warehouses": Warehouse.objects.filter(workspace=member.workspace).order_by("id"),
    })


@login_required
@require_POST
def create(request: Any, kind: str) -> Any:
    model = KINDS.get(kind)
    member = membership(request)
    if model is None or member is None:
        raise Http404
    name = request.POST.get("name", "").strip()
    if not name:
        messages.error(request, "A name is required.")
        return redirect("home")
    model.objects.create(workspace=member.workspace, name=name, kind=request.POST.get("kind") or "Javascript")
    messages.success(request, f"{name} created.")
    return redirect("home")


@login_required
@require_POST
def act(request: Any, kind: str, pk: int, action: str) -> Any:
    model = KINDS.get(kind)
    member = membership(request)
    if model is None or member is None:
        raise Http404
    obj = model.objects.filter(workspace=member.workspace, pk=pk).first()
    if obj is None:
        raise Http404
    if action in ("enable", "disable"):
        obj.enabled = action == "enable"
        obj.save()
    elif action == "rename":
        obj.name = request.POST.get("name", obj.name).strip() or obj.name
        obj.save()
    elif action == "delete":
        obj.delete()
    elif action == "run" and isinstance(obj, Warehouse):
        with acting_as(Actor.system("warehouse-scheduler")):
            record("Warehouse Run Failed", obj, details={"error": "authentication failed"})
    else:
        raise Http404
    messages.success(request, f"{obj.name}: {action} done.")
    return redirect("home")


@csrf_exempt  # token-authenticated, never cookie-authenticated
@require_POST
def api_warehouse(request: Any, pk: int, action: str) -> Any:
    token = token_of(request)
    if token is None:
        return JsonResponse({"error": "send Authorization: Bearer <access token>"}, status=401)
    request.user = AnonymousUser()  # a session cookie sent along does not make its user the actor
    obj = Warehouse.objects.filter(workspace_id=token.workspace_id, pk=pk).first()
    if obj is None or action not in ("enable", "disable"):
        raise Http404
    obj.enabled = action == "enable"
    obj.save()
    return JsonResponse({"id": obj.pk, "enabled": obj.enabled})
