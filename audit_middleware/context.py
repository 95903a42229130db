"""What is true while an event is recorded: actor, request, workspace, and whether auditing is on.

Everything lives in :mod:`contextvars`, so threads and asyncio tasks each see their own values. The public
helpers are context managers that reset by token. Adapters bind a :class:`RequestScope` per request whose
actor, request facts and workspace are computed lazily, only when an event is actually recorded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .actors import ANONYMOUS, Actor


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Facts about the request an event happened in."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    method: str | None = None
    path: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (
            ("ip", self.ip), ("user_agent", self.user_agent), ("request_id", self.request_id),
            ("method", self.method), ("path", self.path),
        ) if v is not None}


def client_ip(remote_addr: str | None, forwarded_for: str | None, trusted_proxies: int) -> str | None:
    """The client's address, as every adapter reads it: the socket's peer (``remote_addr``) or, with
    ``trusted_proxies`` = N, the N-th entry from the right of X-Forwarded-For (what the outermost trusted proxy
    saw). A client cannot spoof it with its own header: with fewer hops than trusted proxies, or a hop that is
    not an IP address, the peer's address is kept. Addresses come back normalised; text that is not an address
    is no IP (None)."""
    remote = _address(remote_addr)
    if trusted_proxies <= 0 or not forwarded_for:
        return remote
    hops = forwarded_for.split(",")
    if len(hops) >= trusted_proxies:
        return _address(hops[-trusted_proxies]) or remote
    return remote


def _address(text: str | None) -> str | None:
    return _parsed_address(text.strip()) if text else None


@lru_cache(maxsize=1024)
def _parsed_address(text: str) -> str | None:
    """``text`` normalised, if it is an IP address. Cached: a server sees the same few addresses again and
    again, and ``ipaddress`` parses in Python; bounded, since a header's text is the client's to choose."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


_UNSET: Any = object()


@dataclass(slots=True)
class RequestScope:
    """Lazily resolved facts of one request; each loader runs at most once, on first use."""

    actor_loader: Callable[[], Actor | None] | None = None
    request_loader: Callable[[], RequestContext | None] | None = None
    workspace_loader: Callable[[], str | None] | None = None
    _actor: Any = field(default=_UNSET)
    _request: Any = field(default=_UNSET)
    _workspace: Any = field(default=_UNSET)

    def actor(self) -> Actor | None:
        if self._actor is _UNSET:
            self._actor = self.actor_loader() if self.actor_loader else None
        return self._actor  # type: ignore[no-any-return]

    def forget_actor(self) -> None:
        """Resolve the actor again next time (the user may have logged in or out meanwhile)."""
        self._actor = _UNSET

    def request(self) -> RequestContext | None:
        if self._request is _UNSET:
            self._request = self.request_loader() if self.request_loader else None
        return self._request  # type: ignore[no-any-return]

    def workspace(self) -> str | None:
        if self._workspace is _UNSET:
            self._workspace = self.workspace_loader() if self.workspace_loader else None
        return self._workspace  # type: ignore[no-any-return]


_actor: ContextVar[Actor | None] = ContextVar("audit_actor", default=None)
_workspace: ContextVar[str | None] = ContextVar("audit_workspace", default=None)
_request: ContextVar[RequestContext | None] = ContextVar("audit_request", default=None)
_scope: ContextVar[RequestScope | None] = ContextVar("audit_scope", default=None)
_suspended: ContextVar[bool] = ContextVar("audit_suspended", default=False)
_extra: ContextVar[dict[str, Any] | None] = ContextVar("audit_extra", default=None)


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    """Attribute every event recorded inside the block to ``actor`` (jobs, commands, tests)."""
    if not isinstance(actor, Actor):
        raise TypeError(f"acting_as() needs an Actor, got {type(actor).__name__}: use Actor.user/token/system")
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)


@contextmanager
def in_workspace(workspace_id: str | None) -> Iterator[None]:
    """Scope every event recorded inside the block to a workspace (tenant)."""
    token = _workspace.set(None if workspace_id is None else str(workspace_id))
    try:
        yield
    finally:
        _workspace.reset(token)


