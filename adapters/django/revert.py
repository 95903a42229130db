"""``revert(event_id, actor=...)`` on the Django ORM: the core plans it (:mod:`audit_middleware.revert`), this
applies it through the model, so capture records the revert like any save or delete (plus
``reverted_event_id`` in its context)."""

from __future__ import annotations

import base64
import threading
from contextlib import ExitStack
from typing import Any

from django.db import DatabaseError, models, router, transaction

from audit_middleware.actors import Actor
from audit_middleware.context import acting_as, extra_context, in_workspace
from audit_middleware.events import AuditEvent
from audit_middleware.revert import (
    RevertError,
    RevertResult,
    plan_revert,
)
from audit_middleware.signals import event_recorded

from .auditor import get_auditor
from .capture import ModelInfo
from .models import AuditEvent as AuditEventRow

ANY_WORKSPACE: Any = object()


def decode(field: models.Field[Any, Any], value: Any) -> Any:
    """A value as an event stored it (JSON-safe) back as the field's Python value."""
    if value is None:
        return None
    if isinstance(field, models.BinaryField) and isinstance(value, str) and value.startswith("base64:"):
        return base64.b64decode(value[len("base64:"):])
    if isinstance(field, models.JSONField):
        return value
    try:
        return field.to_python(value)
    except Exception:  # noqa: BLE001 - keep the stored value; the save reports what is wrong with it
        return value


def _info_for(resource_type: str) -> ModelInfo:
    auditor = get_auditor()
    if not auditor.capture.installed:
        auditor.install()
    found = [i for i in auditor.capture._infos.values() if i is not None and i.options.resource == resource_type]
    if not found:
        raise RevertError(f"no audited model records {resource_type!r} events")
    return found[-1]


def revert(
    event_id: str,
    *,
    actor: Actor | None = None,
    force: bool = False,
    confirm: bool = False,
    workspace_id: Any = ANY_WORKSPACE,
    using: str | None = None,
) -> RevertResult:
    """Undo an event (see ``SQLAlchemyAuditor.revert`` for the rules): raises ``RevertConflict`` unless
    ``force``, ``RevertNeedsConfirmation`` for a Created event unless ``confirm``, ``RevertError`` when it
    cannot be reverted. ``workspace_id`` refuses events of other workspaces (the admin view passes the
    viewer's)."""
    auditor = get_auditor()
    event = auditor.store(using or router.db_for_read(AuditEventRow)).get(event_id)
    if event is None or (workspace_id is not ANY_WORKSPACE and event.workspace_id != workspace_id):
        raise RevertError(f"no audit event {event_id!r}"
                          + ("" if workspace_id is ANY_WORKSPACE else " in this workspace"))
    if not event.resource_type or event.resource_id is None:
        plan_revert(event, None, lambda name, value: value)  # raises the "cannot be reverted" error
    info = _info_for(str(event.resource_type))
    model = info.model
    db = router.db_for_write(model)
    try:
        pk = info.fields[info.pk].to_python(event.resource_id)
    except Exception as error:  # noqa: BLE001
        raise RevertError(f"resource id {event.resource_id!r} is not a {model.__name__} key") from error
    obj = model._base_manager.using(db).filter(pk=pk).first()
    current = {a: getattr(obj, a) for a in info.attnames} if obj is not None else None

    def decoder(name: str, value: Any) -> Any:
        field = info.fields.get(name)
        return decode(field, value) if field is not None else value

    plan = plan_revert(event, current, decoder).checked(info.fields, force=force, confirm=confirm)
    recorded: list[AuditEvent] = []
    lock = threading.Lock()

    def collect(sender: Any, events: list[AuditEvent], **_: Any) -> None:
        with lock:
            recorded.extend(e for e in events if e.context.get("reverted_event_id") == event.id)

    event_recorded.connect(collect, weak=False)
    try:
        with ExitStack() as stack:
            if actor is not None:
                stack.enter_context(acting_as(actor))
            stack.enter_context(in_workspace(event.workspace_id))
            stack.enter_context(extra_context(reverted_event_id=event.id))
            try:
                with transaction.atomic(using=db):
                    if plan.operation == "delete":
                        assert obj is not None
                        obj.delete()
                    elif plan.operation == "create":
                        model(**plan.values).save(force_insert=True, using=db)
                    else:
                        assert obj is not None
                        for name, value in plan.values.items():
                            setattr(obj, name, value)
                        obj.save(using=db)
            except DatabaseError as error:
                missing = f" (not restorable: {', '.join(plan.not_restorable)})" if plan.not_restorable else ""
                raise RevertError(f"reverting {event.event!r} ({event.id}) failed{missing}: {error}") from error
    finally:
        event_recorded.disconnect(collect)
    return RevertResult(plan, recorded)
