"""The three callables ``AUDIT_TRAIL`` names: who may view the trail, the request's workspace, API tokens."""

from __future__ import annotations

import hashlib
from typing import Any

from audit_middleware import Actor

from .models import AccessToken, Membership


def membership(request: Any) -> Membership | None:
    if not request.user.is_authenticated:
        return None
    cached = getattr(request, "_demo_membership", False)
    if cached is False:
        cached = Membership.objects.select_related("workspace").filter(user=request.user).first()
        request._demo_membership = cached
    return cached


def token_of(request: Any) -> AccessToken | None:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    digest = hashlib.sha256(secret.strip().encode()).hexdigest()
    return AccessToken.objects.filter(secret_sha256=digest).first()


def can_view(request: Any) -> bool:
    found = membership(request)
    return found is not None and found.role == "owner"


def workspace_of(request: Any) -> str | None:
    found = membership(request)
    if found is not None:
        return found.workspace_id
    token = token_of(request)
    return token.workspace_id if token is not None else None


def load_token(secret: str) -> Actor | None:
    token = AccessToken.objects.filter(secret_sha256=hashlib.sha256(secret.encode()).hexdigest()).first()
    return None if token is None else Actor.token(token.id, token.label, secret=secret)
