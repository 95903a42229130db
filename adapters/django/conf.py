"""Settings, read lazily from one ``AUDIT_TRAIL`` dict in the project's settings (never written), checked once
and kept, with the callables its dotted paths name, until the setting changes (``setting_changed``).

Keys (all optional):

``TOKEN_LOADER``
    ``str -> Actor | None`` (a callable or its dotted path): resolves the secret of an
    ``Authorization: Bearer <secret>`` header into an :class:`~audit_middleware.Actor` (``Actor.token(...)``).
``CAN_VIEW``
    ``request -> bool``: who may open the admin views. Default: ``request.user.has_perm(
    "audit_middleware.view_auditevent")``.
``WORKSPACE_LOADER``
    ``request -> str | None``: the workspace (tenant) of the request; events are scoped to it and the admin
    views show only its events.
``RETENTION_DAYS``
    days of history kept and shown (default 90).
``MASKED_FIELDS`` / ``EXTRA_MASKED_FIELDS``
    field names whose values are never stored (replace / add to the defaults: password, secret, token, ...).
``TOGGLE_FIELDS``
    boolean field names that turn a flip into Enabled/Disabled (default enabled, is_enabled, active,
    is_active).
``TRUSTED_PROXIES``
    how many reverse proxies in front of the app append to ``X-Forwarded-For`` (default 0: use REMOTE_ADDR).
``EXCLUDE_MODELS``
    ``"app_label.ModelName"`` strings of models not to audit, besides the built-in bookkeeping ones.
``PURGE_BATCH_SIZE``
    rows deleted per statement by ``audit_purge`` (default 1000).
``DESTINATIONS``
    forwarding destinations (used by the forwarding relay; read here so every key has one home).
``CAN_REVERT``
    ``request -> bool``: who, among those who may view, may revert events (default: every viewer).
``SIGNING_KEY``
    the key of the row and digest hashes (tamper evidence, ``manage.py audit_verify``); default
    ``$AUDIT_SIGNING_KEY``, else unkeyed SHA-256. Keep it out of the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from audit_middleware.config import AuditConfig
from audit_middleware.integrity import Signer

SETTING = "AUDIT_TRAIL"
KNOWN_KEYS = frozenset({
    "TOKEN_LOADER", "CAN_VIEW", "WORKSPACE_LOADER", "RETENTION_DAYS", "MASKED_FIELDS", "EXTRA_MASKED_FIELDS",
    "TOGGLE_FIELDS", "TRUSTED_PROXIES", "EXCLUDE_MODELS", "PURGE_BATCH_SIZE", "DESTINATIONS", "SIGNING_KEY",
    "CAN_REVERT",
})

_cache: dict[str, Any] = {}


def _settings() -> dict[str, Any]:
    """``AUDIT_TRAIL``, checked once (cached until the setting changes: every request and save reads it)."""
    found = _cache.get("settings")
    if found is not None:
        return found  # type: ignore[no-any-return]
    value = getattr(settings, SETTING, None) or {}
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"settings.{SETTING} must be a dict, not {type(value).__name__}")
    unknown = set(value) - KNOWN_KEYS
    if unknown:
        raise ImproperlyConfigured(
            f"settings.{SETTING} has unknown key(s) {sorted(unknown)}; known keys: {sorted(KNOWN_KEYS)}"
        )
    _cache["settings"] = value
    return value


def get(key: str, default: Any = None) -> Any:
    return _settings().get(key, default)


def _callable(key: str) -> Callable[..., Any] | None:
    """The callable ``key`` names, its dotted path imported once (cached until the setting changes)."""
    cached = _cache.get(f"callable {key}", _cache)
    if cached is not _cache:
        return cached  # type: ignore[no-any-return]
    value = get(key)
    if value is None:
        _cache[f"callable {key}"] = None
        return None
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as error:
            raise ImproperlyConfigured(f"settings.{SETTING}[{key!r}] = {value!r} cannot be imported: {error}") from None
    if not callable(value):
        raise ImproperlyConfigured(f"settings.{SETTING}[{key!r}] must be a callable or its dotted path")
    _cache[f"callable {key}"] = value
    return value  # type: ignore[no-any-return]


def token_loader() -> Callable[[str], Any] | None:
    return _callable("TOKEN_LOADER")


def can_view() -> Callable[[Any], bool] | None:
    return _callable("CAN_VIEW")


def can_revert() -> Callable[[Any], bool] | None:
    return _callable("CAN_REVERT")


def workspace_loader() -> Callable[[Any], str | None] | None:
    return _callable("WORKSPACE_LOADER")


def exclude_models() -> frozenset[str]:
    return frozenset(m.lower() for m in get("EXCLUDE_MODELS", ()))


def audit_config() -> AuditConfig:
    """The core :class:`AuditConfig` built from ``AUDIT_TRAIL`` (cached until the setting changes)."""
    config = _cache.get("config")
    if config is None:
        options: dict[str, Any] = {}
        for key, name in (("RETENTION_DAYS", "retention_days"), ("MASKED_FIELDS", "masked_fields"),
                          ("EXTRA_MASKED_FIELDS", "extra_masked_fields"), ("TOGGLE_FIELDS", "toggle_fields"),
                          ("TRUSTED_PROXIES", "trusted_proxies"), ("PURGE_BATCH_SIZE", "purge_batch_size"),
                          ("SIGNING_KEY", "signing_key")):
            if key in _settings():
                options[name] = _settings()[key]
        try:
            config = AuditConfig(**options)
        except (TypeError, ValueError) as error:
            raise ImproperlyConfigured(f"settings.{SETTING}: {error}") from None
        _cache["config"] = config
    return config  # type: ignore[no-any-return]


def signer() -> Signer:
    """Signs event rows and digests: ``SIGNING_KEY``, else ``$AUDIT_SIGNING_KEY``, else unkeyed."""
    found = _cache.get("signer")
    if found is None:
        found = _cache["signer"] = Signer.from_config(audit_config().signing_key)
    return found  # type: ignore[no-any-return]


_listeners: list[Callable[[], None]] = []


def on_change(callback: Callable[[], None]) -> None:
    """Call ``callback`` whenever ``AUDIT_TRAIL`` is changed (``override_settings`` in tests)."""
    _listeners.append(callback)


@receiver(setting_changed)
def _reset(setting: str, **_: Any) -> None:
    if setting == SETTING:
        _cache.clear()
        for callback in _listeners:
            callback()
