"""Settings of the Django demo: one SQLite file, the audit trail's three lines, nothing else to run."""

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ.get("DJANGO_DEMO_DB", str(HERE.parent / "demo.sqlite3"))}}
SECRET_KEY = os.environ.get("DJANGO_DEMO_SECRET_KEY", "django-demo-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "demo_site.urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "audit_middleware.adapters.django",  # the audit trail: app ...
    "demo_site",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "audit_middleware.adapters.django.middleware.AuditMiddleware",  # ... middleware (and the URL include)
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
LOGIN_URL = "/login/"
AUDIT_TRAIL = {
    "CAN_VIEW": "demo_site.audit.can_view",  # the workspace's owners only
    "WORKSPACE_LOADER": "demo_site.audit.workspace_of",  # events and the view scoped to the user's workspace
    "TOKEN_LOADER": "demo_site.audit.load_token",  # Authorization: Bearer <token> -> the token as actor
    "EXCLUDE_MODELS": ["auth.User"],  # users are bookkeeping here (no "User Modified" for each last_login)
}
