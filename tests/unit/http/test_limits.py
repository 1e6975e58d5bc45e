"""Every limit of :class:`gateway.config.Limits` that HTTP reaches, at its bound and past it.

Each limit is read from the federation the node runs with, so these tests follow the
configuration; where a test needs a small bound it builds a node with ``Limits`` replaced.
At the bound a request must get past the limit (whatever else it then fails on); one past it
gets the limit's stable code. Malformed bodies (media type, encoding, strict JSON) are here
too: they are the limits of what the body parser accepts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import NOW, Tokens, marriage_request

from gateway._internal.wire import b64url_encode
from gateway.certificates.schemas import SchemaSet
from gateway.clock import FixedClock
from gateway.config import Federation, Limits
from gateway.crypto.seals import sign_compact
from gateway.http.app import create_app
from gateway.identifiers import build_certificate_id
from gateway.server.node import open_node_service
from gateway.sso.node_auth import NodeAuthenticator
from gateway.sso.tokens import ACCESS_TOKEN_TYP

Client = TestClient[Any, Any]
PROBLEM = "application/problem+json"
JSON_HEADERS = {"Content-Type": "application/json"}
CERT_ID = str(build_certificate_id("111000000000MCA07A003", "113306810025211840", "2026000", "001"))
# Every endpoint that reads a JSON body; each must apply the same limits.
BODY_ENDPOINTS = ("/v1/certificates", f"/v1/certificates/{CERT_ID}/status", "/v1/seals/verify")


async def problem_of(response: Any, status: int, code: str) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(await response.read())
    assert (response.status, body.get("code")) == (status, code), body
    assert response.content_type == PROBLEM
    return body


@pytest.fixture
def auth(tokens: Tokens) -> dict[str, str]:
    """The civil-affairs bureau's system: it issues marriage certificates and verifies seals."""
    return {"Authorization": f"Bearer {tokens.client('zhuji-civil-affairs')}"}


@pytest.fixture
def json_auth(auth: dict[str, str]) -> dict[str, str]:
    return {**auth, **JSON_HEADERS}


@asynccontextmanager
async def node_with(
    federation: Federation,
    clock: FixedClock,
    schemas: SchemaSet,
    tokens: Tokens,
    **limits: Any,
) -> AsyncIterator[Client]:
    """A zhuji node whose limits differ from the federation file's by ``limits``.

    Its authenticator is built for the changed federation too, so the token limits apply.
    """
    changed = federation.with_overrides(limits=dataclasses.replace(federation.limits, **limits))
    node = open_node_service(
        changed,
        "zhuji",
        clock=clock,
        schemas=schemas,
        public_url="http://zhuji.test",
        idp_keys=tokens.resolver,
    )
    authenticator = NodeAuthenticator.for_federation(
        changed, tokens.resolver, clock=clock, issuer=tokens.issuer
    )
    async with TestClient(TestServer(create_app(node, authenticator=authenticator))) as client:
        yield client


def padded(document: Any, size: int) -> bytes:
    """``document`` as JSON followed by whitespace up to exactly ``size`` bytes."""
    body = orjson.dumps(document)
    assert len(body) <= size
    return body + b" " * (size - len(body))


def nested(depth: int) -> bytes:
    """A JSON array nested ``depth`` levels deep."""
    return b"[" * depth + b"]" * depth


async def verify(client: Client, headers: dict[str, str], body: bytes) -> Any:
    return await client.post("/v1/seals/verify", data=body, headers=headers)


# --- max_body_bytes --------------------------------------------------------------------------


async def test_body_at_the_limit_is_read(
    client: Client, json_auth: dict[str, str], federation: Federation
) -> None:
    body = padded({"seals": ["x"]}, federation.limits.max_body_bytes)
    response = await verify(client, json_auth, body)
    assert response.status == 200
    assert [r["code"] for r in (await response.json())["reports"]] == ["seal.malformed"]


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
async def test_body_over_the_limit_is_413(
    client: Client, json_auth: dict[str, str], federation: Federation, path: str
) -> None:
    body = io.BytesIO(padded({}, federation.limits.max_body_bytes + 1))
    response = await client.post(path, data=body, headers=json_auth)
    await problem_of(response, 413, "input.too_large")


