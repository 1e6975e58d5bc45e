"""A node run as replicas over PostgreSQL behaves as one node (issue 21, items 2 and 3).

Zhuji runs as two ``tongban serve`` processes, each with a data directory of its own, on
ports of their own: they share nothing but the node's key material and a database of the
real PostgreSQL server the tests started. A hop proof used at one replica is refused at the
other; both issue and change certificates at once, one of them is killed with SIGKILL in the
middle of it, and still: every acknowledged certificate is in the one registry, the one audit
log has a record of each, ``tongban audit verify`` passes, and a certificate issued by one
replica is changed through the other.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import pytest
from conftest import household_request
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from processes import federation_file, free_ports, wait_healthy

from gateway._internal.secret import Secret
from gateway._internal.wire import b64url_decode
from gateway.audit.records import AuditKind, parse_entry
from gateway.cli.idp_client import IdpClient
from gateway.clock import SystemClock
from gateway.config import Federation, load_federation
from gateway.crypto.jwks import KeyState, VerificationKey, public_jwk
from gateway.crypto.seals import PrivateKeySigner
from gateway.federation.hops import HOP_HEADER, sign_hop
from gateway.ids import KeyId, NodeId
from gateway.services.authority import TrustAuthority
from gateway.trust.rootkey import RootKey

pytestmark = pytest.mark.slow  # real processes

ISSUER_CLIENT = "zhuji-public-security"
HOLDER = {"name": "赵立新", "id": "330681199001010015", "id_type": "111"}
KILL_AFTER = 80  # acknowledgements (from both replicas) before replica A is killed
AFTER_KILL = 30  # acknowledgements replica B still gives after that
ISSUERS = 4  # per replica


class Replicas:
    """The IdP, and zhuji's replicas: each its own process, data directory and port."""

    def __init__(self, base: Path, dsn: Secret) -> None:
        default = load_federation(env={})
        ports = dict(
            zip((n.id for n in default.nodes), free_ports(len(default.nodes)), strict=True)
        )
        self.base = base
        self.dsn = dsn
        self.file = federation_file(base / "federation.toml", ports, base)
        text = self.file.read_text(encoding="utf-8")
        # zhuji's stores in PostgreSQL, named in the federation file
        text = text.replace('id = "zhuji"\n', f'id = "zhuji"\ndatabase = "{dsn.reveal()}"\n', 1)
        self.file.write_text(text, encoding="utf-8")
        self.federation: Federation = load_federation(self.file, env={})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.urls: dict[str, str] = {"idp": self.federation.url("idp")}

    def start_idp(self) -> None:
        self._start("idp", ["serve", "--node", "idp"])

    def start_replica(self, name: str, port: int) -> None:
        self.start_replica_of("zhuji", name, port)

    def start_replica_of(self, node: str, name: str, port: int) -> None:
        """A replica of ``node``: a data directory of its own, a port of its own."""
        data = self.base / f"replica-{name}"
        self.urls[name] = f"http://127.0.0.1:{port}"
        self._start(
            name,
            [*("--data-dir", str(data)), *("serve", "--node", node, "--port", str(port))],
        )

    def _start(self, name: str, args: list[str]) -> None:
        command = [sys.executable, "-m", "gateway", "--federation", str(self.file), *args]
        with (self.base / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                command, stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


@pytest.fixture
def replicas(tmp_path: Path, pg_dsn: Secret) -> Iterator[Replicas]:
    nodes = Replicas(tmp_path, pg_dsn)
    try:
        yield nodes
    finally:
        nodes.stop_all()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=4 * ISSUERS + 4)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as s:
        yield s


