"""Single sign-on and consent over HTTP (一号登录、全网漫游 · 用证授权).

1. Consent: a zhuji node releases a personal certificate only with the holder's grant, and
   refuses every other grant with its own ``consent.*`` code.
2. Token attacks: each class of forged or unacceptable access token answers 401 with its own
   ``token.*`` code, and the node stays healthy (``/healthz`` and a genuine token still work).
   The IdP signs with EdDSA or ES256; every attack runs against both.
3. Scopes and departments: who may issue what, where.
4. A real IdP: the node built by the default ``create_app`` (no authenticator injected)
   discovers the IdP's keys over HTTP on its one ``ClientSession``; tokens come from
   ``POST /token``; a key rotation in the middle of a stream of requests rejects none of them;
   the last good key set keeps serving when the IdP goes down.

Forged tokens are assembled by hand (``b64url_encode``, the IdP key store's signer where a
valid signature is needed). Time is a FixedClock at 2026-11-24T08:00Z; there are no sleeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import BRIDE, GROOM, NOW, Tokens, household_request, marriage_request
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from processes import free_ports

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.certificates.holders import holder_digest
from gateway.certificates.schemas import SchemaSet
from gateway.cli.idp_client import IdpClient
from gateway.clock import FixedClock, to_rfc3339
from gateway.config import Federation
from gateway.crypto.jwks import public_jwk
from gateway.crypto.keystore import KeyStore, federation_holder_secret
from gateway.crypto.seals import PrivateKeySigner, Signer, sign_compact
from gateway.http.app import create_app
from gateway.http.appkeys import NODE
from gateway.http.idp_app import create_idp_app
from gateway.ids import DepartmentId, NodeId
from gateway.metrics import Metrics
from gateway.server.node import open_node_service
from gateway.services.idp import IdpService
from gateway.services.node import NodeService
from gateway.sso.consent import CONSENT_HEADER, CONSENT_TYP, issue_consent
from gateway.sso.tokens import ACCESS_TOKEN_TYP, CLOCK_SKEW, DEFAULT_LIFETIME

Client = TestClient[Any, Any]
PROBLEM = "application/problem+json"
MARRIAGE = "marriage-registration"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
STRANGER = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
"""A key the IdP never published."""
REMOVE = object()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def problem_of(response: Any, status: int, code: str) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(await response.read())
    assert (response.status, body.get("code")) == (status, code), body
    assert response.content_type == PROBLEM
    assert body["status"] == status
    assert body["type"] == f"https://tongban.example/problems/{code}"
    return body


async def issue(client: Client, token: str, request: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/certificates", json=request, headers=bearer(token))
    body: dict[str, Any] = orjson.loads(await response.read())
    assert response.status == 201, body
    return body


async def fetch(
    client: Client, token: str, cert_id: str, matter: str = MARRIAGE, consent: str | None = None
) -> Any:
    headers = bearer(token) if consent is None else {**bearer(token), CONSENT_HEADER: consent}
    return await client.get(
        f"/v1/certificates/{cert_id}", params={"matter": matter}, headers=headers
    )


async def verify(client: Client, token: str, seals: list[str] | None = None) -> Any:
    return await client.post(
        "/v1/seals/verify", json={"seals": seals or ["x"]}, headers=bearer(token)
    )


# =============================================================================================
# 1. consent at the node
# =============================================================================================


@pytest.fixture
async def household(client: Client, tokens: Tokens) -> str:
    """The groom's household register, issued at zhuji by its public-security bureau."""
    issued = await issue(client, tokens.client("zhuji-public-security"), household_request())
    return str(issued["certificate_id"])


@pytest.fixture
def civil(tokens: Tokens) -> str:
    """The zhuji civil-affairs bureau's access token: it registers marriages."""
    return tokens.client("zhuji-civil-affairs")


async def test_a_fetch_without_a_grant_needs_consent(
    client: Client, household: str, civil: str
) -> None:
    await problem_of(await fetch(client, civil, household), 403, "consent.required")


async def test_a_fetch_with_the_holders_grant_is_released(
    client: Client, tokens: Tokens, household: str, civil: str
) -> None:
    consent = tokens.consent(GROOM["id"], types=("household_register",))
    response = await fetch(client, civil, household, consent=consent)
    assert response.status == 200
    body = await response.json()
    assert body["certificate_id"] == household
    assert body["certificate"]["holder"] == GROOM
    assert (body["report"]["indication"], body["report"]["code"]) == ("PASSED", "ok")


async def test_the_grant_covers_every_type_it_names(
    client: Client, tokens: Tokens, household: str, civil: str
) -> None:
    # the demo's grant: ID card record and household register, for marriage registration
    consent = tokens.consent(GROOM["id"])
    assert (await fetch(client, civil, household, consent=consent)).status == 200


async def test_an_expired_grant_is_refused(
    client: Client, tokens: Tokens, clock: FixedClock, household: str
) -> None:
    consent = tokens.consent(GROOM["id"], types=("household_register",), until=NOW + 600)
    clock.advance(600 + CLOCK_SKEW + 1)
    civil = tokens.client("zhuji-civil-affairs")  # a fresh access token: only the grant is old
    await problem_of(await fetch(client, civil, household, consent=consent), 403, "consent.expired")


