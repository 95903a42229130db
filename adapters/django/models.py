"""The audit event table (``audit_events``, the same columns as the SQLAlchemy adapter's table)."""

from __future__ import annotations

from typing import Any

from django.db import models

from audit_middleware.store import NAME_LENGTH, event_from_row


class AuditEventManager(models.Manager["AuditEvent"]):
    def get_queryset(self) -> models.QuerySet[AuditEvent]:
        # Events of the current transaction wait in a buffer until it commits; reading through the model
        # writes them first, so a transaction (or a test wrapped in one) sees its own events.
        from .capture import flush_all_pending

        flush_all_pending()
        return super().get_queryset()


class AuditEvent(models.Model):
    """One recorded event. Read it as a core event with :meth:`to_event`; never written through the ORM by
    the adapter (capture inserts rows with one executemany)."""

    id = models.CharField(max_length=36, primary_key=True)
    occurred_at = models.DateTimeField()
    event = models.CharField(max_length=200)
    category = models.CharField(max_length=100)
    action = models.CharField(max_length=100)
    actor_type = models.CharField(max_length=16)
    actor_id = models.CharField(max_length=NAME_LENGTH, null=True, blank=True)
    actor_name = models.CharField(max_length=NAME_LENGTH, null=True, blank=True)
    resource_type = models.CharField(max_length=100, null=True, blank=True)
    resource_id = models.CharField(max_length=NAME_LENGTH, null=True, blank=True)
    resource_name = models.CharField(max_length=NAME_LENGTH, null=True, blank=True)
    workspace_id = models.CharField(max_length=100, null=True, blank=True)
    changes = models.TextField(null=True, blank=True)
    context = models.TextField(null=True, blank=True)
    details = models.TextField(null=True, blank=True)
    # HMAC-SHA256 of the row's canonical JSON (audit_middleware.integrity): tamper evidence
    row_hash = models.CharField(max_length=64, null=True, blank=True)

    objects = AuditEventManager()

    __audit__ = False

    class Meta:
        db_table = "audit_events"
        ordering = ("-occurred_at", "-id")
        verbose_name = "audit event"
        verbose_name_plural = "audit events"
        # Every admin filter leads with the workspace and ends with the page's order (time, then id): the
        # first page of newest events is an index range scan whatever the filter, and SQLite's planner picks
        # the filter's index even without statistics (as in the SQLAlchemy schema).
        indexes = [
            models.Index(fields=["workspace_id", "occurred_at", "id"], name="audit_ev_ws_time"),
            # The actor filter matches id or name, one query each: the actor's rows in page order, the event
            # in the key to filter "this actor + this event" in the index (as in the SQLAlchemy schema).
            models.Index(fields=["workspace_id", "actor_id", "occurred_at", "id", "event"],
                         name="audit_ev_ws_actor_time"),
            models.Index(fields=["workspace_id", "actor_name", "occurred_at", "id", "event"],
                         name="audit_ev_ws_actorname_time"),
            models.Index(fields=["workspace_id", "event", "occurred_at", "id"], name="audit_ev_ws_event"),
            models.Index(fields=["workspace_id", "resource_type", "resource_id", "occurred_at", "id"],
                         name="audit_ev_ws_resource"),
            models.Index(fields=["occurred_at"], name="audit_ev_time"),
        ]

    def __str__(self) -> str:
        return f"{self.event} ({self.resource_type} {self.resource_id})"

    def to_event(self) -> Any:
        """This row as an :class:`audit_middleware.AuditEvent`."""
        from audit_middleware.store import EVENT_COLUMNS

        return event_from_row({name: getattr(self, name) for name in EVENT_COLUMNS})


class AuditDelivery(models.Model):
    """The forwarding outbox: one row per (event, destination) until it is sent (see ``outbox.py``).
    ``status`` is ``pending``, ``paused`` (the destination is Off) or ``dead``; ``due_at`` is the next attempt,
    or the end of the current relay's lease."""

    id = models.BigAutoField(primary_key=True)
    event_id = models.CharField(max_length=36)
    destination = models.CharField(max_length=100)
    workspace_id = models.CharField(max_length=100)
    status = models.CharField(max_length=8)
    due_at = models.DateTimeField()
    attempts = models.IntegerField(default=0)
    lease_owner = models.CharField(max_length=32, null=True, blank=True)
    last_status = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField()

    __audit__ = False

    class Meta:
        db_table = "audit_deliveries"
        verbose_name = "audit delivery"
        verbose_name_plural = "audit deliveries"
        indexes = [
            # A claim walks this index in id order and stops after the batch, so FOR UPDATE SKIP LOCKED
            # locks only the rows it takes.
            models.Index(fields=["destination", "status", "id"], name="audit_dl_claim"),
            models.Index(fields=["workspace_id", "destination", "status"], name="audit_dl_ws"),
            models.Index(fields=["lease_owner"], name="audit_dl_lease"),
        ]


class AuditForwarding(models.Model):
    """Per workspace (``""`` for events without one) and destination: On/Off and delivery state. Never
    secrets: destinations come from ``AUDIT_TRAIL["DESTINATIONS"]``."""

    workspace_id = models.CharField(max_length=100)
    destination = models.CharField(max_length=100)
    enabled = models.BooleanField(default=False)
    disabled_reason = models.TextField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)
    updated_at = models.DateTimeField()

    __audit__ = False

    class Meta:
        db_table = "audit_forwarding"
        verbose_name = "audit forwarding setting"
        constraints = [models.UniqueConstraint(fields=["workspace_id", "destination"], name="audit_fw_unique")]


class AuditDigest(models.Model):
    """One link of a workspace's chain of sealed digests (see :mod:`audit_middleware.integrity`)."""

    workspace_id = models.CharField(max_length=100)  # "" for events without a workspace
    seq = models.IntegerField()
    kind = models.CharField(max_length=8)  # seal or purge
    last_at = models.DateTimeField(null=True, blank=True)
    last_id = models.CharField(max_length=36, null=True, blank=True)
    count = models.IntegerField()
    entries = models.TextField(null=True, blank=True)  # "<id> <occurred_at>" lines; None once purged
    entries_hash = models.CharField(max_length=64)
    prev_hash = models.CharField(max_length=64)
    digest_hash = models.CharField(max_length=64)
    purged_before = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    __audit__ = False

    class Meta:
        db_table = "audit_digests"
        verbose_name = "audit digest"
        # One chain per workspace: concurrent sealers race for the next seq and one insert wins.
        constraints = [models.UniqueConstraint(fields=["workspace_id", "seq"], name="audit_digest_chain")]
