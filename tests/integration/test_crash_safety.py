"""Crash safety: ``kill -9`` a node in the middle of heavy registry and audit writes.

The IdP and Zhuji run as real processes (``tongban serve --node``) from a federation file on
free ports. Eight workers issue certificates as fast as they can while two more suspend and
reinstate the certificates already issued and a partner polls the signed tree head; every
answer the node acknowledged (201/200) is recorded. After the 150th acknowledgement Zhuji
gets SIGKILL while requests are in flight. With the process dead, every acknowledged
certificate is in the registry with its acknowledged status, each has its audit entries,
every signed tree head served is kept, ``tongban audit verify`` passes, and the restarted
node serves an acknowledged certificate.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from asyncio.subprocess import PIPE
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from processes import Processes, federation_file, free_ports, wait_healthy

from gateway.audit.records import AuditKind, AuditRecord, parse_entry
from gateway.cli.idp_client import IdpClient
from gateway.config import load_federation

pytestmark = pytest.mark.slow  # real processes or a whole federation

ISSUERS = 8  # concurrent issuing workers
CHANGERS = 2  # concurrent status-changing workers
WATCHERS = 1  # a partner fetching signed tree heads (each one written to the log's store)
KILL_AFTER = 150  # acknowledgements before SIGKILL
HOLDER = {"name": "赵立新", "id": "330681199001010015", "id_type": "111"}  # a demo citizen
ISSUER_CLIENT = "zhuji-public-security"
READER_CLIENT = "zhuji-civil-affairs"
MATTER = "marriage-registration"


class Nodes(Processes):
    """Node processes of the default federation on free ports, state under ``base``."""

    def __init__(self, base: Path) -> None:
        default = load_federation(env={})
        ports = dict(
            zip((n.id for n in default.nodes), free_ports(len(default.nodes)), strict=True)
        )
        super().__init__(base, federation_file(base / "federation.toml", ports, base))

    def node_dir(self, node: str) -> Path:
        return self.federation.data_dir / node


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    nodes = Nodes(tmp_path)
    try:
        yield nodes
    finally:
        nodes.stop_all()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=ISSUERS + CHANGERS + WATCHERS + 4)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as s:
        yield s


def issue_request() -> dict[str, object]:
    return {
        "type": "household_register",
        "holder": dict(HOLDER),
        "valid_from": "2008-05-12",
        "valid_until": None,
        "data": {
            "household_number": "330681081",
            "household_type": "家庭户",
            "relation_to_head": "户主",
            "address": "浙江省诸暨市暨阳街道人民路1号",
            "registration_office": "诸暨市公安局暨阳派出所",
        },
    }


@dataclass
class Ledger:
    """What the node acknowledged, and what was in flight when it died."""

    issued: list[str] = field(default_factory=list)
    """Certificate ids answered 201, in acknowledgement order."""
    statuses: dict[str, list[str]] = field(default_factory=dict)
    """Per certificate, the statuses acknowledged (200) by each status change, in order."""
    heads: list[tuple[int, str]] = field(default_factory=list)
    """Signed tree heads served (200): tree size and token."""
    in_flight: dict[str, str] = field(default_factory=dict)
    """A status change sent but never answered: certificate id -> the status it asked for."""
    acks: int = 0
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    to_change: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    def ack(self) -> None:
        self.acks += 1
        if self.acks >= KILL_AFTER:
            self.killed.set()

    def expected_status(self, cert_id: str) -> set[str]:
        """Statuses the registry may hold: the last acknowledged one, or the one in flight."""
        acked = self.statuses.get(cert_id, [])
        allowed = {acked[-1] if acked else "valid"}
        if cert_id in self.in_flight:
            allowed.add(self.in_flight[cert_id])
        return allowed


async def issuer(session: aiohttp.ClientSession, url: str, token: str, ledger: Ledger) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        try:
            async with session.post(
                url + "/v1/certificates", json=issue_request(), headers=headers
            ) as response:
                body = await response.json()
        except (TimeoutError, aiohttp.ClientError):
            assert ledger.killed.is_set(), "the node failed before it was killed"
            return  # the node is gone
        assert response.status == 201, body
        cert_id = str(body["certificate_id"])
        ledger.issued.append(cert_id)
        ledger.to_change.put_nowait(cert_id)
        ledger.ack()


async def changer(session: aiohttp.ClientSession, url: str, token: str, ledger: Ledger) -> None:
    """Suspend certificates; reinstate every other one, so both transitions are in play."""
    headers = {"Authorization": f"Bearer {token}"}
    turn = 0
    while True:
        cert_id = await ledger.to_change.get()
        turn += 1
        actions = ("suspend", "reinstate") if turn % 2 else ("suspend",)
        for action in actions:
            target = "suspended" if action == "suspend" else "valid"
            ledger.in_flight[cert_id] = target
            try:
                async with session.post(
                    f"{url}/v1/certificates/{cert_id}/status",
                    json={"action": action, "reason": "crash-safety test"},
                    headers=headers,
                ) as response:
                    body = await response.json()
            except (TimeoutError, aiohttp.ClientError):
                assert ledger.killed.is_set(), "the node failed before it was killed"
                return  # the node is gone; the change stays recorded as in flight
            del ledger.in_flight[cert_id]
            assert response.status == 200, body
            assert body["status"] == target, body
            ledger.statuses.setdefault(cert_id, []).append(target)
            ledger.ack()


async def watcher(session: aiohttp.ClientSession, url: str, ledger: Ledger) -> None:
    """A partner polling the node's signed tree head while the log grows."""
    while True:
        try:
            async with session.get(url + "/v1/audit/head") as response:
                body = await response.json()
        except (TimeoutError, aiohttp.ClientError):
            assert ledger.killed.is_set(), "the node failed before it was killed"
            return
        # a healthy node serves its head while it writes (audit.removed here is a false alarm)
        assert response.status == 200, body
        ledger.heads.append((int(body["tree_size"]), str(body["signed_tree_head"])))


