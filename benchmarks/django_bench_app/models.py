import os

from django.db import models

VARIANT = os.environ.get("BENCH_VARIANT", "baseline")


class Warehouse(models.Model):
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, default="bigquery")
    enabled = models.BooleanField(default=True)
    region = models.CharField(max_length=20, default="us-east1")
    write_key = models.CharField(max_length=64, default="")
    capacity = models.IntegerField(default=0)
    notes = models.TextField(default="")
    schedule = models.CharField(max_length=50, default="@hourly")

    if VARIANT == "simple-history":
        from simple_history.models import HistoricalRecords

        history = HistoricalRecords()

    class Meta:
        app_label = "django_bench_app"


if VARIANT == "auditlog":
    from auditlog.registry import auditlog

    auditlog.register(Warehouse)
