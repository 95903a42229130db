"""Segment HTTP Tracking API: ``POST {host}/v1/batch`` of ``track`` calls."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from ..events import AuditEvent, utc_iso
from .base import Destination, EventFilter, check_url, event_matcher
from .delivery import Outcome

REGIONS = {"us": "https://api.segment.io", "eu": "https://events.eu1.segmentapis.com"}
MAX_ITEMS = 100
MAX_BATCH_BYTES = 475_000
MAX_ITEM_BYTES = 32 * 1024
LIBRARY = {"name": "audit-middleware", "version": "0.1.0"}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def user_id(event: AuditEvent) -> str:
    if event.actor.type == "system":
        return "__system__"
    if event.actor.id is None:
        return f"__{event.actor.type}__"
    return event.actor.id


def track_item(event: AuditEvent, compat: bool = False) -> dict[str, Any]:
    """The ``track`` call for one event (without ``sentAt``, which belongs to the batch)."""
    resource = {"type": event.resource_type, "id": event.resource_id, "name": event.resource_name}
    if compat:
        # Segment's own Audit Trail shape: one event name, the action in properties.type.
        properties: dict[str, Any] = {
            "type": event.event,
            "workspace_id": event.workspace_id,
            "details": {"resource_id": event.resource_id, "resource_type": event.resource_type,
                        "target": event.resource_name, "subject": f"{event.actor.type}s/{event.actor.id}",
                        "changes": event.changes, **event.details},
        }
        name = "Audit"
    else:
        properties = {
            "category": event.category, "action": event.action, "resource": resource,
            "changes": event.changes, "workspace_id": event.workspace_id,
            "actor_type": event.actor.type, "actor_name": event.actor.name,
        }
        if event.details:
            properties["details"] = event.details
        name = event.event
    return {
        "type": "track",
        "event": name,
        "userId": user_id(event),
        "properties": properties,
        "context": {"library": LIBRARY, **({"ip": event.context["ip"]} if "ip" in event.context else {})},
        "timestamp": utc_iso(event.occurred_at),
        "messageId": f"audit-{event.id}",
    }


class SegmentDestination(Destination):
    """A Segment HTTP API source.

    :param write_key: the source's write key (sent as the basic-auth user name).
    :param region: ``"us"`` (default) or ``"eu"``; or give ``host`` (e.g. a proxy) instead.
    :param compat: send Segment's own Audit Trail shape (``event: "Audit"``, the action in
        ``properties.type``) instead of one event name per action.
    :param events: which events to forward: names or ``fnmatch`` patterns, or a callable; default all.
    """

    kind = "segment"
    claim_size = 500

    def __init__(
        self,
        write_key: str,
        *,
        name: str = "segment",
        region: str = "us",
        host: str | None = None,
        compat: bool = False,
        events: EventFilter = None,
        timeout: float = 10.0,
        allow_private: bool = False,
    ) -> None:
        super().__init__(name, timeout=timeout, allow_private=allow_private)
        if not write_key:
            raise ValueError(f"SegmentDestination({name!r}) needs the source's write_key")
        if host is None:
            if region not in REGIONS:
                raise ValueError(f"SegmentDestination region must be one of {sorted(REGIONS)}, got {region!r}")
            host = REGIONS[region]
        check_url(host)
        self.url = host.rstrip("/") + "/v1/batch"
        self.compat = compat
        self._matches = event_matcher(events, "SegmentDestination(events=...)")
        token = base64.b64encode(f"{write_key}:".encode()).decode("ascii")
        self._headers = {"Content-Type": "application/json", "Authorization": f"Basic {token}"}

    def accepts(self, event: AuditEvent) -> bool:
        return self._matches(event)

    def refuse(self, event: AuditEvent) -> str | None:
        size = len(_dumps(track_item(event, self.compat)))
        if size > MAX_ITEM_BYTES:
            return f"event is {size} bytes as a Segment track call; Segment refuses items over {MAX_ITEM_BYTES}"
        return None

    def batches(self, events: Sequence[AuditEvent]) -> list[tuple[list[AuditEvent], list[bytes]]]:
        """Events split into requests of at most 100 items and under 475,000 bytes."""
        envelope = len(_dumps({"batch": [], "sentAt": utc_iso(datetime.now(timezone.utc))})) + 16
        groups: list[tuple[list[AuditEvent], list[bytes]]] = []
        current: list[AuditEvent] = []
        encoded: list[bytes] = []
        size = envelope
        for event in events:
            item = _dumps(track_item(event, self.compat))
            if current and (len(current) >= MAX_ITEMS or size + len(item) + 1 >= MAX_BATCH_BYTES):
                groups.append((current, encoded))
                current, encoded, size = [], [], envelope
            current.append(event)
            encoded.append(item)
            size += len(item) + 1
        if current:
            groups.append((current, encoded))
        return groups

    def deliver(self, events: Sequence[AuditEvent]) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        stop: Outcome | None = None
        for group, items in self.batches(events):
            if stop is None:
                sent_at = _dumps(utc_iso(datetime.now(timezone.utc)))
                body = b'{"batch":[' + b",".join(items) + b'],"sentAt":' + sent_at + b"}"
                outcome = self._post(self.url, body, self._headers)
                if outcome.kind in ("retry", "disable"):
                    stop = outcome
            else:
                outcome = Outcome(stop.kind, stop.status, f"not attempted: {stop.error}", stop.retry_after)
            for event in group:
                outcomes[event.id] = outcome
        return outcomes