async def test_a_grant_signed_in_the_future_is_invalid(
    client: Client, tokens: Tokens, household: str, civil: str
) -> None:
    consent = issue_consent(
        tokens.store.signer(),
        issuer=tokens.issuer,
        holder_digest=holder_digest(tokens.store.holder_secret, "111", GROOM["id"]),
        department=DepartmentId("zhuji-civil-affairs"),
        matter=MARRIAGE,
        types=("household_register",),
        now=NOW + CLOCK_SKEW + 1,
        until=NOW + 3600,
        jti="from-the-future",
    )
    response = await fetch(client, civil, household, consent=consent)
    await problem_of(response, 403, "consent.invalid")


async def test_a_grant_whose_validity_starts_later_is_refused(
    client: Client, tokens: Tokens, household: str, civil: str
) -> None:
    # signed now, but its iat says it starts beyond the clock skew
    grant = {
        "iss": tokens.issuer,
        "sub": holder_digest(tokens.store.holder_secret, "111", GROOM["id"]),
        "aud": "zhuji-civil-affairs",
        "matter": MARRIAGE,
        "types": ["household_register"],
        "iat": int(NOW) + CLOCK_SKEW + 1,
        "exp": int(NOW) + 3600,
        "jti": "later-1",
    }
    consent = sign_compact(
        tokens.store.signer(), orjson.dumps(grant), typ=CONSENT_TYP, signed_at=NOW
    )
    response = await fetch(client, civil, household, consent=consent)
    await problem_of(response, 403, "consent.not_yet_valid")


async def test_a_grant_of_another_holder_is_refused(
    client: Client, tokens: Tokens, household: str, civil: str
) -> None:
    consent = tokens.consent(BRIDE["id"], types=("household_register",))
    response = await fetch(client, civil, household, consent=consent)
    await problem_of(response, 403, "consent.wrong_holder")


async def test_a_grant_to_another_department_is_refused(
    client: Client, tokens: Tokens, household: str
) -> None:
    consent = tokens.consent(GROOM["id"], types=("household_register",))  # to civil affairs
    security = tokens.client("zhuji-public-security")
    response = await fetch(client, security, household, consent=consent)
    await problem_of(response, 403, "consent.wrong_department")


async def test_a_grant_for_another_matter_is_refused(
    client: Client, tokens: Tokens, household: str, civil: str
) -> None:
    consent = tokens.consent(
        GROOM["id"], matter="household-transfer", types=("household_register",)
    )
    response = await fetch(client, civil, household, consent=consent)
    await problem_of(response, 403, "consent.wrong_matter")


async def test_a_type_not_granted_is_refused(
    client: Client, tokens: Tokens, household: str, civil: str
) -> None:
    consent = tokens.consent(GROOM["id"], types=("resident_id",))
    response = await fetch(client, civil, household, consent=consent)
    await problem_of(response, 403, "consent.type_not_granted")


async def test_a_tampered_grant_is_invalid(
    client: Client, tokens: Tokens, household: str, civil: str
) -> None:
    header, payload, signature = tokens.consent(GROOM["id"], types=("resident_id",)).split(".")
    claims = orjson.loads(b64url_decode(payload))
    claims["types"] = ["resident_id", "household_register"]
    forged = f"{header}.{b64url_encode(orjson.dumps(claims))}.{signature}"
    response = await fetch(client, civil, household, consent=forged)
    await problem_of(response, 403, "consent.invalid")


@pytest.mark.parametrize("signer", ["stranger", "node-seal-key"])
async def test_a_grant_signed_by_a_key_other_than_the_idps_is_invalid(
    client: Client, tokens: Tokens, household: str, civil: str, signer: str
) -> None:
    # a key nobody published, or the node's own seal key: seals and SSO never share keys
    node: NodeService = client.app[NODE]
    key: Signer = STRANGER if signer == "stranger" else node.keys.signer()
    consent = issue_consent(
        key,
        issuer=tokens.issuer,
        holder_digest=holder_digest(tokens.store.holder_secret, "111", GROOM["id"]),
        department=DepartmentId("zhuji-civil-affairs"),
        matter=MARRIAGE,
        types=("household_register",),
        now=NOW,
        until=NOW + 3600,
        jti="forged-1",
    )
    response = await fetch(client, civil, household, consent=consent)
    await problem_of(response, 403, "consent.invalid")


async def test_a_grant_of_another_issuer_is_refused(
    client: Client, tokens: Tokens, household: str, civil: str
) -> None:
    consent = issue_consent(
        tokens.store.signer(),
        issuer="http://127.0.0.1:1",
        holder_digest=holder_digest(tokens.store.holder_secret, "111", GROOM["id"]),
        department=DepartmentId("zhuji-civil-affairs"),
        matter=MARRIAGE,
        types=("household_register",),
        now=NOW,
        until=NOW + 3600,
        jti="elsewhere-1",
    )
    response = await fetch(client, civil, household, consent=consent)
    await problem_of(response, 403, "consent.wrong_issuer")


@pytest.mark.parametrize("presented", ["access-token", "garbage", "oversized", "seal"])
async def test_anything_but_a_grant_in_the_consent_header_is_invalid(
    client: Client, tokens: Tokens, household: str, civil: str, presented: str
) -> None:
    values = {
        "access-token": civil,  # the caller's own bearer token is no consent (wrong typ)
        "garbage": "not-a-grant",
        "oversized": tokens.consent(GROOM["id"]) + "A" * 8192,
        "seal": (
            await issue(client, tokens.client("zhuji-public-security"), household_request(BRIDE))
        )["seal"],
    }
    response = await fetch(client, civil, household, consent=values[presented])
    await problem_of(response, 403, "consent.invalid")


