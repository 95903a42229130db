"""What every destination shares: a name, an event filter, and ``deliver()``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..events import AuditEvent
from ._http import Response, TransportError, check_url, post
from .delivery import Outcome, classify, transport_outcome

EventFilter = Iterable[str] | Callable[[AuditEvent], bool] | None


def event_matcher(rules: EventFilter, setting: str) -> Callable[[AuditEvent], bool]:
    """A predicate from event names (``fnmatch`` patterns such as ``"Warehouse *"``), a callable, or None
    (every event)."""
    if rules is None:
        return lambda event: True
    if callable(rules):
        return rules
    if isinstance(rules, str):
        raise TypeError(f"{setting} takes a list of event names or patterns, not the string {rules!r}; "
                        f"write [{rules!r}]")
    patterns = tuple(rules)

    def matches(event: AuditEvent) -> bool:
        return any(fnmatch.fnmatchcase(event.event, p) for p in patterns)

    return matches


class Destination:
    """Base class of the destinations. Subclasses set ``kind`` and implement :meth:`deliver`.

    :param name: the key stored in the database for this destination (what a workspace turns on); unique
        among the configured destinations.
    :param timeout: seconds to wait for each HTTP answer.
    :param allow_private: send to private, loopback or reserved addresses (refused by default, against SSRF).
    """

    kind = "destination"
    #: how many deliveries a relay claims at once for this destination (the relay's ``--batch`` caps it)
    claim_size = 100
    #: HTTP statuses that mean the destination is gone and must be disabled
    disable_on: frozenset[int] = frozenset({410})

    def __init__(self, name: str, *, timeout: float = 10.0, allow_private: bool = False) -> None:
        if not name or len(name) > 100:
            raise ValueError(f"a destination name must have 1 to 100 characters, got {name!r}")
        self.name = name
        self.timeout = timeout
        self.allow_private = allow_private

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @property
    def title(self) -> str:
        """What the admin page shows."""
        return f"{self.name} ({self.kind})"

    def accepts(self, event: AuditEvent) -> bool:
        """Whether this destination wants ``event`` at all (no delivery row is written otherwise)."""
        return True

    def refuse(self, event: AuditEvent) -> str | None:
        """Why ``event`` can never be delivered (checked when it is recorded), or None."""
        return None

    def deliver(self, events: Sequence[AuditEvent]) -> dict[str, Outcome]:
        """Make one HTTP attempt for each event; return the outcome by event id."""
        raise NotImplementedError

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        try:
            response: Response = post(url, body, headers, timeout=self.timeout, allow_private=self.allow_private)
        except TransportError as error:
            return transport_outcome(error)
        return classify(response, disable_on=self.disable_on)


def one_by_one(
    events: Sequence[AuditEvent], send: Callable[[AuditEvent], Outcome]
) -> dict[str, Outcome]:
    """Send events one at a time; after a failure that says "not now" (retry), leave the rest for later
    instead of hammering the endpoint, and after a disable, send nothing more."""
    return in_windows(events, send, 1)


def in_windows(
    events: Sequence[AuditEvent], send: Callable[[AuditEvent], Outcome], width: int
) -> dict[str, Outcome]:
    """Send events ``width`` at a time, each window's posts at once (on threads of a pool made for this call;
    one at a time, on this thread, for a width of 1); after a window with a failure that says "not now"
    (retry), leave the rest for later instead of hammering the endpoint, and after a disable, send nothing
    more. So after such a failure at most the rest of its window is sent."""
    outcomes: dict[str, Outcome] = {}
    stop: Outcome | None = None
    pool = None
    if width > 1 and len(events) > 1:
        pool = ThreadPoolExecutor(min(width, len(events)), "audit-forwarding-post")
    try:
        for start in range(0, len(events), width):
            if stop is not None:
                for event in events[start:]:
                    outcomes[event.id] = Outcome(stop.kind if stop.kind == "disable" else "retry", stop.status,
                                                 f"not attempted: {stop.error}", stop.retry_after)
                break
            window = events[start:start + width]
            sent = pool.map(send, window) if pool is not None else map(send, window)
            for event, outcome in zip(window, sent, strict=True):
                outcomes[event.id] = outcome
                if outcome.kind == "disable" or (outcome.kind == "retry" and stop is None):
                    stop = outcome
    finally:
        if pool is not None:
            pool.shutdown()
    return outcomes


__all__ = ["Destination", "EventFilter", "check_url", "event_matcher", "in_windows", "one_by_one"]
