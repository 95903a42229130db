"""Settings of the Django test project. The ``default`` database comes from the environment:

``AUDIT_DJANGO_DB`` (sqlite, postgresql or mariadb) and ``AUDIT_DJANGO_DB_URL`` (a URL such as
``postgresql+psycopg://postgres@127.0.0.1:5432/name``, ``mysql+pymysql://root@127.0.0.1:3306/name`` or
``sqlite:////tmp/file.sqlite3``; default: a SQLite file in the temp directory). On PostgreSQL,
``AUDIT_DJANGO_PG_PREPARED=1`` binds values in the server and lets psycopg prepare statements
(``OPTIONS={"server_side_binding": True, "prepare_threshold": 5}``, what the README suggests to an app whose
admin pages read over every workspace).
"""

import os
import tempfile
from urllib.parse import parse_qs, unquote, urlsplit

BACKEND = os.environ.get("AUDIT_DJANGO_DB", "sqlite")
URL = os.environ.get("AUDIT_DJANGO_DB_URL") or (
    f"sqlite:///{tempfile.gettempdir()}/audit-django-{os.getpid()}.sqlite3"
)


def _database(url: str) -> dict:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path[1:]),
                "TEST": {"NAME": unquote(parts.path[1:])}}
    common = {
        "NAME": parts.path.lstrip("/"), "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""), "HOST": parts.hostname or "", "PORT": str(parts.port or ""),
    }
    if scheme.startswith("postgres"):
        prepared = os.environ.get("AUDIT_DJANGO_PG_PREPARED") == "1"
        options = {"server_side_binding": True, "prepare_threshold": 5} if prepared else {}
        return {"ENGINE": "django.db.backends.postgresql", **common, "OPTIONS": options}
    if scheme in ("mysql", "mariadb"):
        import pymysql

        pymysql.install_as_MySQLdb()
        charset = parse_qs(parts.query).get("charset", ["utf8mb4"])[0]
        return {"ENGINE": "django.db.backends.mysql", **common, "OPTIONS": {"charset": charset}}
    raise ValueError(f"AUDIT_DJANGO_DB_URL: unsupported scheme {parts.scheme!r}")


def _sqlite_beside(alias: str) -> dict:
    """A second SQLite database (whatever ``default`` is), for the multi-database tests."""
    name = f"{tempfile.gettempdir()}/audit-django-{alias}-{os.getpid()}.sqlite3"
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": name, "TEST": {"NAME": name}}


# "other": a second database holding the app's tables and its own audit table; "bare": the app's tables without
# the audit table (the router keeps audit_middleware's migrations out of it). test_multiple_databases migrates both.
DATABASES = {"default": _database(URL), "other": _sqlite_beside("other"), "bare": _sqlite_beside("bare")}
DATABASE_ROUTERS = ["testapp.routers.NoAuditTablesInBare"]
SECRET_KEY = "audit-middleware-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "testapp.urls"
STATIC_URL = "/static/"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "rest_framework.authtoken",
    "audit_middleware.adapters.django",
    "testapp",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "audit_middleware.adapters.django.middleware.AuditMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}
AUDIT_TRAIL = {
    "TOKEN_LOADER": "testapp.auth.load_token",
    "WORKSPACE_LOADER": "testapp.auth.workspace_of",
    "TRUSTED_PROXIES": 1,
    "EXTRA_MASKED_FIELDS": ["iban"],
}
