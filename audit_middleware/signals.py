"""blinker signals sent by audit-middleware.

``event_recorded``
    Sent after the transaction that wrote events commits. sender: the auditor; kwargs: ``events`` (a list of
    :class:`~audit_middleware.events.AuditEvent`).
``capture_failed``
    Sent when building an event failed and the host's write went ahead without it (only for events not
    marked must-record). sender: the auditor; kwargs: ``error`` (the exception).
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

event_recorded = _signals.signal("event-recorded")
capture_failed = _signals.signal("capture-failed")
