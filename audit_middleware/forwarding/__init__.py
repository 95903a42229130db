"""Forwarding events to Segment, signed webhooks and Slack through a transactional outbox."""

from __future__ import annotations

from .base import Destination
from .delivery import Outcome, backoff
from .outbox import Forwarding, PlannedDelivery, workspace_key
from .relay import ClaimedDelivery, Drainer, OutboxStore, Relay, Settlement, load_object
from .segment import SegmentDestination
from .slack import SlackDestination
from .webhook import WebhookDestination, WebhookVerificationError, new_secret, sign, verify

__all__ = [
    "ClaimedDelivery",
    "Destination",
    "Drainer",
    "Forwarding",
    "OutboxStore",
    "Outcome",
    "PlannedDelivery",
    "Relay",
    "SegmentDestination",
    "Settlement",
    "SlackDestination",
    "WebhookDestination",
    "WebhookVerificationError",
    "backoff",
    "load_object",
    "new_secret",
    "sign",
    "verify",
    "workspace_key",
]