async def test_chunked_body_over_the_limit_is_413(
    client: Client, json_auth: dict[str, str], federation: Federation
) -> None:
    # No Content-Length: the bound is enforced while the body streams in.
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"seals": ["x"]}'
        for _ in range(federation.limits.max_body_bytes // 65_536 + 1):
            yield b" " * 65_536

    response = await client.post("/v1/seals/verify", data=chunks(), headers=json_auth)
    await problem_of(response, 413, "input.too_large")


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-unknown", "GZIP "])
async def test_compressed_bodies_are_refused_not_inflated(
    client: Client, json_auth: dict[str, str], federation: Federation, encoding: str
) -> None:
    # A deflate bomb: far under max_body_bytes on the wire, twenty times over it inflated.
    bomb = zlib.compress(padded({"seals": ["x"]}, 20 * federation.limits.max_body_bytes), 9)
    assert len(bomb) < federation.limits.max_body_bytes // 10
    headers = {**json_auth, "Content-Encoding": encoding}
    response = await client.post("/v1/seals/verify", data=bomb, headers=headers)
    await problem_of(response, 415, "input.content_encoding")


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_bodies_that_do_not_decompress_are_refused(
    client: Client, json_auth: dict[str, str], encoding: str
) -> None:
    headers = {**json_auth, "Content-Encoding": encoding}
    response = await verify(client, headers, b"\x00 this is not compressed")
    await problem_of(response, 415, "input.content_encoding")


@pytest.mark.parametrize("encoding", ["identity", "Identity", ""])
async def test_identity_encoding_is_accepted(
    client: Client, json_auth: dict[str, str], encoding: str
) -> None:
    headers = {**json_auth, "Content-Encoding": encoding}
    assert (await verify(client, headers, b'{"seals": ["x"]}')).status == 200


async def test_body_is_not_read_before_the_caller_is_known(
    client: Client, federation: Federation
) -> None:
    body = io.BytesIO(padded({}, federation.limits.max_body_bytes + 1))
    response = await client.post("/v1/seals/verify", data=body, headers=JSON_HEADERS)
    await problem_of(response, 401, "auth.required")


# --- max_json_depth --------------------------------------------------------------------------


async def test_json_at_the_depth_limit_is_parsed(
    client: Client, json_auth: dict[str, str], federation: Federation
) -> None:
    response = await verify(client, json_auth, nested(federation.limits.max_json_depth))
    await problem_of(response, 422, "input.schema")


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
async def test_json_past_the_depth_limit_is_400(
    client: Client, json_auth: dict[str, str], federation: Federation, path: str
) -> None:
    body = nested(federation.limits.max_json_depth + 1)
    response = await client.post(path, data=body, headers=json_auth)
    await problem_of(response, 400, "input.too_deep")


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        nested(100_000),
        b'{"a":' * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    ],
    ids=["open-arrays", "closed-arrays", "open-objects", "closed-objects"],
)
async def test_pathologically_deep_json_is_refused_not_crashed(
    client: Client, json_auth: dict[str, str], body: bytes
) -> None:
    response = await verify(client, json_auth, body)
    await problem_of(response, 400, "input.too_deep")
    assert (await client.get("/healthz")).status == 200


# --- max_string_length -----------------------------------------------------------------------


async def test_string_at_the_length_limit_is_parsed(
    client: Client, json_auth: dict[str, str], federation: Federation
) -> None:
    body = orjson.dumps({"seals": ["a" * federation.limits.max_string_length]})
    response = await verify(client, json_auth, body)
    assert response.status == 200
    assert [r["code"] for r in (await response.json())["reports"]] == ["seal.malformed"]


@pytest.mark.parametrize("where", ["value", "member name"])
async def test_string_over_the_length_limit_is_413(
    client: Client, json_auth: dict[str, str], federation: Federation, where: str
) -> None:
    long = "a" * (federation.limits.max_string_length + 1)
    document = {"seals": [long]} if where == "value" else {long: 1}
    response = await verify(client, json_auth, orjson.dumps(document))
    await problem_of(response, 413, "input.too_large")


