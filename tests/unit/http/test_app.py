"""One node over HTTP: every endpoint's happy path, authentication, and every error answer.

Each test talks to a real zhuji node through ``aiohttp``'s test client (``client`` in
``tests/conftest.py``), at the fixed time 2026-11-24T08:00Z. Failures are asserted by status,
``application/problem+json`` and the stable ``code``, never by message text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import (
    BRIDE,
    GROOM,
    NOW,
    Tokens,
    household_request,
    marriage_request,
    trust_itself,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.certificates.schemas import SchemaSet
from gateway.certificates.status import CertStatus
from gateway.certificates.status_list import (
    STATUS_LIST_MEDIA_TYPE,
    STATUS_LIST_TYP,
    parse_status_list,
)
from gateway.clock import FixedClock
from gateway.config import Federation
from gateway.crypto.jwks import StaticKeyResolver
from gateway.crypto.seals import PrivateKeySigner, seal, verify_compact, verify_seal
from gateway.http.app import create_app
from gateway.identifiers import build_certificate_id
from gateway.ids import NodeId
from gateway.server.node import open_node_service
from gateway.sso.consent import CONSENT_HEADER

Client = TestClient[Any, Any]
PROBLEM = "application/problem+json"
ZHUJI = NodeId("zhuji")
STATUS_LIST_URI = "http://zhuji.test/v1/status-lists/"
ZHUJI_PUBLIC_SECURITY = "113306810025211840"
ALL_LEVELS = ["inter-provincial", "province", "city", "county"]
HANG_GUARD = 30.0
"""Seconds a raw-socket read may wait: a regression fails the test instead of hanging it."""

PUBLIC_PATHS = (
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/.well-known/jwks.json",
    "/v1/schemas",
    "/v1/matters",
)
CERT_ID = str(
    build_certificate_id("111000000000MCA07A003", ZHUJI_PUBLIC_SECURITY, "2026000", "001")
)
DIVORCE = "divorce-registration"
"""A matter that uses marriage certificates (marriage registration does not)."""
ISSUER_OF = {"marriage": "zhuji-civil-affairs", "household_register": "zhuji-public-security"}
"""The zhuji department whose system issues (and owns) each certificate type used here."""
PROTECTED = (
    ("POST", "/v1/certificates"),
    ("GET", f"/v1/certificates/{CERT_ID}?matter=marriage-registration"),
    ("POST", f"/v1/certificates/{CERT_ID}/status"),
    ("POST", "/v1/seals/verify"),
)


# --- helpers ---------------------------------------------------------------------------------


async def problem_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """The problem+json body of ``response``, after checking its status, type and code."""
    body: dict[str, Any] = orjson.loads(await response.read())
    assert (response.status, body.get("code")) == (status, code), body
    assert response.content_type == PROBLEM
    assert body["status"] == status
    assert body["type"] == f"https://tongban.example/problems/{code}"
    assert body["request_id"] == response.headers["X-Request-Id"]
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth(tokens: Tokens) -> dict[str, str]:
    """The civil-affairs bureau's system: it issues marriage certificates, fetches, verifies."""
    return bearer(tokens.client("zhuji-civil-affairs"))


@pytest.fixture
def security(tokens: Tokens) -> dict[str, str]:
    """The public-security bureau's system: it issues (and owns) household registers."""
    return bearer(tokens.client("zhuji-public-security"))


async def issue(client: Client, tokens: Tokens, request: dict[str, Any]) -> dict[str, Any]:
    """Issue ``request`` with a token of the department that issues its type."""
    headers = bearer(tokens.client(ISSUER_OF[request["type"]]))
    response = await client.post("/v1/certificates", json=request, headers=headers)
    body: dict[str, Any] = orjson.loads(await response.read())
    assert response.status == 201, body
    return body


