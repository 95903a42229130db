"""Signed webhooks: Standard Webhooks by default, Stripe or GitHub style signatures as options.

Standard Webhooks (https://www.standardwebhooks.com): headers ``webhook-id`` (the event id, the receiver's
idempotency key), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">``, one signature per secret (space separated) while a secret is rotated. The
body is ``{"type": "audit.event", "timestamp": ..., "data": <the event JSON>}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..events import AuditEvent, utc_iso
from .base import Destination, EventFilter, check_url, event_matcher, in_windows
from .delivery import Outcome

STYLES = ("standard", "stripe", "github")
PARALLEL = 4
"""How many of a claim's events a relay posts to a webhook at once, by default."""
MAX_PARALLEL = 32
"""The most a webhook may set: each is a thread and a connection of each relay thread."""
DEFAULT_TOLERANCE = 300


class WebhookVerificationError(ValueError):
    """A webhook's signature or timestamp did not check out."""


def _key(secret: str) -> bytes:
    if not secret.startswith("whsec_"):
        raise ValueError("a Standard Webhooks secret starts with 'whsec_' followed by base64 "
                         "(make one with audit_middleware.forwarding.new_secret())")
    try:
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    except ValueError:
        raise ValueError("the webhook secret after 'whsec_' is not valid base64") from None


def new_secret() -> str:
    """A fresh ``whsec_`` secret (24 random bytes)."""
    import os

    return "whsec_" + base64.b64encode(os.urandom(24)).decode("ascii")


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: ``v1,<base64>``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode("ascii")


def webhook_body(event: AuditEvent) -> bytes:
    data = {"type": "audit.event", "timestamp": utc_iso(event.occurred_at), "data": event.to_json()}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | Iterable[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a Standard Webhooks request and return its parsed JSON body.

    ``headers`` may use any case. ``secret`` is the ``whsec_`` secret, or several while rotating. Raises
    :class:`WebhookVerificationError` when the headers are missing, the timestamp is more than ``tolerance``
    seconds away from now (a replay), or no signature matches.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        stamp = lowered["webhook-timestamp"]
        signatures = lowered["webhook-signature"]
    except KeyError as missing:
        raise WebhookVerificationError(f"missing header {missing.args[0]}") from None
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp is not a number: {stamp!r}") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(f"webhook-timestamp {timestamp} is more than {tolerance}s from now")
    raw = body.encode("utf-8") if isinstance(body, str) else body
    secrets = [secret] if isinstance(secret, str) else list(secret)
    offered = {s for s in signatures.split(" ") if s.startswith("v1,")}
    for candidate in secrets:
        expected = sign(candidate, message_id, timestamp, raw)
        if any(hmac.compare_digest(expected, s) for s in offered):
            parsed: dict[str, Any] = json.loads(raw)
            return parsed
    raise WebhookVerificationError("no webhook-signature matches the secret")


class WebhookDestination(Destination):
    """POST each event, signed, to a URL.

    :param url: where to send (https in production; private and loopback addresses need
        ``allow_private=True``).
    :param secret: the ``whsec_`` secret, or a list of secrets while rotating (each signs; the receiver
        accepts any). For ``style="stripe"`` or ``"github"`` any string.
    :param events: names or ``fnmatch`` patterns of the events to send, or a callable; default all.
    :param style: ``"standard"`` (Standard Webhooks), ``"stripe"`` (``Stripe-Signature: t=...,v1=<hex>``)
        or ``"github"`` (``X-Hub-Signature-256: sha256=<hex>``).
    :param parallel: how many of a claim's events a relay posts at once (each is one POST): a relay's throughput
        is about ``parallel`` events per round trip to the receiver. 1 posts them one after the other, in order.
    """

    kind = "webhook"

    def __init__(
        self,
        url: str,
        secret: str | Sequence[str],
        *,
        name: str = "webhook",
        events: EventFilter = None,
        style: str = "standard",
        timeout: float = 10.0,
        allow_private: bool = False,
        parallel: int = PARALLEL,
    ) -> None:
        super().__init__(name, timeout=timeout, allow_private=allow_private)
        check_url(url)
        if type(parallel) is not int or not 1 <= parallel <= MAX_PARALLEL:
            raise ValueError(f"WebhookDestination({name!r}) parallel must be a whole number from 1 to "
                             f"{MAX_PARALLEL}, got {parallel!r}")
        if style not in STYLES:
            raise ValueError(f"WebhookDestination style must be one of {STYLES}, got {style!r}")
        secrets = [secret] if isinstance(secret, str) else list(secret)
        if not secrets or not all(secrets):
            raise ValueError(f"WebhookDestination({name!r}) needs a secret")
        if style == "standard":
            for s in secrets:
                _key(s)
        self.url = url
        self.secrets = secrets
        self.style = style
        self.parallel = parallel
        self._matches = event_matcher(events, "WebhookDestination(events=...)")

    def accepts(self, event: AuditEvent) -> bool:
        return self._matches(event)

    def headers(self, event: AuditEvent, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The headers that sign ``body`` (made fresh at each attempt)."""
        timestamp = int(time.time()) if timestamp is None else timestamp
        headers = {"Content-Type": "application/json", "webhook-id": event.id}
        if self.style == "standard":
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = " ".join(sign(s, event.id, timestamp, body) for s in self.secrets)
        elif self.style == "stripe":
            parts = [f"t={timestamp}"] + [
                "v1=" + hmac.new(s.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
                for s in self.secrets
            ]
            headers["Stripe-Signature"] = ",".join(parts)
        else:
            headers["X-GitHub-Delivery"] = event.id
            headers["X-GitHub-Event"] = "audit_event"
            headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(
                self.secrets[0].encode(), body, hashlib.sha256).hexdigest()
        return headers

    def deliver(self, events: Sequence[AuditEvent]) -> dict[str, Outcome]:
        def send(event: AuditEvent) -> Outcome:
            body = webhook_body(event)
            return self._post(self.url, body, self.headers(event, body))

        return in_windows(events, send, self.parallel)
