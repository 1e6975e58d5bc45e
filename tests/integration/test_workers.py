"""``tongban serve --workers N``: one node served by N processes sharing its port."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.config import DEFAULT_FEDERATION_FILE
from gateway.http.middleware import WORKER_HEADER

pytestmark = pytest.mark.slow  # real processes or a whole federation

STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def federation_file(base: Path, port: int) -> Path:
    """The default federation, zhuji on ``port``, state under ``base``."""
    text = DEFAULT_FEDERATION_FILE.read_text(encoding="utf-8")
    text = re.sub(r'(id = "zhuji"\n(?:[^\[]*?\n)*?port = )\d+', rf"\g<1>{port}", text, count=1)
    text = text.replace('data_dir = "var"', f'data_dir = "{base / "var"}"')
    text = text.replace('keys_dir = "keys"', f'keys_dir = "{base / "keys"}"')
    path = base / "federation.toml"
    path.write_text(text, encoding="utf-8")
    return path


def healthz_worker(url: str) -> str | None:
    """The worker pid that answered one fresh connection, or None while nothing listens."""
    request = urllib.request.Request(url + "/healthz", headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
            return str(response.headers[WORKER_HEADER])
    except (urllib.error.URLError, ConnectionError):
        return None


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    file = federation_file(tmp_path, port)
    with (tmp_path / "serve.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "gateway", "--federation", str(file)),
                *("serve", "--node", "zhuji", "--workers", "2"),
            ],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_two_workers_share_the_port_and_stop_together_on_sigterm(
    two_workers: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, url = two_workers
    deadline = time.monotonic() + STARTUP_TIMEOUT
    seen: set[str] = set()
    while len(seen) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, "the supervisor exited"
        worker = healthz_worker(url)
        if worker is None:
            time.sleep(0.05)  # not listening yet
            continue
        seen.add(worker)
    assert len(seen) == 2, f"only workers {seen} answered"
    assert str(proc.pid) not in seen  # the parent supervises; the workers serve

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    for pid in seen:  # forwarded: every worker is gone (reaped by the supervisor)
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)


def test_zero_workers_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--node", "zhuji", "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_national_is_refused_more_than_one_worker(capsys: pytest.CaptureFixture[str]) -> None:
    # its trust-list authority's state (seq, key histories) belongs to one process
    assert main(["serve", "--node", "national", "--workers", "2"]) == 2
    assert "serve it with --workers 1" in capsys.readouterr().err


def test_an_unknown_node_is_refused_before_any_worker_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--node", "atlantis", "--workers", "2"]) == 2
    assert "atlantis" in capsys.readouterr().err
