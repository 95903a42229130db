"""The Django site: sessions, CSRF and authentication middleware (the signed-in user in a database-backed
session), and with ``HTTP_BENCH_AUDITED=1`` the README's three lines (app, ``AuditMiddleware`` after
``AuthenticationMiddleware``, admin URLs), which resolve the actor from ``request.user``. Settings, URLs and
views live here. Database connections: PostgreSQL's persistent (``CONN_MAX_AGE`` 600) as a production deployment
has them, SQLite's opened per request (Django's default, ``CONN_MAX_AGE`` 0), either set by
``HTTP_BENCH_CONN_MAX_AGE`` (``--conn-max-age``). ``ATOMIC_REQUESTS`` with ``HTTP_BENCH_ATOMIC_REQUESTS=1``
(``http_load.py --atomic-requests``). The write view saves inside ``transaction.atomic()``, or with
``HTTP_BENCH_AUTOCOMMIT_SAVE=1`` (``http_load.py --autocommit-save``) without: each save a transaction of its own,
Django's default.

    gunicorn --pythonpath benchmarks http_apps.django_app:application
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

import django
from django.conf import settings

from http_apps import CSRF_SECRET, USER_EMAIL, audited, database, seed_rows

AUTOCOMMIT_SAVE = os.environ.get("HTTP_BENCH_AUTOCOMMIT_SAVE") == "1"  # http_load --autocommit-save


def _database() -> dict[str, Any]:
    spec = database()
    sqlite = spec["backend"] == "sqlite"
    common = {
        "ATOMIC_REQUESTS": os.environ.get("HTTP_BENCH_ATOMIC_REQUESTS") == "1",  # http_load --atomic-requests
        "CONN_MAX_AGE": int(os.environ.get("HTTP_BENCH_CONN_MAX_AGE") or (0 if sqlite else 600)),  # --conn-max-age
    }
    if sqlite:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": spec["name"], **common}
    return {"ENGINE": "django.db.backends.postgresql", "NAME": spec["name"], "HOST": spec["host"],
            "PORT": str(spec["port"]), "USER": spec["user"], "PASSWORD": "", **common}


AUDITED = audited()
settings.configure(
    DEBUG=False,
    SECRET_KEY="http-bench-only",
    ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
    DATABASES={"default": _database()},
    USE_TZ=True,
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "http_apps.django_warehouses",
        *(["audit_middleware.adapters.django"] if AUDITED else []),
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        *(["audit_middleware.adapters.django.middleware.AuditMiddleware"] if AUDITED else []),
    ],
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
)
django.setup()

from django.contrib.auth.decorators import login_required  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import transaction  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.shortcuts import get_object_or_404  # noqa: E402
from django.urls import include, path  # noqa: E402
from django.views.decorators.http import require_GET, require_POST  # noqa: E402

from http_apps.django_warehouses.models import Warehouse  # noqa: E402


@require_GET
def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello, World!")


@require_POST
@login_required
def update_warehouse(request: HttpRequest, warehouse_id: int) -> HttpResponse:
    with nullcontext() if AUTOCOMMIT_SAVE else transaction.atomic():
        warehouse = get_object_or_404(Warehouse, pk=warehouse_id)
        warehouse.schedule = request.POST["schedule"]
        warehouse.settings = {**warehouse.settings, "batch_size": int(request.POST["batch_size"])}
        warehouse.save()
    return HttpResponse("ok")


urlpatterns = [
    path("hello", hello),
    path("warehouses/<int:warehouse_id>", update_warehouse),
    *([path("admin/audit-trail/", include("audit_middleware.adapters.django.urls"))] if AUDITED else []),
]

application = get_wsgi_application()


def setup() -> dict[str, str]:
    """Migrate, create the Warehouse table, seed the user and the warehouses (not audited) and sign in: the
    Cookie header (session and CSRF cookies) and the CSRF header the write route needs."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connections
    from django.test import Client

    from audit_middleware import suspend_auditing

    call_command("migrate", run_syncdb=True, verbosity=0)
    with suspend_auditing():
        user = User.objects.create(id=1, username="ada", email=USER_EMAIL)
        Warehouse.objects.bulk_create([Warehouse(**row) for row in seed_rows()])
        client = Client()
        client.force_login(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    connections.close_all()
    return {"Cookie": f"{settings.SESSION_COOKIE_NAME}={session}; {settings.CSRF_COOKIE_NAME}={CSRF_SECRET}",
            "X-CSRFToken": CSRF_SECRET}
