"""Destinations without a database: payload shapes, batching limits, signing, status handling, SSRF guard."""

from __future__ import annotations

import base64
import json
import random
import time
from datetime import datetime, timezone

import pytest

from audit_middleware import Actor
from audit_middleware.events import AuditEvent
from audit_middleware.forwarding import (
    Forwarding,
    SegmentDestination,
    SlackDestination,
    WebhookDestination,
    WebhookVerificationError,
    backoff,
    new_secret,
    sign,
    verify,
)
from audit_middleware.forwarding._http import Response
from audit_middleware.forwarding.delivery import classify, retry_after_seconds
from audit_middleware.forwarding.segment import MAX_BATCH_BYTES, track_item
from audit_middleware.forwarding.slack import slack_message
from audit_middleware.ids import new_event_id

from .receivers import SECRET, WRITE_KEY, Fault, Receiver

WHEN = datetime(2026, 11, 25, 19, 7, 41, 123456, tzinfo=timezone.utc)


def event(name: str = "Warehouse Disabled", actor: Actor | None = None, **kw) -> AuditEvent:
    return AuditEvent(new_event_id(), WHEN, name, "Warehouses", name.split()[-1].lower(),
                      actor or Actor.user("7", "ada@example.com"), resource_type="Warehouse", resource_id="42",
                      resource_name="Production BigQuery", workspace_id="ws_1",
                      changes={"enabled": [True, False]}, **kw)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.release.set()
    r.stop()


