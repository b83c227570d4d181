"""The curl command verify runs, with real curl against a real HTTP server on loopback.

Proves that curl expands verify's -w format the way parse_curl_stdout (and the
test helper curl_stdout) expect. The server listens on 127.0.0.1 only: never a
lab address.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubelab.verify.evidence import curl_argv, curl_record, http_url, parse_curl_stdout
from tests.verify.verify_captures import WELCOME_PAGES, curl_stdout, fixture

pytestmark = pytest.mark.integration


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed (Debian: apt-get install curl)")
    handler = functools.partial(_Quiet, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", httpd.server_address[1], tmp_path
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def run_curl(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(curl_argv(url, 5), capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("page", WELCOME_PAGES)
def test_real_curl_output_parses(server: tuple[str, int, Path], page: str) -> None:
    host, port, root = server
    (root / "index.html").write_bytes(fixture(page).read_bytes())
    done = run_curl(http_url(host, port))
    assert done.returncode == 0, done.stderr
    body, status = parse_curl_stdout(done.stdout)
    assert status == 200
    assert body == fixture(page).read_bytes()
    # The helper the unit tests use builds the same bytes.
    assert done.stdout == curl_stdout(fixture(page).read_text(), 200)
    record = curl_record(
        "pod-ips", "master", host, http_url(host, port), done.returncode, done.stdout, done.stderr
    )
    assert record["welcome_page"] is True


def test_real_curl_404(server: tuple[str, int, Path]) -> None:
    host, port, _ = server
    done = run_curl(f"http://{host}:{port}/missing.html")
    body, status = parse_curl_stdout(done.stdout)
    assert done.returncode == 0
    assert status == 404


def test_real_curl_refused() -> None:
    # A loopback port nobody listens on: bind one, note it, close it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = run_curl(http_url("127.0.0.1", port))
    assert done.returncode == 7
    assert parse_curl_stdout(done.stdout) == (b"", None)
    assert done.stdout == curl_stdout("", 0)
