"""What an event learns from the Flask request: the actor chain and the request facts.

Both are computed lazily by the request scope, only when an event is recorded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask, Request, current_app, request, session

from audit_middleware.actors import Actor
from audit_middleware.context import RequestContext, client_ip
from audit_middleware.ids import new_request_id

MAX_USER_AGENT = 512
MAX_TOKEN = 4096
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,200}")

UserLoader = Callable[[str], Any]
TokenLoader = Callable[[str], "Actor | None"]


def request_facts(req: Request, app: Flask) -> RequestContext:
    """IP, user agent, request id (from the configured header, else a new one), method and path. ``req`` and
    ``app`` are the objects themselves, not Flask's proxies (each attribute read through a proxy looks the
    request up again); headers are read from the WSGI environ, as ``req.headers`` does."""
    config = app.config
    environ = req.environ
    header = config.get("AUDIT_TRAIL_REQUEST_ID_HEADER")
    request_id = environ.get(_environ_key(header)) if header else None
    if request_id is None or not _REQUEST_ID.fullmatch(request_id):
        request_id = new_request_id()
    user_agent = environ.get("HTTP_USER_AGENT") or None
    if user_agent is not None and len(user_agent) > MAX_USER_AGENT:
        user_agent = user_agent[:MAX_USER_AGENT]
    return RequestContext(
        ip=client_ip(req.remote_addr, environ.get("HTTP_X_FORWARDED_FOR"),
                     int(config.get("AUDIT_TRAIL_TRUSTED_PROXIES", 0))),
        user_agent=user_agent,
        request_id=request_id,
        method=req.method,
        path=req.path,
    )


def _environ_key(header: str) -> str:
    """The WSGI environ key of an HTTP request header (``X-Request-ID`` -> ``HTTP_X_REQUEST_ID``)."""
    key = header.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"


def bearer_token(req: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    header = req.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN:
        return None
    return token


def user_actor(user: Any, name_attributes: Sequence[str]) -> Actor:
    """An Actor for a user object: id from ``get_id()`` or ``id``, name from the first non-empty of
    ``name_attributes`` (email, username, name by default)."""
    if isinstance(user, Actor):
        return user
    get_id = getattr(user, "get_id", None)
    user_id = get_id() if callable(get_id) else getattr(user, "id", None)
    if user_id is None:
        raise TypeError(
            f"cannot tell the id of the user object {type(user).__name__}: give it get_id() or an id "
            "attribute, or have the user loader return an Actor"
        )
    name = None
    for attribute in name_attributes:
        value = getattr(user, attribute, None)
        if value:
            name = str(value)
            break
    return Actor.user(user_id, name)


def _flask_login_user(app: Flask) -> Any:
    if getattr(app, "login_manager", None) is None:
        return None
    try:
        from flask_login import current_user
    except ImportError:  # pragma: no cover - login_manager set by something else
        return None
    user = current_user._get_current_object()  # type: ignore[attr-defined]
    return user if getattr(user, "is_authenticated", False) else None


def resolve_actor(
    *,
    user_loader: UserLoader | None,
    token_loader: TokenLoader | None,
) -> Actor:
    """The actor chain: Flask-Login's ``current_user``; else the user id kept in the session under
    ``AUDIT_TRAIL_SESSION_USER_KEY`` (through ``user_loader`` when given); else an ``Authorization: Bearer``
    token passed to ``token_loader``; else anonymous."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    names: Sequence[str] = app.config.get("AUDIT_TRAIL_USER_NAME_ATTRIBUTES", ("email", "username", "name"))
    user = _flask_login_user(app)
    if user is not None:
        return user_actor(user, names)
    key = app.config.get("AUDIT_TRAIL_SESSION_USER_KEY")
    if key:
        user_id = session.get(key)
        if user_id is not None and user_id != "":
            if user_loader is None:
                return Actor.user(user_id)
            loaded = user_loader(str(user_id))
            if loaded is not None:
                return user_actor(loaded, names)
    if token_loader is not None:
        token = bearer_token(request)
        if token is not None:
            actor = token_loader(token)
            if actor is not None:
                if not isinstance(actor, Actor):
                    raise TypeError(
                        f"token_loader must return an Actor (Actor.token(id, label)) or None, "
                        f"not {type(actor).__name__}"
                    )
                return actor
    return Actor.anonymous()
