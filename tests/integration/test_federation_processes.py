"""The federation as real processes: one ``tongban serve --node`` per node, on loopback.

A node is killed with SIGKILL in the middle of traffic. The tests show that no request
outlives its deadline, that a dead point-to-point link falls back to the hierarchy, and
that service returns within seconds of the node's restart (the circuit breaker probes it
back in; there is no backoff cliff).
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import pytest
from postgres import PostgresServer
from processes import Processes, federation_file, free_ports, wait_healthy

from gateway._internal.wire import b64url_decode
from gateway.cli.idp_client import IdpClient
from gateway.config import load_federation

pytestmark = pytest.mark.slow  # real processes or a whole federation

BUDGET = 2.0  # request_timeout_seconds: each routed request's deadline budget
MARGIN = 0.25  # hop_margin_seconds: each hop forwards a deadline this much shorter
SLACK = 1.0  # scheduling slack on a loaded 2-core machine
STARTUP_TIMEOUT = 60.0  # for the whole federation to enrol
MARRIAGE = "marriage-registration"
GROOM = {"name": "陈思远", "id": "31010419950312123X", "id_type": "111"}
BRIDE = {"name": "王晓燕", "id": "341221199607082464", "id_type": "111"}


class Cluster(Processes):
    """The whole federation; Zhuji's own copy of the file points its direct link to Linquan
    at a port held bound (never listening) for the whole test: the point-to-point link is
    down, Linquan itself is up. With ``databases``, every region node keeps its stores in its
    own database of the tests' PostgreSQL server."""

    def __init__(self, base: Path, databases: dict[str, str] | None = None) -> None:
        self.databases = databases or {}
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
        file = federation_file(
            base / "federation.toml", ports, base, request_timeout=BUDGET, hop_margin=MARGIN
        )
        zhuji = federation_file(
            base / "zhuji.toml",
            ports,
            base,
            request_timeout=BUDGET,
            hop_margin=MARGIN,
            urls={"linquan": f"http://127.0.0.1:{dead_port}"},
        )
        for path in (file, zhuji):
            text = path.read_text(encoding="utf-8")
            for node, dsn in self.databases.items():
                text = text.replace(f'id = "{node}"\n', f'id = "{node}"\ndatabase = "{dsn}"\n', 1)
            path.write_text(text, encoding="utf-8")
        super().__init__(base, file, files={"zhuji": zhuji})

    def rows(self, node: str, store: str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of one of ``node``'s stores (``registry``, ``catalog``, ``audit``), read
        where the node keeps it: its SQLite file, or its schema in PostgreSQL."""
        dsn = self.databases.get(node)
        if dsn is None:
            path = self.federation.data_dir / node / f"{store}.sqlite3"
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                conn.close()
        with psycopg.connect(dsn) as pg:
            pg.execute(f"SET search_path TO {store}")
            return pg.execute(sql.replace("?", "%s"), params).fetchall()

    def close(self) -> None:
        self.stop_all()
        self.dead.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The federation's tests run twice: every node on SQLite, then every region node on
    PostgreSQL (a database of its own each, on the server the tests started)."""
    databases: dict[str, str] = {}
    server: PostgresServer | None = None
    if request.param == "postgresql":
        server = request.getfixturevalue("pg_server")
        regions = [n.id for n in load_federation(env={}).nodes if n.kind == "region"]
        databases = {node: server.dsn(server.create_database()) for node in regions}
    cluster = Cluster(tmp_path_factory.mktemp("federation"), databases)
    for node in cluster.federation.nodes:
        cluster.start(node.id)
    try:
        yield cluster
    finally:
        cluster.close()
        if server is not None:
            for dsn in databases.values():
                server.drop_database(dsn.rsplit("/", 1)[1].split("?", 1)[0])


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
    cluster.kill("national")
    try:
        cert_id = await scenario.issue("linquan", "linquan-public-security", BRIDE)
        # national cannot take it: the entry waits in Linquan's registry, not in memory
        assert cert_id in outbox_entries(cluster)
        cluster.kill("linquan")
        cluster.start("linquan")
        await wait_healthy(session, cluster.url("linquan"))
    finally:
        cluster.start("national")
    await wait_healthy(session, cluster.url("national"))
    # the restarted Linquan delivers what its previous process could not
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT
    while cert_id in outbox_entries(cluster):
        assert loop.time() < deadline, "the catalog entry was never delivered"
        await asyncio.sleep(0.2)
    assert catalogued(cluster, cert_id) == "linquan"


async def test_national_s_catalog_follows_a_certificate_s_status_changes(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    await wait_until_enrolled(session, cluster)
    scenario = Scenario(cluster, session)
    client = "linquan-public-security"
    cert_id = await scenario.issue("linquan", client, BRIDE)
    await scenario.change_status("linquan", client, cert_id, "suspend")
    await scenario.change_status("linquan", client, cert_id, "revoke")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT
    while catalogued(cluster, cert_id, "status") != "revoked":
        assert loop.time() < deadline, "national's catalog never learnt of the revocation"
        await asyncio.sleep(0.2)
    assert catalogued(cluster, cert_id) == "linquan"


# --- issue 19: the failing hop named, the door, the audit log's readers ----------------------


async def requests_seen(session: aiohttp.ClientSession, url: str, route: str) -> float:
    """How many requests a node has counted on ``route`` (any method, any status)."""
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("tongban_http_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def audit_size(cluster: Cluster, node: str) -> int:
    return int(cluster.rows(node, "audit", "SELECT count(*) FROM entries")[0][0])


def outbox_entries(cluster: Cluster) -> list[str]:
    """The catalog entries Linquan's registry still owes national (certificate ids)."""
    rows = cluster.rows("linquan", "registry", "SELECT record FROM outbox WHERE topic = 'catalog'")
    return [str(orjson.loads(bytes(record))["certificate_id"]) for (record,) in rows]


def catalogued(cluster: Cluster, cert_id: str, column: str = "node") -> str | None:
    """What national's catalog says of ``cert_id``: the node holding it, or its ``status``."""
    rows = cluster.rows(
        "national",
        "catalog",
        f"SELECT {column} FROM entries WHERE certificate_id = ?",
        (cert_id,),
    )
    return None if not rows else str(rows[0][0])


async def test_a_frozen_node_is_named_and_cuts_off_no_other_route(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    await wait_until_enrolled(session, cluster)
    scenario = Scenario(cluster, session)
    token = await scenario.token("zhuji-civil-affairs")
    frozen_cert = await scenario.issue("shanghai", "shanghai-public-security", GROOM)
    other_cert = await scenario.issue("linquan", "linquan-public-security", BRIDE)
    frozen_grant, other_grant = await scenario.consent(GROOM), await scenario.consent(BRIDE)
    for cert_id, grant in ((frozen_cert, frozen_grant), (other_cert, other_grant)):
        status, body, _ = await scenario.fetch(token, cert_id, grant)
        assert status == 200, body

    frozen: list[tuple[int, Any, float]] = []
    others: list[tuple[int, Any, float]] = []
    thawed = asyncio.Event()

    async def keep_fetching(cert_id: str, grant: str, into: list[tuple[int, Any, float]]) -> None:
        while not thawed.is_set():
            into.append(await scenario.fetch(token, cert_id, grant))

    cluster.freeze("shanghai")  # longer than a request's whole deadline
    try:
        workers = [
            asyncio.create_task(keep_fetching(frozen_cert, frozen_grant, frozen)),
            asyncio.create_task(keep_fetching(other_cert, other_grant, others)),
        ]
        await asyncio.sleep(3 * BUDGET)
    finally:
        cluster.thaw("shanghai")
    thawed.set()
    await asyncio.gather(*workers)
    # every failure names the frozen node's hop, none another; nothing outlived its deadline
    failed = [(status, body) for status, body, _ in frozen if status != 200]
    assert len(failed) >= 3, frozen
    for status, body in failed:
        assert status in (502, 504), body
        assert body["code"] in ("network.deadline", "network.circuit_open"), body
        assert body["detail"].startswith("hop national→shanghai: "), body
        assert body["detail"].count("hop ") == 1, body
    # a route that avoids the frozen node kept working throughout
    assert others, "the other route was never tried"
    assert [(s, b) for s, b, _ in others if s != 200] == []
    assert max(elapsed for _, _, elapsed in frozen + others) < BUDGET + SLACK
    # once it runs again, the frozen node serves again within seconds
    thawed_at = time.monotonic()
    while True:
        status, body, _ = await scenario.fetch(token, frozen_cert, frozen_grant)
        if status == 200:
            break
        assert time.monotonic() - thawed_at < 5.0, body
        await asyncio.sleep(0.1)


async def test_a_request_refused_at_the_door_reaches_no_other_node(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    await wait_until_enrolled(session, cluster)
    scenario = Scenario(cluster, session)
    cert_id = await scenario.issue("shanghai", "shanghai-public-security", GROOM)
    grant = await scenario.consent(GROOM)  # made out to zhuji-civil-affairs
    others = [n.id for n in cluster.federation.nodes if n.kind == "region" and n.id != "zhuji"]
    audits = {node: audit_size(cluster, node) for node in ["zhuji", *others]}
    relayed = {
        node: await requests_seen(session, cluster.url(node), "/v1/exchange/fetch")
        for node in others
    }
    refusals = [
        (await scenario.token("zhuji-ops"), grant, "auth.scope"),  # no cert:read
        (await scenario.token("zhuji-public-security"), grant, "consent.wrong_department"),
        (await scenario.token("shanghai-public-security"), grant, "auth.department"),
    ]
    for token, consent, code in refusals:
        status, body, _ = await scenario.fetch(token, cert_id, consent)
        assert (status, body["code"]) == (403, code), body
    assert {node: audit_size(cluster, node) for node in audits} == audits
    for node in others:
        seen = await requests_seen(session, cluster.url(node), "/v1/exchange/fetch")
        assert seen == relayed[node], node


async def test_a_lookup_without_a_grant_reveals_nothing_and_asks_no_catalog(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    await wait_until_enrolled(session, cluster)
    scenario = Scenario(cluster, session)
    await scenario.issue("shanghai", "shanghai-public-security", GROOM)  # the groom holds one
    token = await scenario.token("zhuji-civil-affairs")
    url = cluster.url("zhuji") + "/v1/lookups"
    asked = await requests_seen(session, cluster.url("national"), "/v1/catalog/lookups")
    answers = []
    for person in (GROOM, BRIDE):
        holder = {"id": person["id"], "id_type": person["id_type"]}
        body = {"holder": holder, "matter": MARRIAGE, "types": ["household_register"]}
        headers = {"Authorization": f"Bearer {token}"}
        async with session.post(url, json=body, headers=headers) as response:
            problem = await response.json(content_type=None)
            problem.pop("request_id")
            answers.append((response.status, problem))
    assert answers[0] == answers[1]
    status, problem = answers[0]
    assert (status, problem["code"]) == (403, "consent.required")
    assert "shanghai" not in str(problem)
    assert "1.2.156" not in str(problem)
    assert await requests_seen(session, cluster.url("national"), "/v1/catalog/lookups") == asked
    # with the groom's grant, his certificate is found
    grant = await scenario.consent(GROOM)
    holder = {"id": GROOM["id"], "id_type": GROOM["id_type"]}
    body = {"holder": holder, "matter": MARRIAGE, "types": ["household_register"]}
    headers = {"Authorization": f"Bearer {token}", "Tongban-Consent": grant}
    async with session.post(url, json=body, headers=headers) as response:
        found = await response.json()
    assert response.status == 200, found
    assert {r["type"] for r in found["results"]} == {"household_register"}
