"""Turning model changes and app verbs into events: the part of capture every adapter shares."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .actors import ANONYMOUS, Actor
from .catalog import EventCatalog, EventDefinition
from .config import AuditConfig, TrackingOptions
from .context import context_of, origin_facts
from .diff import diff_values, snapshot, split_toggle
from .errors import AuditWriteError
from .events import AuditEvent
from .ids import new_event_id
from .signals import capture_failed
from .values import json_safe

logger = logging.getLogger("audit_middleware")


@dataclass
class CaptureErrors:
    """How many times capture failed without failing the host's write, and the last error."""

    count: int = 0
    last: BaseException | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, error: BaseException) -> None:
        with self._lock:
            self.count += 1
            self.last = error


@dataclass(frozen=True, slots=True)
class EventOrigin:
    """Who and where events come from: the actor, workspace and request context, read once.

    A flush's events are recorded under one origin (nothing can change it mid-flush), so they share it,
    and share its ``context`` dict: treat an event's context as read-only."""

    actor: Actor
    workspace_id: str | None
    context: dict[str, Any]


_last_origin: tuple[object, str | None, object, object, EventOrigin] = (object(), None, None, None,
                                                                       EventOrigin(ANONYMOUS, None, {}))
"""The facts the last origin was made from (actor, workspace, request, extra context) and that origin (at
first an actor no call can match)."""


class Recorder:
    """Builds events from the current context: actor, workspace and request facts.

    Adapters own one Recorder and call :meth:`change_events` from their capture hooks and :meth:`event`
    for app verbs.
    """

    def __init__(self, config: AuditConfig | None = None, catalog: EventCatalog | None = None) -> None:
        self.config = config or AuditConfig()
        self.catalog = catalog if catalog is not None else EventCatalog()  # an empty catalog is falsy
        self.errors = CaptureErrors()

    def define_model(self, options: TrackingOptions) -> None:
        for definition in self.catalog.define_resource(
            options.resource, options.category, toggle=options.toggle is not None
        ):
            if options.must_record and not definition.must_record:
                self.catalog.define(definition.name, definition.category, resource=options.resource,
                                    action=definition.action, must_record=True)

    @staticmethod
    def origin() -> EventOrigin:
        """The current actor, workspace and request context (see :class:`EventOrigin`). Every write of a request
        (of a job, of a test) has the same origin: the last one is kept and given again while the facts it was
        made from are the same objects (the workspace: equal text), so its events share one context dict
        (read-only, as within a flush)."""
        global _last_origin
        actor, workspace, request, extra = origin_facts()
        last = _last_origin
        if (actor is last[0] and request is last[2] and extra is last[3]
                and (workspace is last[1] or type(workspace) is str and workspace == last[1])):
            return last[4]
        origin = EventOrigin(actor, workspace, context_of(request, extra))
        _last_origin = (actor, workspace, request, extra, origin)  # one tuple: threads never see half of it
        return origin

    def event(
        self,
        definition: EventDefinition,
        *,
        resource_type: str | None,
        resource_id: Any,
        resource_name: Any,
        changes: dict[str, list[Any]] | None = None,
        details: Mapping[str, Any] | None = None,
        occurred_at: datetime | None = None,
        origin: EventOrigin | None = None,
    ) -> AuditEvent:
        """An event of ``definition``, recorded under ``origin`` (by default the current one)."""
        return self._event(definition, changes or {}, resource_type, resource_id, resource_name, occurred_at,
                           origin, json_safe(dict(details)) if details else {})

    def _event(self, definition: EventDefinition, changes: dict[str, list[Any]], resource_type: str | None,
               resource_id: Any, resource_name: Any, occurred_at: datetime | None, origin: EventOrigin | None,
               details: dict[str, Any]) -> AuditEvent:
        """:meth:`event`, its arguments given in order and its details already JSON-safe (capture's hot path: an
        event a write, no keyword arguments to pack and unpack)."""
        if origin is None:
            origin = self.origin()
        return AuditEvent(
            new_event_id(), occurred_at or datetime.now(timezone.utc), definition.name, definition.category,
            definition.action, origin.actor, resource_type, None if resource_id is None else str(resource_id),
            None if resource_name is None else str(resource_name), origin.workspace_id, changes, origin.context,
            details,
        )

    def change_events(
        self,
        options: TrackingOptions,
        kind: str,
        resource_id: Any,
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        *,
        occurred_at: datetime | None = None,
        origin: EventOrigin | None = None,
    ) -> list[AuditEvent]:
        """The events for one row: ``kind`` is ``created``, ``modified`` or ``deleted``.

        For ``modified``, ``old`` and ``new`` hold only the changed fields; a change that turns out to be no
        change yields no event. A toggle flip yields Enabled/Disabled, plus Modified for the other fields.
        Capture of many rows at once reads the :meth:`origin` once and passes it.
        """
        exclude = options.exclude
        if exclude:
            old = {k: v for k, v in old.items() if k not in exclude}
            new = {k: v for k, v in new.items() if k not in exclude}
        masking = self.config.masking
        label_source = new if kind != "deleted" else old
        name = label_source.get(options.label) if options.label else None
        resource = options.resource
        get = self.catalog.get
        if kind == "created":
            return [self._event(get(f"{resource} Created"), snapshot(new, masking, created=True), resource,
                                resource_id, name, occurred_at, origin, {})]
        if kind == "deleted":
            return [self._event(get(f"{resource} Deleted"), snapshot(old, masking, created=False), resource,
                                resource_id, name, occurred_at, origin, {})]
        changes = diff_values(old, new, masking)
        if not changes:
            return []
        verb, toggled, others = split_toggle(changes, options.toggle)
        events: list[AuditEvent] = []
        if verb is not None:
            events.append(self._event(get(f"{resource} {verb}"), toggled, resource, resource_id, name, occurred_at,
                                      origin, {}))
        if others:
            events.append(self._event(get(f"{resource} Modified"), others, resource, resource_id, name,
                                      occurred_at, origin, {}))
        return events

    def guard(self, sender: Any, must_record: bool = False) -> CaptureGuard:
        """Run capture code; unless ``must_record``, log and count an error instead of raising it, so the
        host's write is never broken by the audit path. An :class:`~audit_middleware.errors.AuditWriteError`
        (writing events failed: a large flush writes as it captures) always goes through: the write does not
        go ahead without its events."""
        return CaptureGuard(self, sender, must_record)


class CaptureGuard:
    """The context manager :meth:`Recorder.guard` returns (a class: entered once per captured row)."""

    __slots__ = ("recorder", "sender", "must_record")

    def __init__(self, recorder: Recorder, sender: Any, must_record: bool) -> None:
        self.recorder = recorder
        self.sender = sender
        self.must_record = must_record

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> bool:
        if error is None or self.must_record or not isinstance(error, Exception) or isinstance(error, AuditWriteError):
            return False
        self.recorder.errors.add(error)
        logger.exception("audit-middleware could not capture an event; the write went ahead without it",
                         exc_info=error)
        capture_failed.send(self.sender, error=error)
        return True
