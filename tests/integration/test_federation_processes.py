"""The federation as real processes: one ``tongban serve --node`` per node, on loopback.

A node is killed with SIGKILL in the middle of traffic. The tests show that no request
outlives its deadline, that a dead point-to-point link falls back to the hierarchy, and
that service returns within seconds of the node's restart (the circuit breaker probes it
back in; there is no backoff cliff).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import catalogued, outbox_entries
from processes import Processes, federation_file, free_ports, wait_healthy

from gateway._internal.wire import b64url_decode
from gateway.cli.idp_client import IdpClient
from gateway.config import load_federation

pytestmark = pytest.mark.slow  # real processes or a whole federation

BUDGET = 2.0  # request_timeout_seconds: each routed request's deadline budget
SLACK = 1.0  # scheduling slack on a loaded 2-core machine
STARTUP_TIMEOUT = 60.0  # for the whole federation to enrol
GROOM = {"name": "陈思远", "id": "31010419950312123X", "id_type": "111"}
BRIDE = {"name": "王晓燕", "id": "341221199607082464", "id_type": "111"}


class Cluster(Processes):
    """The whole federation; Zhuji's own copy of the file points its direct link to Linquan
    at a port held bound (never listening) for the whole test: the point-to-point link is
    down, Linquan itself is up."""

    def __init__(self, base: Path) -> None:
        self.dead = socket.socket()
        self.dead.bind(("127.0.0.1", 0))
        dead_port = int(self.dead.getsockname()[1])
        default = load_federation(env={})
        ports = dict(
            zip(
                (n.id for n in default.nodes),
                free_ports(len(default.nodes), avoid=frozenset({dead_port})),
                strict=True,
            )
        )
        file = federation_file(base / "federation.toml", ports, base, request_timeout=BUDGET)
        zhuji = federation_file(
            base / "zhuji.toml",
            ports,
            base,
            request_timeout=BUDGET,
            urls={"linquan": f"http://127.0.0.1:{dead_port}"},
        )
        super().__init__(base, file, files={"zhuji": zhuji})

    def close(self) -> None:
        self.stop_all()
        self.dead.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("federation"))
    for node in cluster.federation.nodes:
        cluster.start(node.id)
    try:
        yield cluster
    finally:
        cluster.close()


async def wait_until_enrolled(session: aiohttp.ClientSession, cluster: Cluster) -> None:
    """Every region node trusts a list that holds every region node's keys."""
    regions = {n.id for n in cluster.federation.nodes if n.kind == "region"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT
    pending = set(regions)
    while pending and loop.time() < deadline:
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
        await asyncio.sleep(0.2)
    assert not pending, f"no complete trust list yet at {sorted(pending)}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


class Scenario:
    """Certificates at Shanghai and Linquan, and Zhuji's window ready to fetch them."""

    def __init__(self, cluster: Cluster, session: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.session = session
        self.idp = IdpClient(session, cluster.federation.idp_issuer())

    async def token(self, client_id: str) -> str:
        entry = next(c for c in self.cluster.federation.clients if c.id == client_id)
        assert entry.demo_secret is not None
        return await self.idp.client_credentials(client_id, entry.demo_secret.reveal())

    async def consent(self, person: dict[str, str]) -> str:
        citizen = next(c for c in self.cluster.federation.citizens if c.id == person["id"])
        assert citizen.demo_password is not None
        holder = await self.idp.holder_login(citizen.id, citizen.demo_password.reveal())
        return await self.idp.grant_consent(
            holder,
            department="zhuji-civil-affairs",
            matter="marriage-registration",
            types=["household_register"],
            until=int(time.time()) + 3600,
        )

    async def issue(self, node: str, client_id: str, person: dict[str, str]) -> str:
        body = {
            "type": "household_register",
            "holder": person,
            "valid_from": "2008-05-12",
            "valid_until": None,
            "data": {
                "household_number": person["id"][:9],
                "household_type": "家庭户",
                "relation_to_head": "户主",
                "address": "户籍地址",
                "registration_office": "公安局户政科",
            },
        }
        headers = {"Authorization": f"Bearer {await self.token(client_id)}"}
        async with self.session.post(
            self.cluster.url(node) + "/v1/certificates", json=body, headers=headers
        ) as response:
            answer = await response.json()
            assert response.status == 201, answer
            return str(answer["certificate_id"])

    async def change_status(self, node: str, client_id: str, cert_id: str, action: str) -> None:
        headers = {"Authorization": f"Bearer {await self.token(client_id)}"}
        url = f"{self.cluster.url(node)}/v1/certificates/{cert_id}/status"
        body = {"action": action, "reason": "test"}
        async with self.session.post(url, json=body, headers=headers) as response:
            assert response.status == 200, await response.text()

    async def fetch(self, token: str, cert_id: str, consent: str) -> tuple[int, Any, float]:
        url = f"{self.cluster.url('zhuji')}/v1/certificates/{cert_id}?matter=marriage-registration"
        headers = {"Authorization": f"Bearer {token}", "Tongban-Consent": consent}
        started = time.monotonic()
        async with self.session.get(url, headers=headers) as response:
            body = await response.json(content_type=None)
            return response.status, body, time.monotonic() - started


async def test_a_local_and_a_routed_fetch_answer_the_same_shape(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    await wait_until_enrolled(session, cluster)
    scenario = Scenario(cluster, session)
    token = await scenario.token("zhuji-civil-affairs")
    here = await scenario.issue("zhuji", "zhuji-public-security", GROOM)
    there = await scenario.issue("shanghai", "shanghai-public-security", GROOM)
    consent = await scenario.consent(GROOM)
    answers = []
    for cert_id in (here, there):
        status, body, _ = await scenario.fetch(token, cert_id, consent)
        assert status == 200, body
        answers.append(body)
    local, routed = answers
    assert local["route"] == ["zhuji"]
    assert routed["route"] == ["zhuji", "shaoxing", "zhejiang", "national", "shanghai"]
    assert (
        sorted(local)
        == sorted(routed)
        == [
            "certificate",
            "certificate_id",
            "node",
            "report",
            "route",
            "seal",
            "status",
            "type",
        ]
    )
    for body, node in ((local, "zhuji"), (routed, "shanghai")):
        assert (body["type"], body["status"], body["node"]) == ("household_register", "valid", node)
        assert body["certificate"]["type"] == "household_register"


async def test_a_dead_point_to_point_link_falls_back_to_the_hierarchy(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    await wait_until_enrolled(session, cluster)
    scenario = Scenario(cluster, session)
    cert_id = await scenario.issue("linquan", "linquan-public-security", BRIDE)
    token = await scenario.token("zhuji-civil-affairs")
    status, body, _ = await scenario.fetch(token, cert_id, await scenario.consent(BRIDE))
    assert status == 200, body
    assert body["report"]["indication"] == "PASSED"
    # the direct link (zhuji → linquan) is down: the hierarchy carried it instead
    assert body["route"] == ["zhuji", "shaoxing", "zhejiang", "national", "anhui", "linquan"]


async def test_a_killed_node_fails_fast_within_the_deadline_and_returns_after_restart(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    await wait_until_enrolled(session, cluster)
    scenario = Scenario(cluster, session)
    cert_id = await scenario.issue("shanghai", "shanghai-public-security", GROOM)
    token = await scenario.token("zhuji-civil-affairs")
    consent = await scenario.consent(GROOM)
    status, body, _ = await scenario.fetch(token, cert_id, consent)
    assert status == 200, body
    assert body["route"] == ["zhuji", "shaoxing", "zhejiang", "national", "shanghai"]

    # traffic, then SIGKILL in the middle of it
    outcomes: list[tuple[int, Any, float]] = []
    for i in range(30):
        if i == 10:
            cluster.kill("shanghai")
        outcomes.append(await scenario.fetch(token, cert_id, consent))
    before, after = outcomes[:10], outcomes[10:]
    assert all(status == 200 for status, _, _ in before)
    failures = [(status, body) for status, body, _ in after if status != 200]
    assert failures, "killing the holding node must show"
    for status, body in failures:
        assert status in (502, 504), body
        assert body["code"].startswith("network."), body
        assert "shanghai" in body["detail"], body  # names the hop that failed
    # no request outlived its deadline budget
    assert max(elapsed for _, _, elapsed in outcomes) < BUDGET + SLACK

    # restart: service returns within seconds (breaker probes the peer back in)
    cluster.start("shanghai")
    await wait_healthy(session, cluster.url("shanghai"))
    restarted = time.monotonic()
    while True:
        status, body, _ = await scenario.fetch(token, cert_id, consent)
        if status == 200:
            break
        assert time.monotonic() - restarted < 5.0, body
        await asyncio.sleep(0.1)
    assert body["report"]["indication"] == "PASSED"


async def test_a_catalog_entry_outlives_national_being_down_and_the_issuer_restarting(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    await wait_until_enrolled(session, cluster)
    scenario = Scenario(cluster, session)
    data = cluster.federation.data_dir
    cluster.kill("national")
    try:
        cert_id = await scenario.issue("linquan", "linquan-public-security", BRIDE)
        # national cannot take it: the entry waits in Linquan's registry, not in memory
        assert cert_id in outbox_entries(data / "linquan" / "registry.sqlite3")
        cluster.kill("linquan")
        cluster.start("linquan")
        await wait_healthy(session, cluster.url("linquan"))
    finally:
        cluster.start("national")
    await wait_healthy(session, cluster.url("national"))
    # the restarted Linquan delivers what its previous process could not
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT
    while cert_id in outbox_entries(data / "linquan" / "registry.sqlite3"):
        assert loop.time() < deadline, "the catalog entry was never delivered"
        await asyncio.sleep(0.2)
    assert catalogued(data / "national" / "catalog.sqlite3", cert_id) == "linquan"


async def test_national_s_catalog_follows_a_certificate_s_status_changes(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    await wait_until_enrolled(session, cluster)
    scenario = Scenario(cluster, session)
    catalog = cluster.federation.data_dir / "national" / "catalog.sqlite3"
    client = "linquan-public-security"
    cert_id = await scenario.issue("linquan", client, BRIDE)
    await scenario.change_status("linquan", client, cert_id, "suspend")
    await scenario.change_status("linquan", client, cert_id, "revoke")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT
    while catalogued(catalog, cert_id, "status") != "revoked":
        assert loop.time() < deadline, "national's catalog never learnt of the revocation"
        await asyncio.sleep(0.2)
    assert catalogued(catalog, cert_id) == "linquan"
