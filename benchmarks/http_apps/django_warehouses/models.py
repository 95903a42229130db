from django.db import models

from http_apps import WAREHOUSE_AUDIT


class Warehouse(models.Model):
    __audit__ = WAREHOUSE_AUDIT  # read only when audit-middleware is installed

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200, unique=True)
    enabled = models.BooleanField(default=True)
    schedule = models.CharField(max_length=50, default="@hourly")
    settings = models.JSONField(default=dict)
    owner_id = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "django_warehouses"
        db_table = "warehouses"