def trusted_shaoxing(replicas: Replicas, signer: PrivateKeySigner, data_dirs: list[Path]) -> None:
    """A trust list listing ``signer`` as shaoxing's active key, saved where each replica
    keeps its copy (as if fetched from national)."""
    federation = replicas.federation
    clock = SystemClock()
    root = RootKey.open_or_create(federation.keys_dir, clock=clock)
    authority = TrustAuthority.open(
        federation, clock=clock, root=root, state_path=replicas.base / "authority.json"
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
    token = authority.publish()
    for data in data_dirs:
        state = data / "zhuji"
        state.mkdir(parents=True, mode=0o700)
        (state / "trust-list.jws").write_text(token, encoding="ascii")


async def test_a_hop_proof_used_at_one_replica_is_refused_at_the_other(
    replicas: Replicas, session: aiohttp.ClientSession
) -> None:
    shaoxing = PrivateKeySigner(Ed25519PrivateKey.generate())
    trusted_shaoxing(replicas, shaoxing, [replicas.base / "replica-a", replicas.base / "replica-b"])
    port_a, port_b = free_ports(2)
    replicas.start_replica("a", port_a)
    await wait_healthy(session, replicas.urls["a"])
    replicas.start_replica("b", port_b)
    await wait_healthy(session, replicas.urls["b"])
    body = b'{"node": "shaoxing", "action": "retire", "kid": "x"}'
    answers = []
    for first, second in (("a", "b"), ("b", "a")):
        proof = sign_hop(
            shaoxing,
            node=NodeId("shaoxing"),
            audience=NodeId("zhuji"),
            method="POST",
            path="/v1/admin/key-changes",
            body=body,
            now=time.time(),
        )
        for replica in (first, second, first):
            async with session.post(
                replicas.urls[replica] + "/v1/admin/key-changes",
                data=body,
                headers={HOP_HEADER: proof},
            ) as response:
                answers.append((replica, response.status, (await response.json())["code"]))
    # through the door once (zhuji is not national: 404 after it); refused by every replica
    assert answers == [
        ("a", 404, "keys.not_here"),
        ("b", 401, "hop.replay"),
        ("a", 401, "hop.replay"),
        ("b", 404, "keys.not_here"),
        ("a", 401, "hop.replay"),
        ("b", 401, "hop.replay"),
    ]


class Ledger:
    def __init__(self) -> None:
        self.issued: dict[str, str] = {}
        """Acknowledged (201) certificate ids, and the replica that acknowledged each."""
        self.killed = asyncio.Event()
        self.after_kill = 0
        self.done = asyncio.Event()

    def ack(self, cert_id: str, replica: str) -> None:
        self.issued[cert_id] = replica
        if self.killed.is_set():
            self.after_kill += 1
            if self.after_kill >= AFTER_KILL:
                self.done.set()


async def issuer(
    session: aiohttp.ClientSession, url: str, replica: str, token: str, ledger: Ledger
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    while not ledger.done.is_set():
        try:
            async with session.post(
                url + "/v1/certificates", json=household_request(HOLDER), headers=headers
            ) as response:
                body = await response.json()
        except (TimeoutError, aiohttp.ClientError):
            assert replica == "a", "the surviving replica failed"
            assert ledger.killed.is_set(), "a replica failed before the kill"
            return  # the killed replica is gone
        assert response.status == 201, body
        ledger.ack(str(body["certificate_id"]), replica)


def database_rows(dsn: Secret, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn.reveal()) as conn:
        return list(conn.execute(query).fetchall())


async def test_two_replicas_write_one_node_and_a_killed_one_loses_nothing(
    replicas: Replicas, session: aiohttp.ClientSession
) -> None:
    replicas.start_idp()
    port_a, port_b = free_ports(2)
    replicas.start_replica("a", port_a)  # the first creates the node's keys and tables
    await wait_healthy(session, replicas.urls["idp"])
    await wait_healthy(session, replicas.urls["a"])
    replicas.start_replica("b", port_b)
    await wait_healthy(session, replicas.urls["b"])
    idp = IdpClient(session, replicas.federation.idp_issuer())
    secret = next(c for c in replicas.federation.clients if c.id == ISSUER_CLIENT).demo_secret
    assert secret is not None
    token = await idp.client_credentials(ISSUER_CLIENT, secret.reveal())

    # both replicas issue at once; A is killed in the middle of it; B goes on
    ledger = Ledger()
    workers = [
        asyncio.create_task(issuer(session, replicas.urls[name], name, token, ledger))
        for name in ("a", "b")
        for _ in range(ISSUERS)
    ]
    while len(ledger.issued) < KILL_AFTER:
        done, _ = await asyncio.wait(workers, timeout=0.05)
        for task in done:
            task.result()  # a worker that stopped early shows why
    assert set(ledger.issued.values()) == {"a", "b"}, "both replicas should have issued"
    replicas.kill("a")
    ledger.killed.set()
    await asyncio.wait_for(asyncio.gather(*workers), timeout=60)

    # every acknowledged certificate is in the one registry, whichever replica answered
    stored = {row[0] for row in database_rows(replicas.dsn, "SELECT id FROM registry.certificates")}
    missing = [cert_id for cert_id in ledger.issued if cert_id not in stored]
    assert not missing, f"{len(missing)} acknowledged certificates were lost: {missing[:5]}"

    # one audit log, one sequence: verified end to end, a record of every acknowledged issuance
    command = [sys.executable, "-m", "gateway", "--federation", str(replicas.file)]
    verify = await asyncio.create_subprocess_exec(
        *command, "audit", "verify", "--node", "zhuji", stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(verify.communicate(), timeout=60)
    assert verify.returncode == 0, err.decode()
    assert b": OK" in out
    entries = database_rows(replicas.dsn, "SELECT seq, entry FROM audit.entries ORDER BY seq")
    assert [row[0] for row in entries] == list(range(len(entries)))
    records = [parse_entry(bytes(row[1])) for row in entries]
    audited = {r.subject for r in records if r.kind is AuditKind.ISSUANCE}
    unaudited = [cert_id for cert_id in ledger.issued if cert_id not in audited]
    assert not unaudited, f"acknowledged issuances missing from the audit log: {unaudited[:5]}"

    # the surviving replica changes a certificate the killed one issued
    from_a = next(cert_id for cert_id, replica in ledger.issued.items() if replica == "a")
    async with session.post(
        f"{replicas.urls['b']}/v1/certificates/{from_a}/status",
        json={"action": "suspend", "reason": "replica test"},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["status"] == "suspended"


# --- national as replicas: one author of the trust list, replaced when killed -------------


def national_federation(replicas: Replicas) -> Path:
    """The same federation with national's stores in the database and a short author lease."""
    text = replicas.file.read_text(encoding="utf-8")
    text = text.replace(
        'id = "national"\n', f'id = "national"\ndatabase = "{replicas.dsn.reveal()}"\n', 1
    )
    lease = f"authority_lease_seconds = {LEASE}"
    text, found = re.subn(r"^authority_lease_seconds = [0-9.]+", lease, text, flags=re.M)
    assert found == 1
    replicas.file.write_text(text, encoding="utf-8")
    return replicas.file


LEASE = 2.0


async def trust_list_seq(session: aiohttp.ClientSession, url: str) -> int | None:
    async with session.get(url + "/v1/trust-list") as response:
        if response.status != 200:
            return None
        token = await response.text()
    claims = orjson.loads(b64url_decode(token.split(".")[1]))
    return int(claims["seq"])


def lease_holder(dsn: Secret) -> tuple[str, float] | None:
    rows = database_rows(dsn, "SELECT holder, expires FROM authority.lease")
    return None if not rows else (str(rows[0][0]), float(rows[0][1]))


async def test_a_killed_national_author_is_replaced_within_its_lease(
    replicas: Replicas, session: aiohttp.ClientSession
) -> None:
    national_federation(replicas)
    port_a, port_b = free_ports(2)
    loop = asyncio.get_running_loop()
    replicas.start_replica_of("national", "a", port_a)
    await wait_healthy(session, replicas.urls["a"])
    replicas.start_replica_of("national", "b", port_b)
    await wait_healthy(session, replicas.urls["b"])
    pid_a, pid_b = replicas.procs["a"].pid, replicas.procs["b"].pid

    # one author (a, which started first); both serve its list
    deadline = loop.time() + 60
    while True:
        seqs = [await trust_list_seq(session, replicas.urls[r]) for r in ("a", "b")]
        if seqs[0] is not None and seqs[0] == seqs[1]:
            break
        assert loop.time() < deadline, f"the replicas did not both serve one list: {seqs}"
        await asyncio.sleep(0.1)
    published = seqs[0]
    holder = lease_holder(replicas.dsn)
    assert holder is not None
    assert f":{pid_a}:" in holder[0]

    # the author is killed: b takes the lease once it runs out, and goes on from its seq
    replicas.kill("a")
    killed_at = time.time()
    while True:
        holder = lease_holder(replicas.dsn)
        if holder is not None and f":{pid_b}:" in holder[0]:
            break
        assert time.time() < killed_at + 4 * LEASE + 10, f"not replaced: {holder}"
        await asyncio.sleep(0.1)
    seq_b = await trust_list_seq(session, replicas.urls["b"])
    assert seq_b is not None
    assert seq_b >= published
    stored = database_rows(replicas.dsn, "SELECT seq FROM authority.state")
    assert int(stored[0][0]) >= published  # never back
