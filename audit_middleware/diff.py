"""Field diffs, masking of sensitive fields, and Enabled/Disabled detection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .values import PLAIN_TYPES, json_safe

MASK = "[masked]"

DEFAULT_MASKED_FIELDS: frozenset[str] = frozenset({
    "password", "passwd", "secret", "token", "api_key", "apikey", "access_key", "private_key",
    "client_secret", "write_key", "signing_key", "otp_secret", "pin", "ssn", "credit_card", "card_number",
})
DEFAULT_TOGGLE_FIELDS: tuple[str, ...] = ("enabled", "is_enabled", "active", "is_active")

Changes = dict[str, list[Any]]


class Masking:
    """Which field names are sensitive: an exact name, or a name ending in ``_<name>`` (``db_password``)."""

    __slots__ = ("names", "_verdicts")

    def __init__(self, names: frozenset[str] = DEFAULT_MASKED_FIELDS) -> None:
        self.names = names
        self._verdicts: dict[str, bool] = {}

    @classmethod
    def of(cls, names: Iterable[str] | None, extra: Iterable[str] = ()) -> Masking:
        base = DEFAULT_MASKED_FIELDS if names is None else frozenset(n.lower() for n in names)
        return cls(base | frozenset(n.lower() for n in extra))

    def is_sensitive(self, field: str) -> bool:
        verdict = self._verdicts.get(field)
        if verdict is None:
            lowered = field.lower()
            verdict = lowered in self.names or any(lowered.endswith("_" + n) for n in self.names)
            self._verdicts[field] = verdict  # field names are few: remember each answer
        return verdict

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Masking) and other.names == self.names

    def __hash__(self) -> int:
        return hash(self.names)


def diff_values(
    old: Mapping[str, Any], new: Mapping[str, Any], masking: Masking, fields: Iterable[str] | None = None
) -> Changes:
    """``{"field": [old, new]}`` for every field whose JSON-safe value differs; masked fields keep only
    the fact that they changed."""
    changes: Changes = {}
    for name in fields if fields is not None else new.keys() | old.keys():
        before = json_safe(old.get(name))
        after = json_safe(new.get(name))
        if before == after and type(before) is type(after):
            continue
        if masking.is_sensitive(name):
            changes[name] = [MASK, MASK]
        else:
            changes[name] = [before, after]
    return changes


def snapshot(values: Mapping[str, Any], masking: Masking, *, created: bool) -> Changes:
    """The diff of a created row (``[None, value]``) or a deleted one (``[value, None]``); None fields of a
    created row are left out."""
    changes: Changes = {}
    verdicts = masking._verdicts
    for name, value in values.items():
        safe = value if type(value) in PLAIN_TYPES else json_safe(value)
        if created and safe is None:
            continue
        sensitive = verdicts.get(name)
        if sensitive is None:
            sensitive = masking.is_sensitive(name)
        if sensitive:
            safe = MASK
        changes[name] = [None, safe] if created else [safe, None]
    return changes


def split_toggle(changes: Changes, toggle_field: str | None) -> tuple[str | None, Changes, Changes]:
    """Separate a boolean flip of ``toggle_field`` from the other changes.

    Returns ``(verb, toggle_changes, other_changes)`` where verb is ``"Enabled"``, ``"Disabled"`` or None.
    """
    if toggle_field is None or toggle_field not in changes:
        return None, {}, changes
    old, new = changes[toggle_field]
    if not isinstance(new, bool) or old is None and new is False:
        return None, {}, changes
    if old == new:
        return None, {}, changes
    others = {k: v for k, v in changes.items() if k != toggle_field}
    return ("Enabled" if new else "Disabled"), {toggle_field: [old, new]}, others