async def test_a_grant_does_not_widen_the_matter(
    client: Client, tokens: Tokens, household: str, civil: str
) -> None:
    # purpose limitation first: no grant makes a household register part of business registration
    consent = tokens.consent(GROOM["id"], types=("household_register",))
    response = await fetch(client, civil, household, "business-registration", consent)
    await problem_of(response, 403, "matter.type_not_allowed")


async def test_a_grant_is_no_access_token(client: Client, tokens: Tokens, household: str) -> None:
    consent = tokens.consent(GROOM["id"], types=("household_register",))
    response = await fetch(client, consent, household, consent=consent)
    await problem_of(response, 401, "token.wrong_typ")


async def test_a_citizens_own_token_cannot_fetch(
    client: Client, tokens: Tokens, household: str
) -> None:
    # a holder logs in to grant consent; a holder token carries no department scope
    holder = forged_token(
        tokens,
        claims(
            tokens,
            sub="hd-0015",
            client_id="citizen-portal",
            scope="",
            department=REMOVE,
            holder=True,
        ),
    )
    consent = tokens.consent(GROOM["id"], types=("household_register",))
    response = await fetch(client, holder, household, consent=consent)
    await problem_of(response, 403, "auth.scope")


# =============================================================================================
# 2. token attacks
# =============================================================================================


def base_claims(issuer: str, audience: str, **changes: Any) -> dict[str, Any]:
    """Genuine claims of the zhuji civil-affairs bureau at NOW; REMOVE drops one."""
    body: dict[str, Any] = {
        "iss": issuer,
        "sub": "zhuji-civil-affairs",
        "aud": audience,
        "exp": int(NOW) + DEFAULT_LIFETIME,
        "iat": int(NOW),
        "jti": "forged",
        "client_id": "zhuji-civil-affairs",
        "scope": "cert:read cert:issue cert:status seal:verify",
        "department": "zhuji-civil-affairs",
        "region": "330681",
        "holder": False,
    }
    for name, value in changes.items():
        if value is REMOVE:
            del body[name]
        else:
            body[name] = value
    return body


def claims(tokens: Tokens, **changes: Any) -> dict[str, Any]:
    return base_claims(tokens.issuer, tokens.federation.audience, **changes)


def header(signer: Signer, **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "alg": signer.alg,
        "kid": signer.kid,
        "typ": ACCESS_TOKEN_TYP,
        "sigT": to_rfc3339(NOW),
    }
    for name, value in changes.items():
        if value is REMOVE:
            del out[name]
        else:
            out[name] = value
    return out


def jws(
    head: dict[str, Any] | bytes,
    payload: dict[str, Any] | bytes,
    *,
    signer: Signer | None = None,
    signature: bytes | None = None,
) -> str:
    """A compact JWS assembled by hand: header and payload bytes exactly as given."""
    head_bytes = head if isinstance(head, bytes) else orjson.dumps(head)
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    signing_input = f"{b64url_encode(head_bytes)}.{b64url_encode(body)}"
    if signature is None:
        assert signer is not None
        signature = signer.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"


def forged_token(tokens: Tokens, body: dict[str, Any] | bytes, **head: Any) -> str:
    """``body`` signed by the IdP's own active key: only the content is on trial."""
    signer = tokens.store.signer()
    return jws(header(signer, **head), body, signer=signer)


def _hs256(tokens: Tokens, secret: bytes) -> str:
    signer = tokens.store.signer()
    signing_input = (
        f"{b64url_encode(orjson.dumps(header(signer, alg='HS256')))}."
        f"{b64url_encode(orjson.dumps(claims(tokens)))}"
    )
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(mac)}"


def _public_key_as(tokens: Tokens, form: str) -> bytes:
    """The IdP's active public key in one of the encodings an HS256 confusion would use."""
    signer = tokens.store.signer()
    key = tokens.store.verification_keys()[signer.kid]
    jwk = public_jwk(key)
    public = key.public_key
    if form == "x":
        return b64url_decode(jwk["x"])
    if form == "x-text":
        return str(jwk["x"]).encode("ascii")
    if form == "point":  # Ed25519 raw bytes; P-256 uncompressed point
        if isinstance(public, ec.EllipticCurvePublicKey):
            return public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if form == "jwk":
        return orjson.dumps(jwk)
    if form == "jwk-members":  # the RFC 7638 members only, as a thumbprint would hash them
        members = {k: jwk[k] for k in ("crv", "kty", "x", "y") if k in jwk}
        return orjson.dumps(members, option=orjson.OPT_SORT_KEYS)
    if form == "pem":
        return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert form == "der"
    return public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _segments(token: str) -> tuple[str, str, str]:
    head, payload, signature = token.split(".")
    return head, payload, signature


Attack = Callable[[Tokens], str]
ATTACKS: dict[str, tuple[Attack, str]] = {}
"""Every attack by name: how to build its token, and the code the node must answer."""


def attack(code: str) -> Callable[[Attack], Attack]:
    def register(build: Attack) -> Attack:
        ATTACKS[build.__name__.strip("_").replace("_", "-")] = (build, code)
        return build

    return register


# -- the algorithm: taken from the key, never none, never HS* ---------------------------------


@attack("token.malformed")
def alg_none_unsigned(t: Tokens) -> str:
    head = b64url_encode(orjson.dumps({"alg": "none", "typ": ACCESS_TOKEN_TYP}))
    return f"{head}.{b64url_encode(orjson.dumps(claims(t)))}."


