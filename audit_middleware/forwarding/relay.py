"""The relay: claims due deliveries from an outbox store, sends them, records what happened.

Any number of relays may run against one database; the store's claim makes sure two relays never hold the
same delivery at once (``FOR UPDATE SKIP LOCKED`` or a lease UPDATE), and a lease that is not settled in
time (the relay crashed) makes the delivery due again: at-least-once, with the event id as idempotency key.
"""

from __future__ import annotations

import importlib
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

from ..events import AuditEvent
from ..signals import delivery_failed, destination_disabled, event_recorded
from .base import Destination
from .delivery import BACKOFF_BASE, BACKOFF_CAP, Outcome, backoff
from .outbox import Forwarding

logger = logging.getLogger("audit_middleware.forwarding")

DEFAULT_LEASE = 120.0
SETTLE_RETRY_PAUSES: tuple[float, ...] = (0.1, 0.5, 2.0)
"""Seconds between the tries to record a round's outcomes (a lost connection, a deadlock): the deliveries are
sent by then, and an outcome not recorded would send them again once their lease runs out."""


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: int
    event_id: str
    destination: str
    workspace_id: str
    attempts: int


@dataclass(frozen=True, slots=True)
class Settlement:
    """What to record for one claimed delivery: its outcome and, for a retry, the seconds until due."""

    delivery: ClaimedDelivery
    outcome: Outcome
    delay: float = 0.0


class OutboxStore(Protocol):
    """The outbox operations a relay needs (SQLAlchemy: ``audit_middleware.adapters.sqlalchemy.SQLAlchemyOutbox``)."""

    def claim(
        self, destination: str, limit: int, lease: float, token: str
    ) -> tuple[list[ClaimedDelivery], dict[str, AuditEvent]]:
        """Lease up to ``limit`` due deliveries of ``destination`` for ``lease`` seconds under ``token``;
        return them (oldest first, attempts already counted) and their events by id."""

    def settle(self, token: str, settlements: Sequence[Settlement]) -> None:
        """Record outcomes, for rows still leased under ``token`` only."""

    def disable(self, destination: str, reason: str) -> None:
        """Turn ``destination`` off in every workspace, pausing its pending deliveries, with ``reason``."""


def load_object(spec: str) -> Any:
    """``"package.module:attribute"`` imported (an attribute that is callable with no arguments is called)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected module:attribute (e.g. myapp.audit:DESTINATIONS), got {spec!r}")
    module = importlib.import_module(module_name)
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"{module_name} has no attribute {attribute!r}") from None
    if callable(value) and not isinstance(value, (Forwarding, Destination)):
        value = value()
    return value


def as_forwarding(value: Forwarding | Destination | Iterable[Destination]) -> Forwarding:
    if isinstance(value, Forwarding):
        return value
    if isinstance(value, Destination):
        return Forwarding([value])
    return Forwarding(value)


class Relay:
    """Sends what an outbox store holds.

    :param store: the outbox store.
    :param destinations: the configured destinations (a :class:`Forwarding` or a list).
    :param batch: the most deliveries claimed at once per destination.
    :param lease: seconds a claim is held before another relay may take the deliveries again.
    :param poll: seconds to sleep when nothing is due.
    :param backoff_base: seconds; the retry delay ceiling doubles from it at each failed attempt.
    :param backoff_cap: seconds; the highest retry delay ceiling.
    """

    def __init__(
        self,
        store: OutboxStore,
        destinations: Forwarding | Iterable[Destination],
        *,
        batch: int = 100,
        lease: float = DEFAULT_LEASE,
        poll: float = 1.0,
        rng: random.Random | None = None,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        if not 1 <= batch <= 10_000:
            raise ValueError(f"batch must be between 1 and 10000, got {batch}")
        self.store = store
        self.forwarding = as_forwarding(destinations)
        self.batch = batch
        self.lease = lease
        self.poll = poll
        self.rng = rng or random.Random()
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._hold_until: dict[str, float] = {}
        self.sent = 0
        self.failed = 0
        #: held around each of the relay's transactions on the outbox (claim, settle, disable); a
        #: :class:`Drainer` sets a lock here so that a fork waits for the transaction to end
        self.transactions: AbstractContextManager[Any] = nullcontext()

    def run_once(self) -> int:
        """One claim per destination; returns how many deliveries were settled."""
        settled = 0
        for destination in self.forwarding:
            if self._hold_until.get(destination.name, 0.0) > time.monotonic():
                continue
            settled += self._run_destination(destination)
        return settled

    def _run_destination(self, destination: Destination) -> int:
        token = uuid.uuid4().hex
        limit = min(self.batch, destination.claim_size)
        with self.transactions:
            claimed, events = self.store.claim(destination.name, limit, self.lease, token)
        if not claimed:
            return 0
        present = [d for d in claimed if d.event_id in events]
        settlements = [
            Settlement(d, Outcome("dead", None, "the event no longer exists (purged)"))
            for d in claimed if d.event_id not in events
        ]
        outcomes: dict[str, Outcome] = {}
        if present:
            try:
                outcomes = destination.deliver([events[d.event_id] for d in present])
            except Exception as error:  # a destination's bug must not kill the relay
                logger.exception("destination %s failed while sending", destination.name)
                error_outcome = Outcome("retry", None, f"{type(error).__name__}: {error}")
                outcomes = {d.event_id: error_outcome for d in present}
        disabled: Outcome | None = None
        for delivery in present:
            outcome = outcomes.get(delivery.event_id) or Outcome("retry", None, "no outcome")
            delay = 0.0
            if outcome.kind == "retry":
                delay = backoff(delivery.attempts, outcome.retry_after, rng=self.rng,
                                base=self.backoff_base, cap=self.backoff_cap)
                if outcome.retry_after:
                    self._hold_until[destination.name] = time.monotonic() + outcome.retry_after
            elif outcome.kind == "disable":
                disabled = outcome
            settlements.append(Settlement(delivery, outcome, delay))
        self._settle(destination, token, settlements)
        self._report(destination, settlements)
        if disabled is not None:
            reason = f"{destination.title} answered {disabled.error}; turned off until an owner turns it on again"
            with self.transactions:
                self.store.disable(destination.name, reason)
            logger.error("forwarding destination %s disabled: %s", destination.name, reason)
            self._signal(destination_disabled, destination=destination.name, reason=reason)
        return len(settlements)

    def _settle(self, destination: Destination, token: str, settlements: Sequence[Settlement]) -> None:
        """Record the outcomes, trying again after a failure (:data:`SETTLE_RETRY_PAUSES`): the store records
        them for rows still leased under ``token`` only, in one transaction, so a try whose answer was lost after
        its commit makes the next one change nothing. The last failure is raised (``run`` logs it and pauses);
        the deliveries are then sent again when their lease runs out."""
        for pause in SETTLE_RETRY_PAUSES:
            try:
                with self.transactions:
                    self.store.settle(token, settlements)
                return
            except Exception as error:
                logger.warning("could not record what happened to %d deliveries to %s (%s: %s); trying again "
                               "in %.1fs", len(settlements), destination.name, type(error).__name__, error, pause)
                time.sleep(pause)
        with self.transactions:
            self.store.settle(token, settlements)

    def _report(self, destination: Destination, settlements: Sequence[Settlement]) -> None:
        failures: dict[tuple[str, str | None], list[str]] = {}
        for s in settlements:
            if s.outcome.kind == "sent":
                self.sent += 1
            else:
                self.failed += 1
                failures.setdefault((s.outcome.kind, s.outcome.error), []).append(s.delivery.event_id)
        for (kind, error), event_ids in failures.items():
            logger.warning("forwarding to %s: %d event(s) %s: %s", destination.name, len(event_ids),
                           "dead" if kind == "dead" else "to retry", error)
            self._signal(delivery_failed, destination=destination.name, event_ids=event_ids, error=error,
                         dead=kind == "dead")

    def _signal(self, signal: Any, **kwargs: Any) -> None:
        try:
            signal.send(self, **kwargs)
        except Exception:  # an app's receiver (paging someone) must not stop the forwarding
            logger.exception("a %s receiver failed", signal.name)

    def drain(self, max_rounds: int = 1_000_000) -> int:
        """Run until nothing is due now; returns how many deliveries were settled."""
        total = 0
        for _ in range(max_rounds):
            done = self.run_once()
            total += done
            if not done:
                break
        return total

    def run(self, stop: threading.Event | None = None) -> None:
        """Run until ``stop`` is set: claim, send, settle; sleep ``poll`` seconds (with jitter) when idle.
        Database errors (a lost connection, a deadlock) are logged and retried after a pause."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                done = self.run_once()
            except Exception:
                logger.exception("relay round failed; retrying in %.1fs", self.poll)
                done = 0
            if not done:
                stop.wait(self.poll * (0.5 + self.rng.random()))


