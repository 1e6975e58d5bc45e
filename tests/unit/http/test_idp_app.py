"""The identity provider over HTTP: discovery, JWKS, the token endpoint, consents, ops.

The IdP runs as a real aiohttp test server on a loopback port that is also its issuer URL,
so the discovery document points at the server itself and a standard client (pyjwt's
``PyJWKClient``) can follow it. Failures are asserted by status, problem+json ``code`` and,
on the token endpoint, the RFC 6749 ``error`` member.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer, unused_port
from conftest import NOW

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.certificates.holders import holder_digest
from gateway.clock import FixedClock, to_rfc3339
from gateway.config import Federation
from gateway.crypto.jwks import StaticKeyResolver
from gateway.http.idp_app import create_idp_app
from gateway.ids import DepartmentId, NodeId
from gateway.services.idp import HOLDER_GRANT, MAX_CONSENT_SECONDS, IdpService
from gateway.sso.consent import ConsentVerifier
from gateway.sso.tokens import TokenValidator

Client = TestClient[Any, Any]
PROBLEM = "application/problem+json"
FORM = "application/x-www-form-urlencoded"
HOLDER_SECRET = bytes(range(32))
CLIENT = "zhuji-civil-affairs"
CLIENT_SECRET = "zhuji-civil-affairs-demo-secret"
CITIZEN = "31010419950312123X"
CITIZEN_PASSWORD = "demo-123X"
MATTER = "marriage-registration"


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
async def make_idp(
    federation: Federation,
) -> AsyncIterator[Callable[[FixedClock], Any]]:
    """Start an IdP whose issuer URL is the test server's own URL."""
    started: list[Client] = []

    async def start(clock: FixedClock) -> tuple[Client, IdpService]:
        port = unused_port()
        service = IdpService.open(
            federation,
            clock=clock,
            public_url=f"http://127.0.0.1:{port}",
            holder_secret=HOLDER_SECRET,
        )
        client: Client = TestClient(
            TestServer(create_idp_app(service), host="127.0.0.1", port=port)
        )
        await client.start_server()
        started.append(client)
        return client, service

    yield start
    for client in started:
        await client.close()


@pytest.fixture
async def idp(
    make_idp: Callable[[FixedClock], Any], clock: FixedClock
) -> tuple[Client, IdpService]:
    started: tuple[Client, IdpService] = await make_idp(clock)
    return started


@pytest.fixture
def client(idp: tuple[Client, IdpService]) -> Client:
    return idp[0]


@pytest.fixture
def service(idp: tuple[Client, IdpService]) -> IdpService:
    return idp[1]


def basic(client_id: str = CLIENT, secret: str = CLIENT_SECRET) -> dict[str, str]:
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def problem_of(response: Any, status: int, code: str) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(await response.read())
    assert (response.status, body.get("code")) == (status, code), body
    assert response.content_type == PROBLEM
    assert body["type"] == f"https://tongban.example/problems/{code}"
    assert body["request_id"] == response.headers["X-Request-Id"]
    return body


async def oauth_problem_of(response: Any, status: int, code: str, error: str) -> dict[str, Any]:
    body = await problem_of(response, status, code)
    assert body["error"] == error
    assert response.headers["Cache-Control"] == "no-store"
    return body


async def token_of(client: Client, form: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    response = await client.post("/token", data=form, **kwargs)
    body: dict[str, Any] = orjson.loads(await response.read())
    assert response.status == 200, body
    assert response.headers["Cache-Control"] == "no-store"
    return body


async def holder_token(client: Client) -> str:
    form = {"grant_type": HOLDER_GRANT, "username": CITIZEN, "password": CITIZEN_PASSWORD}
    token: str = (await token_of(client, form))["access_token"]
    return token


async def department_token(client: Client) -> str:
    token: str = (await token_of(client, {"grant_type": "client_credentials"}, headers=basic()))[
        "access_token"
    ]
    return token


def consent_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "department": CLIENT,
        "matter": MATTER,
        "types": ["resident_id", "household_register"],
        "until": to_rfc3339(NOW + 86_400),
    }
    body.update(changes)
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- discovery and keys ----------------------------------------------------------------------


