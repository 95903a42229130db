"""The process-wide auditor: the recorder, the capture hooks, and recording/reading the trail."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from django.apps import apps
from django.db import models, router

from audit_middleware.catalog import EventCatalog
from audit_middleware.context import auditing_suspended
from audit_middleware.events import AuditEvent
from audit_middleware.export import export_csv
from audit_middleware.query import EventQuery, Page
from audit_middleware.recorder import Recorder
from audit_middleware.store import iter_events, retention_cutoff

from . import conf
from .capture import DjangoCapture
from .store import DjangoStore


class DjangoAuditor:
    """Captures changes of every audited model and reads the trail back.

    ``catalog`` holds every event name; define the app's own verbs once, e.g. in an ``AppConfig.ready()``:
    ``get_auditor().catalog.define("Warehouse Run Failed", category="Warehouses")``.
    """

    def __init__(self, catalog: EventCatalog | None = None) -> None:
        self.recorder = Recorder(conf.audit_config(), catalog)
        self.capture = DjangoCapture(self)
        conf.on_change(self._settings_changed)

    def _settings_changed(self) -> None:
        self.recorder.config = conf.audit_config()
        self.capture.reset()
        if self.capture.installed:
            self.capture.install(apps.get_models(include_auto_created=False))

    @property
    def catalog(self) -> EventCatalog:
        return self.recorder.catalog

    @property
    def config(self) -> Any:
        return self.recorder.config

    def install(self) -> None:
        """Connect capture to every installed model (idempotent; done by the app's ``ready()``)."""
        self.capture.install(apps.get_models(include_auto_created=False))

    def uninstall(self) -> None:
        """Stop capturing: disconnect every receiver and undo every patch."""
        self.capture.uninstall()

    def store(self, using: str | None = None) -> DjangoStore:
        return DjangoStore(using)

    # -- recording app verbs -----------------------------------------------------------------------------

    def record(
        self,
        name: str,
        resource: Any = None,
        *,
        details: Mapping[str, Any] | None = None,
        using: str | None = None,
        resource_type: str | None = None,
        resource_id: Any = None,
        resource_name: Any = None,
    ) -> AuditEvent | None:
        """Record an app event such as ``"Warehouse Run Failed"``.

        ``resource`` may be an audited model instance (its type, id and label are used) or None with the
        ``resource_*`` arguments. Inside a transaction the event stands or falls with it; outside, it is
        written at once. Raises :class:`~audit_middleware.errors.UnknownEventError` for an unknown name.
        """
        definition = self.catalog.get(name)
        if auditing_suspended():
            return None
        if resource is not None:
            if not isinstance(resource, models.Model):
                raise TypeError(
                    f"record(resource=...) takes a model instance, not {type(resource).__name__}; "
                    "pass resource_type=, resource_id=, resource_name= instead"
                )
            info = self.capture.info(type(resource))
            if info is None:
                raise TypeError(f"{type(resource).__name__} is not audited")
            resource_type = resource_type or info.options.resource
            resource_id = resource.pk
            resource_name = resource.__dict__.get(info.label) if info.label else None
            using = using or resource._state.db
        event = self.recorder.event(
            definition, resource_type=resource_type, resource_id=resource_id, resource_name=resource_name,
            details=details,
        )
        from .models import AuditEvent as Row

        self.capture.emit(using or router.db_for_write(Row), [event])
        return event

    # -- reading the trail -------------------------------------------------------------------------------

    def query(self, query: EventQuery | None = None, *, using: str | None = None, **filters: Any) -> Page:
        """One page of events, newest first: ``auditor.query(actor="ada@example.com", limit=20)``."""
        return self.store(using).query(query if query is not None else EventQuery(**filters))

    def iter_events(self, query: EventQuery | None = None, *, using: str | None = None,
                    **filters: Any) -> Iterator[AuditEvent]:
        return iter_events(self.store(using), query if query is not None else EventQuery(**filters))

    def export_csv(self, query: EventQuery | None = None, **filters: Any) -> Iterator[str]:
        """The CSV of every matching event, streamed in chunks of rows (see :class:`~audit_middleware.export.CsvExport`)."""
        return export_csv(self.store(), query if query is not None else EventQuery(**filters))

    def purge(self, *, retention_days: int | None = None, batch_size: int | None = None,
              using: str | None = None) -> int:
        """Delete events older than the retention (``RETENTION_DAYS``, 90 by default); returns how many."""
        days = retention_days if retention_days is not None else self.config.retention_days
        return self.store(using).purge(retention_cutoff(days), batch_size or self.config.purge_batch_size)


_auditor: DjangoAuditor | None = None
_lock = threading.Lock()


def get_auditor() -> DjangoAuditor:
    global _auditor
    if _auditor is None:
        with _lock:
            if _auditor is None:
                _auditor = DjangoAuditor()
    return _auditor
