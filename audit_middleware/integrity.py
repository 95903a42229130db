"""Tamper evidence: a keyed hash on every event row, and sealed digests that chain them per workspace.

Two layers, chosen so that concurrent writers never wait on each other (see README, "Tamper evidence"):

* **Row hashes.** Each event row stores ``row_hash``, an HMAC-SHA256 (keyed by ``AuditConfig.signing_key`` or
  the ``AUDIT_SIGNING_KEY`` environment variable; plain SHA-256 when no key is set) over the row's canonical
  JSON. It is computed from the row alone while the row is built, so it takes no lock and reads nothing.
  An edited row, or a row inserted without the key, no longer matches its hash.
* **Sealed digests**, like AWS CloudTrail's digest files. :func:`seal` walks each workspace's events in
  ``(occurred_at, id)`` order from where the last digest stopped and writes digest rows, each listing the ids
  (and times) of up to ``batch`` events, and each holding the previous digest's hash. One writer per
  workspace chain wins a ``(workspace, seq)`` primary key, so sealers may run anywhere at once. A row deleted
  from a sealed range is missing from its digest's list; a row inserted into a sealed range is not on it.
* **Purges** append a signed ``purge`` digest holding the cutoff first, so the ids that retention removes are
  known to be gone on purpose.

:func:`verify` checks all three and reports each problem with the event it concerns. Everything here is
framework-free; a backend (the SQLAlchemy adapter, for one) implements :class:`IntegrityBackend`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from .store import EVENT_COLUMNS
from .values import compact_encoder, dumps

KEY_ENV = "AUDIT_SIGNING_KEY"
"""Environment variable holding the signing key when the configuration names none."""
PREVIOUS_KEYS_ENV = "AUDIT_PREVIOUS_SIGNING_KEYS"
"""Environment variable holding earlier signing keys (space separated) that still verify."""
_CURRENT: Any = object()

DEFAULT_SEAL_BATCH = 1000
DEFAULT_SEAL_DELAY = timedelta(minutes=5)
"""How far sealing trails the clock: longer than any write transaction, so no event commits into a range
that is sealed already (it would read as inserted out of band)."""
_TIME = "%Y-%m-%dT%H:%M:%S.%f"

Key = tuple[datetime, str]
"""A position in a workspace's chain: ``(occurred_at as naive UTC, event id)``."""


def _naive(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else _naive(moment).strftime(_TIME)


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, _TIME)


def workspace_key(workspace_id: str | None) -> str:
    """The chain a workspace's events belong to (``""`` for events without a workspace)."""
    return workspace_id or ""