async def test_discovery(client: Client) -> None:
    response = await client.get("/.well-known/openid-configuration")
    assert response.status == 200
    meta = await response.json()
    base = str(client.make_url("")).rstrip("/")
    assert meta["issuer"] == base
    assert meta["jwks_uri"] == f"{base}/jwks"
    assert meta["token_endpoint"] == f"{base}/token"
    assert meta["consent_endpoint"] == f"{base}/consents"
    assert meta["grant_types_supported"] == ["client_credentials", HOLDER_GRANT]
    assert meta["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert meta["id_token_signing_alg_values_supported"] == ["EdDSA"]


async def test_jwks_has_one_active_and_one_next_key(client: Client, service: IdpService) -> None:
    response = await client.get("/jwks")
    assert response.status == 200
    keys = (await response.json())["keys"]
    assert sorted(k["status"] for k in keys) == ["active", "next"]
    assert {k["kid"] for k in keys if k["status"] == "next"} == {service.next_key().kid}
    assert all("d" not in k for k in keys)


# --- the token endpoint: client_credentials --------------------------------------------------


async def test_client_secret_basic(client: Client, service: IdpService) -> None:
    body = await token_of(client, {"grant_type": "client_credentials"}, headers=basic())
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "cert:read cert:issue cert:status seal:verify"
    keys = StaticKeyResolver.from_jwks(await (await client.get("/jwks")).json())
    claims = TokenValidator(keys, issuer=service.issuer, audience="tongban").validate(
        body["access_token"], now=NOW
    )
    assert (claims.sub, claims.department, claims.region) == (CLIENT, CLIENT, "330681")


async def test_client_secret_post(client: Client) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT,
        "client_secret": CLIENT_SECRET,
        "scope": "cert:read",
    }
    assert (await token_of(client, form))["scope"] == "cert:read"


async def test_basic_credentials_are_form_urlencoded(client: Client) -> None:
    # RFC 6749 §2.3.1: the id and the secret are form-urlencoded before base64
    raw = f"{CLIENT}:{CLIENT_SECRET.replace('-', '%2D')}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    await token_of(client, {"grant_type": "client_credentials"}, headers=headers)


async def test_a_standard_client_verifies_the_token(
    make_idp: Callable[[FixedClock], Any],
) -> None:
    """pyjwt's PyJWKClient, pointed at the jwks_uri of the discovery document, fetches the
    keys over HTTP and verifies the IdP's token.

    pyjwt reads the system clock, so this IdP runs at the real time.
    """
    client, service = await make_idp(FixedClock(float(int(time.time()))))
    meta = await (await client.get("/.well-known/openid-configuration")).json()
    token = (await token_of(client, {"grant_type": "client_credentials"}, headers=basic()))[
        "access_token"
    ]

    def verify() -> dict[str, Any]:
        keys = jwt.PyJWKClient(meta["jwks_uri"], cache_jwk_set=False, timeout=5)
        signing_key = keys.get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token,
            signing_key,
            algorithms=meta["id_token_signing_alg_values_supported"],
            audience="tongban",
            issuer=meta["issuer"],
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
        )
        return claims

    claims = await asyncio.to_thread(verify)
    assert claims["iss"] == service.issuer
    assert claims["client_id"] == CLIENT
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"


@pytest.mark.parametrize(
    "headers",
    [basic(secret="wrong"), basic(client_id="no-such-client"), {"Authorization": "Basic !!"}],
    ids=["bad-secret", "unknown-client", "malformed"],
)
async def test_bad_client_is_invalid_client(client: Client, headers: dict[str, str]) -> None:
    response = await client.post(
        "/token", data={"grant_type": "client_credentials"}, headers=headers
    )
    await oauth_problem_of(response, 401, "oauth.invalid_client", "invalid_client")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="tongban"'


async def test_unknown_client_and_wrong_secret_answer_the_same(client: Client) -> None:
    answers = []
    for headers in (basic(secret="wrong"), basic(client_id="no-such-client")):
        response = await client.post(
            "/token", data={"grant_type": "client_credentials"}, headers=headers
        )
        body = await oauth_problem_of(response, 401, "oauth.invalid_client", "invalid_client")
        del body["request_id"]
        answers.append(body)
    assert answers[0] == answers[1]