async def fetch(
    client: Client,
    auth: dict[str, str],
    cert_id: str,
    matter: str = "marriage-registration",
    *,
    consent: str | None = None,
) -> Any:
    headers = auth if consent is None else {**auth, CONSENT_HEADER: consent}
    return await client.get(
        f"/v1/certificates/{cert_id}", params={"matter": matter}, headers=headers
    )


async def change_status(client: Client, auth: dict[str, str], cert_id: str, action: str) -> Any:
    return await client.post(
        f"/v1/certificates/{cert_id}/status",
        json={"action": action, "reason": "test"},
        headers=auth,
    )


async def node_keys(client: Client) -> StaticKeyResolver:
    response = await client.get("/.well-known/jwks.json")
    return StaticKeyResolver.from_jwks(await response.json(), node=ZHUJI)


def forge(token: str, change: Any) -> str:
    """``token`` with its payload changed by ``change`` and its signature kept."""
    header, payload, signature = token.split(".")
    document = orjson.loads(b64url_decode(payload))
    change(document)
    return f"{header}.{b64url_encode(orjson.dumps(document))}.{signature}"


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text format as ``{(name, labels): value}``."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        assert match, line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
        samples[(match[1], labels)] = float(match[3])
    return samples


async def raw_request(client: Client, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes the aiohttp client would refuse to produce; read the whole answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), HANG_GUARD)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


# --- ops -------------------------------------------------------------------------------------


async def test_healthz(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {"status": "ok", "node": "zhuji"}


async def test_readyz_waits_for_a_trust_list_that_lists_the_nodes_key(client: Client) -> None:
    waiting = await client.get("/readyz")
    assert waiting.status == 503
    assert await waiting.json() == {
        "status": "unavailable",
        "node": "zhuji",
        "reason": "trust.unavailable",
    }
    await trust_itself(client)
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert await ready.json() == {"status": "ready", "node": "zhuji", "certificates": 0}


async def test_readyz_counts_certificates(client: Client, tokens: Tokens) -> None:
    await trust_itself(client)
    await issue(client, tokens, household_request())
    await issue(client, tokens, marriage_request())
    after = await client.get("/readyz")
    assert (await after.json())["certificates"] == 2


async def test_metrics_count_requests_by_route_template(
    client: Client, auth: dict[str, str], tokens: Tokens
) -> None:
    assert (await client.get("/healthz")).status == 200
    consent = tokens.consent(GROOM["id"], matter=DIVORCE, types=("marriage",))
    assert (await fetch(client, auth, CERT_ID, DIVORCE, consent=consent)).status == 404
    assert (await client.get("/no/such/route")).status == 404
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    samples = metric_samples(await response.text())

    def requests(route: str, method: str, status: str) -> float | None:
        labels = frozenset({("route", route), ("method", method), ("status", status)})
        return samples.get(("tongban_http_requests_total", labels))

    assert requests("/healthz", "GET", "200") == 1.0
    # the route template, never the raw path: one series per route, not per certificate
    assert requests("/v1/certificates/{id}", "GET", "404") == 1.0
    assert requests("unmatched", "GET", "404") == 1.0
    assert not any(CERT_ID in value for _, labels in samples for _, value in labels)
    assert samples[("tongban_errors_total", frozenset({("code", "cert.not_found")}))] == 1.0
    assert samples[("tongban_node_info", frozenset({("node", "zhuji")}))] == 1.0


async def test_metrics_count_a_caller_who_hangs_up_as_499_not_500(
    client: Client, tokens: Tokens
) -> None:
    token = tokens.client("zhuji-civil-affairs")
    # The body promises 100 bytes; the caller sends 9 and closes its side.
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /v1/seals/verify HTTP/1.1\r\nHost: zhuji.test\r\n"
        + f"Authorization: Bearer {token}\r\n".encode()
        + b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"seals":'
    )
    writer.write_eof()
    # no answer: nobody is left to hear it
    assert await asyncio.wait_for(reader.read(), HANG_GUARD) == b""
    writer.close()
    await writer.wait_closed()
    route = frozenset({("route", "/v1/seals/verify"), ("method", "POST")})
    recorded: dict[str, float] = {}
    for _ in range(20):  # the node notices the hang-up within a request or two
        samples = metric_samples(await (await client.get("/metrics")).text())
        recorded = {
            dict(labels)["status"]: value
            for (name, labels), value in samples.items()
            if name == "tongban_http_requests_total" and route <= labels
        }
        if recorded:
            break
    assert recorded == {"499": 1.0}


