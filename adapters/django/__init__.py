"""Audit trail for Django: add the app, one middleware line and one URL include.

::

    INSTALLED_APPS += ["audit_middleware.adapters.django"]          # app label "audit_middleware"
    MIDDLEWARE += ["audit_middleware.adapters.django.middleware.AuditMiddleware"]
    # urls.py
    path("admin/audit-trail/", include("audit_middleware.adapters.django.urls"))

Settings live in one ``AUDIT_TRAIL = {...}`` dict, read lazily (see :mod:`.conf`). App verbs are recorded
with :func:`record`; the trail is read with :func:`get_store`.
"""

from __future__ import annotations

from typing import Any

try:
    import django
except ImportError as error:  # pragma: no cover - exercised by the no-extras tox env
    raise ImportError(
        'audit_middleware.adapters.django needs Django: pip install "audit-middleware[django]"'
    ) from error

__all__ = ["django", "get_auditor", "get_store", "record"]


def get_auditor() -> Any:
    """The process-wide :class:`~.auditor.DjangoAuditor` (built on first use from ``AUDIT_TRAIL``)."""
    from .auditor import get_auditor as _get

    return _get()


def get_store(using: str | None = None) -> Any:
    """A :class:`~.store.DjangoStore` on database ``using`` (default: where the router writes audit events)."""
    from .store import DjangoStore

    return DjangoStore(using)


def record(name: str, resource: Any = None, **kwargs: Any) -> Any:
    """Record an app event such as ``"Warehouse Run Failed"``; see :meth:`.auditor.DjangoAuditor.record`."""
    return get_auditor().record(name, resource, **kwargs)