# --- max_json_members ------------------------------------------------------------------------


async def test_members_at_the_limit_are_parsed(
    client: Client, json_auth: dict[str, str], federation: Federation
) -> None:
    # one member ("seals") plus the array's items
    seals = ["x"] * (federation.limits.max_json_members - 1)
    response = await verify(client, json_auth, orjson.dumps({"seals": seals}))
    # parsed (not 413): the request then fails the batch limit
    await problem_of(response, 400, "input.batch_too_large")


@pytest.mark.parametrize("shape", ["array items", "object members"])
async def test_members_over_the_limit_are_413(
    client: Client, json_auth: dict[str, str], federation: Federation, shape: str
) -> None:
    count = federation.limits.max_json_members
    document: Any = (
        {"seals": ["x"] * count}
        if shape == "array items"
        else {"seals": ["x"], "extra": {f"m{i}": 0 for i in range(count)}}
    )
    response = await verify(client, json_auth, orjson.dumps(document))
    await problem_of(response, 413, "input.too_large")


# --- max_batch -------------------------------------------------------------------------------


async def test_batch_at_and_over_max_batch(
    federation: Federation,
    clock: FixedClock,
    schemas: SchemaSet,
    tokens: Tokens,
    json_auth: dict[str, str],
) -> None:
    async with node_with(federation, clock, schemas, tokens, max_batch=3) as client:
        at_limit = await verify(client, json_auth, orjson.dumps({"seals": ["x"] * 3}))
        assert at_limit.status == 200
        assert len((await at_limit.json())["reports"]) == 3
        over = await verify(client, json_auth, orjson.dumps({"seals": ["x"] * 4}))
        await problem_of(over, 400, "input.batch_too_large")


async def test_batch_over_the_default_max_batch(
    client: Client, json_auth: dict[str, str], federation: Federation
) -> None:
    # The configured limit is checked before the envelope schema, whatever its maxItems.
    seals = ["x"] * (federation.limits.max_batch + 1)
    await problem_of(
        await verify(client, json_auth, orjson.dumps({"seals": seals})),
        400,
        "input.batch_too_large",
    )


# --- max_seal_bytes --------------------------------------------------------------------------


async def test_seal_at_max_seal_bytes_reaches_the_verifier(
    client: Client, json_auth: dict[str, str], federation: Federation
) -> None:
    token = "a" * federation.limits.max_seal_bytes
    response = await verify(client, json_auth, orjson.dumps({"seals": [token]}))
    assert response.status == 200
    assert [r["code"] for r in (await response.json())["reports"]] == ["seal.malformed"]


async def test_seal_over_max_seal_bytes_is_refused(
    client: Client, json_auth: dict[str, str], federation: Federation
) -> None:
    # max_seal_bytes == max_string_length by default: the body parser refuses it first.
    token = "a" * (federation.limits.max_seal_bytes + 1)
    response = await verify(client, json_auth, orjson.dumps({"seals": [token]}))
    await problem_of(response, 413, "input.too_large")


async def test_seal_with_an_oversized_header_gets_a_too_large_report(
    client: Client, json_auth: dict[str, str]
) -> None:
    header = b64url_encode(orjson.dumps({"alg": "EdDSA", "pad": "x" * 8192}))
    token = f"{header}.e30.{'A' * 86}"
    response = await verify(client, json_auth, orjson.dumps({"seals": [token]}))
    assert response.status == 200
    (report,) = (await response.json())["reports"]
    assert (report["indication"], report["code"]) == ("FAILED", "seal.too_large")


async def test_configured_max_seal_bytes_fails_longer_seals(
    federation: Federation,
    clock: FixedClock,
    schemas: SchemaSet,
    tokens: Tokens,
    json_auth: dict[str, str],
) -> None:
    async with node_with(federation, clock, schemas, tokens, max_seal_bytes=512) as client:
        issued = await client.post("/v1/certificates", json=marriage_request(), headers=json_auth)
        token = (await issued.json())["seal"]
        assert len(token) > 512
        response = await verify(client, json_auth, orjson.dumps({"seals": [token]}))
        (report,) = (await response.json())["reports"]
        assert (report["indication"], report["code"]) == ("FAILED", "seal.too_large")


