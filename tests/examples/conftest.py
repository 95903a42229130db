"""Shared set-up for the example apps' tests: the examples directory on sys.path (examples are not part of
the wheel), and the demo started the way the README says, as a subprocess on a free port."""

from __future__ import annotations

import http.cookiejar
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
def demo_server(tmp: Path, *options: str, run: Path = RUN, ready: str = "/login") -> Iterator[str]:
    """``python <run> --port <free> --db <tmp>/demo.sqlite3 *options`` (the Flask demo's run.py by default)
    from a directory outside the checkout; yields its base URL once it answers, stops it afterwards."""
    port = free_port()
    database = tmp / "demo.sqlite3"
    with open(tmp / "server.log", "w+") as log:
        proc = subprocess.Popen([sys.executable, str(run), "--port", str(port), "--db", str(database), *options],
                                cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(base + ready, timeout=2).close()
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


class Client:
    """A browser-ish HTTP client: cookies, and the CSRF token of the last page sent back with each form."""

    def __init__(self, base: str, csrf_field: str = "csrf_token") -> None:
        self.base = base
        self.csrf_field = csrf_field
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.csrf = ""

    def request(self, path: str, data: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, str, str]:
        payload = body
        if data is not None:
            payload = urllib.parse.urlencode({**data, self.csrf_field: self.csrf}, doseq=True).encode()
        req = urllib.request.Request(self.base + path, data=payload, headers=headers or {})
        try:
            with self.opener.open(req, timeout=10) as response:
                text = response.read().decode()
                status, url = response.status, response.url
        except urllib.error.HTTPError as error:
            text, status, url = error.read().decode(), error.code, error.url
        found = re.search(rf'name="{self.csrf_field}" value="([^"]+)"', text)
        if found:
            self.csrf = found.group(1)
        return status, text, url