class Signer:
    """Computes row and digest hashes: HMAC-SHA256 with ``key``, or plain SHA-256 without one.

    Without a key the hashes still catch accidental edits and careless forgery, but anyone who can write the
    table can recompute them: configure a key (kept out of the database) for tamper evidence. To rotate the
    key, sign with the new one and keep the old ones in ``previous`` (``$AUDIT_PREVIOUS_SIGNING_KEYS``,
    separated by spaces): rows and digests signed with any of them still verify.
    """

    __slots__ = ("key", "previous", "_keyed")

    def __init__(self, key: str | bytes | None = None, previous: Iterable[str | bytes] = ()) -> None:
        self.key: bytes | None = _key_bytes(key)
        self.previous: tuple[bytes, ...] = tuple(k for k in (_key_bytes(p) for p in previous) if k)
        # Each key's HMAC with the key already set up: a row's is a copy of it (OpenSSL's one-shot HMAC sets the
        # key up again for every row, taking half as long again).
        self._keyed: dict[bytes, hmac.HMAC] = {
            k: hmac.new(k, digestmod=hashlib.sha256) for k in (self.key, *self.previous) if k is not None}

    def __reduce__(self) -> tuple[type[Signer], tuple[bytes | None, tuple[bytes, ...]]]:
        """Copied and pickled as its keys (its HMAC objects cannot be): the copy sets them up again."""
        return Signer, (self.key, self.previous)

    @classmethod
    def from_config(cls, key: str | bytes | None = None, previous: Iterable[str | bytes] | None = None) -> Signer:
        """The signer for ``key``, else for ``$AUDIT_SIGNING_KEY``, else an unkeyed one; ``previous`` keys
        default to ``$AUDIT_PREVIOUS_SIGNING_KEYS``."""
        if previous is None:
            previous = os.environ.get(PREVIOUS_KEYS_ENV, "").split()
        return cls(key if key else os.environ.get(KEY_ENV) or None, previous)

    @property
    def keyed(self) -> bool:
        return self.key is not None

    def mac(self, message: bytes, key: bytes | None = _CURRENT) -> str:
        if key is _CURRENT:
            key = self.key
        if key is None:
            return hashlib.sha256(message).hexdigest()
        keyed = self._keyed.get(key)
        if keyed is None:
            return hmac.digest(key, message, hashlib.sha256).hex()
        row = keyed.copy()
        row.update(message)
        return row.hexdigest()

    def row_hash(self, row: Mapping[str, Any]) -> str:
        """The hash of an event row (the :data:`~audit_middleware.store.EVENT_COLUMNS` values as stored)."""
        return self.mac(canonical_row(row))

    def values_hash(self, values: Sequence[Any]) -> str:
        """:meth:`row_hash` of the row whose :data:`~audit_middleware.store.EVENT_COLUMNS` values are
        ``values``, in that order (extra trailing values are ignored)."""
        return self.mac(canonical_values(values))

    def digest_hash(self, digest: Digest) -> str:
        return self.mac(_digest_message(digest))

    def _matches(self, stored: str, message: bytes) -> bool:
        for key in (self.key, *self.previous):
            if hmac.compare_digest(stored, self.mac(message, key)):
                return True
        return False

    def row_matches(self, row: Mapping[str, Any], stored: str) -> bool:
        """Whether ``stored`` is the row's hash under the current key or a previous one."""
        return self._matches(stored, canonical_row(row))

    def digest_matches(self, digest: Digest) -> bool:
        return self._matches(digest.digest_hash, _digest_message(digest))


def _key_bytes(key: str | bytes | None) -> bytes | None:
    if isinstance(key, str):
        key = key.encode("utf-8")
    return key or None


def _digest_message(digest: Digest) -> bytes:
    return dumps([
        digest.workspace, digest.seq, digest.kind, _time(digest.last_at), digest.last_id, digest.count,
        digest.entries_hash, digest.prev_hash, _time(digest.purged_before),
    ]).encode("utf-8")


def canonical_row(row: Mapping[str, Any]) -> bytes:
    """The bytes a row hash covers: a JSON list of the columns in :data:`EVENT_COLUMNS` order, time as naive
    UTC with microseconds, everything else as the text stored (so every database gives the same bytes)."""
    return canonical_values([row[name] for name in EVENT_COLUMNS])


def canonical_values(stored: Sequence[Any]) -> bytes:
    """:func:`canonical_row` of the row whose :data:`EVENT_COLUMNS` values are ``stored``, in that order (the
    time may be given as its :func:`canonical_time` text already)."""
    values = list(stored[:_WIDTH])
    for index, value in enumerate(values):  # on the write path every value but the time is str or None
        if value is not None and type(value) is not str:
            values[index] = canonical_time(value) if isinstance(value, datetime) else str(value)
    return _encode(values).encode("utf-8")


def canonical_time(moment: datetime) -> str:
    """A time as the row hash covers it: naive UTC, ISO 8601 with microseconds."""
    return _naive(moment).isoformat(timespec="microseconds")


_WIDTH = len(EVENT_COLUMNS)
_encode = compact_encoder(sort_keys=False)


@dataclass
class Digest:
    """One link of a workspace's chain.

    ``kind`` is ``seal`` (it lists the events after the previous digest up to ``last_at``/``last_id``) or
    ``purge`` (events before ``purged_before`` may be missing from earlier digests: retention removed them).
    ``entries`` is None once a purge removed every event a seal listed (its hash still chains).
    """

    workspace: str
    seq: int
    kind: str
    last_at: datetime | None
    last_id: str | None
    count: int
    entries: str | None
    entries_hash: str
    prev_hash: str
    digest_hash: str = ""
    purged_before: datetime | None = None
    created_at: datetime | None = None

    @property
    def last_key(self) -> Key | None:
        if self.last_at is None or self.last_id is None:
            return None
        return (_naive(self.last_at), self.last_id)

    def entry_list(self) -> list[tuple[str, datetime]]:
        if not self.entries:
            return []
        return [(line[:36], _parse_time(line[37:])) for line in self.entries.split("\n")]


