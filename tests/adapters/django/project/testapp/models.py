from django.conf import settings
from django.db import models


class Warehouse(models.Model):
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, default="bigquery")
    enabled = models.BooleanField(default=True)
    write_key = models.CharField(max_length=64, blank=True, default="")
    capacity = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    notes = models.TextField(blank=True, default="")

    __audit__ = {"category": "Warehouses"}


class Tag(models.Model):
    name = models.CharField(max_length=50)


class Item(models.Model):
    name = models.CharField(max_length=100)
    price = models.IntegerField(default=0)
    iban = models.CharField(max_length=34, blank=True, default="")
    warehouse = models.ForeignKey(Warehouse, null=True, blank=True, on_delete=models.CASCADE, related_name="items")
    tags = models.ManyToManyField(Tag, blank=True, related_name="items")


class Source(models.Model):
    """Opts into a custom resource name, a custom toggle and an excluded field."""

    title = models.CharField(max_length=100)
    is_live = models.BooleanField(default=False)
    sync_cursor = models.CharField(max_length=100, blank=True, default="")

    __audit__ = {"resource": "Data Source", "category": "Sources", "toggle": "is_live", "exclude": ["sync_cursor"]}


class Ignored(models.Model):
    name = models.CharField(max_length=100)

    __audit__ = False


class ApiToken(models.Model):
    label = models.CharField(max_length=100)
    secret = models.CharField(max_length=100, unique=True)

    __audit__ = False


class Membership(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership")
    workspace_id = models.CharField(max_length=100)

    __audit__ = False


class LiveWarehouse(Warehouse):
    """A proxy: saved through it, the change is the Warehouse's."""

    class Meta:
        proxy = True
