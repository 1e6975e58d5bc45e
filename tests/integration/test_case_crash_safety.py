"""Cases survive crashes: ``kill -9`` of the window's node and of the owner's node.

The whole federation runs as real processes (``tongban serve --node``) on free ports. Four
workers at Zhuji's window receive applications for Shanghai's healthcare-security bureau as
fast as they can; every acknowledged (201) case number is recorded. After 8 acknowledgements
Shanghai gets SIGKILL (the owner is gone: intake goes on, the cases wait ``in_transit``);
after 20, Zhuji gets SIGKILL with requests in flight. Both restart. Then every acknowledged
case is at Shanghai exactly once (one package applied, one ``arrive``), both ends agree on
every case's state, Zhuji's audit log records each case's receipt once, and both logs pass
``tongban audit verify``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from processes import Processes, federation_file, free_ports, wait_healthy

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.cli.idp_client import IdpClient
from gateway.config import load_federation

pytestmark = pytest.mark.slow  # real processes

WORKERS = 4
KILL_OWNER_AFTER = 8
KILL_WINDOW_AFTER = 20
GUARD = 90.0
"""Seconds before a broken test fails instead of hanging; never a timing assertion."""
APPLICANT = {"id_type": "111", "id": "31010419950312123X", "name": "陈思远"}


def application(n: int) -> dict[str, Any]:
    scan = {"media_type": "application/pdf", "checked_original": True}
    return {
        "matter": "maternity-benefit",
        "owner": {"node": "shanghai"},
        "channel": "window",
        "applicant": APPLICANT,
        "identity_checked_by": "zj-window-0421",
        "delivery": "online",
        "materials": {
            "application-form": {
                "content": b64url_encode(b'{"n": %d}' % n),
                "media_type": "text/plain",
            },
            "resident-id": {"content": b64url_encode(b"ID card %d" % n), **scan},
            "birth-medical-certificate": {"content": b64url_encode(b"birth %d" % n), **scan},
            "medical-invoices": {"content": b64url_encode(b"invoices %d" % n), **scan},
        },
    }


class Cluster(Processes):
    def __init__(self, base: Path) -> None:
        default = load_federation(env={})
        ports = dict(
            zip((n.id for n in default.nodes), free_ports(len(default.nodes)), strict=True)
        )
        file = federation_file(base / "federation.toml", ports, base)
        text = file.read_text(encoding="utf-8").replace(
            "outbox_retry_max_seconds = 30.0", "outbox_retry_max_seconds = 0.5"
        )
        file.write_text(text, encoding="utf-8")
        super().__init__(base, file)

    def cases(self, node: str) -> sqlite3.Connection:
        path = self.federation.data_dir / node / "cases.sqlite3"
        return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    for node in cluster.federation.nodes:
        cluster.start(node.id)
    try:
        yield cluster
    finally:
        cluster.stop_all()


async def enrolled(session: aiohttp.ClientSession, cluster: Cluster) -> None:
    regions = {n.id for n in cluster.federation.nodes if n.kind == "region"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GUARD
    pending = set(regions)
    while pending:
        assert loop.time() < deadline, f"no complete trust list at {sorted(pending)}"
        for node in sorted(pending):
            try:
                async with session.get(cluster.url(node) + "/v1/trust-list") as response:
                    if response.status != 200:
                        continue
                    claims = orjson.loads(b64url_decode((await response.text()).split(".")[1]))
            except aiohttp.ClientError:
                continue
            if regions <= {n["id"] for n in claims["nodes"] if n["keys"]}:
                pending.discard(node)
        await asyncio.sleep(0.1)


async def test_kill_9_of_window_and_owner_loses_and_duplicates_no_case(cluster: Cluster) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        for node in cluster.federation.nodes:
            await wait_healthy(session, cluster.url(node.id))
        await enrolled(session, cluster)
        idp = IdpClient(session, cluster.federation.idp_issuer())
        secret = next(c for c in cluster.federation.clients if c.id == "zhuji-service-center")
        assert secret.demo_secret is not None
        token = await idp.client_credentials("zhuji-service-center", secret.demo_secret.reveal())
        headers = {"Authorization": f"Bearer {token}"}
        acknowledged: list[str] = []
        owner_killed = asyncio.Event()
        window_killed = asyncio.Event()
        counter = iter(range(10_000))

        async def receive() -> None:
            while not window_killed.is_set():
                n = next(counter)
                try:
                    async with session.post(
                        cluster.url("zhuji") + "/v1/cases", json=application(n), headers=headers
                    ) as response:
                        body = await response.json(content_type=None)
                        if response.status == 201:
                            acknowledged.append(body["id"])
                        else:
                            assert window_killed.is_set(), body
                except (aiohttp.ClientError, TimeoutError):
                    assert window_killed.is_set()  # only the killed node fails a request
                    return
                if len(acknowledged) >= KILL_OWNER_AFTER and not owner_killed.is_set():
                    owner_killed.set()
                    cluster.kill("shanghai")
                if len(acknowledged) >= KILL_WINDOW_AFTER and not window_killed.is_set():
                    window_killed.set()
                    cluster.kill("zhuji")

        await asyncio.wait_for(asyncio.gather(*(receive() for _ in range(WORKERS))), GUARD)
        assert len(acknowledged) >= KILL_WINDOW_AFTER
        assert len(set(acknowledged)) == len(acknowledged)  # no number given twice

        # the killed window kept every case it acknowledged
        with cluster.cases("zhuji") as db:
            kept = {row[0] for row in db.execute("SELECT id FROM cases")}
        assert set(acknowledged) <= kept

        cluster.start("shanghai")
        cluster.start("zhuji")
        await wait_healthy(session, cluster.url("shanghai"))
        await wait_healthy(session, cluster.url("zhuji"))

        # every case the window holds arrives at the owner, once, and the window learns it
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GUARD
        while True:
            with cluster.cases("shanghai") as db:
                arrived = {row[0] for row in db.execute("SELECT id FROM cases")}
            with cluster.cases("zhuji") as db:
                states = dict(db.execute("SELECT id, state FROM cases").fetchall())
                owed = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
            if arrived == kept and set(states.values()) == {"pending_acceptance"} and not owed:
                break
            assert loop.time() < deadline, (len(arrived), len(kept), Counter(states.values()))
            await asyncio.sleep(0.1)

    with cluster.cases("shanghai") as db:
        actions = Counter(
            (case_id, seq) for case_id, seq in db.execute("SELECT case_id, seq FROM events")
        )
        per_case = Counter(case_id for case_id, _ in actions)
    assert set(per_case.values()) == {2}  # forward and arrive, each once
    cluster.stop_all()
    # Zhuji's audit log: one receipt record per case, whatever the crash left owed
    audit = cluster.federation.data_dir / "zhuji" / "audit.sqlite3"
    with sqlite3.connect(f"{audit.as_uri()}?mode=ro", uri=True) as db:
        received = Counter(
            orjson.loads(entry)["subject"]
            for (entry,) in db.execute("SELECT entry FROM entries")
            if orjson.loads(entry)["kind"] == "case_event"
            and orjson.loads(entry)["details"].get("action") == "receive"
        )
    assert set(received) == kept
    assert set(received.values()) == {1}
    for node_id in ("zhuji", "shanghai"):
        verify = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "--federation", str(cluster.file),
            "audit", "verify", "--node", node_id,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await verify.communicate()
        assert verify.returncode == 0, output.decode()