def entries_text(rows: Iterable[tuple[str, datetime]]) -> str:
    return "\n".join(f"{event_id} {_time(at)}" for event_id, at in rows)


def entries_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def next_seal(previous: Digest | None, workspace: str, rows: Sequence[tuple[str, datetime]],
              signer: Signer) -> Digest:
    """The digest that follows ``previous`` and lists ``rows`` (``(id, occurred_at)`` in chain order)."""
    text = entries_text(rows)
    digest = Digest(
        workspace=workspace, seq=(previous.seq + 1) if previous else 1, kind="seal",
        last_at=_naive(rows[-1][1]), last_id=rows[-1][0], count=len(rows), entries=text,
        entries_hash=entries_hash(text), prev_hash=previous.digest_hash if previous else "",
        created_at=datetime.now(timezone.utc).replace(tzinfo=None),
    )
    digest.digest_hash = signer.digest_hash(digest)
    return digest


def purge_marker(previous: Digest | None, workspace: str, before: datetime, signer: Signer) -> Digest:
    """The digest recording that retention deletes this workspace's events before ``before``."""
    digest = Digest(
        workspace=workspace, seq=(previous.seq + 1) if previous else 1, kind="purge",
        last_at=previous.last_at if previous else None, last_id=previous.last_id if previous else None,
        count=0, entries=None, entries_hash="", prev_hash=previous.digest_hash if previous else "",
        purged_before=_naive(before), created_at=datetime.now(timezone.utc).replace(tzinfo=None),
    )
    digest.digest_hash = signer.digest_hash(digest)
    return digest


class IntegrityBackend(Protocol):
    """What sealing and verifying need from a store. Event rows are mappings of the stored columns
    (:data:`EVENT_COLUMNS` plus ``row_hash``); workspaces are :func:`workspace_key` values."""

    def workspaces(self) -> list[str]:
        """Every workspace that has events or digests."""

    def last_digest(self, workspace: str) -> Digest | None:
        """The digest with the highest ``seq`` in the workspace's chain."""

    def digests(self, workspace: str) -> Iterator[Digest]:
        """The workspace's digests in ``seq`` order."""

    def sealable(self, workspace: str, after: Key | None, until: datetime, limit: int) -> list[tuple[str, datetime]]:
        """``(id, occurred_at)`` of the next ``limit`` events after ``after`` that happened before ``until``."""

    def events(self, workspace: str, after: Key | None, upto: Key | None) -> Iterator[Mapping[str, Any]]:
        """The workspace's event rows with ``after < (occurred_at, id) <= upto``, in chain order."""

    def events_by_id(self, ids: Sequence[str]) -> list[Mapping[str, Any]]:
        """The rows of these ids, wherever they are."""

    def add_digest(self, digest: Digest) -> bool:
        """Insert ``digest``; False when that ``(workspace, seq)`` exists already (another sealer won)."""


def seal(backend: IntegrityBackend, signer: Signer, *, until: datetime, batch: int = DEFAULT_SEAL_BATCH,
         workspaces: Iterable[str] | None = None) -> int:
    """Write digests for every event that happened before ``until`` and is not sealed yet; returns how many.

    ``until`` should trail the clock by more than the longest write transaction: an event committed after its
    time range was sealed reads as inserted out of band."""
    written = 0
    until = _naive(until)
    for workspace in (workspaces if workspaces is not None else backend.workspaces()):
        previous = backend.last_digest(workspace)
        while True:
            rows = backend.sealable(workspace, previous.last_key if previous else None, until, batch)
            if not rows:
                break
            digest = next_seal(previous, workspace, rows, signer)
            if not backend.add_digest(digest):
                break  # a concurrent sealer extended this chain: leave the rest to it
            written += 1
            previous = digest
    return written


