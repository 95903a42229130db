"""``path("admin/audit-trail/", include("audit_middleware.adapters.django.urls"))``.

Names in the ``audit_middleware`` namespace: ``index``, ``events_json``, ``export_csv``, ``stylesheet``,
``forwarding``, ``revert``.
"""

from __future__ import annotations

from django.urls import path

from . import forwarding_views, revert_views, views

app_name = "audit_middleware"

urlpatterns = [
    path("", views.index, name="index"),
    path("events.json", views.events_json, name="events_json"),
    path("export.csv", views.export_csv, name="export_csv"),
    path("static/admin.css", views.stylesheet, name="stylesheet"),
    path("forwarding", forwarding_views.forwarding, name="forwarding"),
    path("events/<str:event_id>/revert", revert_views.revert_event, name="revert"),
]