async def test_openapi_is_served(client: Client) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert (await response.json())["openapi"] == "3.1.0"


async def test_jwks_publishes_one_active_public_key(client: Client) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "public, max-age=60"
    keys = (await response.json())["keys"]
    assert [key["status"] for key in keys] == ["active"]
    (key,) = keys
    assert key["nbf"] <= NOW < key["exp"]
    assert key["use"] == "sig"
    assert key["key_ops"] == ["verify"]
    assert key["node"] == "zhuji"
    assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & key.keys()
    resolved = StaticKeyResolver.from_jwks({"keys": keys}, node=ZHUJI).key_for(key["kid"])
    assert (resolved.kid, resolved.alg, resolved.verify_allowed) == (key["kid"], key["alg"], True)


async def test_schemas_catalog(client: Client, schemas: SchemaSet) -> None:
    response = await client.get("/v1/schemas")
    assert response.status == 200
    body = await response.json()
    assert sorted(body) == schemas.names()
    assert body == schemas.schema_documents()


async def test_matters_catalog(client: Client) -> None:
    response = await client.get("/v1/matters")
    assert response.status == 200
    matters = {matter["id"]: matter for matter in (await response.json())["matters"]}
    assert len(matters) == 10
    marriage = matters["marriage-registration"]
    assert marriage["certificate_types"] == ["resident_id", "household_register"]
    assert marriage["consent_required"] is True
    assert marriage["levels"] == ALL_LEVELS
    assert matters["business-registration"]["consent_required"] is False


# --- certificates ----------------------------------------------------------------------------


async def test_issue_returns_a_sealed_certificate_that_verifies(
    client: Client, auth: dict[str, str], tokens: Tokens
) -> None:
    response = await client.post("/v1/certificates", json=marriage_request(), headers=auth)
    assert response.status == 201
    body = await response.json()
    cert_id = body["certificate_id"]
    assert response.headers["Location"] == f"/v1/certificates/{cert_id}"
    assert (body["type"], body["status"], body["node"]) == ("marriage", "valid", "zhuji")
    assert body["route"] == ["zhuji"]
    assert (body["report"]["indication"], body["report"]["code"]) == ("PASSED", "ok")
    assert body["report"]["certificate_id"] == cert_id
    document = body["certificate"]
    assert (document["id"], document["holder"], document["data"]["spouse"]) == (
        cert_id,
        GROOM,
        BRIDE,
    )
    assert document["issuer"]["name"] == "诸暨市民政局"
    # the seal verifies with nothing but the node's published keys
    verified = verify_seal(body["seal"], await node_keys(client), now=NOW)
    assert dict(verified.payload) == document
    assert verified.node == "zhuji"
    # and the Location answers (with the groom's consent to use it for his household transfer)
    consent = tokens.consent(GROOM["id"], matter="household-transfer", types=("marriage",))
    assert (await fetch(client, auth, cert_id, "household-transfer", consent=consent)).status == 200


async def test_fetch_returns_the_certificate_with_a_passed_report(
    client: Client, auth: dict[str, str], tokens: Tokens
) -> None:
    issued = await issue(client, tokens, household_request())
    consent = tokens.consent(GROOM["id"], types=("household_register",))
    response = await fetch(client, auth, issued["certificate_id"], consent=consent)
    assert response.status == 200
    body = await response.json()
    assert body["route"] == ["zhuji"]
    assert body["seal"] == issued["seal"]
    assert body["certificate"] == issued["certificate"]
    report = body["report"]
    assert (report["indication"], report["code"]) == ("PASSED", "ok")
    assert {"name": "status", "result": "PASSED", "detail": "valid"} in report["checks"]