@attack("token.alg_not_allowed")
def alg_none_with_a_signature(t: Tokens) -> str:
    return forged_token(t, claims(t), alg="none")


@attack("token.alg_not_allowed")
def alg_none_capitalised(t: Tokens) -> str:
    return forged_token(t, claims(t), alg="None")


@attack("token.alg_not_allowed")
def alg_missing(t: Tokens) -> str:
    return forged_token(t, claims(t), alg=REMOVE)


@attack("token.alg_not_allowed")
def alg_rs256(t: Tokens) -> str:
    return forged_token(t, claims(t), alg="RS256")


@attack("token.alg_mismatch")
def alg_of_the_other_supported_kind(t: Tokens) -> str:
    other = "ES256" if t.store.signer().alg == "EdDSA" else "EdDSA"
    return forged_token(t, claims(t), alg=other)


for _form in ("x", "x-text", "point", "jwk", "jwk-members", "pem", "der"):

    def _keyed(t: Tokens, form: str = _form) -> str:
        return _hs256(t, _public_key_as(t, form))

    _keyed.__name__ = f"hs256_keyed_with_the_public_key_as_{_form.replace('-', '_')}"
    attack("token.alg_not_allowed")(_keyed)


# -- the key: the IdP's published keys only, named by a plain kid, never carried inline ------


@attack("token.unknown_kid")
def unknown_kid(t: Tokens) -> str:
    return jws(header(STRANGER), claims(t), signer=STRANGER)


@attack("token.bad_kid")
def kid_missing(t: Tokens) -> str:
    return forged_token(t, claims(t), kid=REMOVE)


@attack("token.bad_kid")
def kid_not_a_string(t: Tokens) -> str:
    return forged_token(t, claims(t), kid=["a"])


for _n, _kid in enumerate(
    ["../../keys/idp/keyring.json", "/etc/passwd", "a/b", "..", "kid%00", "x" * 129, "k i d"]
):

    def _path_like(t: Tokens, kid: str = _kid) -> str:
        return forged_token(t, claims(t), kid=kid)

    _path_like.__name__ = f"path_like_kid_{_n}"
    attack("token.bad_kid")(_path_like)


@attack("token.forbidden_header")
def jku(t: Tokens) -> str:
    return forged_token(t, claims(t), jku="https://attacker.example/jwks.json")


@attack("token.forbidden_header")
def x5u(t: Tokens) -> str:
    return forged_token(t, claims(t), x5u="https://attacker.example/cert.pem")


@attack("token.forbidden_header")
def x5c(t: Tokens) -> str:
    return forged_token(t, claims(t), x5c=["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"])


@attack("token.forbidden_header")
def jwk_embedded_and_self_signed(t: Tokens) -> str:
    embedded = {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(STRANGER.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)),
        "kid": STRANGER.kid,
    }
    return jws(header(STRANGER, jwk=embedded), claims(t), signer=STRANGER)


@attack("token.forbidden_header")
def jwk_naming_the_idps_own_key(t: Tokens) -> str:
    signer = t.store.signer()
    own = public_jwk(t.store.verification_keys()[signer.kid])
    return forged_token(t, claims(t), jwk=own)


@attack("token.unsupported_crit")
def crit_extension(t: Tokens) -> str:
    return forged_token(t, claims(t), crit=["exp"], exp=int(NOW) + 300)


@attack("token.bad_crit")
def crit_naming_a_jws_parameter(t: Tokens) -> str:
    return forged_token(t, claims(t), crit=["alg"])


@attack("token.b64_unsupported")
def b64_false(t: Tokens) -> str:
    return forged_token(t, claims(t), b64=False)


# -- the signature ----------------------------------------------------------------------------


@attack("token.bad_signature")
def signature_r_s_zero(t: Tokens) -> str:
    # ECDSA r = s = 0 ("psychic signatures", CVE-2022-21449); for Ed25519, 64 zero bytes
    return jws(header(t.store.signer()), claims(t), signature=b"\0" * 64)


@attack("token.bad_signature")
def signature_r_s_equal_to_the_group_order(t: Tokens) -> str:
    return jws(header(t.store.signer()), claims(t), signature=P256_ORDER.to_bytes(32, "big") * 2)


@attack("token.bad_signature")
def signature_der_encoded(t: Tokens) -> str:
    return jws(header(t.store.signer()), claims(t), signature=b"\x30\x06\x02\x01\x01\x02\x01\x01")


@attack("token.bad_signature")
def tampered_claims(t: Tokens) -> str:
    head, _, signature = _segments(t.client(scopes=["seal:verify"]))
    return f"{head}.{b64url_encode(orjson.dumps(claims(t)))}.{signature}"


@attack("token.bad_signature")
def signature_of_another_token(t: Tokens) -> str:
    head, payload, _ = _segments(t.client("zhuji-civil-affairs"))
    return f"{head}.{payload}.{_segments(t.client('zhuji-public-security'))[2]}"


# -- strict base64url -------------------------------------------------------------------------


@attack("token.bad_encoding")
def padded_signature_segment(t: Tokens) -> str:
    return t.client() + "=="


@attack("token.invalid")
def padded_payload_segment(t: Tokens) -> str:
    # "=" inside the token is not even an RFC 6750 b64token: refused before any decoding
    head, payload, signature = _segments(t.client())
    return f"{head}.{payload}=.{signature}"