@dataclass(frozen=True)
class Problem:
    """One thing :func:`verify` found wrong, located by the event (or digest) it concerns."""

    kind: str  # altered, unsigned, deleted, inserted, digest
    workspace: str
    event_id: str | None
    occurred_at: datetime | None
    detail: str

    def __str__(self) -> str:
        where = f"workspace {self.workspace!r}" if self.workspace else "no workspace"
        at = f" at {_time(self.occurred_at)}Z" if self.occurred_at else ""
        subject = f"event {self.event_id}{at}" if self.event_id else "digest chain"
        return f"{self.kind.upper()}: {subject} ({where}): {self.detail}"


@dataclass
class VerifyReport:
    """What :func:`verify` found. ``ok`` when no problem; ``first`` is the earliest problem in time."""

    problems: list[Problem] = field(default_factory=list)
    events: int = 0
    sealed: int = 0
    unsealed: int = 0
    purged: int = 0
    digests: int = 0
    workspaces: int = 0
    keyed: bool = False
    #: each workspace chain's newest digest, ``{workspace: [seq, digest_hash]}``: keep a copy outside the
    #: database and pass it back as ``expected_heads`` to catch a chain truncated or rewritten from the end
    heads: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        if not self.problems:
            return None
        return min(self.problems, key=lambda p: (p.occurred_at or datetime.min, p.event_id or ""))

    def summary(self) -> str:
        key = "HMAC-SHA256 with the signing key" if self.keyed else "SHA-256 without a key (set AUDIT_SIGNING_KEY)"
        head = (f"{self.events} event(s) in {self.workspaces} workspace chain(s), {self.sealed} sealed in "
                f"{self.digests} digest(s), {self.unsealed} not sealed yet, {self.purged} purged by retention; "
                f"hashes: {key}")
        if self.ok:
            return f"trail intact: {head}"
        return f"TAMPERING DETECTED: {len(self.problems)} problem(s); first: {self.first}\n{head}"


def verify(backend: IntegrityBackend, signer: Signer,
           expected_heads: Mapping[str, Sequence[Any]] | None = None) -> VerifyReport:
    """Check every row hash, every digest chain, and that each sealed range holds exactly its listed events.

    ``expected_heads`` (a saved :attr:`VerifyReport.heads`) must still be links of their chains: this catches
    what no chain can show from the inside, newest digests removed or a whole workspace chain rewritten."""
    report = VerifyReport(keyed=signer.keyed)
    workspaces = backend.workspaces()
    for workspace in workspaces:
        report.workspaces += 1
        _verify_workspace(backend, signer, workspace, report, (expected_heads or {}).get(workspace))
    for workspace in sorted(set(expected_heads or {}) - set(workspaces)):
        report.problems.append(Problem("digest", workspace, None, None,
                                       "the whole chain of this workspace is gone (it had digests before)"))
    return report


def _check_row(row: Mapping[str, Any], signer: Signer, workspace: str, report: VerifyReport) -> None:
    report.events += 1
    stored = row.get("row_hash")
    if not stored:
        report.problems.append(Problem("unsigned", workspace, row["id"], _naive(row["occurred_at"]),
                                       "the row has no hash: inserted out of band, bypassing the library"))
    elif not signer.row_matches(row, str(stored)):
        report.problems.append(Problem(
            "altered", workspace, row["id"], _naive(row["occurred_at"]),
            "its content does not match its hash: edited after it was written, or forged without the signing key",
        ))


