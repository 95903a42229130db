from django.conf import settings
from django.db import models


class Membership(models.Model):
    """A user's workspace and role: ``AUDIT_TRAIL["CAN_VIEW"]`` lets owners in, ``WORKSPACE_LOADER`` scopes the
    admin views to the workspace."""

    __audit__ = False  # written once by the benchmark's setup, never by an audited request

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership")
    workspace_id = models.CharField(max_length=100)
    role = models.CharField(max_length=20, default="member")

    class Meta:
        app_label = "django_workspaces"
        db_table = "bench_memberships"
