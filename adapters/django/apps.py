"""The Django app: ``INSTALLED_APPS += ["audit_middleware.adapters.django"]`` (label ``audit_middleware``)."""

from __future__ import annotations

from django.apps import AppConfig


class AuditMiddlewareConfig(AppConfig):
    name = "audit_middleware.adapters.django"
    label = "audit_middleware"
    verbose_name = "Audit trail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .auditor import get_auditor

        # Connects the model signals and installs the QuerySet/Atomic patches; every model is known by now.
        get_auditor().install()
