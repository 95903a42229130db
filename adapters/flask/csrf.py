"""A small CSRF token for the admin blueprint's POST routes (forwarding settings, revert).

The token is random, kept in the signed Flask session, and must come back with every unsafe request as the
``csrf_token`` form field or the ``X-CSRF-Token`` header. Templates get ``csrf_token()``.
"""

from __future__ import annotations

import hmac
import secrets

from flask import current_app, request, session

SESSION_KEY = "_audit_trail_csrf"
FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def csrf_token() -> str:
    """This session's token, created on first use (needs ``app.secret_key``)."""
    if not current_app.secret_key:
        raise RuntimeError(
            "the audit trail's POST forms need a CSRF token kept in the session: set app.secret_key "
            "(or SECRET_KEY in the config)"
        )
    token = session.get(SESSION_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def validate_csrf() -> str | None:
    """None when the current request may go ahead, else why not (for a 400 answer)."""
    if request.method in SAFE_METHODS:
        return None
    expected = session.get(SESSION_KEY)
    if not isinstance(expected, str) or not expected:
        return "the CSRF token is missing from your session; reload the page and try again"
    given = request.form.get(FORM_FIELD) or request.headers.get(HEADER) or ""
    if not hmac.compare_digest(expected.encode(), given.encode()):
        return "the CSRF token is missing or wrong; reload the page and try again"
    return None
