"""``auditor.revert(event_id)``: undo a Created, Modified, Enabled, Disabled or Deleted event through the ORM,
so that capture records the revert like any change (plus ``reverted_event_id`` in its context)."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import uuid
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect
from sqlalchemy import types as sqltypes
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapper, Session, scoped_session, sessionmaker
from sqlalchemy.sql.schema import Column

from audit_middleware.actors import Actor
from audit_middleware.context import acting_as, extra_context, in_workspace
from audit_middleware.revert import (
    RevertError,
    RevertResult,
    plan_revert,
)

from .capture import KEEP_KEY, PENDING_KEY, ModelInfo

if TYPE_CHECKING:
    from .auditor import SQLAlchemyAuditor

_ANY: Any = object()


def decode(column: Column[Any], value: Any) -> Any:
    """A value as an event stored it (JSON-safe) back as the column's Python value."""
    if value is None:
        return None
    column_type = column.type
    if isinstance(column_type, sqltypes.JSON):
        return value
    if isinstance(column_type, sqltypes.Enum) and column_type.enum_class is not None:
        return column_type.enum_class(value)
    try:
        python_type = column_type.python_type
    except NotImplementedError:
        return value
    if isinstance(value, python_type) and not (python_type is int and isinstance(value, bool)):
        return value
    if not isinstance(value, str):
        return python_type(value) if python_type in (int, float, decimal.Decimal) else value
    if python_type is dt.datetime:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if python_type is dt.date:
        return dt.date.fromisoformat(value)
    if python_type is dt.time:
        return dt.time.fromisoformat(value)
    if python_type is bytes and value.startswith("base64:"):
        return base64.b64decode(value[len("base64:"):])
    if python_type in (decimal.Decimal, uuid.UUID, int, float):
        return python_type(value)
    return value


def _model_for(auditor: SQLAlchemyAuditor, resource_type: str, model: Any) -> tuple[Mapper[Any], ModelInfo]:
    capture = auditor.capture
    if model is not None:
        mapper = inspect(model).mapper
        info = capture.info(mapper)
        if info is None:
            raise RevertError(f"{model.__name__} is not audited (__audit__ = False)")
        return mapper, info
    capture.discover()
    found = [(m, i) for m, i in capture._infos.items() if i is not None and i.options.resource == resource_type]
    if not found:
        raise RevertError(f"no tracked model records {resource_type!r} events: pass model= to revert()")
    written = [(m, i) for m, i in found if m in capture.written]
    return (written or found)[-1]  # prefer the class this auditor has written (others may share the name)


def _session(auditor: SQLAlchemyAuditor) -> tuple[Session, bool]:
    target = auditor.target
    if isinstance(target, scoped_session):  # a session of its own, not the thread's (which may hold work)
        return target.session_factory(), True
    if isinstance(target, sessionmaker):
        return target(), True
    if isinstance(target, type) and issubclass(target, Session):
        return target(bind=auditor.store.engine), True
    raise RevertError("pass session= to revert(): the auditor tracks a session it cannot create")


def revert(
    auditor: SQLAlchemyAuditor,
    event_id: str,
    *,
    actor: Actor | None = None,
    force: bool = False,
    confirm: bool = False,
    session: Session | None = None,
    workspace_id: str | None = _ANY,
    model: Any = None,
) -> RevertResult:
    event = auditor.store.get(event_id)
    if event is None or (workspace_id is not _ANY and event.workspace_id != workspace_id):
        raise RevertError(f"no audit event {event_id!r}" + ("" if workspace_id is _ANY else " in this workspace"))
    if not event.resource_type or event.resource_id is None:
        plan_revert(event, None, lambda name, value: value)  # raises the "cannot be reverted" error
    mapper, info = _model_for(auditor, str(event.resource_type), model)
    owns = session is None
    if session is None:
        session, owns = _session(auditor)
    try:
        parts = str(event.resource_id).split("/") if len(info.pk_keys) > 1 else [str(event.resource_id)]
        if len(parts) != len(info.pk_keys):
            raise RevertError(f"resource id {event.resource_id!r} does not match {mapper.class_.__name__}'s key")
        key = tuple(decode(info.columns[k], p) for k, p in zip(info.pk_keys, parts, strict=True))
        obj = session.get(mapper.class_, key[0] if len(key) == 1 else key)
        current = {k: getattr(obj, k) for k in info.keys} if obj is not None else None

        def decoder(name: str, value: Any) -> Any:
            column = info.columns.get(name)
            return decode(column, value) if column is not None else value

        plan = plan_revert(event, current, decoder).checked(info.columns, force=force, confirm=confirm)
        pending_before = len(session.info.get(PENDING_KEY, ()))
        with ExitStack() as stack:
            if actor is not None:
                stack.enter_context(acting_as(actor))
            stack.enter_context(in_workspace(event.workspace_id))
            stack.enter_context(extra_context(reverted_event_id=event.id))
            if plan.operation == "delete":
                session.delete(obj)
            elif plan.operation == "create":
                session.add(mapper.class_(**plan.values))
            else:
                for name, value in plan.values.items():
                    setattr(obj, name, value)
            session.info[KEEP_KEY] = True  # the flush keeps its events for this result, whoever listens
            try:
                session.flush()
            except SQLAlchemyError as error:
                session.rollback()
                missing = f" (not restorable: {', '.join(plan.not_restorable)})" if plan.not_restorable else ""
                raise RevertError(f"reverting {event.event!r} ({event.id}) failed{missing}: {error}") from error
            finally:
                session.info.pop(KEEP_KEY, None)
            recorded = [e for _, batch in session.info.get(PENDING_KEY, [])[pending_before:] for e in batch]
            if owns:
                session.commit()
        return RevertResult(plan, recorded)
    finally:
        if owns:
            session.close()
