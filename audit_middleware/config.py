"""Settings shared by every adapter, and the per-model ``__audit__`` options."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .catalog import default_category, words_of
from .diff import DEFAULT_TOGGLE_FIELDS, Masking

DEFAULT_RETENTION_DAYS = 90


@dataclass(frozen=True)
class AuditConfig:
    """What every adapter needs to know.

    :param retention_days: events older than this are purged and never shown (default 90).
    :param masked_fields: field names whose values are never stored (default: password, secret, token,
        api_key, ...); ``extra_masked_fields`` adds to the defaults instead of replacing them.
    :param toggle_fields: boolean field names that turn a flip into Enabled/Disabled events.
    :param trusted_proxies: how many reverse proxies in front of the app append to X-Forwarded-For.
    :param purge_batch_size: rows deleted per statement when purging.
    :param signing_key: the key of the row and digest hashes (tamper evidence); default
        ``$AUDIT_SIGNING_KEY``, else unkeyed SHA-256. Keep it out of the database.
    """

    retention_days: int = DEFAULT_RETENTION_DAYS
    masked_fields: Iterable[str] | None = None
    extra_masked_fields: Iterable[str] = ()
    toggle_fields: tuple[str, ...] = DEFAULT_TOGGLE_FIELDS
    trusted_proxies: int = 0
    purge_batch_size: int = 1000
    signing_key: str | bytes | None = field(default=None, repr=False)
    masking: Masking = field(init=False)

    def __post_init__(self) -> None:
        if self.retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, got {self.retention_days}")
        if self.trusted_proxies < 0:
            raise ValueError("trusted_proxies must be 0 or more")
        if not 1 <= self.purge_batch_size <= 100_000:
            raise ValueError("purge_batch_size must be between 1 and 100000")
        object.__setattr__(self, "toggle_fields", tuple(self.toggle_fields))
        object.__setattr__(self, "masking", Masking.of(self.masked_fields, self.extra_masked_fields))


_OPTION_KEYS = frozenset({"resource", "category", "exclude", "toggle", "label", "must_record"})


@dataclass(frozen=True, slots=True)
class TrackingOptions:
    """How one model is audited, from its ``__audit__`` attribute and the config."""

    resource: str
    category: str
    exclude: frozenset[str]
    toggle: str | None
    label: str | None
    must_record: bool = False

    @classmethod
    def resolve(
        cls, class_name: str, audit_attr: Any, field_names: Iterable[str], config: AuditConfig
    ) -> TrackingOptions | None:
        """Options for a model, or None when it opted out with ``__audit__ = False``.

        ``__audit__`` may be True/absent (defaults) or a dict with keys resource, category, exclude, toggle
        (a field name, or None to disable detection), label (the field that names a row), must_record.
        """
        if audit_attr is False:
            return None
        if audit_attr is None or audit_attr is True:
            audit_attr = {}
        if not isinstance(audit_attr, Mapping):
            raise TypeError(f"{class_name}.__audit__ must be True, False or a dict, not {type(audit_attr).__name__}")
        unknown = set(audit_attr) - _OPTION_KEYS
        if unknown:
            raise ValueError(
                f"{class_name}.__audit__ has unknown key(s) {sorted(unknown)}; allowed: {sorted(_OPTION_KEYS)}"
            )
        names = list(field_names)
        resource = str(audit_attr.get("resource") or words_of(class_name))
        category = str(audit_attr.get("category") or default_category(resource))
        exclude = frozenset(audit_attr.get("exclude") or ())
        missing = exclude - set(names)
        if missing:
            raise ValueError(f"{class_name}.__audit__['exclude'] names unknown field(s) {sorted(missing)}")
        if "toggle" in audit_attr:
            toggle = audit_attr["toggle"]
            if toggle is not None and toggle not in names:
                raise ValueError(f"{class_name}.__audit__['toggle'] = {toggle!r} is not a field of the model")
        else:
            toggle = next((n for n in config.toggle_fields if n in names), None)
        label = audit_attr.get("label")
        if label is None:
            label = next((n for n in ("name", "title", "label", "email", "username", "slug") if n in names), None)
        elif label not in names:
            raise ValueError(f"{class_name}.__audit__['label'] = {label!r} is not a field of the model")
        return cls(resource, category, exclude, toggle, label, bool(audit_attr.get("must_record", False)))
