"""A slice of the workspace demo in Django: workspaces with an owner and a member, sources, warehouses and
an access token. Sources and warehouses are audited with Segment's names; the bookkeeping is not."""

from django.conf import settings
from django.db import models


class Workspace(models.Model):
    __audit__ = False
    id = models.CharField(max_length=40, primary_key=True)
    name = models.CharField(max_length=120)


class Membership(models.Model):
    __audit__ = False
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    role = models.CharField(max_length=20, default="member")  # "owner" | "member"


class AccessToken(models.Model):
    __audit__ = False
    id = models.CharField(max_length=40, primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE)
    label = models.CharField(max_length=120)
    secret_sha256 = models.CharField(max_length=64, unique=True)


class Source(models.Model):
    __audit__ = {"resource": "Source", "category": "Source", "toggle": "enabled"}
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE)
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=40, default="Javascript")
    enabled = models.BooleanField(default=True)


class Warehouse(models.Model):
    __audit__ = {"resource": "Warehouses", "category": "Warehouses", "toggle": "enabled"}
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE)
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=40, default="BigQuery")
    password = models.CharField(max_length=200, default="", blank=True)  # masked in the trail
    enabled = models.BooleanField(default=True)