# --- max_token_bytes -------------------------------------------------------------------------


def token_of_length(tokens: Tokens, length: int) -> str:
    """A genuine access token, padded with an extra claim to exactly ``length`` characters."""
    claims: dict[str, Any] = {
        "iss": tokens.issuer,
        "sub": "zhuji-civil-affairs",
        "aud": tokens.federation.audience,
        "exp": int(NOW) + 300,
        "iat": int(NOW),
        "jti": "padded",
        "client_id": "zhuji-civil-affairs",
        "scope": "seal:verify",
        "department": "zhuji-civil-affairs",
        "pad": "",
    }
    signer = tokens.store.signer()

    def signed() -> str:
        return sign_compact(signer, orjson.dumps(claims), typ=ACCESS_TOKEN_TYP, signed_at=NOW)

    # base64url turns 3 bytes into 4 characters: start just below the length, then step up
    claims["pad"] = "x" * max(0, (length - len(signed())) * 3 // 4 - 3)
    token = signed()
    while len(token) < length:
        claims["pad"] += "x"
        token = signed()
    assert len(token) == length, "base64url skips this length; the header decides which"
    return token


async def test_token_at_max_token_bytes_is_accepted(
    client: Client, tokens: Tokens, federation: Federation
) -> None:
    token = token_of_length(tokens, federation.limits.max_token_bytes)
    headers = {"Authorization": f"Bearer {token}", **JSON_HEADERS}
    response = await verify(client, headers, b'{"seals": ["x"]}')
    assert response.status == 200, await response.read()


async def test_token_at_max_token_bytes_is_checked(client: Client, federation: Federation) -> None:
    # at the limit the token reaches the validator, which finds it is no JWS at all
    token = "t" * federation.limits.max_token_bytes
    response = await verify(client, {"Authorization": f"Bearer {token}"}, b"{}")
    await problem_of(response, 401, "token.malformed")


@pytest.mark.parametrize("extra", [1, 1000])
async def test_token_over_max_token_bytes_is_refused(
    client: Client, federation: Federation, extra: int
) -> None:
    token = "t" * (federation.limits.max_token_bytes + extra)
    response = await verify(client, {"Authorization": f"Bearer {token}"}, b"{}")
    await problem_of(response, 401, "token.too_large")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tongban"'


async def test_a_genuine_token_one_byte_over_the_limit_is_refused(
    client: Client, tokens: Tokens, federation: Federation
) -> None:
    token = token_of_length(tokens, federation.limits.max_token_bytes + 1)
    headers = {"Authorization": f"Bearer {token}", **JSON_HEADERS}
    response = await verify(client, headers, b'{"seals": ["x"]}')
    await problem_of(response, 401, "token.too_large")


async def test_smaller_max_token_bytes_is_applied(
    federation: Federation, clock: FixedClock, schemas: SchemaSet, tokens: Tokens
) -> None:
    async with node_with(federation, clock, schemas, tokens, max_token_bytes=32) as client:
        response = await verify(client, {"Authorization": f"Bearer {'t' * 33}"}, b"{}")
        await problem_of(response, 401, "token.too_large")
        # a genuine token is far longer than 32 bytes: refused for its size, not its content
        genuine = {"Authorization": f"Bearer {tokens.client('zhuji-civil-affairs')}"}
        response = await verify(client, {**genuine, **JSON_HEADERS}, b'{"seals": ["x"]}')
        await problem_of(response, 401, "token.too_large")


# --- what the body parser accepts ------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "application/json-patch+json",
        "application/problem+json",
        "application/jsonx",
    ],
)
@pytest.mark.parametrize("path", BODY_ENDPOINTS)
async def test_body_must_be_application_json(
    client: Client, auth: dict[str, str], path: str, content_type: str
) -> None:
    headers = {**auth, "Content-Type": content_type}
    response = await client.post(path, data=b'{"seals": ["x"]}', headers=headers)
    await problem_of(response, 415, "input.media_type")