def _verify_workspace(backend: IntegrityBackend, signer: Signer, workspace: str, report: VerifyReport,
                      expected_head: Sequence[Any] | None = None) -> None:
    digests = list(backend.digests(workspace))
    if digests:
        report.heads[workspace] = [digests[-1].seq, digests[-1].digest_hash]
    if expected_head is not None:
        seq, digest_hash = int(expected_head[0]), str(expected_head[1])
        link = next((d for d in digests if d.seq == seq), None)
        if link is None or not hmac.compare_digest(link.digest_hash, digest_hash):
            report.problems.append(Problem(
                "digest", workspace, None, None,
                f"digest #{seq} saved as this chain's head earlier is {'gone' if link is None else 'different'}: "
                "the chain was truncated or rewritten from there",
            ))
    previous: Digest | None = None
    purged_before: datetime | None = None
    for digest in digests:
        expected_seq = previous.seq + 1 if previous else 1
        problem = None
        if digest.seq != expected_seq:
            problem = f"digest #{expected_seq} is missing (next is #{digest.seq})"
        elif digest.prev_hash != (previous.digest_hash if previous else ""):
            problem = f"digest #{digest.seq} does not link to digest #{expected_seq - 1}"
        elif not signer.digest_matches(digest):
            problem = f"digest #{digest.seq} does not match its hash (edited, or signed with another key)"
        elif digest.entries is not None and entries_hash(digest.entries) != digest.entries_hash:
            problem = f"the event list of digest #{digest.seq} was edited"
        if problem:
            report.problems.append(Problem("digest", workspace, None, digest.last_at, problem))
        if digest.kind == "purge" and digest.purged_before is not None and problem is None:
            purged_before = max(purged_before or digest.purged_before, digest.purged_before)
        previous = digest
    report.digests += len(digests)

    after: Key | None = None
    for digest in digests:
        if digest.kind != "seal":
            continue
        upto = digest.last_key
        rows = list(backend.events(workspace, after, upto))
        if digest.entries is None:  # every listed event was purged: only the rows' own hashes can be checked
            if purged_before is None or digest.last_at is None or _naive(digest.last_at) >= purged_before:
                report.problems.append(Problem("digest", workspace, None, digest.last_at,
                                               f"the event list of digest #{digest.seq} was removed"))
            for row in rows:
                _check_row(row, signer, workspace, report)
            report.purged += max(digest.count - len(rows), 0)
            after = upto
            continue
        entries = digest.entry_list()
        listed = {event_id: at for event_id, at in entries}
        seen: set[str] = set()
        for row in rows:
            _check_row(row, signer, workspace, report)
            if row["id"] in listed:
                seen.add(row["id"])
                report.sealed += 1
            else:
                report.problems.append(Problem(
                    "inserted", workspace, row["id"], _naive(row["occurred_at"]),
                    f"not listed in digest #{digest.seq}, which sealed this time range: inserted out of band "
                    "(or committed long after it happened)",
                ))
        missing = [event_id for event_id, _ in entries if event_id not in seen]
        if missing:
            found = {row["id"]: row for row in backend.events_by_id(missing)}
            order = [event_id for event_id, _ in entries]
            for event_id in missing:
                at = listed[event_id]
                if event_id in found:
                    moved = found[event_id]
                    report.sealed += 1
                    report.problems.append(Problem(
                        "altered", workspace, event_id, at,
                        f"sealed in digest #{digest.seq} at this time, now stored at "
                        f"{_time(moved['occurred_at'])}Z in workspace {moved['workspace_id']!r}",
                    ))
                elif purged_before is not None and at < purged_before:
                    report.purged += 1
                else:
                    index = order.index(event_id)
                    before = order[index - 1] if index > 0 else "(start of digest)"
                    after_id = order[index + 1] if index + 1 < len(order) else "(end of digest)"
                    report.problems.append(Problem(
                        "deleted", workspace, event_id, at,
                        f"listed in digest #{digest.seq} between {before} and {after_id}, but no longer stored",
                    ))
        after = upto
    for row in backend.events(workspace, after, None):
        _check_row(row, signer, workspace, report)
        report.unsealed += 1


PURGE_SETTING = "audit_middleware.purge"
"""The PostgreSQL setting a purge transaction turns on so that the append-only trigger lets it delete."""


def append_only_guard_sql(table: str) -> list[str]:
    """PostgreSQL statements creating a trigger that rejects UPDATE and DELETE on the events ``table`` unless
    the transaction set :data:`PURGE_SETTING` (``SELECT set_config('audit_middleware.purge', 'on', true)``),
    as the retention purge does. ``table`` is the adapter's own, trusted table name."""
    return [
        f"""CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger AS $$
            BEGIN
                IF TG_OP = 'DELETE' AND current_setting('{PURGE_SETTING}', true) = 'on' THEN
                    RETURN OLD;
                END IF;
                RAISE EXCEPTION '{table} is append-only: % refused (only the retention purge may delete)',
                    TG_OP USING ERRCODE = 'insufficient_privilege';
            END $$ LANGUAGE plpgsql""",
        f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()",
    ]
