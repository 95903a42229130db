"""blinker signals sent by audit-middleware.

``event_recorded``
    Sent after the transaction that wrote events commits. sender: the auditor; kwargs: ``events`` (a list of
    :class:`~audit_middleware.events.AuditEvent`).
``capture_failed``
    Sent when building an event failed and the host's write went ahead without it (only for events not
    marked must-record). sender: the auditor; kwargs: ``error`` (the exception).
``delivery_failed``
    Sent by a forwarding relay when deliveries failed: to be retried, or dead (permanent; they wait for a
    person to retry them). sender: the :class:`~audit_middleware.forwarding.Relay`; kwargs: ``destination``
    (its name), ``event_ids`` (list of str), ``error`` (str, what the destination answered), ``dead`` (bool).
``destination_disabled``
    Sent by a relay when a destination answered that it is gone (410; Slack 403/404/410) and was turned off
    in every workspace. sender: the relay; kwargs: ``destination`` (its name), ``reason`` (str).
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

event_recorded = _signals.signal("event-recorded")
capture_failed = _signals.signal("capture-failed")
delivery_failed = _signals.signal("delivery-failed")
destination_disabled = _signals.signal("destination-disabled")
