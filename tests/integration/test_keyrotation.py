"""Key lifecycle on a running federation: rotation never fails a verification anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from processes import free_ports

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.cli.commands import run_federation
from gateway.cli.idp_client import IdpClient
from gateway.cli.main import main
from gateway.clock import SystemClock
from gateway.config import Federation, Witness, load_federation

pytestmark = pytest.mark.slow  # real processes or a whole federation

GROOM = {"name": "赵立新", "id": "330681199001010015", "id_type": "111"}
BRIDE = {"name": "王晓燕", "id": "341221199607082464", "id_type": "111"}


class Running:
    def __init__(self, federation: Federation, session: aiohttp.ClientSession) -> None:
        self.federation = federation
        self.session = session
        self.idp = IdpClient(session, federation.idp_issuer())

    async def token(self, client_id: str) -> str:
        entry = next(c for c in self.federation.clients if c.id == client_id)
        assert entry.demo_secret is not None
        return await self.idp.client_credentials(client_id, entry.demo_secret.reveal())

    async def call(
        self, node: str, method: str, path: str, token: str, body: Any = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.request(
            method, self.federation.url(node) + path, json=body, headers=headers
        ) as response:
            return response.status, await response.json(content_type=None)

    async def jwks(self, node: str) -> list[dict[str, Any]]:
        async with self.session.get(self.federation.url(node) + "/.well-known/jwks.json") as r:
            keys: list[dict[str, Any]] = (await r.json())["keys"]
            return keys


async def enrolled(running: Running) -> None:
    regions = {n.id for n in running.federation.nodes if n.kind == "region"}
    pending = set(regions)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while pending and loop.time() < deadline:
        for node in sorted(pending):
            async with running.session.get(running.federation.url(node) + "/v1/trust-list") as r:
                if r.status != 200:
                    continue
                claims = orjson.loads(b64url_decode((await r.text()).split(".")[1]))
            if regions <= {n["id"] for n in claims["nodes"] if n["keys"]}:
                pending.discard(node)
        await asyncio.sleep(0.2)
    assert not pending


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    default = load_federation(env={})
    ports: dict[str, int] = dict(
        zip((n.id for n in default.nodes), free_ports(len(default.nodes)), strict=True)
    )
    federation = default.with_ports(ports).with_overrides(
        data_dir=tmp_path / "var",
        keys_dir=tmp_path / "keys",
        witness=Witness(check_interval_seconds=1.0),  # partners cosign heads every second
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_federation(federation, clock=SystemClock(), stop=stop, ready=lambda _: ready.set())
    )
    await ready.wait()
    async with aiohttp.ClientSession() as session:
        result = Running(federation, session)
        await enrolled(result)
        try:
            yield result
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def marriage(holder: dict[str, str], spouse: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "marriage",
        "holder": holder,
        "valid_from": "2026-01-01",
        "valid_until": None,
        "data": {
            "registration_date": "2026-01-01",
            "spouse": spouse,
            "registration_office": "诸暨市民政局婚姻登记处",
        },
    }


async def test_rotation_under_cross_region_traffic_fails_no_verification(
    running: Running,
) -> None:
    clerk = await running.token("zhuji-civil-affairs")
    checker = await running.token("shanghai-public-security")
    ops = await running.token("zhuji-ops")
    old_kid = next(k["kid"] for k in await running.jwks("zhuji") if k["status"] == "active")
    seals: list[str] = []
    failures: list[Any] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        # Zhuji keeps issuing; Shanghai keeps verifying everything Zhuji ever sealed.
        n = 0
        while not stop.is_set():
            status, body = await running.call(
                "zhuji",
                "POST",
                "/v1/certificates",
                clerk,
                marriage(GROOM, BRIDE) if n % 2 else marriage(BRIDE, GROOM),
            )
            if status != 201 or body["report"]["indication"] != "PASSED":
                failures.append(("issue", status, body))
            else:
                seals.append(body["seal"])
            batch = seals[-20:]
            status, body = await running.call(
                "shanghai", "POST", "/v1/seals/verify", checker, {"seals": batch}
            )
            bad = [r for r in body.get("reports", []) if r["indication"] != "PASSED"]
            if status != 200 or bad:
                failures.append(("verify", status, bad or body))
            n += 1

    worker = asyncio.create_task(traffic())
    await asyncio.sleep(0.5)  # traffic flowing before the rotation starts
    status, rotated = await running.call("zhuji", "POST", "/v1/admin/keys/rotate", ops)
    assert status == 200, rotated
    await asyncio.sleep(1.0)  # traffic flowing after it
    stop.set()
    await worker

    assert failures == []
    assert rotated["previous"] == old_kid != rotated["active"]
    states = {k["kid"]: k["status"] for k in await running.jwks("zhuji")}
    assert states[old_kid] == "retired"
    assert states[rotated["active"]] == "active"
    kids = {orjson.loads(b64url_decode(s.split(".")[0]))["kid"] for s in seals}
    assert kids == {old_kid, rotated["active"]}, "seals by both keys were verified"
    # every seal, old key and new, still verifies after the rotation, at every node (in
    # batches of 500: the traffic above makes more than one batch's worth, and a body under
    # aiohttp's 1 MiB large-body warning)
    for start in range(0, len(seals), 500):
        status, body = await running.call(
            "shanghai", "POST", "/v1/seals/verify", checker, {"seals": seals[start : start + 500]}
        )
        assert status == 200, body
        assert {r["indication"] for r in body["reports"]} == {"PASSED"}


async def test_only_the_nodes_own_operators_administer_its_keys(running: Running) -> None:
    other_ops = await running.token("shanghai-ops")
    status, body = await running.call("zhuji", "POST", "/v1/admin/keys/rotate", other_ops)
    assert (status, body["code"]) == (403, "keys.not_owner")
    clerk = await running.token("zhuji-civil-affairs")
    status, body = await running.call("zhuji", "GET", "/v1/admin/keys", clerk)
    assert (status, body["code"]) == (403, "auth.scope")
    ops = await running.token("zhuji-ops")
    status, body = await running.call("zhuji", "GET", "/v1/admin/keys", ops)
    assert status == 200
    assert [k["state"] for k in body["keys"]] == ["active"]
    assert set(body["keys"][0]) >= {"kid", "alg", "created", "activates", "expires"}


async def test_revocation_fails_later_seals_and_keeps_the_node_signing(running: Running) -> None:
    clerk = await running.token("zhuji-civil-affairs")
    checker = await running.token("shanghai-public-security")
    ops = await running.token("zhuji-ops")
    _, issued = await running.call(
        "zhuji", "POST", "/v1/certificates", clerk, marriage(GROOM, BRIDE)
    )
    old_kid = next(k["kid"] for k in await running.jwks("zhuji") if k["status"] == "active")
    status, revoked = await running.call(
        "zhuji", "POST", f"/v1/admin/keys/{old_kid}/revoke", ops, {"at": int(time.time()) - 3600}
    )
    assert status == 200, revoked
    assert revoked["rotated"]["previous"] == old_kid  # the node rotated first: it still signs
    # wait until Shanghai holds the list with the revocation
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        _, body = await running.call(
            "shanghai", "POST", "/v1/seals/verify", checker, {"seals": [issued["seal"]]}
        )
        if body["reports"][0]["code"] == "seal.key_revoked":
            break
        await asyncio.sleep(0.25)
    # the seal was made after the revocation time: it fails
    assert body["reports"][0]["code"] == "seal.key_revoked"
    _, fresh = await running.call(
        "zhuji", "POST", "/v1/certificates", clerk, marriage(BRIDE, GROOM)
    )
    assert fresh["report"]["indication"] == "PASSED"


async def status_list_requests(running: Running, node: str) -> float:
    """How many status-list requests ``node`` has answered (its /metrics)."""
    async with running.session.get(running.federation.url(node) + "/metrics") as r:
        text = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tongban_http_requests_total{") and "/v1/status-lists/" in line
    )


async def test_a_seal_that_fails_verification_makes_its_verifier_fetch_nothing(
    running: Running,
) -> None:
    """Shanghai fetches the status list a Zhuji seal names only once the seal verified: a
    forged one (the same document, another holder's name, the old signature) costs Zhuji
    no request; the genuine seal's list is then fetched, once, and the seal passes."""
    clerk = await running.token("zhuji-civil-affairs")
    checker = await running.token("shanghai-public-security")
    _, issued = await running.call(
        "zhuji", "POST", "/v1/certificates", clerk, marriage(GROOM, BRIDE)
    )
    header, payload, signature = issued["seal"].split(".")
    document = orjson.loads(b64url_decode(payload))
    document["holder"]["name"] = "李四"
    forged = ".".join((header, b64url_encode(orjson.dumps(document)), signature))
    assert await status_list_requests(running, "zhuji") == 0

    _, body = await running.call(
        "shanghai", "POST", "/v1/seals/verify", checker, {"seals": [forged]}
    )
    assert body["reports"][0]["code"] == "seal.bad_signature"
    assert await status_list_requests(running, "zhuji") == 0

    _, body = await running.call(
        "shanghai", "POST", "/v1/seals/verify", checker, {"seals": [issued["seal"], forged]}
    )
    assert [r["code"] for r in body["reports"]] == ["ok", "seal.bad_signature"]
    assert await status_list_requests(running, "zhuji") == 1


async def test_a_seal_proven_to_predate_its_keys_revocation_stays_valid(
    running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clerk = await running.token("zhuji-civil-affairs")
    checker = await running.token("shanghai-public-security")
    ops = await running.token("zhuji-ops")
    _, issued = await running.call(
        "zhuji", "POST", "/v1/certificates", clerk, marriage(GROOM, BRIDE)
    )
    # the node signs a tree head that includes the issuance, its partners witness it, and
    # it gathers their cosignatures...
    cert_id = issued["certificate_id"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    proof: dict[str, Any] = {}
    while loop.time() < deadline:
        url = (
            f"{running.federation.url('zhuji')}/v1/audit/issuance-proof"
            f"?certificate_id={cert_id}&before={int(time.time()) + 3600}"
        )
        async with running.session.get(url) as r:
            proof = await r.json()
        if r.status == 200 and proof["cosignatures"]:
            break
        await asyncio.sleep(0.25)
    assert proof.get("cosignatures"), proof
    await asyncio.sleep(1.1)  # ...strictly before the revocation time (whole seconds)
    old_kid = next(k["kid"] for k in await running.jwks("zhuji") if k["status"] == "active")
    revoked_at = int(time.time())
    status, revoked = await running.call(
        "zhuji", "POST", f"/v1/admin/keys/{old_kid}/revoke", ops, {"at": revoked_at}
    )
    assert status == 200, revoked
    # Shanghai, once it holds the revocation, asks Zhuji's log for the proof and keeps trusting
    deadline = loop.time() + 30
    report: dict[str, Any] = {}
    while loop.time() < deadline:
        _, body = await running.call(
            "shanghai", "POST", "/v1/seals/verify", checker, {"seals": [issued["seal"]]}
        )
        report = body["reports"][0]
        revocation = next(c for c in report["checks"] if c["name"] == "revocation")
        if "proven" in revocation.get("detail", ""):
            break
        await asyncio.sleep(0.25)
    assert report["indication"] == "PASSED", report
    assert "signed tree head" in revocation["detail"]
    assert "cosigned by" in revocation["detail"]  # by zhuji's partners, before the revocation

    # offline, from the trust list that holds the revocation and the node's proof
    seal_file, list_file, proof_file = (tmp_path / n for n in ("c.jws", "tl.jws", "proof.json"))
    seal_file.write_text(issued["seal"], encoding="ascii")
    async with running.session.get(running.federation.url("shanghai") + "/v1/trust-list") as r:
        list_file.write_text(await r.text(), encoding="ascii")
    url = (
        f"{running.federation.url('zhuji')}/v1/audit/issuance-proof"
        f"?certificate_id={cert_id}&before={revoked_at}"
    )
    async with running.session.get(url) as r:
        proof = await r.json()
    root = running.federation.keys_dir / "_federation" / "root.jwk.json"
    offline = ["verify", str(seal_file), "--trust-list", str(list_file), "--root-key", str(root)]
    capsys.readouterr()
    assert main(offline) == 1  # without the proof: INDETERMINATE, seal.revocation_unproven
    assert "seal.revocation_unproven" in capsys.readouterr().out
    proof_file.write_bytes(orjson.dumps(proof))
    assert main([*offline, "--issuance-proof", str(proof_file)]) == 0
    assert "cosigned by" in capsys.readouterr().out
    # the same proof without its cosignatures: the node's own head alone proves nothing
    proof_file.write_bytes(orjson.dumps({**proof, "cosignatures": []}))
    assert main([*offline, "--issuance-proof", str(proof_file)]) == 1
    assert "audit.witness_quorum" in capsys.readouterr().err


async def test_the_idp_key_is_rotated_by_nationals_operators_without_rejecting_tokens(
    running: Running,
) -> None:
    clerk_before = await running.token("zhuji-civil-affairs")
    national_ops = await running.token("national-ops")
    zhuji_ops = await running.token("zhuji-ops")
    status, body = await running.call("idp", "POST", "/v1/admin/keys/rotate", zhuji_ops)
    assert (status, body["code"]) == (403, "keys.not_owner")
    status, keys = await running.call("idp", "GET", "/v1/admin/keys", national_ops)
    upcoming = next(k["kid"] for k in keys["keys"] if k["state"] == "next")
    # the IdP's tokens keep the federation file's algorithm: no SM2 rotation there
    status, body = await running.call(
        "idp", "POST", "/v1/admin/keys/rotate", national_ops, {"alg": "SM2"}
    )
    assert (status, body["code"]) == (400, "keys.bad_change")
    status, rotated = await running.call("idp", "POST", "/v1/admin/keys/rotate", national_ops)
    assert status == 200
    assert rotated["active"] == upcoming  # the pre-published key signs now
    clerk_after = await running.token("zhuji-civil-affairs")
    for token in (clerk_before, clerk_after):  # old tokens and new ones both still work
        status, body = await running.call(
            "zhuji", "POST", "/v1/seals/verify", token, {"seals": ["x.y.z"]}
        )
        assert status == 200, body


async def test_idp_keys_retire_and_revoke_through_the_admin_api(running: Running) -> None:
    national_ops = await running.token("national-ops")
    status, keys = await running.call("idp", "GET", "/v1/admin/keys", national_ops)
    active = next(k["kid"] for k in keys["keys"] if k["state"] == "active")
    status, body = await running.call(
        "idp", "POST", f"/v1/admin/keys/{active}/retire", national_ops
    )
    assert (status, body["code"]) == (409, "keys.state")
    status, body = await running.call(
        "idp", "POST", f"/v1/admin/keys/{active}/revoke", national_ops
    )
    assert status == 200
    assert body["revoked"] == active
    _, keys = await running.call("idp", "GET", "/v1/admin/keys", national_ops)
    states = {k["kid"]: k["state"] for k in keys["keys"]}
    assert states[active] == "revoked"
    assert sorted(states.values()).count("active") == 1
    assert "next" in states.values()  # a next key is always pre-published
    # tokens signed by the new active key work at the nodes
    fresh = await running.token("zhuji-civil-affairs")
    status, body = await running.call(
        "zhuji", "POST", "/v1/seals/verify", fresh, {"seals": ["x.y.z"]}
    )
    assert status == 200, body


async def test_rotation_to_sm2_and_back_under_traffic_fails_no_verification(
    running: Running, tmp_path: Path
) -> None:
    """Ed25519 → SM2 → Ed25519 on a running federation: every seal, by each of the three
    keys, verifies at another node throughout and after, and offline with ``tongban verify``
    from the trust list."""
    clerk = await running.token("zhuji-civil-affairs")
    checker = await running.token("shanghai-public-security")
    ops = await running.token("zhuji-ops")
    seals: list[str] = []
    failures: list[Any] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        n = 0
        while not stop.is_set():
            status, body = await running.call(
                "zhuji", "POST", "/v1/certificates", clerk, marriage(GROOM, BRIDE)
            )
            if status != 201 or body["report"]["indication"] != "PASSED":
                failures.append(("issue", status, body))
            else:
                seals.append(body["seal"])
            status, body = await running.call(
                "shanghai", "POST", "/v1/seals/verify", checker, {"seals": seals[-20:]}
            )
            bad = [r for r in body.get("reports", []) if r["indication"] != "PASSED"]
            if status != 200 or bad:
                failures.append(("verify", status, bad or body))
            n += 1

    worker = asyncio.create_task(traffic())
    await asyncio.sleep(0.3)
    status, to_sm2 = await running.call(
        "zhuji", "POST", "/v1/admin/keys/rotate", ops, {"alg": "SM2"}
    )
    assert (status, to_sm2.get("alg")) == (200, "SM2"), to_sm2
    await asyncio.sleep(0.5)
    status, back = await running.call(
        "zhuji", "POST", "/v1/admin/keys/rotate", ops, {"alg": "EdDSA"}
    )
    assert (status, back.get("alg")) == (200, "EdDSA"), back
    await asyncio.sleep(0.3)
    stop.set()
    await worker

    assert failures == []
    published = {k["kid"]: k for k in await running.jwks("zhuji")}
    sm2_key = published[to_sm2["active"]]
    assert (sm2_key["kty"], sm2_key["crv"], sm2_key["alg"], sm2_key["status"]) == (
        "EC",
        "SM2",
        "SM2",
        "retired",
    )
    headers = [orjson.loads(b64url_decode(s.split(".")[0])) for s in seals]
    assert {h["alg"] for h in headers} == {"EdDSA", "SM2"}
    assert {h["kid"] for h in headers} == {to_sm2["previous"], to_sm2["active"], back["active"]}
    status, body = await running.call(
        "shanghai", "POST", "/v1/seals/verify", checker, {"seals": seals[-500:]}
    )
    assert status == 200, body
    assert {r["indication"] for r in body["reports"]} == {"PASSED"}

    # offline: a verifier holding only the root public key and a trust list file
    from gateway.cli.main import main

    sm2_seal = next(s for s, h in zip(seals, headers, strict=True) if h["alg"] == "SM2")
    async with running.session.get(running.federation.url("shanghai") + "/v1/trust-list") as r:
        (tmp_path / "trust-list.jws").write_text(await r.text(), encoding="ascii")
    (tmp_path / "seal.jws").write_text(sm2_seal, encoding="ascii")
    root = running.federation.keys_dir / "_federation" / "root.jwk.json"
    argv = ["verify", str(tmp_path / "seal.jws"), "--trust-list", str(tmp_path / "trust-list.jws")]
    assert main([*argv, "--root-key", str(root)]) == 0
