"""A read-only registration of the audit events in ``django.contrib.admin``."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("occurred_at", "event", "actor_type", "actor_name", "resource_type", "resource_id",
                    "resource_name", "workspace_id")
    list_filter = ("category", "actor_type", "resource_type")
    search_fields = ("event", "actor_id", "actor_name", "resource_id", "resource_name")
    date_hierarchy = "occurred_at"
    ordering = ("-occurred_at", "-id")
    show_full_result_count = False  # no COUNT(*) over millions of rows per page

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