async def test_suspend_reinstate_revoke_show_in_fetch_reports(
    client: Client, auth: dict[str, str], security: dict[str, str], tokens: Tokens
) -> None:
    cert_id = (await issue(client, tokens, household_request()))["certificate_id"]
    consent = tokens.consent(GROOM["id"], types=("household_register",))

    async def report() -> tuple[str, str]:
        response = await fetch(client, auth, cert_id, consent=consent)
        assert response.status == 200
        body = (await response.json())["report"]
        return body["indication"], body["code"]

    # the public-security bureau owns the household register: it changes the status
    suspended = await change_status(client, security, cert_id, "suspend")
    assert suspended.status == 200
    assert (await suspended.json())["status"] == "suspended"
    assert await report() == ("FAILED", "status.suspended")

    reinstated = await change_status(client, security, cert_id, "reinstate")
    assert (await reinstated.json())["status"] == "valid"
    assert await report() == ("PASSED", "ok")

    revoked = await change_status(client, security, cert_id, "revoke")
    assert (await revoked.json())["status"] == "revoked"
    assert await report() == ("FAILED", "status.revoked")

    # revocation is final
    for action in ("reinstate", "suspend", "revoke"):
        await problem_of(
            await change_status(client, security, cert_id, action), 409, "cert.status_transition"
        )
    assert await report() == ("FAILED", "status.revoked")


async def test_status_change_validates_its_request(
    client: Client, security: dict[str, str], tokens: Tokens
) -> None:
    cert_id = (await issue(client, tokens, household_request()))["certificate_id"]
    response = await client.post(
        f"/v1/certificates/{cert_id}/status", json={"action": "delete"}, headers=security
    )
    body = await problem_of(response, 422, "input.schema")
    assert {error["pointer"] for error in body["errors"]} == {"/action", "/reason"}
    missing = await change_status(client, security, CERT_ID, "suspend")
    await problem_of(missing, 404, "cert.not_found")


async def test_status_list_token_verifies_and_shows_the_suspension(
    client: Client, auth: dict[str, str], tokens: Tokens
) -> None:
    kept = (await issue(client, tokens, household_request()))["certificate_id"]
    issued = await issue(client, tokens, marriage_request())
    changed = await change_status(client, auth, issued["certificate_id"], "suspend")
    slot = await changed.json()
    uri = f"{STATUS_LIST_URI}{slot['status_list']}"
    assert issued["certificate"]["status"]["status_list"] == {"idx": slot["index"], "uri": uri}

    response = await client.get(f"/v1/status-lists/{slot['status_list']}")
    assert response.status == 200
    assert response.content_type == STATUS_LIST_MEDIA_TYPE
    verified = verify_compact(
        await response.text(), await node_keys(client), typ=STATUS_LIST_TYP, now=NOW
    )
    statuses = parse_status_list(verified.payload, uri=uri, now=NOW)
    assert statuses.status(slot["index"]) is CertStatus.SUSPENDED
    consent = tokens.consent(GROOM["id"], types=("household_register",))
    kept_fetch = await fetch(client, auth, kept, consent=consent)
    kept_index = (await kept_fetch.json())["certificate"]["status"]
    assert statuses.status(kept_index["status_list"]["idx"]) is CertStatus.VALID


@pytest.mark.parametrize("list_id", ["abc", "-1", "²", "١", "1234567890", "0x1"])
async def test_status_list_id_must_be_ascii_digits(client: Client, list_id: str) -> None:
    response = await client.get(f"/v1/status-lists/{list_id}")
    await problem_of(response, 400, "input.list_id")


async def test_unknown_status_list(client: Client) -> None:
    await problem_of(await client.get("/v1/status-lists/7"), 404, "status_list.not_found")


