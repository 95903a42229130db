"""Reverting an event: what to write back, and what stands in the way. Framework-free; each adapter loads the
row, calls :func:`plan_revert`, and applies the plan through its own ORM so that capture records the revert
as ordinary events (with ``reverted_event_id`` in their context)."""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from .diff import MASK
from .errors import AuditError
from .events import AuditEvent
from .values import json_safe

REVERTIBLE_ACTIONS = frozenset({"created", "modified", "enabled", "disabled", "deleted"})


class RevertError(AuditError):
    """The event cannot be reverted (unknown, not a model change, nothing restorable, ...)."""


class RevertConflict(RevertError):
    """The resource changed since the event; ``plan.conflicts`` says which fields and how. Pass
    ``force=True`` to revert anyway."""

    def __init__(self, plan: RevertPlan) -> None:
        self.plan = plan
        super().__init__(plan.conflict_message())


class RevertNeedsConfirmation(RevertError):
    """Reverting a Created event deletes the resource: pass ``confirm=True``."""

    def __init__(self, plan: RevertPlan) -> None:
        self.plan = plan
        event = plan.event
        super().__init__(
            f"Reverting {event.event!r} ({event.id}) deletes {_resource(event)}: pass confirm=True to delete it."
        )


def _resource(event: AuditEvent) -> str:
    name = f" ({event.resource_name})" if event.resource_name else ""
    return f"{event.resource_type} {event.resource_id}{name}"


@dataclass
class Conflict:
    """A field that no longer holds what the event left in it."""

    field: str
    expected: Any  # JSON-safe, as the event recorded it
    current: Any  # JSON-safe, as stored now


@dataclass
class RevertPlan:
    """``operation``: ``update`` (write ``values`` into the existing row), ``create`` (insert a row with
    ``values``) or ``delete``. ``not_restorable`` lists masked fields whose values were never stored."""

    event: AuditEvent
    operation: str
    values: dict[str, Any] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    not_restorable: list[str] = field(default_factory=list)
    exists: bool = True

    def checked(self, known_fields: Container[str], *, force: bool, confirm: bool) -> RevertPlan:
        """Move values of fields the model no longer has to ``not_restorable``, then refuse a conflict
        (unless ``force``) or a delete (unless ``confirm``). Every adapter runs this before writing."""
        for name in [n for n in self.values if n not in known_fields]:
            self.values.pop(name)
            self.not_restorable.append(name)
        if self.conflicts and not force:
            raise RevertConflict(self)
        if self.operation == "delete" and not confirm:
            raise RevertNeedsConfirmation(self)
        return self

    def conflict_message(self) -> str:
        event = self.event
        if self.operation in ("create", "update") and event.action == "deleted":
            return (f"{_resource(event)} exists again since {event.event!r} ({event.id}): reverting would "
                    "overwrite it. Revert anyway (force=True) to write the deleted row's values into it.")
        parts = [f"{c.field} is now {_show(c.current)} (the event left {_show(c.expected)})" for c in self.conflicts]
        return (f"{_resource(event)} changed since {event.event!r} ({event.id}): " + "; ".join(parts)
                + ". Revert anyway (force=True) to overwrite.")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


Decoder = Callable[[str, Any], Any]


def plan_revert(event: AuditEvent, current: Mapping[str, Any] | None, decode: Decoder) -> RevertPlan:
    """What reverting ``event`` means for a row whose current values are ``current`` (None: no such row).

    ``decode(field, json_value)`` turns a value as the event stored it back into the column's Python value
    (the adapter knows the column types); fields are compared on decoded values.
    """
    action = event.action
    if action not in REVERTIBLE_ACTIONS or not event.resource_type or event.resource_id is None:
        raise RevertError(
            f"{event.event!r} ({event.id}) cannot be reverted: only Created, Modified, Enabled, Disabled and "
            "Deleted events of tracked models can."
        )
    if action == "deleted":
        plan = RevertPlan(event, "create" if current is None else "update", exists=current is not None)
        for name, (old, _new) in event.changes.items():
            if old == MASK:
                plan.not_restorable.append(name)
            else:
                plan.values[name] = decode(name, old)
        if current is not None:
            plan.conflicts = [Conflict(name, json_safe(plan.values[name]), json_safe(current.get(name)))
                              for name in plan.values if not _same(decode, name, plan.values[name], current, True)]
            if not plan.conflicts:
                raise RevertError(f"{_resource(event)} exists again with the deleted row's values: there is "
                                  "nothing to revert")
        return plan
    if current is None:
        raise RevertError(
            f"{_resource(event)} no longer exists, so {event.event!r} ({event.id}) cannot be reverted"
            + (": revert its Deleted event first." if action != "created" else " (it was deleted already).")
        )
    if action == "created":
        plan = RevertPlan(event, "delete")
        for name, (_old, new) in event.changes.items():
            if new == MASK:
                continue
            if name in current and not _same(decode, name, new, current, False):
                plan.conflicts.append(Conflict(name, new, json_safe(current[name])))
        return plan
    plan = RevertPlan(event, "update")
    for name, (old, new) in event.changes.items():
        if old == new:  # the label, recorded for context: the event did not change it
            continue
        if old == MASK or new == MASK or name not in current:
            plan.not_restorable.append(name)
            continue
        plan.values[name] = decode(name, old)
        if not _same(decode, name, new, current, False):
            plan.conflicts.append(Conflict(name, new, json_safe(current[name])))
    if not plan.values:
        raise RevertError(
            f"{event.event!r} ({event.id}) changed only fields whose old values were not stored "
            f"({', '.join(plan.not_restorable)}): there is nothing to restore"
        )
    if all(_same(decode, name, value, current, True) for name, value in plan.values.items()):
        raise RevertError(
            f"{_resource(event)} already holds the values from before {event.event!r} ({event.id}): "
            "there is nothing to revert"
        )
    return plan


def _same(decode: Decoder, name: str, expected: Any, current: Mapping[str, Any], decoded: bool) -> bool:
    value = current.get(name)
    want = expected if decoded else decode(name, expected)
    try:
        if want == value:
            return True
    except Exception:  # noqa: BLE001 - odd types compare by their JSON form below
        pass
    return bool(json_safe(want) == json_safe(value))


@dataclass
class RevertResult:
    """What a revert did: the plan it carried out and the events capture recorded for it."""

    plan: RevertPlan
    recorded: list[AuditEvent]

    @property
    def restored(self) -> list[str]:
        return sorted(self.plan.values) if self.plan.operation != "delete" else []

    @property
    def not_restorable(self) -> list[str]:
        return self.plan.not_restorable
