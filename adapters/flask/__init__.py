"""Audit trail for Flask: ``audit = AuditTrail(app, db, can_view=...)``.

Needs Flask and Flask-SQLAlchemy (or any SQLAlchemy session): ``pip install "audit-middleware[flask]"``.
"""

from __future__ import annotations

try:
    import flask
except ImportError as error:  # pragma: no cover - exercised by the no-extras tox env
    raise ImportError(
        'audit_middleware.adapters.flask needs Flask: pip install "audit-middleware[flask]"'
    ) from error

from .csrf import csrf_token, validate_csrf
from .extension import CONFIG_DEFAULTS, AuditTrail
from .request import client_ip

__all__ = [
    "CONFIG_DEFAULTS",
    "AuditTrail",
    "client_ip",
    "csrf_token",
    "flask",
    "validate_csrf",
]