async def test_verify_batch_reports_each_seal_in_order(
    client: Client, auth: dict[str, str], tokens: Tokens, schemas: SchemaSet
) -> None:
    genuine = (await issue(client, tokens, marriage_request()))["seal"]
    tampered = forge(genuine, lambda document: document["holder"].update(name="王五"))
    payload = b64url_decode(genuine.split(".")[1])
    stranger = seal(PrivateKeySigner(Ed25519PrivateKey.generate()), payload, signed_at=NOW)
    response = await client.post(
        "/v1/seals/verify",
        json={"seals": [genuine, tampered, "not a seal", stranger]},
        headers=auth,
    )
    assert response.status == 200
    body = await response.json()
    schemas.validate("exchange:verify-response", body)
    assert [(r["indication"], r["code"]) for r in body["reports"]] == [
        ("PASSED", "ok"),
        ("FAILED", "seal.bad_signature"),
        ("FAILED", "seal.malformed"),
        ("INDETERMINATE", "seal.unknown_kid"),
    ]


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_protected_endpoints_need_a_bearer_token(
    client: Client, method: str, path: str
) -> None:
    # the body is never read before the caller is known: this one is not even JSON
    response = await client.request(method, path, data=b"{", headers={"Content-Type": "x/y"})
    await problem_of(response, 401, "auth.required")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tongban"'


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer a b", "Token abc", "bearer"]
)
@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_wrong_scheme_is_refused(client: Client, method: str, path: str, header: str) -> None:
    response = await client.request(method, path, headers={"Authorization": header})
    await problem_of(response, 401, "auth.scheme")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tongban"'


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_wrong_token_is_refused(client: Client, method: str, path: str) -> None:
    # b64token characters, so past the header parser, but not a JWS at all
    response = await client.request(method, path, headers=bearer("not-an-access-token"))
    await problem_of(response, 401, "token.malformed")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tongban"'


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_a_forged_token_is_refused(
    client: Client, tokens: Tokens, method: str, path: str
) -> None:
    # a genuine token whose claims were edited (more scopes, another department)
    header, _, signature = tokens.client("zhuji-civil-affairs", scopes=["cert:read"]).split(".")
    claims = {
        "iss": tokens.issuer,
        "sub": "zhuji-public-security",
        "aud": tokens.federation.audience,
        "exp": int(NOW) + 300,
        "iat": int(NOW),
        "jti": "forged",
        "client_id": "zhuji-public-security",
        "scope": "cert:read cert:issue cert:status seal:verify",
        "department": "zhuji-public-security",
    }
    forged = f"{header}.{b64url_encode(orjson.dumps(claims))}.{signature}"
    response = await client.request(method, path, headers=bearer(forged))
    await problem_of(response, 401, "token.bad_signature")


async def test_bearer_scheme_is_case_insensitive(client: Client, tokens: Tokens) -> None:
    token = tokens.client("zhuji-civil-affairs")
    response = await client.post(
        "/v1/seals/verify", json={"seals": ["x"]}, headers={"Authorization": f"bEaReR {token}"}
    )
    assert response.status == 200


async def test_oversized_token_is_refused(
    client: Client, tokens: Tokens, federation: Federation
) -> None:
    limit = federation.limits.max_token_bytes
    token = tokens.client("zhuji-civil-affairs")
    response = await client.post(
        "/v1/seals/verify",
        json={"seals": ["x"]},
        headers={"Authorization": f"Bearer {token}{'x' * limit}"},
    )
    await problem_of(response, 401, "token.too_large")


async def test_token_bytes_that_are_not_utf8_are_refused(client: Client) -> None:
    status, headers, body = await raw_request(
        client,
        b"GET /v1/certificates/x?matter=a HTTP/1.1\r\nHost: zhuji.test\r\n"
        b"Authorization: Bearer \xff\xfe\x80\r\nConnection: close\r\n\r\n",
    )
    problem = orjson.loads(body)
    assert (status, headers["Content-Type"], problem["code"]) == (401, PROBLEM, "token.invalid")