def read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def registry_statuses(path: Path) -> dict[str, str]:
    conn = read_only(path)
    try:
        return dict(conn.execute("SELECT id, status FROM certificates").fetchall())
    finally:
        conn.close()


def status_events(path: Path) -> list[int]:
    conn = read_only(path)
    try:
        return [seq for (seq,) in conn.execute("SELECT seq FROM status_events").fetchall()]
    finally:
        conn.close()


def signed_heads(path: Path) -> set[str]:
    conn = read_only(path)
    try:
        return {token for (token,) in conn.execute("SELECT token FROM heads").fetchall()}
    finally:
        conn.close()


def audit_records(path: Path) -> list[AuditRecord]:
    conn = read_only(path)
    try:
        rows = conn.execute("SELECT entry FROM entries ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [parse_entry(bytes(entry)) for (entry,) in rows]


async def test_every_acknowledged_write_survives_kill_9(
    nodes: Nodes, session: aiohttp.ClientSession
) -> None:
    # Zhuji issues and changes statuses on its own; national (catalog, trust list) is not
    # needed for that, and its catalog registrations just retry in the background.
    nodes.start("idp")
    nodes.start("zhuji")
    zhuji = nodes.url("zhuji")
    await wait_healthy(session, nodes.url("idp"))
    await wait_healthy(session, zhuji)
    idp = IdpClient(session, nodes.federation.idp_issuer())
    secrets = {c.id: c.demo_secret for c in nodes.federation.clients}
    issuer_secret, reader_secret = secrets[ISSUER_CLIENT], secrets[READER_CLIENT]
    assert issuer_secret is not None
    assert reader_secret is not None
    token = await idp.client_credentials(ISSUER_CLIENT, issuer_secret.reveal())

    # heavy concurrent writes, SIGKILL in the middle of them
    ledger = Ledger()
    workers = [
        *(asyncio.create_task(issuer(session, zhuji, token, ledger)) for _ in range(ISSUERS)),
        *(asyncio.create_task(watcher(session, zhuji, ledger)) for _ in range(WATCHERS)),
        *(asyncio.create_task(changer(session, zhuji, token, ledger)) for _ in range(CHANGERS)),
    ]

    async def kill_time() -> None:
        await ledger.killed.wait()

    waiting = asyncio.create_task(kill_time())
    done, _ = await asyncio.wait([waiting, *workers], return_when=asyncio.FIRST_COMPLETED)
    if waiting not in done:  # a worker failed before the kill: show why
        for task in workers:
            task.cancel()
        for task in done:
            task.result()
    nodes.kill("zhuji")
    busy = ISSUERS + WATCHERS  # workers that only stop when the node is gone
    await asyncio.wait_for(asyncio.gather(*workers[:busy]), timeout=30)
    for task in workers[busy:]:
        if not task.done():
            task.cancel()  # idle changers wait on the queue: nothing more will come
    results = await asyncio.gather(*workers[busy:], return_exceptions=True)
    for result in results:
        if not isinstance(result, asyncio.CancelledError):
            assert result is None, result
    assert ledger.acks >= KILL_AFTER
    assert ledger.statuses, "no status change was acknowledged"
    assert any(size > 0 for size, _ in ledger.heads), "no signed tree head covered a write"

    # with the process dead: every acknowledged certificate, with its acknowledged status
    stored = registry_statuses(nodes.node_dir("zhuji") / "registry.sqlite3")
    missing = [cert_id for cert_id in ledger.issued if cert_id not in stored]
    assert not missing, f"{len(missing)} acknowledged certificates were lost: {missing[:5]}"
    wrong = {
        cert_id: (stored[cert_id], ledger.expected_status(cert_id))
        for cert_id in ledger.issued
        if stored[cert_id] not in ledger.expected_status(cert_id)
    }
    assert not wrong, f"acknowledged statuses were lost: {wrong}"

    # the log still verifies end to end
    command = [sys.executable, "-m", "gateway", "--federation", str(nodes.file)]
    verify = await asyncio.create_subprocess_exec(
        *command, "audit", "verify", "--node", "zhuji", stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(verify.communicate(), timeout=60)
    assert verify.returncode == 0, err.decode()
    assert b": OK" in out

    # ...keeps every signed tree head it served (verify checked each against the entries)
    audit_file = nodes.node_dir("zhuji") / "audit.sqlite3"
    kept = signed_heads(audit_file)
    lost_heads = [size for size, head in ledger.heads if head not in kept]
    assert not lost_heads, f"signed tree heads served but lost, sizes {lost_heads[:5]}"

    # ...and has an entry for every acknowledged issuance and status change
    records = audit_records(audit_file)
    assert len(records) >= max(size for size, _ in ledger.heads)
    issued_in_log = {r.subject for r in records if r.kind is AuditKind.ISSUANCE}
    unaudited = [cert_id for cert_id in ledger.issued if cert_id not in issued_in_log]
    assert not unaudited, f"acknowledged issuances missing from the audit log: {unaudited[:5]}"
    changes_in_log: dict[str, list[str]] = {}
    for record in records:
        if record.kind is AuditKind.STATUS:
            assert record.subject is not None
            changes_in_log.setdefault(record.subject, []).append(str(record.details["status"]))
    for cert_id, acked in ledger.statuses.items():
        logged = changes_in_log.get(cert_id, [])
        assert logged[: len(acked)] == acked, (cert_id, logged, acked)

    # restarted, the node is healthy and serves an acknowledged certificate
    nodes.start("zhuji")
    await wait_healthy(session, zhuji)
    # ...and every change the registry holds, acknowledged or not (the kill may fall between
    # a commit and its audit record), is in the log exactly once: the outbox was recovered
    registry_file = nodes.node_dir("zhuji") / "registry.sqlite3"
    records = audit_records(audit_file)
    issuances = Counter(r.subject for r in records if r.kind is AuditKind.ISSUANCE)
    held = registry_statuses(registry_file)
    assert {cert_id: issuances[cert_id] for cert_id in held} == dict.fromkeys(held, 1)
    events = Counter(r.details["event"] for r in records if r.kind is AuditKind.STATUS)
    assert events == Counter(status_events(registry_file))
    cert_id = next(
        c for c in ledger.issued if ledger.expected_status(c) == {"valid"} and stored[c] == "valid"
    )
    reader = await idp.client_credentials(READER_CLIENT, reader_secret.reveal())
    citizen = next(c for c in nodes.federation.citizens if c.id == HOLDER["id"])
    assert citizen.demo_password is not None
    holder = await idp.holder_login(citizen.id, citizen.demo_password.reveal())
    consent = await idp.grant_consent(
        holder,
        department=READER_CLIENT,
        matter=MATTER,
        types=["household_register"],
        until=int(time.time()) + 3600,
    )
    async with session.get(
        f"{zhuji}/v1/certificates/{cert_id}?matter={MATTER}",
        headers={"Authorization": f"Bearer {reader}", "Tongban-Consent": consent},
    ) as response:
        body = await response.json(content_type=None)
    assert response.status == 200, body
    assert body["certificate_id"] == cert_id
    assert body["report"]["indication"] == "PASSED", body