@attack("token.bad_encoding")
def non_canonical_signature_bits(t: Tokens) -> str:
    # a 64-byte signature is 86 characters; the last carries 4 unused bits, which must be 0
    head, payload, signature = _segments(t.client())
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(signature[-1]) | 1]
    return f"{head}.{payload}.{signature[:-1]}{last}"


@attack("token.bad_encoding")
def standard_base64_alphabet(t: Tokens) -> str:
    head, payload, signature = _segments(t.client())
    return f"{head}.{payload}.{signature[:-3]}+/A"


# -- strict JSON ------------------------------------------------------------------------------


@attack("token.duplicate_member")
def duplicate_claims(t: Tokens) -> str:
    return forged_token(t, orjson.dumps(claims(t))[:-1] + b',"department":"national-admin"}')


@attack("token.duplicate_member")
def duplicate_header_members(t: Tokens) -> str:
    signer = t.store.signer()
    head = orjson.dumps(header(signer))[:-1] + b',"alg":"HS256"}'
    return jws(head, claims(t), signer=signer)


@attack("token.bad_payload")
def deeply_nested_payload(t: Tokens) -> str:
    nested: Any = "x"
    for _ in range(40):
        nested = [nested]
    return forged_token(t, claims(t, extra=nested))


@attack("token.bad_payload")
def payload_not_an_object(t: Tokens) -> str:
    return forged_token(t, orjson.dumps([claims(t)]))


@attack("token.bad_header")
def header_not_an_object(t: Tokens) -> str:
    return jws(b'["EdDSA"]', claims(t), signer=t.store.signer())


# -- the claims -------------------------------------------------------------------------------


@attack("token.bad_claim")
def string_exp(t: Tokens) -> str:
    return forged_token(t, claims(t, exp=str(int(NOW) + DEFAULT_LIFETIME)))


@attack("token.bad_claim")
def boolean_exp(t: Tokens) -> str:
    return forged_token(t, claims(t, exp=True))


@attack("token.bad_claim")
def fractional_exp(t: Tokens) -> str:
    return forged_token(t, claims(t, exp=NOW + DEFAULT_LIFETIME + 0.5))


@attack("token.bad_claim")
def scope_as_a_list(t: Tokens) -> str:
    return forged_token(t, claims(t, scope=["cert:issue", "keys:admin"]))


@attack("token.missing_claim")
def missing_exp(t: Tokens) -> str:
    return forged_token(t, claims(t, exp=REMOVE))


@attack("token.missing_claim")
def missing_iat(t: Tokens) -> str:
    return forged_token(t, claims(t, iat=REMOVE))


@attack("token.missing_claim")
def missing_aud(t: Tokens) -> str:
    return forged_token(t, claims(t, aud=REMOVE))


@attack("token.missing_claim")
def missing_iss(t: Tokens) -> str:
    return forged_token(t, claims(t, iss=REMOVE))


@attack("token.wrong_issuer")
def wrong_issuer(t: Tokens) -> str:
    return forged_token(t, claims(t, iss="http://127.0.0.1:1"))


@attack("token.wrong_issuer")
def issuer_with_a_trailing_slash(t: Tokens) -> str:
    return forged_token(t, claims(t, iss=t.issuer + "/"))


@attack("token.wrong_audience")
def wrong_audience(t: Tokens) -> str:
    return forged_token(t, claims(t, aud="seal-verifier"))


@attack("token.wrong_typ")
def typ_jwt(t: Tokens) -> str:
    return forged_token(t, claims(t), typ="JWT")


@attack("token.wrong_typ")
def typ_missing(t: Tokens) -> str:
    return forged_token(t, claims(t), typ=REMOVE)


@attack("token.wrong_typ")
def typ_of_a_seal(t: Tokens) -> str:
    return forged_token(t, claims(t), typ="tongban-seal+jws")


@attack("token.wrong_typ")
def consent_grant_as_a_token(t: Tokens) -> str:
    return t.consent(GROOM["id"])


@attack("token.expired")
def expired(t: Tokens) -> str:
    return forged_token(t, claims(t, iat=int(NOW) - 1000, exp=int(NOW) - CLOCK_SKEW - 1))


@attack("token.not_yet_valid")
def not_yet_valid(t: Tokens) -> str:
    iat = int(NOW) + CLOCK_SKEW + 1
    return forged_token(t, claims(t, iat=iat, exp=iat + DEFAULT_LIFETIME))


@attack("token.not_yet_valid")
def not_before_in_the_future(t: Tokens) -> str:
    return forged_token(t, claims(t, nbf=int(NOW) + CLOCK_SKEW + 1))


@attack("token.signed_in_future")
def signed_in_the_future(t: Tokens) -> str:
    return forged_token(t, claims(t), sigT=to_rfc3339(NOW + CLOCK_SKEW + 1))


# -- bounded work -----------------------------------------------------------------------------