async def test_readiness_is_public(client: Client) -> None:
    await trust_itself(client)
    assert (await client.get("/readyz")).status == 200
    assert (await client.get("/readyz", headers={"Authorization": "Bearer wrong"})).status == 200


async def test_a_key_change_before_national_trusts_the_key_says_so(
    client: Client, tokens: Tokens
) -> None:
    ops = bearer(tokens.client("zhuji-ops"))
    refused = await client.post("/v1/admin/keys/rotate", headers=ops)
    body = await problem_of(refused, 503, "keys.not_enrolled")
    assert "does not trust this node's seal key yet" in body["detail"]


@pytest.mark.parametrize("alg", ["RS256", "sm2", 7, ["SM2"]])
async def test_a_rotation_to_an_unknown_algorithm_is_refused(
    client: Client, tokens: Tokens, alg: object
) -> None:
    ops = bearer(tokens.client("zhuji-ops"))
    refused = await client.post("/v1/admin/keys/rotate", headers=ops, json={"alg": alg})
    body = await problem_of(refused, 400, "keys.bad_change")
    assert "SM2" in body["detail"]


@pytest.mark.parametrize("path", PUBLIC_PATHS)
async def test_public_endpoints_need_no_token(client: Client, path: str) -> None:
    assert (await client.get(path)).status == 200
    # ...and ignore a bad one
    assert (await client.get(path, headers={"Authorization": "Bearer wrong"})).status == 200


async def test_public_status_list_needs_no_token(client: Client, tokens: Tokens) -> None:
    await issue(client, tokens, household_request())
    assert (await client.get("/v1/status-lists/0")).status == 200


# --- errors ----------------------------------------------------------------------------------


async def test_unknown_route_is_a_problem(client: Client) -> None:
    response = await client.get("/v2/nothing")
    body = await problem_of(response, 404, "http.not_found")
    assert body["instance"] == "/v2/nothing"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/healthz", "GET"),
        ("POST", "/v1/matters", "GET"),
        ("GET", "/v1/certificates", "POST"),
        ("PUT", f"/v1/certificates/{CERT_ID}", "GET"),
        ("GET", "/v1/seals/verify", "POST"),
    ],
)
async def test_wrong_method_is_405_with_allow(
    client: Client, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)
    await problem_of(response, 405, "http.method_not_allowed")
    assert response.headers["Allow"] == allow


async def test_unknown_certificate(client: Client, auth: dict[str, str], tokens: Tokens) -> None:
    consent = tokens.consent(GROOM["id"], matter=DIVORCE, types=("marriage",))
    answer = await fetch(client, auth, CERT_ID, DIVORCE, consent=consent)
    await problem_of(answer, 404, "cert.not_found")


async def test_without_a_grant_an_unknown_and_a_held_certificate_look_the_same(
    client: Client, auth: dict[str, str], tokens: Tokens
) -> None:
    held = (await issue(client, tokens, marriage_request()))["certificate_id"]
    answers = []
    for cert_id in (held, CERT_ID):
        answer = await fetch(client, auth, cert_id, DIVORCE)
        body = await problem_of(answer, 403, "consent.required")
        answers.append((body["detail"], body["title"]))
    assert answers[0] == answers[1]


@pytest.mark.parametrize(
    ("cert_id", "code"),
    [
        ("abc", "input.identifier.format"),
        ("1.2.156.3005.2.x", "input.identifier.format"),
        ("1.2.156.3005.2." + "1" * 200, "input.identifier.format"),
        (CERT_ID[:-1] + ("A" if CERT_ID[-1] != "A" else "B"), "input.identifier.check"),
    ],
)
async def test_malformed_certificate_id(
    client: Client, auth: dict[str, str], cert_id: str, code: str
) -> None:
    await problem_of(await fetch(client, auth, cert_id), 400, code)


