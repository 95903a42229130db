"""A PostgreSQL restart under a running relay: the relay rides out the outage and, once the database is back,
delivers every event, the ones recorded before the restart and after it.

Only with ``AUDIT_LONG_TESTS=1`` (it restarts the local cluster with ``pg_ctlcluster``, so CI and the
default run never do); the server is left running whatever happens.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from ...conftest import long_tests
from .test_forwarding_faults import (
    assert_once_each,
    forwarding_app,
    receiver,  # noqa: F401  (fixture)
    record,
    relay_process,
    wait_until_sent,
    write_config,
)

LONG = long_tests()
VERSIONS = sorted(p.name for p in Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").is_dir() else []
BATCH = 20

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not LONG, reason="restarts the PostgreSQL server: only with AUDIT_LONG_TESTS=1"),
    pytest.mark.skipif(not (VERSIONS and shutil.which("pg_ctlcluster")), reason="no local pg_ctlcluster"),
]


def cluster(action: str) -> None:
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", VERSIONS[-1], "main", action],
                   check=True, capture_output=True, timeout=120)


def server_up() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], timeout=30).returncode == 0


def slow(path, number, body):
    time.sleep(0.15)


def test_a_database_restart_under_a_running_relay_loses_nothing(backend, database_url, receiver, tmp_path):  # noqa: F811
    if backend != "postgresql":
        pytest.skip("the restart is of the local PostgreSQL cluster")
    app = forwarding_app(database_url, receiver)
    write_config(tmp_path, receiver, timeout=5)
    relay = None
    try:
        before = record(app, 600)
        receiver.faults = slow  # 0.15 s a request: the relay is mid-run when the server goes down
        relay = relay_process(tmp_path, database_url, "--batch", str(BATCH), "--lease", "5", "--poll", "0.1")
        deadline = time.monotonic() + 60
        while not receiver.segment_counts():
            assert relay.poll() is None, relay.communicate()[1]
            assert time.monotonic() < deadline, "the relay sent nothing before the restart"
            time.sleep(0.05)
        cluster("restart")  # mid-run: batches still waiting, connections of the relay cut
        receiver.faults = None
        assert server_up()
        assert relay.poll() is None, f"the relay died with the database: {relay.communicate()[1]}"
        sent_at_restart = len(receiver.segment_counts())
        assert sent_at_restart < len(before), "everything was sent before the restart: nothing was tested"
        app.engine.dispose()  # the test's own pooled connections were cut as well
        after = record(app, 200)
        ids = after  # every event in the table, the ones from before the restart included
        assert set(before) < set(ids)
        try:
            wait_until_sent(app, 60)
        except AssertionError as stuck:
            relay.kill()
            table = app.auditor.outbox.tables.deliveries
            with app.engine.connect() as c:
                left = c.execute(select(table.c.destination, table.c.status, table.c.due_at, table.c.attempts,
                                        table.c.lease_owner, table.c.last_error)).all()[:5]
            stderr = relay.communicate()[1][-3000:]
            raise AssertionError(f"{stuck}; first of them: {left}; relay stderr: {stderr}") from stuck
        assert relay.poll() is None, "the relay stopped"
        # a batch sent while its sent-mark was lost to the restart may go again, once, after its lease
        counts = receiver.segment_counts()
        twice = {key for key, n in counts.items() if n > 1}
        assert len(twice) <= 2 * BATCH, f"{len(twice)} events sent twice"
        assert_once_each(counts, {f"audit-{i}" for i in ids}, twice)
        assert set(receiver.webhook_counts()) == set(ids)
        assert receiver.violations == []
        relay.send_signal(signal.SIGTERM)
        _, err = relay.communicate(timeout=30)
        assert relay.returncode == 0, err
    finally:
        if relay is not None and relay.poll() is None:
            relay.kill()
            relay.communicate()
        if not server_up():
            cluster("start")
        app.auditor.remove()
        app.engine.dispose()