def test_standard_webhooks_signature_matches_the_specification_test_vector():
    signature = sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                     b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_accepts_rotated_secrets_and_refuses_tampering_and_replays():
    old, new = SECRET, new_secret()
    hook = WebhookDestination("https://example.com/hook", [new, old])
    e = event()
    body = b'{"data": 1}'
    headers = hook.headers(e, body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify(body, headers, old) == {"data": 1}
    assert verify(body, {k.upper(): v for k, v in headers.items()}, [new_secret(), new]) == {"data": 1}
    with pytest.raises(WebhookVerificationError, match="no webhook-signature matches"):
        verify(b'{"data": 2}', headers, old)
    with pytest.raises(WebhookVerificationError, match="more than 300s"):
        verify(body, headers, old, now=time.time() + 301)
    with pytest.raises(WebhookVerificationError, match="missing header webhook-signature"):
        verify(body, {"webhook-id": "x", "webhook-timestamp": "1"}, old)


def test_stripe_and_github_style_signatures():
    import hashlib
    import hmac

    e = event()
    body = b"{}"
    stripe = WebhookDestination("https://example.com/h", "sk_secret", style="stripe").headers(e, body, 1700000000)
    expected = hmac.new(b"sk_secret", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert stripe["Stripe-Signature"] == f"t=1700000000,v1={expected}"
    github = WebhookDestination("https://example.com/h", "gh", style="github").headers(e, body)
    assert github["X-Hub-Signature-256"] == "sha256=" + hmac.new(b"gh", b"{}", hashlib.sha256).hexdigest()
    assert github["X-GitHub-Delivery"] == e.id


def test_configuration_mistakes_are_reported_in_the_users_terms():
    with pytest.raises(ValueError, match="starts with 'whsec_'"):
        WebhookDestination("https://example.com/h", "not-a-secret")
    with pytest.raises(ValueError, match="absolute http") as missing_scheme:
        SlackDestination("hooks.slack.com/services/T000/B000/XXXXsecretXXXX")
    with pytest.raises(ValueError, match="absolute http") as wrong_scheme:
        WebhookDestination("ftp://user:pw@example.com/hooks/secret-path", "whsec_x")
    # The message goes to logs: a Slack or webhook URL's path (and any password) is a secret it must not hold.
    for error in (missing_scheme.value, wrong_scheme.value):
        assert "secret" not in str(error) and "XXXX" not in str(error) and "pw" not in str(error)
    assert "'hooks.sl'..." in str(missing_scheme.value) and "'ftp://example.com/...'" in str(wrong_scheme.value)
    with pytest.raises(ValueError, match="region must be one of"):
        SegmentDestination("wk", region="mars")
    with pytest.raises(TypeError, match=r"write \['\* Disabled'\]"):
        SlackDestination("https://hooks.slack.com/x", rules="* Disabled")
    with pytest.raises(ValueError, match="two destinations are named 'segment'"):
        Forwarding([SegmentDestination("a"), SegmentDestination("b")])
    for parallel in (0, 33, 2.5, "4"):
        with pytest.raises(ValueError, match=r"WebhookDestination\('webhook'\) parallel must be a whole number "
                                             r"from 1 to 32, got"):
            WebhookDestination("https://example.com/h", SECRET, parallel=parallel)


def test_segment_track_call_shape_and_compatibility_mode():
    e = event()
    item = track_item(e)
    assert item["type"] == "track" and item["event"] == "Warehouse Disabled" and item["userId"] == "7"
    assert item["messageId"] == f"audit-{e.id}" and item["timestamp"] == "2026-11-25T19:07:41.123456Z"
    assert item["properties"]["resource"] == {"type": "Warehouse", "id": "42", "name": "Production BigQuery"}
    assert item["properties"]["actor_name"] == "ada@example.com" and item["properties"]["workspace_id"] == "ws_1"
    assert item["context"]["library"]["name"] == "audit-middleware"
    system = track_item(event(actor=Actor.system("warehouse-scheduler")), compat=True)
    assert system["event"] == "Audit" and system["userId"] == "__system__"
    assert system["properties"]["type"] == "Warehouse Disabled"


def test_segment_batches_stay_under_100_items_and_475000_bytes():
    segment = SegmentDestination(WRITE_KEY)
    small = [event() for _ in range(250)]
    assert [len(g) for g, _ in segment.batches(small)] == [100, 100, 50]
    big = [event(details={"blob": "x" * 30_000}) for _ in range(40)]
    groups = segment.batches(big)
    assert len(groups) > 1
    for _group, items in groups:
        assert sum(len(i) + 1 for i in items) + 60 < MAX_BATCH_BYTES
    assert segment.refuse(event(details={"blob": "x" * 40_000})) is not None
    assert segment.refuse(event()) is None


def test_status_handling():
    assert classify(Response(204)).kind == "sent"
    for status in (408, 429, 500, 502, 503):
        assert classify(Response(status)).kind == "retry"
    for status in (400, 401, 403, 404, 422):
        assert classify(Response(status)).kind == "dead"
    assert classify(Response(410)).kind == "disable"
    slack = SlackDestination.disable_on
    assert {classify(Response(s), disable_on=slack).kind for s in (403, 404, 410)} == {"disable"}
    redirect = classify(Response(302, {"location": "https://elsewhere"}))
    assert redirect.kind == "dead" and "not followed" in (redirect.error or "")
    assert classify(Response(429, {"retry-after": "7"})).retry_after == 7.0


def test_retry_after_as_http_date():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30.0
    assert retry_after_seconds("soon") is None


def test_backoff_is_full_jitter_from_one_second_capped_at_ten_minutes_never_before_retry_after():
    rng = random.Random(1)
    first = [backoff(1, rng=rng) for _ in range(500)]
    assert 0 <= min(first) < 0.1 and 0.9 < max(first) <= 1.0
    tenth = [backoff(10, rng=rng) for _ in range(500)]
    assert max(tenth) <= 512 and max(tenth) > 400
    assert max(backoff(40, rng=rng) for _ in range(500)) <= 600
    assert min(backoff(1, retry_after=30, rng=rng) for _ in range(100)) == 30


def test_slack_message_is_readable_escaped_and_links_to_the_admin_view():
    e = event(actor=Actor.user("7", "<ada>&co"))
    message = slack_message(e, "https://app.example.com/admin/audit-trail/")
    assert message["text"].startswith("Warehouse Disabled: <ada>&co (user) on Warehouse Production BigQuery")
    text = json.dumps(message["blocks"])
    assert "&lt;ada&gt;&amp;co" in text and "`enabled`: true \\u2192 false" in text
    assert f"resource_type=Warehouse&resource_id=42#event-{e.id}" in text


def test_loopback_and_private_urls_are_refused_unless_allowed(receiver):
    e = event()
    refused = WebhookDestination(receiver.base + "/hook", SECRET).deliver([e])[e.id]
    assert refused.kind == "dead" and "allow_private=True" in (refused.error or "")
    assert receiver.requests == 0
    for url in ("http://10.0.0.8/h", "http://169.254.169.254/latest", "http://[::1]/h"):
        out = WebhookDestination(url, SECRET).deliver([e])[e.id]
        assert out.kind == "dead" and "refusing" in (out.error or "")
    allowed = WebhookDestination(receiver.base + "/hook", SECRET, allow_private=True).deliver([e])[e.id]
    assert allowed.kind == "sent" and receiver.webhook_ids == [e.id]


def test_redirects_are_not_followed(receiver):
    receiver.faults = lambda path, n, body: Fault(status=307)
    e = event()
    out = SegmentDestination(WRITE_KEY, host=receiver.base, allow_private=True).deliver([e])[e.id]
    assert out.kind == "dead" and out.status == 307 and receiver.requests == 1


def test_segment_sends_basic_auth_with_the_write_key_and_a_fresh_sent_at(receiver):
    events = [event() for _ in range(150)]
    wrong = SegmentDestination("wrong", host=receiver.base, allow_private=True).deliver(events[:1])
    assert wrong[events[0].id].status == 401
    out = SegmentDestination(WRITE_KEY, host=receiver.base, allow_private=True).deliver(events)
    assert {o.kind for o in out.values()} == {"sent"} and receiver.requests == 1 + 2
    assert receiver.segment_ids == [f"audit-{e.id}" for e in events] and receiver.violations == []


def test_after_a_retryable_failure_the_rest_of_the_claim_is_not_attempted(receiver):
    receiver.faults = lambda path, n, body: Fault(status=429, retry_after="5") if n == 2 else None
    events = [event() for _ in range(4)]
    out = WebhookDestination(receiver.base + "/hook", SECRET, allow_private=True, parallel=1).deliver(events)
    assert [out[e.id].kind for e in events] == ["sent", "retry", "retry", "retry"]
    assert out[events[3].id].retry_after == 5 and receiver.requests == 2
    assert receiver.webhook_ids == [events[0].id]


def test_posted_in_parallel_after_a_retryable_failure_only_the_rest_of_its_window_is_sent(receiver):
    """Four at a time (the default): the failure is one of the second window's four requests (the 6th of 12),
    so the second window's other three are sent, the third window is left for later."""
    receiver.faults = lambda path, n, body: Fault(status=429, retry_after="5") if n == 6 else None
    events = [event() for _ in range(12)]
    out = WebhookDestination(receiver.base + "/hook", SECRET, allow_private=True).deliver(events)
    kinds = [out[e.id].kind for e in events]
    assert kinds[:4] == ["sent"] * 4
    assert sorted(kinds[4:8]) == ["retry", "sent", "sent", "sent"]
    assert kinds[8:] == ["retry"] * 4 and all(out[e.id].error.startswith("not attempted") for e in events[8:])
    assert receiver.requests == 8
    assert sorted(receiver.webhook_ids) == sorted(e.id for e in events[:8] if out[e.id].kind == "sent")
    assert receiver.violations == []


def test_timeouts_and_refused_connections_are_retried(receiver):
    receiver.faults = lambda path, n, body: Fault(hang=1.0)
    e = event()
    out = WebhookDestination(receiver.base + "/hook", SECRET, allow_private=True, timeout=0.2).deliver([e])[e.id]
    assert out.kind == "retry" and "timed out" in (out.error or "")
    receiver.stop()
    out = WebhookDestination(receiver.base + "/hook", SECRET, allow_private=True).deliver([e])[e.id]
    assert out.kind == "retry" and "ConnectionRefused" in (out.error or "")


def test_slack_sends_at_most_one_message_per_second_per_webhook(receiver):
    slack = SlackDestination(receiver.base + "/slack", allow_private=True)
    events = [event() for _ in range(3)]
    assert {o.kind for o in slack.deliver(events).values()} == {"sent"}
    gaps = [b - a for a, b in zip(receiver.slack_times, receiver.slack_times[1:], strict=False)]
    assert len(gaps) == 2 and min(gaps) >= 0.95


def test_basic_auth_header_is_the_write_key_with_an_empty_password():
    header = SegmentDestination("wk_1")._headers["Authorization"]
    assert base64.b64decode(header.split()[1]) == b"wk_1:"