@pytest.mark.parametrize("query", ["", "?matter=", "?other=x"])
async def test_fetch_names_its_matter(client: Client, auth: dict[str, str], query: str) -> None:
    response = await client.get(f"/v1/certificates/{CERT_ID}{query}", headers=auth)
    await problem_of(response, 400, "input.matter_required")


async def test_unknown_matter(client: Client, auth: dict[str, str], tokens: Tokens) -> None:
    cert_id = (await issue(client, tokens, household_request()))["certificate_id"]
    await problem_of(await fetch(client, auth, cert_id, "no-such-matter"), 404, "matter.unknown")


async def test_type_outside_the_matter_is_forbidden(
    client: Client, auth: dict[str, str], tokens: Tokens
) -> None:
    cert_id = (await issue(client, tokens, household_request()))["certificate_id"]
    response = await fetch(client, auth, cert_id, "business-registration")
    await problem_of(response, 403, "matter.type_not_allowed")


async def test_type_no_department_here_issues(client: Client, auth: dict[str, str]) -> None:
    request = {
        "type": "business_licence",
        "holder": {"name": "诸暨示例科技有限公司", "id": "11330600MB0C112538", "id_type": "001"},
        "valid_from": "2026-11-24",
        "valid_until": None,
        "data": {
            "entity_type": "有限责任公司",
            "legal_representative": "赵立新",
            "registered_capital": "100万元人民币",
            "established": "2026-11-24",
            "business_scope": "软件开发",
            "address": "浙江省诸暨市暨阳街道人民路1号",
        },
    }
    response = await client.post("/v1/certificates", json=request, headers=auth)
    await problem_of(response, 403, "cert.type_not_issued_here")


def _wrong_check(resident_id: str) -> str:
    return resident_id[:-1] + ("0" if resident_id[-1] != "0" else "1")


@pytest.mark.parametrize(
    ("request_body", "pointer"),
    [
        (marriage_request(holder={**GROOM, "id": _wrong_check(GROOM["id"])}), "/holder/id"),
        (
            marriage_request(
                data={
                    **marriage_request()["data"],
                    "spouse": {**BRIDE, "id": _wrong_check(BRIDE["id"])},
                }
            ),
            "/data/spouse/id",
        ),
    ],
)
async def test_wrong_check_character_names_the_field(
    client: Client, auth: dict[str, str], request_body: dict[str, Any], pointer: str
) -> None:
    response = await client.post("/v1/certificates", json=request_body, headers=auth)
    body = await problem_of(response, 400, "input.identifier.check")
    assert body["errors"] == [{"pointer": pointer}]


async def test_schema_violation_lists_every_failing_field(
    client: Client, auth: dict[str, str], schemas: SchemaSet
) -> None:
    request = marriage_request(valid_from="24/11/2026", iss="zhuji")
    del request["holder"]["name"]
    del request["data"]["registration_office"]
    request["data"]["spouse"]["id_type"] = "001"
    response = await client.post("/v1/certificates", json=request, headers=auth)
    body = await problem_of(response, 422, "input.schema")
    pointers = [error["pointer"] for error in body["errors"]]
    assert set(pointers) == {
        "/valid_from",
        "/iss",
        "/holder/name",
        "/data/registration_office",
        "/data/spouse/id_type",
    }
    assert set(pointers) == set(schemas.reference_errors("exchange:issue-request", request))
    assert all(error["detail"].startswith(error["pointer"]) for error in body["errors"])


async def test_request_id_is_echoed_in_headers_and_problems(
    client: Client, auth: dict[str, str], tokens: Tokens
) -> None:
    ok = await client.get("/healthz", headers={"X-Request-Id": "window-7.trace_1"})
    assert ok.headers["X-Request-Id"] == "window-7.trace_1"
    consent = tokens.consent(GROOM["id"], matter=DIVORCE, types=("marriage",))
    failed = await fetch(
        client, {**auth, "X-Request-Id": "window-7.trace_2"}, CERT_ID, DIVORCE, consent=consent
    )
    body = await problem_of(failed, 404, "cert.not_found")
    assert body["request_id"] == "window-7.trace_2"