async def test_bad_client_secret_post(client: Client) -> None:
    form = {"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": "wrong"}
    response = await client.post("/token", data=form)
    await oauth_problem_of(response, 401, "oauth.invalid_client", "invalid_client")


async def test_scope_escalation(client: Client) -> None:
    form = {"grant_type": "client_credentials", "scope": "cert:read keys:admin"}
    response = await client.post("/token", data=form, headers=basic())
    await oauth_problem_of(response, 403, "oauth.invalid_scope", "invalid_scope")


async def test_json_body_is_refused(client: Client) -> None:
    body = {"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": CLIENT_SECRET}
    response = await client.post("/token", json=body)
    await oauth_problem_of(response, 415, "input.media_type", "invalid_request")


async def test_unsupported_grant_type(client: Client) -> None:
    response = await client.post("/token", data={"grant_type": "password"}, headers=basic())
    await oauth_problem_of(response, 400, "oauth.unsupported_grant_type", "unsupported_grant_type")


@pytest.mark.parametrize(
    "form",
    [
        "scope=cert%3Aread",  # no grant_type
        "grant_type=client_credentials&grant_type=client_credentials",
        f"grant_type={HOLDER_GRANT}&username={CITIZEN}",  # no password
        "grant_type",
    ],
)
async def test_invalid_request(client: Client, form: str) -> None:
    response = await client.post(
        "/token", data=form.encode(), headers={**basic(), "Content-Type": FORM}
    )
    await oauth_problem_of(response, 400, "oauth.invalid_request", "invalid_request")


async def test_body_size_is_limited(client: Client, federation: Federation) -> None:
    body = b"grant_type=client_credentials&pad=" + b"x" * federation.limits.max_body_bytes
    response = await client.post(
        "/token", data=io.BytesIO(body), headers={**basic(), "Content-Type": FORM}
    )
    await oauth_problem_of(response, 413, "input.too_large", "invalid_request")


async def test_token_is_post_only(client: Client) -> None:
    response = await client.get("/token")
    await problem_of(response, 405, "http.method_not_allowed")


# --- the token endpoint: holder login --------------------------------------------------------


async def test_holder_login(client: Client, service: IdpService) -> None:
    token = await holder_token(client)
    claims = service.validate_access_token(token)
    assert claims.holder is True
    assert claims.sub == holder_digest(HOLDER_SECRET, "111", CITIZEN)
    assert CITIZEN not in b64url_decode(token.split(".")[1]).decode()


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (CITIZEN, "wrong"),
        ("110101199003074477", CITIZEN_PASSWORD),  # valid number, no such citizen
        ("31010419950312123Y", CITIZEN_PASSWORD),  # malformed
    ],
    ids=["bad-password", "unknown-citizen", "malformed-id"],
)
async def test_bad_holder_login(client: Client, username: str, password: str) -> None:
    form = {"grant_type": HOLDER_GRANT, "username": username, "password": password}
    response = await client.post("/token", data=form)
    await oauth_problem_of(response, 401, "oauth.invalid_grant", "invalid_grant")


# --- consents --------------------------------------------------------------------------------


async def test_consent(client: Client, service: IdpService) -> None:
    token = await holder_token(client)
    response = await client.post("/consents", json=consent_body(), headers=bearer(token))
    body = orjson.loads(await response.read())
    assert response.status == 201, body
    assert response.headers["Cache-Control"] == "no-store"
    assert body["expires_at"] == NOW + 86_400
    keys = StaticKeyResolver.from_jwks(await (await client.get("/jwks")).json(), node=NodeId("idp"))
    grant = ConsentVerifier(keys, issuer=service.issuer).verify(
        body["consent"],
        holder_digest=holder_digest(HOLDER_SECRET, "111", CITIZEN),
        department=DepartmentId(CLIENT),
        matter=MATTER,
        cert_type="resident_id",
        now=NOW,
    )
    assert grant.expires_at == body["expires_at"]


async def test_consent_until_as_numeric_date(client: Client) -> None:
    token = await holder_token(client)
    until = int(NOW) + MAX_CONSENT_SECONDS
    response = await client.post("/consents", json=consent_body(until=until), headers=bearer(token))
    assert response.status == 201
    assert (await response.json())["expires_at"] == until