@attack("token.too_large")
def oversized(t: Tokens) -> str:
    # just past max_token_bytes: within the HTTP parser's bound, so the gateway refuses it
    return forged_token(t, claims(t, pad="x" * (t.federation.limits.max_token_bytes * 3 // 4)))


@attack("token.malformed")
def four_segments(t: Tokens) -> str:
    return t.client() + ".e30"


@pytest.fixture(params=["EdDSA", "ES256"])
async def signed_by(
    request: pytest.FixtureRequest,
    federation: Federation,
    clock: FixedClock,
    schemas: SchemaSet,
) -> AsyncIterator[tuple[Tokens, Client]]:
    """A zhuji node and an IdP whose signing key is EdDSA or ES256."""
    KeyStore.open(federation.keys_dir, NodeId("idp"), clock=clock, default_alg=request.param)
    tokens = Tokens(federation, clock)
    assert tokens.store.signer().alg == request.param
    node = open_node_service(
        federation,
        "zhuji",
        clock=clock,
        schemas=schemas,
        public_url="http://zhuji.test",
        idp_keys=tokens.resolver,
    )
    app = create_app(node, authenticator=tokens.authenticator())
    async with TestClient(TestServer(app)) as client:
        yield tokens, client


async def assert_healthy(client: Client, tokens: Tokens) -> None:
    """The node answers, and still accepts a genuine token."""
    assert (await client.get("/healthz")).status == 200
    response = await verify(client, tokens.client())
    assert response.status == 200, await response.read()


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_an_attack_token_is_refused_with_its_code(
    signed_by: tuple[Tokens, Client], name: str
) -> None:
    tokens, client = signed_by
    build, code = ATTACKS[name]
    response = await verify(client, build(tokens))
    await problem_of(response, 401, code)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tongban"'
    await assert_healthy(client, tokens)


async def test_a_burst_of_every_attack_leaves_the_node_healthy(
    signed_by: tuple[Tokens, Client],
) -> None:
    tokens, client = signed_by
    attacks = [(build(tokens), code) for build, code in ATTACKS.values()]
    responses = await asyncio.gather(*(verify(client, token) for token, _ in attacks))
    for response, (_, code) in zip(responses, attacks, strict=True):
        await problem_of(response, 401, code)
    await assert_healthy(client, tokens)
    node: NodeService = client.app[NODE]
    samples = node.metrics.registry
    refused = sum(
        samples.get_sample_value("tongban_errors_total", {"code": code}) or 0.0
        for code in {code for _, code in attacks}
    )
    assert refused == len(attacks)


async def test_an_oversized_token_is_refused_for_its_size(
    signed_by: tuple[Tokens, Client],
) -> None:
    tokens, client = signed_by
    limit = tokens.federation.limits.max_token_bytes
    token = ATTACKS["oversized"][0](tokens)
    assert limit < len(token) <= limit + 1024
    await problem_of(await verify(client, token), 401, "token.too_large")


async def test_a_header_past_the_http_parsers_bound_harms_nothing(
    signed_by: tuple[Tokens, Client],
) -> None:
    # beyond max_token_bytes + 1 KiB the HTTP parser itself refuses the header line (a bare
    # 400 from aiohttp, outside the problem+json middleware): a client error, never a crash
    tokens, client = signed_by
    token = forged_token(
        tokens, claims(tokens, pad="x" * 2 * tokens.federation.limits.max_token_bytes)
    )
    response = await verify(client, token)
    assert 400 <= response.status < 500
    await assert_healthy(client, tokens)


async def test_a_seal_is_not_an_access_token(signed_by: tuple[Tokens, Client]) -> None:
    tokens, client = signed_by
    issued = await issue(client, tokens.client("zhuji-civil-affairs"), marriage_request())
    await problem_of(await verify(client, issued["seal"]), 401, "token.wrong_typ")
    await assert_healthy(client, tokens)


async def test_a_token_signed_with_the_nodes_seal_key_is_refused(
    signed_by: tuple[Tokens, Client],
) -> None:
    # SSO tokens and seals use different keys: the node's own key signs no access token
    tokens, client = signed_by
    node: NodeService = client.app[NODE]
    signer = node.keys.signer()
    token = jws(header(signer), claims(tokens), signer=signer)
    await problem_of(await verify(client, token), 401, "token.unknown_kid")
    await assert_healthy(client, tokens)


async def test_a_cached_token_expires_at_its_exp(
    client: Client, tokens: Tokens, clock: FixedClock
) -> None:
    token = tokens.client()
    assert (await verify(client, token)).status == 200  # verified, then served from the cache
    clock.advance(DEFAULT_LIFETIME + CLOCK_SKEW)
    assert (await verify(client, token)).status == 200
    clock.advance(1)
    await problem_of(await verify(client, token), 401, "token.expired")


# =============================================================================================
# 3. scopes and departments
# =============================================================================================


async def test_issuing_needs_the_issue_scope(client: Client, tokens: Tokens) -> None:
    token = tokens.client("zhuji-civil-affairs", scopes=["cert:read", "cert:status", "seal:verify"])
    response = await client.post("/v1/certificates", json=marriage_request(), headers=bearer(token))
    await problem_of(response, 403, "auth.scope")
    assert client.app is not None
    assert client.app[NODE].registry.count() == 0


async def test_verifying_needs_the_verify_scope(client: Client, tokens: Tokens) -> None:
    token = tokens.client("zhuji-civil-affairs", scopes=["cert:read", "cert:issue", "cert:status"])
    await problem_of(await verify(client, token), 403, "auth.scope")


async def test_fetching_needs_the_read_scope(
    client: Client, tokens: Tokens, household: str
) -> None:
    token = tokens.client("zhuji-civil-affairs", scopes=["cert:issue", "seal:verify"])
    consent = tokens.consent(GROOM["id"], types=("household_register",))
    response = await fetch(client, token, household, consent=consent)
    await problem_of(response, 403, "auth.scope")


async def test_changing_a_status_needs_the_status_scope(
    client: Client, tokens: Tokens, household: str
) -> None:
    token = tokens.client("zhuji-public-security", scopes=["cert:read", "cert:issue"])
    response = await client.post(
        f"/v1/certificates/{household}/status",
        json={"action": "suspend", "reason": "x"},
        headers=bearer(token),
    )
    await problem_of(response, 403, "auth.scope")


async def test_a_department_issues_only_its_own_types(client: Client, tokens: Tokens) -> None:
    civil = tokens.client("zhuji-civil-affairs")
    response = await client.post(
        "/v1/certificates", json=household_request(), headers=bearer(civil)
    )
    await problem_of(response, 403, "cert.type_not_issued_here")
    security = tokens.client("zhuji-public-security")
    response = await client.post(
        "/v1/certificates", json=marriage_request(), headers=bearer(security)
    )
    await problem_of(response, 403, "cert.type_not_issued_here")


@pytest.mark.parametrize(
    ("client_id", "request_"),
    [
        # both issue these types, but at their own nodes
        ("shanghai-public-security", household_request()),
        ("linquan-public-security", household_request()),
        ("anhui-human-resources", household_request()),
    ],
)
async def test_a_department_of_another_node_issues_nothing_here(
    client: Client, tokens: Tokens, client_id: str, request_: dict[str, Any]
) -> None:
    token = tokens.client(client_id)
    response = await client.post("/v1/certificates", json=request_, headers=bearer(token))
    await problem_of(response, 403, "cert.foreign_department")


async def test_only_the_owning_department_changes_a_status(
    client: Client, tokens: Tokens, household: str
) -> None:
    for client_id in ("zhuji-civil-affairs", "shanghai-public-security"):
        response = await client.post(
            f"/v1/certificates/{household}/status",
            json={"action": "revoke", "reason": "x"},
            headers=bearer(tokens.client(client_id)),
        )
        await problem_of(response, 403, "cert.not_owner")
    owner = bearer(tokens.client("zhuji-public-security"))
    response = await client.post(
        f"/v1/certificates/{household}/status",
        json={"action": "suspend", "reason": "x"},
        headers=owner,
    )
    assert response.status == 200


# =============================================================================================
# 4. a real IdP, and a node built by the default create_app
# =============================================================================================


@dataclass
class Federated:
    """An IdP and a zhuji node on loopback ports, the node's issuer URL pointing at the IdP."""

    federation: Federation
    idp: IdpService
    idp_server: TestServer
    idp_metrics: Metrics
    node: Client
    session: aiohttp.ClientSession

    @property
    def idp_client(self) -> IdpClient:
        return IdpClient(self.session, self.idp.issuer)

    async def token(self, client_id: str, scope: str | None = None) -> str:
        """An access token from ``POST /token`` (client_credentials, demo secret)."""
        entry = next(c for c in self.federation.clients if c.id == client_id)
        assert entry.demo_secret is not None
        return await self.idp_client.client_credentials(
            client_id, entry.demo_secret.reveal(), scope=scope
        )

    def claims(self) -> dict[str, Any]:
        return base_claims(self.idp.issuer, self.federation.audience)

    def jwks_fetches(self) -> float:
        labels = {"route": "/jwks", "method": "GET", "status": "200"}
        value = self.idp_metrics.registry.get_sample_value("tongban_http_requests_total", labels)
        return value or 0.0


@pytest.fixture
async def federated(
    federation: Federation, clock: FixedClock, schemas: SchemaSet
) -> AsyncIterator[Federated]:
    # national too, so the node's trust-list fetches go to a port nobody listens on
    ports = dict(zip(("idp", "zhuji", "national"), free_ports(3), strict=True))
    fed = federation.with_ports(ports)
    idp = IdpService.open(fed, clock=clock, holder_secret=federation_holder_secret(fed.keys_dir))
    assert idp.issuer == f"http://127.0.0.1:{ports['idp']}"
    metrics = Metrics("idp")
    idp_server = TestServer(
        create_idp_app(idp, metrics=metrics), host="127.0.0.1", port=ports["idp"]
    )
    await idp_server.start_server()
    node = open_node_service(fed, "zhuji", clock=clock, schemas=schemas)
    app = create_app(node)  # no authenticator: RemoteKeySet on the app's ClientSession
    client: Client = TestClient(TestServer(app, host="127.0.0.1", port=ports["zhuji"]))
    await client.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield Federated(fed, idp, idp_server, metrics, client, session)
    finally:
        await client.close()
        await idp_server.close()


def kid_of(token: str) -> str:
    return str(orjson.loads(b64url_decode(token.split(".", maxsplit=1)[0]))["kid"])


async def test_a_token_from_the_idp_issues_at_the_node(federated: Federated) -> None:
    token = await federated.token("zhuji-civil-affairs")
    issued = await issue(federated.node, token, marriage_request())
    assert (issued["type"], issued["node"]) == ("marriage", "zhuji")
    assert (issued["report"]["indication"], issued["report"]["code"]) == ("PASSED", "ok")
    # the node found the IdP's keys by discovery, over HTTP
    assert federated.jwks_fetches() >= 1


async def test_a_narrowed_token_from_the_idp_carries_only_its_scopes(
    federated: Federated,
) -> None:
    token = await federated.token("zhuji-civil-affairs", scope="seal:verify")
    assert (await verify(federated.node, token)).status == 200
    response = await federated.node.post(
        "/v1/certificates", json=marriage_request(), headers=bearer(token)
    )
    await problem_of(response, 403, "auth.scope")


async def test_the_demo_consent_flow_through_the_idp(federated: Federated) -> None:
    # the public-security bureau issues the groom's household register
    security = await federated.token("zhuji-public-security")
    household = (await issue(federated.node, security, household_request()))["certificate_id"]
    # the groom logs in once and grants the civil-affairs bureau consent for his marriage
    citizen = next(c for c in federated.federation.citizens if c.id == GROOM["id"])
    assert citizen.demo_password is not None
    holder = await federated.idp_client.holder_login(GROOM["id"], citizen.demo_password.reveal())
    consent = await federated.idp_client.grant_consent(
        holder,
        department="zhuji-civil-affairs",
        matter=MARRIAGE,
        types=["resident_id", "household_register"],
        until=int(NOW) + 3600,
    )
    civil = await federated.token("zhuji-civil-affairs")
    await problem_of(await fetch(federated.node, civil, household), 403, "consent.required")
    response = await fetch(federated.node, civil, household, consent=consent)
    assert response.status == 200, await response.read()
    assert (await response.json())["report"]["indication"] == "PASSED"
    # the grant binds the department: the bureau that issued it cannot use it
    response = await fetch(federated.node, security, household, consent=consent)
    await problem_of(response, 403, "consent.wrong_department")


async def test_a_key_rotation_rejects_no_request(federated: Federated, clock: FixedClock) -> None:
    node = federated.node
    old = await federated.token("zhuji-civil-affairs")
    seal = (await issue(node, old, marriage_request()))["seal"]
    upcoming = federated.idp.next_key().kid
    assert kid_of(old) == federated.idp.keys.active().kid != upcoming
    rejected: list[tuple[int, int]] = []

    async def request(step: int, token: str) -> None:
        response = await verify(node, token, [seal])
        if response.status != 200:
            rejected.append((step, response.status))
        elif step % 7 == 0:
            (report,) = (await response.json())["reports"]
            assert report["indication"] == "PASSED"

    # 1. a steady stream with the token signed by the active key
    for step in range(80):
        await request(step, old)
    # 2. the IdP rotates (long after the node started: any earlier refresh's cooldown is over);
    #    the new active key is the one the node has held as `next` since its first fetch
    clock.advance(60)
    fetched_before = federated.jwks_fetches()
    federated.idp.rotate()
    fresh = await federated.token("zhuji-civil-affairs")
    assert kid_of(fresh) == upcoming
    # 3. the first tokens signed by it arrive all at once, interleaved with old ones
    burst = [fresh if n % 2 else old for n in range(40)]
    await asyncio.gather(*(request(80 + n, token) for n, token in enumerate(burst)))
    # 4. and the stream goes on with every token in circulation, new ones fetched meanwhile
    in_use = [old, fresh, await federated.token("zhuji-public-security")]
    for step in range(120, 200):
        if step == 160:
            in_use.append(await federated.token("zhuji-civil-affairs"))
        await request(step, in_use[step % len(in_use)])
    assert rejected == []
    # the first token signed by the former `next` key made the node refetch the JWKS: once,
    # however many requests carried such tokens at the same time
    assert federated.jwks_fetches() - fetched_before == 1


async def test_two_rotations_in_quick_succession_reject_no_request(
    federated: Federated, clock: FixedClock
) -> None:
    # The unknown-kid cooldown must not delay the refetch a rotation needs: a token that
    # verifies against a key held as `next` proves the IdP rotated.
    node = federated.node
    assert (await verify(node, await federated.token("zhuji-civil-affairs"))).status == 200
    for _ in range(2):
        clock.advance(2)  # seconds apart, well inside the unknown-kid cooldown
        federated.idp.rotate()
        fresh = await federated.token("zhuji-civil-affairs")
        assert (await verify(node, fresh)).status == 200


async def test_random_kids_do_not_hammer_the_idp(federated: Federated) -> None:
    node = federated.node
    genuine = await federated.token("zhuji-civil-affairs")
    assert (await verify(node, genuine)).status == 200  # the key set is loaded
    before = federated.jwks_fetches()
    for n in range(25):
        stranger = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes([n + 1]) * 32))
        token = jws(header(stranger), federated.claims(), signer=stranger)
        await problem_of(await verify(node, token), 401, "token.unknown_kid")
    # at most one refresh per cooldown, however many unknown kids arrive
    assert federated.jwks_fetches() - before <= 1
    assert (await node.get("/healthz")).status == 200
    assert (await verify(node, genuine)).status == 200


async def test_the_last_good_key_set_serves_while_the_idp_is_down(
    federated: Federated,
) -> None:
    node = federated.node
    first = await federated.token("zhuji-civil-affairs")
    second = await federated.token("zhuji-public-security")  # issued, not yet presented
    assert (await verify(node, first)).status == 200  # the node has loaded the IdP's keys
    await federated.idp_server.close()
    with pytest.raises(aiohttp.ClientConnectionError):
        await federated.idp_client.client_credentials("zhuji-civil-affairs", "x")
    # a token the node has never seen validates against the keys it still holds
    assert (await verify(node, second)).status == 200
    # so does one the IdP signed while unreachable from the node (same key, never cached)
    third = federated.idp.client_credentials(
        "zhuji-civil-affairs", "zhuji-civil-affairs-demo-secret", None
    ).access_token
    issued = await issue(node, third, marriage_request())
    assert issued["report"]["indication"] == "PASSED"
    # an unknown kid cannot be resolved now: refused, never a 5xx
    token = jws(header(STRANGER), federated.claims(), signer=STRANGER)
    await problem_of(await verify(node, token), 401, "token.unknown_kid")
    assert (await node.get("/healthz")).status == 200
    assert (await verify(node, first)).status == 200
