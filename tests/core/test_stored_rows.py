"""The rows every adapter inserts: values and row hashes, whether events share their time and context or not."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import pickle
from datetime import datetime, timedelta, timezone

import pytest

from audit_middleware import Actor
from audit_middleware.events import AuditEvent
from audit_middleware.integrity import Signer
from audit_middleware.store import EVENT_COLUMNS, event_to_row, stored_rows


def _expected(event: AuditEvent, key: bytes | None = None) -> list[object]:
    """The stored values worked out on their own: the event's row, then sha256 of its canonical JSON (with a
    ``key``, the standard library's HMAC-SHA256 of it)."""
    row = event_to_row(event)
    values = [row[name] for name in EVENT_COLUMNS]
    canonical = [v.isoformat(timespec="microseconds") if isinstance(v, datetime) else v for v in values]
    text = json.dumps(canonical, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    digest = hashlib.sha256(text) if key is None else hmac.new(key, text, hashlib.sha256)
    return [*values, digest.hexdigest()]


def test_keyed_row_hashes_are_the_standard_hmac_of_the_canonical_json_for_any_key_length():
    """Rows stored by any version, or checked by a verifier of the user's own, hash as RFC 2104's HMAC-SHA256
    does: keys shorter than, as long as and longer than SHA-256's 64-byte block (hashed first), text keys as
    UTF-8, and each previous key (rotation) as its own."""
    ada = Actor.user("7", "ada@example.com")
    event = AuditEvent("id-1", datetime(2026, 11, 25, 19, 7, 41, 123456, tzinfo=timezone.utc), "Warehouse Created",
                       "Warehouses", "created", ada, resource_type="Warehouse", resource_id="1",
                       changes={"name": [None, "Wé \"1\""]}, context={"ip": "203.0.113.9"})
    for key in (b"k", b"k" * 32, b"k" * 63, b"k" * 64, b"k" * 65, bytes(range(256)) * 2, "clé".encode()):
        signer = Signer(key if key != "clé".encode() else "clé", previous=[b"older-" + key])
        [row] = stored_rows([event], signer)
        assert row == _expected(event, key)
        message = b'["a",null]'
        assert signer.mac(message) == hmac.new(key, message, hashlib.sha256).hexdigest()
        assert signer.mac(message, b"older-" + key) == hmac.new(b"older-" + key, message, hashlib.sha256).hexdigest()
        assert signer.mac(message, b"unknown") == hmac.new(b"unknown", message, hashlib.sha256).hexdigest()
        assert signer.mac(message) != signer.mac(message, b"older-" + key)


def test_events_sharing_time_and_context_objects_or_not_each_get_their_own_values_and_hash():
    """A flush's events share one time and one context object, converted once; events that do not (or
    share them again after another one) must still each get their own."""
    at = datetime(2026, 11, 25, 19, 7, 41, 123456, tzinfo=timezone.utc)
    later = at + timedelta(seconds=1)
    same_moment = datetime(2026, 11, 25, 20, 7, 41, 123456, tzinfo=timezone(timedelta(hours=1)))  # == at
    shared = {"ip": "203.0.113.9", "request_id": "r-1"}
    ada = Actor.user("7", "ada@example.com")

    def event(n: int, occurred_at: datetime, context: dict[str, str]) -> AuditEvent:
        return AuditEvent(f"id-{n}", occurred_at, "Warehouse Created", "Warehouses", "created", ada,
                          resource_type="Warehouse", resource_id=str(n), changes={"name": [None, f"w{n}"]},
                          context=context)

    events = [event(1, at, shared), event(2, at, shared), event(3, later, {"request_id": "r-2"}),
              event(4, at, shared), event(5, same_moment, {}), event(6, later, shared)]
    rows = stored_rows(events, Signer())
    assert rows == [_expected(e) for e in events]
    assert [r[1] for r in rows] == [at.replace(tzinfo=None)] * 2 + [later.replace(tzinfo=None)] + \
        [at.replace(tzinfo=None)] * 2 + [later.replace(tzinfo=None)]
    assert [r[13] for r in rows] == [json.dumps(shared, separators=(",", ":"), sort_keys=True)] * 2 + \
        ['{"request_id":"r-2"}'] + [json.dumps(shared, separators=(",", ":"), sort_keys=True)] + [None] + \
        [json.dumps(shared, separators=(",", ":"), sort_keys=True)]


def test_equal_contexts_in_separate_writes_are_stored_as_their_own_values():
    """A context equal to the last one encoded reuses its text (each write of a request has its own dict): the
    text must still be each context's own, whether the values are text, or equal values of other types
    (``True == 1 == 1.0``), or the keys come in another order, or the last one was changed in place."""
    at = datetime(2026, 11, 25, 19, 7, 41, 123456, tzinfo=timezone.utc)
    ada = Actor.user("7", "ada@example.com")
    contexts = [{"ip": "203.0.113.9", "request_id": "r-1"}, {"request_id": "r-1", "ip": "203.0.113.9"},
                {"flag": True}, {"flag": 1}, {"flag": 1.0}, {"flag": "1"}, {"flag": "1"}, {1: "x"}, {1.0: "x"},
                {"ip": "203.0.113.9", "request_id": "r-1"}]
    mutated = {"ip": "203.0.113.9", "request_id": "r-1"}
    for n, context in enumerate(contexts):  # one write each, as separate requests' saves make them
        event = AuditEvent(f"id-{n}", at, "Warehouse Created", "Warehouses", "created", ada, context=context)
        [row] = stored_rows([event], Signer())
        assert row == _expected(event)
        assert row[13] == json.dumps(context, separators=(",", ":"), sort_keys=True)  # {1.0: "x"}: '{"1.0":"x"}'
    for value in ("r-2", "r-3"):
        mutated["request_id"] = value  # the same dict, changed between writes
        event = AuditEvent("id-m", at, "Warehouse Created", "Warehouses", "created", ada, context=mutated)
        [row] = stored_rows([event], Signer())
        assert row[13] == f'{{"ip":"203.0.113.9","request_id":"{value}"}}'


def test_a_signer_copied_or_pickled_signs_as_the_original():
    """A signer keeps an HMAC object a key (objects that cannot be pickled): copies are made from its keys."""
    signer = Signer("current", previous=["older"])
    message = b'["a",null]'
    for twin in (copy.copy(signer), copy.deepcopy(signer), pickle.loads(pickle.dumps(signer))):
        assert (twin.key, twin.previous) == (b"current", (b"older",))
        assert twin.mac(message) == signer.mac(message) == hmac.new(b"current", message, hashlib.sha256).hexdigest()
        assert twin.mac(message, b"older") == hmac.new(b"older", message, hashlib.sha256).hexdigest()
    assert pickle.loads(pickle.dumps(Signer())).mac(message) == hashlib.sha256(message).hexdigest()


def test_event_insert_turns_several_sqlite_rows_into_insert_or_fail_and_refuses_anything_but_an_insert():
    from audit_middleware.store import event_insert

    assert event_insert('INSERT INTO "audit_events" ("id") VALUES (?), (?)', "sqlite", 2) == (
        'INSERT OR FAIL INTO "audit_events" ("id") VALUES (?), (?)')
    for database, rows in (("sqlite", 1), ("postgresql", 2), ("mysql", 60)):
        assert event_insert('INSERT INTO "t" ("id") VALUES (%s)', database, rows) == 'INSERT INTO "t" ("id") VALUES (%s)'
    for other in ("INSERT OR IGNORE INTO t VALUES (?)", "UPDATE t SET a = ?", " INSERT INTO t VALUES (?)"):
        with pytest.raises(ValueError, match="not an INSERT INTO statement"):
            event_insert(other, "sqlite", 2)
