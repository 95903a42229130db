"""What became of one delivery attempt, and when to try again.

Status handling (the wire contract in DESIGN.md): 2xx is done; 408, 429, 5xx, timeouts and refused
connections are retried with full-jitter exponential backoff (base 1 s, cap 10 min), never sooner than
``Retry-After``; any other status is permanent (the delivery is dead and waits for a person to retry it);
410 Gone, and for Slack 403/404/410, disable the destination.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Literal

from ._http import Response, TransportError

BACKOFF_BASE = 1.0
BACKOFF_CAP = 600.0

Kind = Literal["sent", "retry", "dead", "disable"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt for one or more deliveries.

    ``retry_after`` is the least number of seconds before the next attempt (from ``Retry-After``);
    ``error`` says what went wrong in words fit for the admin page.
    """

    kind: Kind
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None

    @classmethod
    def sent(cls, status: int = 200) -> Outcome:
        return cls("sent", status)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - (now or datetime.now(timezone.utc))).total_seconds())


def _describe(response: Response) -> str:
    text = response.body[:300].decode("utf-8", "replace").strip()
    return f"HTTP {response.status}" + (f": {text}" if text else "")


def classify(response: Response, *, disable_on: frozenset[int] = frozenset({410})) -> Outcome:
    """The outcome of an HTTP answer."""
    status = response.status
    if 200 <= status < 300:
        return Outcome.sent(status)
    if status in disable_on:
        return Outcome("disable", status, _describe(response))
    if status in (408, 429) or status >= 500:
        return Outcome("retry", status, _describe(response), retry_after_seconds(response.header("retry-after")))
    if 300 <= status < 400:
        location = response.header("location") or "?"
        return Outcome("dead", status, f"HTTP {status} redirect to {location} not followed; "
                                       "configure the final URL")
    return Outcome("dead", status, _describe(response))


def transport_outcome(error: TransportError) -> Outcome:
    return Outcome("dead" if error.permanent else "retry", None, str(error))


def backoff(
    attempts: int,
    retry_after: float | None = None,
    *,
    rng: random.Random | None = None,
    base: float = BACKOFF_BASE,
    cap: float = BACKOFF_CAP,
) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: full jitter (uniform between 0 and
    ``min(cap, base * 2 ** (attempts - 1))``), never below ``retry_after``."""
    ceiling = min(cap, base * 2 ** max(0, min(attempts - 1, 30)))
    delay = (rng or random).uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
