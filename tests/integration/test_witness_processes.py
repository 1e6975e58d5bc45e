"""Witnessing on real processes: partners cosign each other's tree heads, publish the
cosignatures, keep them across a crash, and the origin gathers them into its proofs.

Four ``tongban serve --node`` processes (idp, national, shaoxing, zhuji), each node checking
its partners every second: zhuji and shaoxing witness each other (parent and child).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from processes import Processes, federation_file, free_ports, wait_healthy

from gateway._internal.wire import b64url_decode
from gateway.audit.cosignatures import verify_cosignature
from gateway.audit.heads import verify_tree_head
from gateway.certificates.revocation import IssuanceProof, check_issuance_proof
from gateway.cli.idp_client import IdpClient
from gateway.config import load_federation
from gateway.ids import NodeId
from gateway.trust.rootkey import load_root_public
from gateway.trust.trust_list import TrustListResolver, verify_trust_list

pytestmark = pytest.mark.slow  # real processes

NODES = ("idp", "national", "shaoxing", "zhuji")
ZHUJI, SHAOXING = NodeId("zhuji"), NodeId("shaoxing")
DEADLINE = 60.0
HOLDER = {"name": "赵立新", "id": "330681199001010015", "id_type": "111"}
SPOUSE = {"name": "王晓燕", "id": "341221199607082464", "id_type": "111"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    base = tmp_path_factory.mktemp("witness")
    default = load_federation(env={})
    ports = dict(zip((n.id for n in default.nodes), free_ports(len(default.nodes)), strict=True))
    file = federation_file(base / "federation.toml", ports, base, witness_interval=1.0)
    cluster = Processes(base, file)
    for node in NODES:
        cluster.start(node)
    try:
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture
async def session(cluster: Processes) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as opened:
        for node in NODES:
            await wait_healthy(opened, cluster.url(node))
        yield opened


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        return response.status, await response.json(content_type=None)


async def trust_list(session: aiohttp.ClientSession, cluster: Processes) -> TrustListResolver:
    """Zhuji's trust list once it holds both nodes' keys, verified against the root key."""
    root = load_root_public(cluster.federation.keys_dir)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while loop.time() < deadline:
        async with session.get(cluster.url("zhuji") + "/v1/trust-list") as response:
            if response.status == 200:
                token = await response.text()
                claims = orjson.loads(b64url_decode(token.split(".")[1]))
                if {"zhuji", "shaoxing"} <= {n["id"] for n in claims["nodes"] if n["keys"]}:
                    return TrustListResolver(verify_trust_list(token, root, now=time.time()))
        await asyncio.sleep(0.2)
    raise AssertionError("zhuji never trusted both nodes' keys")


async def issue(session: aiohttp.ClientSession, cluster: Processes) -> str:
    idp = IdpClient(session, cluster.federation.idp_issuer())
    entry = next(c for c in cluster.federation.clients if c.id == "zhuji-civil-affairs")
    assert entry.demo_secret is not None
    token = await idp.client_credentials(entry.id, entry.demo_secret.reveal())
    body = {
        "type": "marriage",
        "holder": HOLDER,
        "valid_from": "2026-01-01",
        "valid_until": None,
        "data": {
            "registration_date": "2026-01-01",
            "spouse": SPOUSE,
            "registration_office": "诸暨市民政局婚姻登记处",
        },
    }
    async with session.post(
        cluster.url("zhuji") + "/v1/certificates",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        answer = await response.json()
        assert response.status == 201, answer
        return str(answer["certificate_id"])


async def witnessed_proof(
    session: aiohttp.ClientSession, cluster: Processes, cert_id: str
) -> dict[str, Any]:
    """Zhuji's issuance proof, once it carries a partner's cosignature (polled, bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    proof: dict[str, Any] = {}
    while loop.time() < deadline:
        before = int(time.time()) + 3600
        url = (
            f"{cluster.url('zhuji')}/v1/audit/issuance-proof"
            f"?certificate_id={cert_id}&before={before}"
        )
        status, proof = await get_json(session, url)
        if status == 200 and proof["cosignatures"]:
            return proof
        await asyncio.sleep(0.25)
    raise AssertionError(f"zhuji gathered no cosignature of a head with the issuance: {proof}")


async def published_by(
    session: aiohttp.ClientSession, cluster: Processes, witness: str, *, origin: str
) -> dict[str, Any]:
    """``witness``'s published cosignatures of ``origin``'s heads, once there is one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    answer: dict[str, Any] = {}
    while loop.time() < deadline:
        url = f"{cluster.url(witness)}/v1/audit/cosignatures?origin={origin}"
        status, answer = await get_json(session, url)
        assert status == 200, answer
        if answer["cosignatures"]:
            break
        await asyncio.sleep(0.25)
    return answer


async def test_partners_cosign_publish_and_the_origin_gathers_into_its_proofs(
    cluster: Processes, session: aiohttp.ClientSession
) -> None:
    keys = await trust_list(session, cluster)
    cert_id = await issue(session, cluster)

    # zhuji's proof of the issuance carries shaoxing's cosignature of its head...
    raw = await witnessed_proof(session, cluster, cert_id)
    proof = IssuanceProof.from_json(raw)
    now = time.time()
    proven = check_issuance_proof(
        proof,
        keys=keys,
        node=ZHUJI,
        certificate_id=cert_id,
        revoked_at=now + 1,
        partners=frozenset({SHAOXING, NodeId("linquan")}),
        quorum=1,
        now=now,
    )
    assert proven.witnesses == (SHAOXING,)

    # ...which shaoxing publishes, with every cosignature it made of zhuji's heads
    status, published = await get_json(
        session, cluster.url("shaoxing") + "/v1/audit/cosignatures?origin=zhuji"
    )
    assert status == 200
    assert (published["witness"], published["origin"]) == ("shaoxing", "zhuji")
    tokens = [c["cosignature"] for c in published["cosignatures"]]
    assert set(proof.cosignatures) <= set(tokens)
    sizes = [c["tree_size"] for c in published["cosignatures"]]
    assert sizes == sorted(set(sizes))  # one a head, smallest first
    head = verify_tree_head(proof.head, keys, node=ZHUJI, now=time.time())
    cosignature = verify_cosignature(proof.cosignatures[0], keys, head=head, now=time.time())
    assert cosignature.witness == SHAOXING
    assert cosignature.head_issued_at <= cosignature.cosigned_at <= time.time()
    # and zhuji witnesses shaoxing in turn
    theirs = await published_by(session, cluster, "zhuji", origin="shaoxing")
    assert theirs["cosignatures"], theirs
    # a node publishes no cosignature of its own heads, and names only federation nodes
    status, own = await get_json(
        session, cluster.url("zhuji") + "/v1/audit/cosignatures?origin=zhuji"
    )
    assert (status, own["cosignatures"]) == (200, [])
    status, problem = await get_json(
        session, cluster.url("zhuji") + "/v1/audit/cosignatures?origin=nowhere"
    )
    assert (status, problem["code"]) == (400, "input.query")

    # the cosignatures outlive a crash of the witness (kill -9), and its checks resume
    cluster.kill("shaoxing")
    cluster.start("shaoxing")
    await wait_healthy(session, cluster.url("shaoxing"))
    status, again = await get_json(
        session, cluster.url("shaoxing") + "/v1/audit/cosignatures?origin=zhuji"
    )
    assert status == 200
    assert [c["cosignature"] for c in again["cosignatures"]][: len(tokens)] == tokens
