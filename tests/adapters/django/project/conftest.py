"""Django set up once for this process, on the database the environment names (see audit_django_settings)."""

import os

import django
import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "audit_django_settings")
django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402

from audit_middleware import suspend_auditing  # noqa: E402
from audit_middleware.adapters.django.models import AuditEvent  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _schema():
    call_command("migrate", verbosity=0, interactive=False)
    yield
    connections.close_all()


@pytest.fixture(autouse=True)
def _clean(_schema):
    yield
    from rest_framework.authtoken.models import Token
    from testapp import models

    with suspend_auditing():
        for model in (models.Item, models.Tag, models.Warehouse, models.Source, models.Ignored,
                      models.ApiToken, models.Membership, Token):
            model._base_manager.all().delete()
        User.objects.all().delete()
    AuditEvent.objects.all().delete()


def events(**filters):
    """Every committed event (oldest first) as core events."""
    return [row.to_event() for row in AuditEvent.objects.filter(**filters).order_by("occurred_at", "id")]


def names(**filters):
    return [e.event for e in events(**filters)]