@pytest.mark.parametrize("given", ["", "has space", "x" * 65, "ünïcode", "a/b"])
async def test_unusable_request_ids_are_replaced(client: Client, given: str) -> None:
    response = await client.get("/v2/nothing", headers={"X-Request-Id": given})
    body = await problem_of(response, 404, "http.not_found")
    assert re.fullmatch(r"[0-9a-f]{16}", body["request_id"])


# --- who reads the audit log -------------------------------------------------------------------


async def audit_entries(client: Client, headers: dict[str, str]) -> Any:
    return await client.get("/v1/audit/entries?start=0&end=10", headers=headers)


async def test_this_nodes_auditors_read_its_audit_log(client: Client, tokens: Tokens) -> None:
    response = await audit_entries(client, bearer(tokens.client("zhuji-ops")))
    assert response.status == 200
    assert isinstance((await response.json())["entries"], list)
    proof = await client.get(
        "/v1/audit/proofs/inclusion?seq=0&tree_size=0", headers=bearer(tokens.client("zhuji-ops"))
    )
    assert proof.status != 403


@pytest.mark.parametrize("other", ["shanghai-ops", "national-ops"])
async def test_another_nodes_auditors_do_not(client: Client, tokens: Tokens, other: str) -> None:
    headers = bearer(tokens.client(other))
    await problem_of(await audit_entries(client, headers), 403, "audit.not_this_node")
    inclusion = await client.get("/v1/audit/proofs/inclusion?seq=0&tree_size=1", headers=headers)
    await problem_of(inclusion, 403, "audit.not_this_node")


async def test_without_audit_read_nobody_does(client: Client, auth: dict[str, str]) -> None:
    await problem_of(await audit_entries(client, auth), 403, "auth.scope")


async def test_the_public_audit_endpoints_stay_public(client: Client) -> None:
    head = await client.get("/v1/audit/head")
    assert head.status == 200
    consistency = await client.get("/v1/audit/proofs/consistency?first=0&second=0")
    assert consistency.status == 200


async def test_the_witness_cosignatures_are_public_and_their_query_is_checked(
    client: Client,
) -> None:
    published = await client.get("/v1/audit/cosignatures?origin=shaoxing")
    assert published.status == 200
    assert await published.json() == {"witness": "zhuji", "origin": "shaoxing", "cosignatures": []}
    paged = await client.get("/v1/audit/cosignatures?origin=shaoxing&after=12")
    assert paged.status == 200
    await problem_of(await client.get("/v1/audit/cosignatures"), 400, "input.query")
    long_origin = "/v1/audit/cosignatures?origin=" + "x" * 200
    await problem_of(await client.get(long_origin), 400, "input.query")
    for after in ("-1", "x", "1" * 13, "²"):
        query = f"/v1/audit/cosignatures?origin=shaoxing&after={after}"
        await problem_of(await client.get(query), 400, "input.query")


async def test_a_national_auditor_named_in_the_federation_file_reads_every_log(
    federation: Federation, clock: FixedClock, schemas: SchemaSet, tokens: Tokens
) -> None:
    everywhere = tuple(
        dataclasses.replace(c, audit_everywhere=True) if c.id == "national-ops" else c
        for c in federation.clients
    )
    wide = federation.with_overrides(clients=everywhere)
    node = open_node_service(wide, "zhuji", clock=clock, schemas=schemas, idp_keys=tokens.resolver)
    app = create_app(node, authenticator=tokens.authenticator())
    async with TestClient(TestServer(app)) as wide_client:
        national = await audit_entries(wide_client, bearer(tokens.client("national-ops")))
        assert national.status == 200
        shanghai = await audit_entries(wide_client, bearer(tokens.client("shanghai-ops")))
        await problem_of(shanghai, 403, "audit.not_this_node")
