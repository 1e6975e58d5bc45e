"""``tongban serve --workers N``: one node served by N processes sharing its port."""

from __future__ import annotations

import json
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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.cli.main import main
from gateway.clock import SystemClock
from gateway.config import DEFAULT_FEDERATION_FILE, load_federation
from gateway.crypto.jwks import KeyState, VerificationKey, public_jwk
from gateway.crypto.seals import PrivateKeySigner
from gateway.federation.hops import HOP_HEADER, sign_hop
from gateway.http.middleware import WORKER_HEADER
from gateway.ids import KeyId, NodeId
from gateway.services.authority import TrustAuthority
from gateway.trust.rootkey import RootKey

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


LOGS: dict[int, Path] = {}
"""Each supervisor's log file, by pid: what a failed test shows."""


def serve_log(proc: subprocess.Popen[bytes]) -> str:
    path = LOGS.get(proc.pid)
    return path.read_text(encoding="utf-8", errors="replace")[-4000:] if path else ""


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
    LOGS[proc.pid] = tmp_path / "serve.log"
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
        assert proc.poll() is None, f"the supervisor exited: {serve_log(proc)}"
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


# --- a hop proof replayed to another worker (issue 21, item 2) ------------------------------


def trusted_shaoxing(base: Path, signer: PrivateKeySigner) -> None:
    """National's trust list, as zhuji would have saved it, listing ``signer`` as shaoxing's
    active key (the federation's root key created under ``base``)."""
    federation = load_federation(base / "federation.toml", env={})
    clock = SystemClock()
    root = RootKey.open_or_create(federation.keys_dir, clock=clock)
    authority = TrustAuthority.open(
        federation, clock=clock, root=root, state_path=base / "authority.json"
    )
    jwk = public_jwk(
        VerificationKey(
            node=NodeId("shaoxing"),
            kid=KeyId(signer.kid),
            alg=signer.alg,
            public_key=signer.public_key,
            state=KeyState.ACTIVE,
            not_before=clock.now() - 60,
            not_after=clock.now() + 86_400,
            revoked_at=None,
            verify_allowed=True,
        )
    )
    authority.observe(NodeId("shaoxing"), {"keys": [jwk]})
    state = federation.data_dir / "zhuji"
    state.mkdir(parents=True, mode=0o700)
    (state / "trust-list.jws").write_text(authority.publish(), encoding="ascii")


def test_a_hop_proof_is_used_once_by_the_whole_node_not_once_per_worker(
    tmp_path: Path,
) -> None:
    port = free_port()
    file = federation_file(tmp_path, port)
    shaoxing = PrivateKeySigner(Ed25519PrivateKey.generate())
    trusted_shaoxing(tmp_path, shaoxing)
    url = f"http://127.0.0.1:{port}"
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
        deadline = time.monotonic() + STARTUP_TIMEOUT
        workers: set[str] = set()
        while len(workers) < 2:  # both workers serve, each behind the one port
            assert time.monotonic() < deadline, "the two workers did not both answer"
            seen = healthz_worker(url)
            if seen is not None:
                workers.add(seen)
        body = b'{"node": "shaoxing", "action": "retire", "kid": "x"}'
        proof = sign_hop(
            shaoxing,
            node=NodeId("shaoxing"),
            audience=NodeId("zhuji"),
            method="POST",
            path="/v1/admin/key-changes",
            body=body,
            now=time.time(),
        )
        answers: list[tuple[int, str, str]] = []
        for _ in range(12):  # fresh connections: the kernel spreads them over the workers
            request = urllib.request.Request(
                url + "/v1/admin/key-changes",
                data=body,
                method="POST",
                headers={HOP_HEADER: proof, "Connection": "close"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    answers.append((response.status, "", ""))
            except urllib.error.HTTPError as refused:
                problem = json.loads(refused.read())
                answers.append((refused.code, problem["code"], refused.headers[WORKER_HEADER]))
        # the proof got through the door once (zhuji is not national: 404 after the door);
        # every replay, to either worker, is refused
        assert answers[0][:2] == (404, "keys.not_here"), answers
        assert {(s, c) for s, c, _ in answers[1:]} == {(401, "hop.replay")}, answers
        assert len({w for _, _, w in answers}) == 2, "the replays did not reach both workers"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