FORK_WAIT = 10.0
"""The most seconds a fork waits for the in-process relay's transaction on the outbox to end."""


class Drainer:
    """An in-process relay thread for apps that run no worker.

    ``Drainer(relay).connect()`` wakes it each time events are committed (``event_recorded`` is sent after
    commit), so a request only sets a flag; the thread starts on first use and again in a forked child.

    A fork waits (up to :data:`FORK_WAIT` seconds) for the thread's transaction on the outbox, if one is under
    way, to end, and the thread begins none until the fork is done: a child copies the process as it is, and a
    connection copied in the middle of a transaction takes its locks along. On SQLite the child then found the
    database locked for good (its locks are kept per process, and the copy's are never released).
    """

    def __init__(self, relay: Relay, *, poll: float = 5.0) -> None:
        self.relay = relay
        self.poll = poll
        self._init_state()
        self._held_for_fork = False
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(before=self._before_fork, after_in_parent=self._after_fork_in_parent,
                                after_in_child=self._after_fork)

    def _init_state(self) -> None:
        self._pid = os.getpid()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.relay.transactions = self._transactions = threading.Lock()

    def _before_fork(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            self._held_for_fork = self._transactions.acquire(timeout=FORK_WAIT)

    def _after_fork_in_parent(self) -> None:
        if self._held_for_fork:
            self._held_for_fork = False
            self._transactions.release()

    def _after_fork(self) -> None:
        # The parent's thread does not exist in the child and its pooled connections must not be shared.
        self._held_for_fork = False
        self._init_state()
        after_fork = getattr(self.relay.store, "after_fork", None)
        if after_fork is not None:
            after_fork()

    def connect(self, sender: Any = None) -> Drainer:
        """Wake on every commit of events (by ``sender`` only, if given)."""
        if sender is None:
            event_recorded.connect(self.wake, weak=False)
        else:
            event_recorded.connect(self.wake, sender=sender, weak=False)
        return self

    def disconnect(self) -> None:
        event_recorded.disconnect(self.wake)

    def wake(self, *_: Any, **__: Any) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        self._wake.set()
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._loop, name="audit-forwarding", daemon=True)
                    self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.relay.drain()
            except Exception:
                logger.exception("in-process forwarding failed; trying again in %.1fs", self.poll)
            self._wake.wait(self.poll)
