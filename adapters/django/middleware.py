"""``AuditMiddleware``: binds the request's lazily resolved actor, request facts and workspace.

Nothing is resolved until an event is recorded, so ``request.user`` is never forced before the view runs;
a user set on the request later (DRF's authentication sets ``request._request.user`` inside the view) is
seen because the actor is resolved again whenever ``request.user`` has been replaced. Sync and async capable:
under ASGI an async view keeps the context; sync code run through ``sync_to_async`` inherits it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils.functional import LazyObject, empty

from audit_middleware.actors import Actor
from audit_middleware.context import RequestContext, RequestScope, bind_scope, client_ip, unbind_scope
from audit_middleware.ids import new_request_id

from . import conf

_MISSING: Any = object()
MAX_HEADER = 512


def _header(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return str(value)[:MAX_HEADER] if value else None


def user_actor(user: Any) -> Actor | None:
    """An authenticated Django user as an actor (id = pk, name = the email, else the USERNAME_FIELD)."""
    if isinstance(user, LazyObject):  # request.user: its type is not the user model, and each attribute costs
        if user._wrapped is empty:
            user._setup()
        user = user._wrapped
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    name_field = getattr(type(user), "USERNAME_FIELD", None)
    name = getattr(user, "email", None) or (getattr(user, name_field, None) if name_field else None)
    return Actor.user(user.pk, str(name) if name else None)


def bearer_token(meta: dict[str, Any]) -> str | None:
    header = str(meta.get("HTTP_AUTHORIZATION", ""))
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return secret.strip()


class DjangoScope(RequestScope):
    """A request scope that resolves the actor again when ``request.user`` is replaced (DRF sets it inside
    the view, after this middleware ran)."""

    __slots__ = ("http_request", "user_seen")

    def __init__(self, request: HttpRequest, workspace_loader: Callable[[], str | None] | None) -> None:
        super().__init__(actor_loader=self._load_actor, request_loader=self._load_request,
                         workspace_loader=workspace_loader)
        self.http_request = request
        self.user_seen: Any = _MISSING

    def actor(self) -> Actor | None:
        user = self.http_request.__dict__.get("user", _MISSING)
        if user is not self.user_seen:
            self.forget_actor()
            self.user_seen = user
        return super().actor()

    def _load_actor(self) -> Actor | None:
        request = self.http_request
        actor = user_actor(request.__dict__.get("user"))
        if actor is not None:
            return actor
        secret = bearer_token(request.META)
        if secret is not None:
            loader = conf.token_loader()
            if loader is not None:
                resolved = loader(secret)
                if resolved is not None and not isinstance(resolved, Actor):
                    raise TypeError(
                        f"AUDIT_TRAIL['TOKEN_LOADER'] must return an Actor or None, not {type(resolved).__name__}"
                    )
                return resolved  # type: ignore[no-any-return]
        return None

    def _load_request(self) -> RequestContext:
        request = self.http_request
        meta = request.META
        return RequestContext(
            ip=client_ip(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR"),
                         conf.audit_config().trusted_proxies),
            user_agent=_header(meta, "HTTP_USER_AGENT"),
            request_id=_header(meta, "HTTP_X_REQUEST_ID") or new_request_id(),
            method=request.method,
            path=request.path[:MAX_HEADER],
        )


def _scope(request: HttpRequest) -> DjangoScope:
    loader = conf.workspace_loader()
    workspace = None
    if loader is not None:
        def workspace() -> str | None:
            value = loader(request)
            return None if value is None else str(value)
    return DjangoScope(request, workspace)


class AuditMiddleware:
    """``MIDDLEWARE += ["audit_middleware.adapters.django.middleware.AuditMiddleware"]`` (after
    ``AuthenticationMiddleware``)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        token = bind_scope(_scope(request))
        try:
            return self.get_response(request)
        finally:
            unbind_scope(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        token = bind_scope(_scope(request))
        try:
            response: Awaitable[HttpResponse] = self.get_response(request)
            return await response
        finally:
            unbind_scope(token)
