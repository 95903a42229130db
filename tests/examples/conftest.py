"""Shared set-up for the example apps' tests: the examples directory on sys.path (examples are not part of
the wheel), and the demo started the way the README says, as a subprocess on a free port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN = EXAMPLES / "workspace_demo" / "run.py"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def demo_server(tmp: Path, *options: str) -> Iterator[str]:
    """``python examples/workspace_demo/run.py --port <free> --db <tmp>/demo.sqlite3 *options`` from a
    directory outside the checkout; yields its base URL once it answers, stops it afterwards."""
    port = free_port()
    database = tmp / "demo.sqlite3"
    with open(tmp / "server.log", "w+") as log:
        proc = subprocess.Popen([sys.executable, str(RUN), "--port", str(port), "--db", str(database), *options],
                                cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(base + "/login", timeout=2).close()
                    break
                except (urllib.error.URLError, ConnectionError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        pytest.fail(f"the demo did not start:\n{log.read()}")
                    time.sleep(0.2)
            assert database.exists()
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