async def test_consent_needs_a_token(client: Client) -> None:
    response = await client.post("/consents", json=consent_body())
    await problem_of(response, 401, "auth.required")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_consent_refuses_a_tampered_token(client: Client) -> None:
    header, payload, signature = (await holder_token(client)).split(".")
    claims = orjson.loads(b64url_decode(payload))
    claims["sub"] = "0" * 64
    forged = f"{header}.{b64url_encode(orjson.dumps(claims))}.{signature}"
    response = await client.post("/consents", json=consent_body(), headers=bearer(forged))
    await problem_of(response, 401, "token.bad_signature")


async def test_a_department_token_cannot_grant(client: Client) -> None:
    token = await department_token(client)
    response = await client.post("/consents", json=consent_body(), headers=bearer(token))
    await problem_of(response, 403, "consent.not_holder")


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"department": "atlantis"}, 404, "consent.unknown_department"),
        ({"matter": "moon-landing"}, 404, "matter.unknown"),
        ({"types": ["business_licence"]}, 403, "matter.type_not_allowed"),
        ({"until": to_rfc3339(NOW + MAX_CONSENT_SECONDS + 1)}, 400, "consent.bad_request"),
        ({"until": "tomorrow"}, 400, "consent.bad_request"),
        ({"extra": True}, 400, "consent.bad_request"),
    ],
)
async def test_consent_refusals(
    client: Client, changes: dict[str, Any], status: int, code: str
) -> None:
    token = await holder_token(client)
    response = await client.post("/consents", json=consent_body(**changes), headers=bearer(token))
    body = await problem_of(response, status, code)
    assert "error" not in body


async def test_consent_body_must_be_json(client: Client) -> None:
    token = await holder_token(client)
    response = await client.post(
        "/consents", data=b"department=x", headers={**bearer(token), "Content-Type": FORM}
    )
    await problem_of(response, 415, "input.media_type")


async def test_consent_body_must_be_strict_json(client: Client) -> None:
    token = await holder_token(client)
    response = await client.post(
        "/consents",
        data=b'{"department": "a", "department": "b"}',
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    await problem_of(response, 400, "input.duplicate_member")


# --- rotation over HTTP ----------------------------------------------------------------------


async def test_rotation_keeps_old_tokens_valid(client: Client, service: IdpService) -> None:
    before = await (await client.get("/jwks")).json()
    next_kid = next(k["kid"] for k in before["keys"] if k["status"] == "next")
    old_token = await department_token(client)
    service.rotate()
    after = StaticKeyResolver.from_jwks(await (await client.get("/jwks")).json())
    validator = TokenValidator(after, issuer=service.issuer, audience="tongban")
    assert validator.validate(old_token, now=NOW).client_id == CLIENT
    new_token = await department_token(client)
    assert jwt.get_unverified_header(new_token)["kid"] == next_kid
    assert validator.validate(new_token, now=NOW).client_id == CLIENT


# --- ops -------------------------------------------------------------------------------------


async def test_healthz_and_readyz(client: Client, service: IdpService) -> None:
    assert await (await client.get("/healthz")).json() == {"status": "ok", "node": "idp"}
    ready = await (await client.get("/readyz")).json()
    assert ready == {
        "status": "ready",
        "node": "idp",
        "active": service.keys.active().kid,
        "next": service.next_key().kid,
    }


async def test_metrics_count_token_requests_and_errors(client: Client) -> None:
    await department_token(client)
    await client.post("/token", data={"grant_type": "client_credentials"}, headers=basic("x"))
    text = await (await client.get("/metrics")).text()
    assert 'tongban_http_requests_total{method="POST",route="/token",status="200"} 1.0' in text
    assert 'tongban_http_requests_total{method="POST",route="/token",status="401"} 1.0' in text
    assert 'tongban_errors_total{code="oauth.invalid_client"} 1.0' in text


async def test_openapi_matches_the_routes(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert documented == served


async def test_unknown_route(client: Client) -> None:
    await problem_of(await client.get("/authorize"), 404, "http.not_found")