@contextmanager
def request_context(request: RequestContext) -> Iterator[None]:
    """Attach request facts (IP, user agent, request id, ...) to events recorded inside the block."""
    token = _request.set(request)
    try:
        yield
    finally:
        _request.reset(token)


@contextmanager
def suspend_auditing() -> Iterator[None]:
    """Record nothing inside the block (data migrations, fixtures)."""
    token = _suspended.set(True)
    try:
        yield
    finally:
        _suspended.reset(token)


@contextmanager
def extra_context(**values: Any) -> Iterator[None]:
    """Add keys to the ``context`` of events recorded inside the block (for example ``reverted_event_id``)."""
    merged = dict(_extra.get() or {})
    merged.update(values)
    token = _extra.set(merged)
    try:
        yield
    finally:
        _extra.reset(token)


@contextmanager
def request_scope(scope: RequestScope) -> Iterator[RequestScope]:
    """Bind a lazily resolved request scope (used by the framework adapters)."""
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def bind_scope(scope: RequestScope | None) -> Any:
    """Bind ``scope`` without a ``with`` block; returns the token for :func:`unbind_scope`."""
    return _scope.set(scope)


def unbind_scope(token: Any) -> None:
    _scope.reset(token)


ScopeFinder = Callable[[], "RequestScope | None"]
_scope_finders: list[ScopeFinder] = []


def add_scope_finder(finder: ScopeFinder) -> None:
    """Let ``finder`` supply the current request's scope when none is bound: for a framework that tracks the
    current request itself (Flask), so a request costs nothing unless it records an event."""
    if finder not in _scope_finders:
        _scope_finders.append(finder)


def remove_scope_finder(finder: ScopeFinder) -> None:
    if finder in _scope_finders:
        _scope_finders.remove(finder)


def current_scope() -> RequestScope | None:
    """The bound request scope, else the one a registered finder supplies, else None."""
    scope = _scope.get()
    if scope is None:
        for finder in _scope_finders:
            scope = finder()
            if scope is not None:
                break
    return scope


def auditing_suspended() -> bool:
    return _suspended.get()


_FIND: Any = object()  # a scope argument meaning "look the current request scope up" (current_scope())


def current_actor(scope: RequestScope | None = _FIND) -> Actor:
    """The explicit ``acting_as`` actor, else the request's actor (of ``scope``, by default the current
    request's), else anonymous."""
    actor = _actor.get()
    if actor is not None:
        return actor
    if scope is _FIND:
        scope = current_scope()
    if scope is not None:
        resolved = scope.actor()
        if resolved is not None:
            return resolved
    return ANONYMOUS


def current_workspace(scope: RequestScope | None = _FIND) -> str | None:
    workspace = _workspace.get()
    if workspace is not None:
        return workspace
    if scope is _FIND:
        scope = current_scope()
    return scope.workspace() if scope is not None else None


def current_request(scope: RequestScope | None = _FIND) -> RequestContext | None:
    request = _request.get()
    if request is not None:
        return request
    if scope is _FIND:
        scope = current_scope()
    return scope.request() if scope is not None else None


def current_context(scope: RequestScope | None = _FIND) -> dict[str, Any]:
    """The ``context`` dict stored on an event: request facts plus any :func:`extra_context`."""
    return context_of(current_request(scope), _extra.get())


def context_of(request: RequestContext | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    """The ``context`` dict of ``request``'s facts plus ``extra`` (an :func:`extra_context`'s keys)."""
    context: dict[str, Any] = request.as_dict() if request is not None else {}
    if extra:
        context.update(extra)
    return context


def origin_facts() -> tuple[Actor, str | None, RequestContext | None, dict[str, Any] | None]:
    """``(current_actor(), current_workspace(), current_request(), the extra_context keys)``, the request scope
    looked up once (a framework's scope finder is not free) and only if one of them needs it. Each is an object
    that does not change once made (a frozen Actor and RequestContext, the workspace's text or a scope loader's
    value, an extra-context dict never changed after it is bound), so a caller may keep what it built from them
    for as long as it gets the same objects."""
    scope = current_scope() if _actor.get() is None or _workspace.get() is None or _request.get() is None else None
    return current_actor(scope), current_workspace(scope), current_request(scope), _extra.get()