async def test_json_with_a_charset_parameter_is_accepted(
    client: Client, auth: dict[str, str]
) -> None:
    headers = {**auth, "Content-Type": "application/json; charset=utf-8"}
    assert (await verify(client, headers, b'{"seals": ["x"]}')).status == 200


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b'{"seals": ["\xff"]}',  # not UTF-8
        b'{"seals": ["\xc0\xaf"]}',  # overlong UTF-8
        b'\xef\xbb\xbf{"seals": ["x"]}',  # byte order mark
        b'{"seals": ["x"]',  # truncated
        b"{'seals': ['x']}",  # not JSON quotes
        b'{"seals": ["x"],}',  # trailing comma
        b'{"seals": [NaN]}',
        b'{"seals": [Infinity]}',
        b'{"seals": [-Infinity]}',
        b'{"seals": [1e400]}',  # overflows a double
        b'{"seals": [' + b"9" * 5000 + b"]}",  # longer than Python converts
        b'{"seals": ["\\ud800"]}',  # lone surrogate
        b'{"seals": ["x"]} x',  # trailing garbage
        b'{"seals": ["x"]}{}',  # two documents
    ],
    ids=[
        "empty",
        "whitespace",
        "invalid-utf8",
        "overlong-utf8",
        "bom",
        "truncated",
        "single-quotes",
        "trailing-comma",
        "nan",
        "infinity",
        "minus-infinity",
        "float-overflow",
        "huge-integer",
        "lone-surrogate",
        "trailing-garbage",
        "two-documents",
    ],
)
async def test_malformed_json_is_400(
    client: Client, json_auth: dict[str, str], body: bytes
) -> None:
    await problem_of(await verify(client, json_auth, body), 400, "input.malformed_json")


@pytest.mark.parametrize(
    "body",
    [b'{"seals": ["x"], "seals": ["y"]}', b'{"seals": [{"a": 1, "a": 1}]}'],
    ids=["top-level", "nested"],
)
async def test_duplicate_member_names_are_400(
    client: Client, json_auth: dict[str, str], body: bytes
) -> None:
    await problem_of(await verify(client, json_auth, body), 400, "input.duplicate_member")


async def test_trailing_whitespace_is_fine(client: Client, json_auth: dict[str, str]) -> None:
    assert (await verify(client, json_auth, b' \n{"seals": ["x"]}\r\n\t ')).status == 200


# --- request and header lines ------------------------------------------------------------------


async def raw_request(client: Client, head: bytes) -> tuple[int, bytes, bytes]:
    """Send ``head`` as it is (the client library would refuse some of these); the status,
    the response's header block and its body."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    header_block, _, body = answer.partition(b"\r\n\r\n")
    return int(header_block.split(b" ", 2)[1]), header_block, body


def oversized(where: str, limits: Limits, extra: int) -> bytes:
    """A request whose request line or one header line is ``extra`` bytes past its bound."""
    bound = limits.max_request_line_bytes if where == "line" else limits.max_header_bytes
    text = "SECRET" * ((bound + extra) // 6 + 1)
    if where == "line":
        return f"GET /v1/matters?q={text} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    return (
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {text}\r\nConnection: close\r\n\r\n".encode()
    )


@pytest.mark.parametrize("extra", [1, 30_000])
@pytest.mark.parametrize(("where", "status"), [("line", 414), ("header", 431)])
async def test_an_oversized_line_is_refused_as_problem_json_echoing_nothing(
    client: Client, federation: Federation, where: str, status: int, extra: int
) -> None:
    answer, header_block, body = await raw_request(
        client, oversized(where, federation.limits, extra)
    )
    assert answer == status
    assert b"Content-Type: application/problem+json" in header_block
    assert orjson.loads(body)["code"] == "input.too_large"
    assert b"SECRET" not in body


async def test_a_request_line_at_the_limit_is_served(
    client: Client, federation: Federation
) -> None:
    prefix, suffix = "GET /v1/matters?q=", " HTTP/1.1"
    query = "a" * (federation.limits.max_request_line_bytes - len(prefix) - len(suffix))
    head = f"{prefix}{query}{suffix}\r\nHost: x\r\nConnection: close\r\n\r\n"
    status, _, _ = await raw_request(client, head.encode())
    assert status == 200
