"""``tongban demo``: a guided tour of one node, over real HTTP on loopback.

Until the federation lands, the tour runs the Zhuji node alone: departments issue sealed
certificates, a window fetches them for a matter, seals are verified online and offline, a
tampered seal and a suspended certificate fail with their reasons, and purpose limitation
refuses a certificate the matter does not need. Every step checks its outcome; the tour
exits non-zero at the first surprise.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway._internal.console import heading, table
from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.certificates import certificate_date
from gateway.clock import SystemClock
from gateway.commands import format_report, verify_offline
from gateway.config import Federation, load_federation
from gateway.http.app import create_app
from gateway.http.handlers import CONSENT_HEADER
from gateway.http.idp_app import create_idp_app
from gateway.idp import IdpService, idp_issuer
from gateway.idp_client import IdpClient
from gateway.keys import federation_holder_secret
from gateway.node import NodeService
from gateway.schemas import SchemaCatalog, default_schema_dir

NODE = "zhuji"
BRIDE = {"name": "王晓燕", "id": "341221199607082464", "id_type": "111"}
GROOM = {"name": "赵立新", "id": "330681199001010015", "id_type": "111"}


class DemoFailure(Exception):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailure(what)
    print(f"  ✔ {what}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Client:
    """A departmental system calling a node with its access token."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self.session = session
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(
        self, method: str, path: str, body: Any = None, *, consent: str | None = None
    ) -> tuple[int, Any]:
        data = orjson.dumps(body) if body is not None else None
        headers = dict(self.headers)
        if consent is not None:
            headers[CONSENT_HEADER] = consent
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, self.base + path, data=data, headers=headers) as r:
            raw = await r.read()
            if r.content_type.endswith("json"):
                return r.status, orjson.loads(raw)
            return r.status, raw.decode()


def tamper(token: str, change: Callable[[dict[str, Any]], None]) -> str:
    header, payload, signature = token.split(".")
    document = orjson.loads(b64url_decode(payload))
    change(document)
    return ".".join((header, b64url_encode(orjson.dumps(document)), signature))


async def run_demo(workdir: Path | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="tongban-demo-") as tmp:
        base = workdir or Path(tmp)
        try:
            await _tour(base)
        except DemoFailure as exc:
            print(f"\n✘ demo failed: {exc}", file=sys.stderr)
            return 1
    print("\nAll steps verified. 通办: handled anywhere.")
    return 0


async def _tour(base: Path) -> None:
    ports = {"idp": free_port(), NODE: free_port()}
    federation = (
        load_federation()
        .with_ports(ports)
        .with_overrides(data_dir=base / "var", keys_dir=base / "keys")
    )
    clock = SystemClock()
    idp = IdpService.open(
        federation, clock=clock, holder_secret=federation_holder_secret(federation.keys_dir)
    )
    service = NodeService.open(
        federation, NODE, clock=clock, schemas=SchemaCatalog.load(default_schema_dir())
    )
    runners = [
        web.AppRunner(create_idp_app(idp), access_log=None),
        web.AppRunner(create_app(service), access_log=None),
    ]
    for runner, port in zip(runners, ports.values(), strict=True):
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            await _steps(session, federation, base, service)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def login(
    session: aiohttp.ClientSession, federation: Federation, idp: IdpClient, client_id: str
) -> Client:
    entry = next(c for c in federation.clients if c.id == client_id)
    secret = entry.demo_secret.reveal() if entry.demo_secret else ""
    token = await idp.client_credentials(client_id, secret)
    return Client(session, federation.url(NODE), token)


