"""Slack incoming webhooks: a readable alert for the events chosen by rules, at most 1 message/s."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlencode

from ..events import AuditEvent, utc_iso
from .base import Destination, EventFilter, check_url, event_matcher, one_by_one
from .delivery import Outcome


def _escape(text: object) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def slack_message(event: AuditEvent, admin_url: str | None = None) -> dict[str, Any]:
    """``{text, blocks}``: who did what to which resource, the changes, and a link to the admin view."""
    actor = event.actor.name or event.actor.id or event.actor.type
    resource = " ".join(p for p in (event.resource_type, event.resource_name or event.resource_id) if p)
    text = f"{event.event}: {actor} ({event.actor.type})" + (f" on {resource}" if resource else "")
    lines = [f"*{_escape(event.event)}*", f"Actor: {_escape(actor)} ({event.actor.type})"]
    if resource:
        lines.append(f"Resource: {_escape(resource)}" + (f" (id {_escape(event.resource_id)})"
                                                          if event.resource_name and event.resource_id else ""))
    if event.workspace_id:
        lines.append(f"Workspace: {_escape(event.workspace_id)}")
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}]
    if event.changes:
        changes = [f"• `{_escape(k)}`: {_escape(_value(old))} → {_escape(_value(new))}"
                   for k, (old, new) in list(event.changes.items())[:10]]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(changes)}})
    footer = f"{utc_iso(event.occurred_at)} · event {event.id}"
    if admin_url:
        query = {"resource_type": event.resource_type, "resource_id": event.resource_id}
        link = admin_url + ("&" if "?" in admin_url else "?") + urlencode(
            {k: v for k, v in query.items() if v}) + f"#event-{event.id}"
        footer += f" · <{link}|View in audit trail>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]})
    return {"text": text, "blocks": blocks}


class SlackDestination(Destination):
    """A Slack incoming webhook.

    :param webhook_url: ``https://hooks.slack.com/services/...``.
    :param rules: which events alert: names or ``fnmatch`` patterns (``["* Disabled", "* Deleted"]``) or a
        callable; default every event (rarely what you want).
    :param admin_url: the absolute URL of the admin view, for the "View in audit trail" link.
    :param min_interval: seconds between two messages to this webhook from one process (Slack allows 1/s).
    """

    kind = "slack"
    claim_size = 10
    disable_on = frozenset({403, 404, 410})
    _last_sent: ClassVar[dict[str, float]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        webhook_url: str,
        *,
        name: str = "slack",
        rules: EventFilter = None,
        admin_url: str | None = None,
        min_interval: float = 1.0,
        timeout: float = 10.0,
        allow_private: bool = False,
    ) -> None:
        super().__init__(name, timeout=timeout, allow_private=allow_private)
        check_url(webhook_url)
        self.url = webhook_url
        self.admin_url = admin_url
        self.min_interval = min_interval
        self._matches = event_matcher(rules, "SlackDestination(rules=...)")

    def accepts(self, event: AuditEvent) -> bool:
        return self._matches(event)

    def _wait_turn(self) -> None:
        with SlackDestination._lock:
            now = time.monotonic()
            due = SlackDestination._last_sent.get(self.url, 0.0) + self.min_interval
            SlackDestination._last_sent[self.url] = max(now, due)
        if due > now:
            time.sleep(due - now)

    def deliver(self, events: Sequence[AuditEvent]) -> dict[str, Outcome]:
        def send(event: AuditEvent) -> Outcome:
            self._wait_turn()
            body = json.dumps(slack_message(event, self.admin_url), ensure_ascii=False).encode("utf-8")
            return self._post(self.url, body, {"Content-Type": "application/json"})

        return one_by_one(events, send)