async def _steps(
    session: aiohttp.ClientSession, federation: Federation, base: Path, service: NodeService
) -> None:
    node = service.node
    idp = IdpClient(session, idp_issuer(federation))
    print(heading("0. One login for the whole network (一号登录、全网漫游)"))
    security = await login(session, federation, idp, "zhuji-public-security")
    client = await login(session, federation, idp, "zhuji-civil-affairs")
    expect(True, "zhuji-public-security and zhuji-civil-affairs got access tokens from the IdP")
    print(heading(f"1. Node {node.id} ({node.name}, region {node.region}) is up"))
    status, jwks = await client.call("GET", "/.well-known/jwks.json")
    expect(status == 200 and len(jwks["keys"]) == 1, "the node publishes its seal key (JWKS)")
    key = jwks["keys"][0]
    print(
        table(
            ["kid", "alg", "status", "use"], [[key["kid"], key["alg"], key["status"], key["use"]]]
        )
    )

    print(heading("2. Departments issue sealed certificates (电子证照)"))
    today = certificate_date(service.clock.now()).isoformat()
    requests: list[dict[str, Any]] = [
        {
            "type": "resident_id",
            "holder": GROOM,
            "valid_from": "2016-03-01",
            "valid_until": "2036-03-01",
            "data": {
                "sex": "男",
                "ethnicity": "汉族",
                "birth_date": "1990-01-01",
                "address": "浙江省诸暨市暨阳街道人民路1号",
                "issuing_office": "诸暨市公安局",
            },
        },
        {
            "type": "household_register",
            "holder": GROOM,
            "valid_from": "2008-05-12",
            "valid_until": None,
            "data": {
                "household_number": "330681081",
                "household_type": "家庭户",
                "relation_to_head": "户主",
                "address": "浙江省诸暨市暨阳街道人民路1号",
                "registration_office": "诸暨市公安局暨阳派出所",
            },
        },
        {
            "type": "marriage",
            "holder": GROOM,
            "valid_from": today,
            "valid_until": None,
            "data": {
                "registration_date": today,
                "spouse": BRIDE,
                "registration_office": "诸暨市民政局婚姻登记处",
            },
        },
    ]
    issued: dict[str, dict[str, Any]] = {}
    for request in requests:
        issuer = client if request["type"] == "marriage" else security
        status, body = await issuer.call("POST", "/v1/certificates", request)
        expect(status == 201, f"issued {request['type']} ({body.get('code', 'sealed')})")
        issued[request["type"]] = body
    print(
        table(
            ["type", "name", "certificate id", "issuer", "seal"],
            [
                [
                    t,
                    b["certificate"]["name"],
                    b["certificate_id"],
                    b["certificate"]["issuer"]["name"],
                    b["report"]["indication"],
                ]
                for t, b in issued.items()
            ],
        )
    )

    print(heading("3. The holder's consent (用证授权), then the window fetches for a matter"))
    household = issued["household_register"]
    path = f"/v1/certificates/{household['certificate_id']}?matter=marriage-registration"
    status, body = await client.call("GET", path)
    expect(
        status == 403 and body["code"] == "consent.required",
        "without the holder's consent the personal certificate stays home (consent.required)",
    )
    citizen = next(c for c in federation.citizens if c.id == GROOM["id"])
    holder_token = await idp.holder_login(
        citizen.id, citizen.demo_password.reveal() if citizen.demo_password else ""
    )
    consent = await idp.grant_consent(
        holder_token,
        department="zhuji-civil-affairs",
        matter="marriage-registration",
        types=["resident_id", "household_register"],
        until=int(service.clock.now()) + 3600,
    )
    expect(True, f"{citizen.name} logged in once and granted zhuji-civil-affairs consent for 1 h")
    status, body = await client.call("GET", path, consent=consent)
    expect(status == 200, "fetched the household register for marriage registration (结婚登记)")
    print(f"  route: {' → '.join(body['route'])}")
    print(format_report(body["report"]))
    expect(body["report"]["indication"] == "PASSED", "seal, schema, identifier and status verified")

    print(heading("4. Purpose limitation: a matter gets only the types it needs"))
    marriage = issued["marriage"]
    path = f"/v1/certificates/{marriage['certificate_id']}?matter=social-insurance-record-query"
    status, body = await client.call("GET", path)
    expect(
        status == 403 and body["code"] == "matter.type_not_allowed",
        f"refused: {body.get('detail')} ({body.get('code')})",
    )

    print(heading("5. Batch verification, with a tampered seal and an algorithm attack"))
    forged = tamper(marriage["seal"], lambda d: d["holder"].update(name="李四"))
    confused = hs256_with_public_key(marriage["seal"], key)
    seals = [marriage["seal"], forged, confused]
    status, body = await client.call("POST", "/v1/seals/verify", {"seals": seals})
    expect(status == 200, "POST /v1/seals/verify answered one report per seal")
    rows = [
        ["genuine", *_verdict(body["reports"][0])],
        ["holder renamed", *_verdict(body["reports"][1])],
        ["HS256 keyed with the public key", *_verdict(body["reports"][2])],
    ]
    print(table(["seal", "indication", "code"], rows))
    expect(body["reports"][0]["indication"] == "PASSED", "the genuine seal passes")
    expect(
        body["reports"][1]["code"] == "seal.bad_signature", "the tampered seal fails its signature"
    )
    expect(
        body["reports"][2]["code"] == "seal.alg_not_allowed",
        "algorithm confusion (HS256 with the public key as secret) is refused",
    )

    print(heading("6. Suspension shows up in verification (IETF Token Status List)"))
    cert_id = household["certificate_id"]
    status, body = await security.call(
        "POST", f"/v1/certificates/{cert_id}/status", {"action": "suspend", "reason": "demo"}
    )
    expect(status == 200 and body["status"] == "suspended", "the household register is suspended")
    status, body = await client.call(
        "GET", f"/v1/certificates/{cert_id}?matter=marriage-registration", consent=consent
    )
    expect(
        body["report"]["code"] == "status.suspended", "its verification now fails: status.suspended"
    )
    status, token = await client.call(
        "GET",
        f"/v1/status-lists/{body['certificate']['status']['status_list']['uri'].rsplit('/', 1)[1]}",
    )
    expect(status == 200 and token.count(".") == 2, "the signed status list token is published")
    status, body = await security.call(
        "POST", f"/v1/certificates/{cert_id}/status", {"action": "reinstate", "reason": "demo"}
    )
    expect(status == 200 and body["status"] == "valid", "reinstated")

    print(heading("7. Offline: `tongban verify` with nothing but the seal and the JWKS"))
    seal_file = base / "marriage.jws"
    jwks_file = base / "zhuji-jwks.json"
    seal_file.write_text(marriage["seal"] + "\n", encoding="ascii")
    jwks_file.write_bytes(orjson.dumps((await client.call("GET", "/.well-known/jwks.json"))[1]))
    print(f"  $ tongban verify {seal_file.name} --jwks {jwks_file.name}")
    expect(
        verify_offline(seal_file, jwks_file, node=None, as_json=False) == 0, "exit status 0: PASSED"
    )
    forged_file = base / "forged.jws"
    forged_file.write_text(forged, encoding="ascii")
    print(f"  $ tongban verify {forged_file.name} --jwks {jwks_file.name}")
    expect(
        verify_offline(forged_file, jwks_file, node=None, as_json=False) == 1,
        "exit status 1: FAILED",
    )


def hs256_with_public_key(token: str, jwk: dict[str, Any]) -> str:
    """The classic algorithm-confusion forgery: HMAC keyed with the published public key."""
    header = orjson.loads(b64url_decode(token.split(".", maxsplit=1)[0]))
    header["alg"] = "HS256"
    signing_input = f"{b64url_encode(orjson.dumps(header))}.{token.split('.')[1]}"
    mac = hmac.new(b64url_decode(jwk["x"]), signing_input.encode("ascii"), hashlib.sha256)
    return f"{signing_input}.{b64url_encode(mac.digest())}"


def _verdict(report: dict[str, Any]) -> list[str]:
    return [report["indication"], report["code"]]
