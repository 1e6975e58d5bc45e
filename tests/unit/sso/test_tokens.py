"""Access tokens: issuing, the strict validator (one test per rejection), the cache."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway._internal.wire import b64url_encode
from gateway.clock import FixedClock, to_rfc3339
from gateway.crypto.jwks import KeyState, StaticKeyResolver, VerificationKey, public_jwk
from gateway.crypto.keystore import KeyStore
from gateway.crypto.seals import PrivateKeySigner, Signer, seal, sign_compact
from gateway.errors import ConfigError, InputError, TokenError
from gateway.ids import DepartmentId, KeyId, NodeId, RegionCode
from gateway.sso.auth import Principal, Scope
from gateway.sso.tokens import (
    ACCESS_TOKEN_TYP,
    CLOCK_SKEW,
    DEFAULT_LIFETIME,
    MAX_TOKEN_BYTES,
    AccessClaims,
    CachedTokenValidator,
    TokenCache,
    TokenValidator,
    issue_access_token,
)

NOW = 1_795_507_200.0  # 2026-11-24T08:00:00Z
ISSUER = "http://idp.test"
AUDIENCE = "tongban"
IDP = NodeId("idp")

ED = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
EC = PrivateKeySigner(ec.derive_private_key(0x70CE_4E, ec.SECP256R1()))
OTHER = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))

REMOVE = object()


def vkey(signer: PrivateKeySigner, **changes: Any) -> VerificationKey:
    fields: dict[str, Any] = {
        "node": IDP,
        "kid": signer.kid,
        "alg": signer.alg,
        "public_key": signer.public_key,
        "state": KeyState.ACTIVE,
        "not_before": NOW - 86_400,
        "not_after": NOW + 86_400,
        "revoked_at": None,
        "verify_allowed": True,
    }
    fields.update(changes)
    return VerificationKey(**fields)


KEYS = StaticKeyResolver({ED.kid: vkey(ED), EC.kid: vkey(EC)})


def validator(keys: Any = KEYS, **kwargs: Any) -> TokenValidator:
    return TokenValidator(keys, issuer=ISSUER, audience=AUDIENCE, **kwargs)


def issue(signer: Signer = ED, **changes: Any) -> str:
    args: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "subject": "zhuji-civil-affairs",
        "client_id": "zhuji-civil-affairs",
        "scopes": ("cert:read", "seal:verify"),
        "department": DepartmentId("zhuji-civil-affairs"),
        "region": RegionCode("330681"),
        "now": NOW,
        "jti": "t-1",
    }
    args.update(changes)
    return issue_access_token(signer, **args)


def claims(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "zhuji-civil-affairs",
        "aud": AUDIENCE,
        "exp": int(NOW) + 300,
        "iat": int(NOW),
        "jti": "t-1",
        "client_id": "zhuji-civil-affairs",
        "scope": "cert:read",
    }
    for name, value in changes.items():
        if value is REMOVE:
            del body[name]
        else:
            body[name] = value
    return body


def signed(
    payload: dict[str, Any] | bytes, signer: Signer = ED, typ: str = ACCESS_TOKEN_TYP
) -> str:
    """A token with the given claims, properly signed at NOW."""
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return sign_compact(signer, raw, typ=typ, signed_at=NOW)


def crafted(
    header: dict[str, Any],
    payload: bytes | None = None,
    *,
    signature: bytes | None = None,
    signer: Signer = ED,
) -> str:
    """A JWS assembled by hand: every header member under the test's control."""
    body = orjson.dumps(claims()) if payload is None else payload
    signing_input = f"{b64url_encode(orjson.dumps(header))}.{b64url_encode(body)}"
    if signature is None:
        signature = signer.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"


def good_header(signer: Signer = ED, **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "alg": signer.alg,
        "kid": signer.kid,
        "typ": ACCESS_TOKEN_TYP,
        "sigT": to_rfc3339(NOW),
    }
    out.update(changes)
    return out


def rejects(token: Any, code: str, *, now: float = NOW, keys: Any = KEYS) -> TokenError:
    with pytest.raises(TokenError) as info:
        validator(keys).validate(token, now=now)
    assert info.value.code == code
    assert info.value.status == 401
    return info.value


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("signer", [ED, EC], ids=["EdDSA", "ES256"])
def test_round_trip(signer: PrivateKeySigner) -> None:
    result = validator().validate(issue(signer), now=NOW)
    assert result == AccessClaims(
        iss=ISSUER,
        sub="zhuji-civil-affairs",
        aud=(AUDIENCE,),
        exp=int(NOW) + DEFAULT_LIFETIME,
        iat=int(NOW),
        jti="t-1",
        client_id="zhuji-civil-affairs",
        scope=("cert:read", "seal:verify"),
        department=DepartmentId("zhuji-civil-affairs"),
        region=RegionCode("330681"),
        holder=False,
    )


@pytest.mark.parametrize("name", ["EdDSA", "Ed25519"])
def test_an_ed25519_token_validates_under_both_names(name: str) -> None:
    renamed = PrivateKeySigner(
        Ed25519PrivateKey.from_private_bytes(bytes(range(32))),
        ed25519_name="Ed25519" if name == "Ed25519" else "EdDSA",
    )
    token = issue(renamed)
    assert jwt.get_unverified_header(token)["alg"] == name
    assert validator().validate(token, now=NOW).sub == "zhuji-civil-affairs"


@pytest.mark.parametrize("name", ["EdDSA", "Ed25519", "SM2"])
def test_neither_ed25519_name_nor_sm2_validates_on_a_p256_key(name: str) -> None:
    rejects(crafted(good_header(EC, alg=name), signer=EC), "token.alg_mismatch")


def test_header_is_at_jwt() -> None:
    header = jwt.get_unverified_header(issue())
    assert (header["typ"], header["alg"], header["kid"]) == (ACCESS_TOKEN_TYP, "EdDSA", ED.kid)


def test_holder_token_round_trip() -> None:
    token = issue(subject="h-digest", holder=True, department=None, region=None, scopes=())
    result = validator().validate(token, now=NOW)
    assert (result.holder, result.department, result.region, result.scope) == (
        True,
        None,
        None,
        (),
    )


def test_to_principal() -> None:
    principal = validator().validate(issue(), now=NOW).to_principal()
    assert principal == Principal(
        subject="zhuji-civil-affairs",
        client_id="zhuji-civil-affairs",
        scopes=frozenset({"cert:read", "seal:verify"}),
        department=DepartmentId("zhuji-civil-affairs"),
    )
    principal.require(Scope.CERT_READ)


def test_audience_list_containing_ours() -> None:
    token = signed(claims(aud=["other", AUDIENCE]))
    assert validator().validate(token, now=NOW).aud == ("other", AUDIENCE)


def test_unknown_scopes_are_dropped() -> None:
    token = signed(claims(scope="cert:read admin:all cert:read keys:admin"))
    assert validator().validate(token, now=NOW).scope == ("cert:read", "keys:admin")


def test_issue_refuses_unknown_scope() -> None:
    with pytest.raises(InputError) as info:
        issue(scopes=("root",))
    assert info.value.code == "token.bad_request"


def test_issue_refuses_non_positive_lifetime() -> None:
    with pytest.raises(InputError) as info:
        issue(lifetime=0)
    assert info.value.code == "token.bad_request"


def test_key_store_signer_round_trip(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, IDP, clock=FixedClock(NOW), default_alg="ES256")
    token = issue(store.signer())
    assert validator(store).validate(token, now=NOW + 10).jti == "t-1"


def test_pyjwt_interop() -> None:
    """A standard JOSE client verifies our tokens with the published key.

    pyjwt reads the system clock, so this one token is issued at the real time.
    """
    for signer in (ED, EC):
        jwk = json.dumps(public_jwk(vkey(signer)))
        key = jwt.PyJWK.from_json(jwk)
        decoded = jwt.decode(
            issue(signer, now=time.time()),
            key,
            algorithms=[signer.alg],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
            leeway=0,
        )
        assert decoded["client_id"] == "zhuji-civil-affairs"


# --- size and JWS-level attacks (verify_compact, re-coded token.*) --------------------------


def test_oversized() -> None:
    token = signed(claims(pad="x" * MAX_TOKEN_BYTES))
    rejects(token, "token.too_large")


def test_largest_size_is_a_setting() -> None:
    token = signed(claims(pad="x" * MAX_TOKEN_BYTES))
    assert validator(max_bytes=len(token)).validate(token, now=NOW).jti == "t-1"


def test_alg_none() -> None:
    header = b64url_encode(orjson.dumps({"alg": "none", "typ": ACCESS_TOKEN_TYP}))
    body = b64url_encode(orjson.dumps(claims()))
    error = rejects(f"{header}.{body}.", "token.malformed")
    assert error.step == "format"
    rejects(crafted(good_header(alg="none"), signature=b"\0" * 64), "token.alg_not_allowed")


def _hs256(secret: bytes, signer: PrivateKeySigner) -> str:
    header = b64url_encode(orjson.dumps(good_header(signer, alg="HS256")))
    signing_input = f"{header}.{b64url_encode(orjson.dumps(claims()))}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(mac)}"


@pytest.mark.parametrize("signer", [ED, EC], ids=["EdDSA", "ES256"])
@pytest.mark.parametrize("form", ["raw", "der", "pem", "jwk"])
def test_hs256_keyed_with_the_public_key(signer: PrivateKeySigner, form: str) -> None:
    public = signer.public_key
    secret = {
        "raw": lambda: public.public_bytes(
            Encoding.Raw if signer.alg == "EdDSA" else Encoding.X962,
            PublicFormat.Raw if signer.alg == "EdDSA" else PublicFormat.UncompressedPoint,
        ),
        "der": lambda: public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        "pem": lambda: public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
        "jwk": lambda: orjson.dumps(public_jwk(vkey(signer))),
    }[form]()
    rejects(_hs256(secret, signer), "token.alg_not_allowed")


def test_unknown_kid() -> None:
    error = rejects(issue(OTHER), "token.unknown_kid")
    assert error.step == "key"


@pytest.mark.parametrize("kid", ["../../keys/idp/a.pem", "/etc/passwd", "a/b", "..", "kid%00"])
def test_path_like_kid(kid: str) -> None:
    rejects(crafted(good_header(kid=kid)), "token.bad_kid")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("jwk", public_jwk(vkey(OTHER))),
    ],
)
def test_key_carrying_headers(name: str, value: Any) -> None:
    rejects(crafted(good_header(**{name: value})), "token.forbidden_header")


def test_embedded_jwk_signed_by_its_own_key() -> None:
    header = good_header(OTHER, jwk=public_jwk(vkey(OTHER)))
    rejects(crafted(header, signer=OTHER), "token.forbidden_header")


def test_ecdsa_r_s_zero() -> None:
    error = rejects(
        crafted(good_header(EC), signature=b"\0" * 64, signer=EC), "token.bad_signature"
    )
    assert error.step == "signature"


def test_tampered_payload() -> None:
    token = issue()
    header, _, signature = token.split(".")
    forged = b64url_encode(orjson.dumps(claims(scope="keys:admin")))
    rejects(f"{header}.{forged}.{signature}", "token.bad_signature")


def test_padded_signature_segment() -> None:
    rejects(issue() + "==", "token.bad_encoding")


def test_duplicate_claims() -> None:
    body = orjson.dumps(claims())[:-1] + b',"sub":"admin"}'
    rejects(signed(body), "token.duplicate_member")


def test_deeply_nested_payload() -> None:
    nested: Any = "x"
    for _ in range(40):
        nested = [nested]
    rejects(signed(claims(extra=nested)), "token.bad_payload")


@pytest.mark.parametrize("typ", ["tongban-seal+jws", "consent+jwt", "JWT", "AT+JWT"])
def test_wrong_typ(typ: str) -> None:
    rejects(signed(claims(), typ=typ), "token.wrong_typ")


def test_seal_presented_as_an_access_token() -> None:
    document = orjson.dumps({"iss": "idp", "iat": int(NOW), **claims()})
    rejects(seal(ED, document, signed_at=NOW), "token.wrong_typ")


def test_next_key_does_not_sign_yet() -> None:
    keys = StaticKeyResolver({ED.kid: vkey(ED, state=KeyState.NEXT)})
    rejects(issue(), "token.key_not_active", keys=keys)


def test_key_not_allowed_to_verify() -> None:
    keys = StaticKeyResolver({ED.kid: vkey(ED, verify_allowed=False)})
    rejects(issue(), "token.key_use", keys=keys)


def test_seal_error_is_chained() -> None:
    error = rejects(issue(OTHER), "token.unknown_kid")
    assert error.__cause__ is not None
    assert getattr(error.__cause__, "code", None) == "seal.unknown_kid"


# --- claims ---------------------------------------------------------------------------------


def test_wrong_issuer() -> None:
    error = rejects(signed(claims(iss="http://evil.test")), "token.wrong_issuer")
    assert error.step == "claims"


def test_wrong_audience() -> None:
    rejects(signed(claims(aud="seal-verifier")), "token.wrong_audience")
    rejects(signed(claims(aud=["a", "b"])), "token.wrong_audience")


@pytest.mark.parametrize("aud", [7, [], [AUDIENCE, 7], {"aud": AUDIENCE}, None])
def test_bad_audience(aud: Any) -> None:
    rejects(signed(claims(aud=aud)), "token.bad_claim")


@pytest.mark.parametrize("name", ["iss", "aud", "exp", "iat", "sub", "client_id", "jti"])
def test_missing_claim(name: str) -> None:
    rejects(signed(claims(**{name: REMOVE})), "token.missing_claim")


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", ["1795507500", True, 1795507500.5, None])
def test_time_claims_are_integers(name: str, value: Any) -> None:
    rejects(signed(claims(**{name: value})), "token.bad_claim")


@pytest.mark.parametrize("name", ["sub", "client_id", "jti", "department", "region"])
@pytest.mark.parametrize("value", ["", 7, ["x"]])
def test_string_claims(name: str, value: Any) -> None:
    rejects(signed(claims(**{name: value})), "token.bad_claim")


@pytest.mark.parametrize("scope", [["cert:read"], 7, None])
def test_scope_must_be_a_string(scope: Any) -> None:
    rejects(signed(claims(scope=scope)), "token.bad_claim")


def test_region_must_be_a_region_code() -> None:
    rejects(signed(claims(region="../330681")), "token.bad_claim")


def test_holder_must_be_a_boolean() -> None:
    rejects(signed(claims(holder="true")), "token.bad_claim")


def test_exp_before_iat() -> None:
    rejects(signed(claims(exp=int(NOW) - 1)), "token.bad_claim")


def test_expired() -> None:
    token = issue()
    end = NOW + DEFAULT_LIFETIME + CLOCK_SKEW
    assert validator().validate(token, now=end).jti == "t-1"
    rejects(token, "token.expired", now=end + 1)


def test_skew_is_configurable() -> None:
    token = issue()
    with pytest.raises(TokenError) as info:
        validator(skew=0).validate(token, now=NOW + DEFAULT_LIFETIME + 1)
    assert info.value.code == "token.expired"


@pytest.mark.parametrize("name", ["iat", "nbf"])
def test_not_yet_valid(name: str) -> None:
    future = int(NOW) + CLOCK_SKEW + 1
    changes: dict[str, Any] = {name: future, "exp": future + 300}
    rejects(signed(claims(**changes)), "token.not_yet_valid")
    ok = {name: int(NOW) + CLOCK_SKEW, "exp": future + 300}
    assert validator().validate(signed(claims(**ok)), now=NOW).jti == "t-1"


def test_signed_in_the_future() -> None:
    rejects(issue(now=NOW + CLOCK_SKEW + 1), "token.signed_in_future")


# --- the cache ------------------------------------------------------------------------------


class CountingResolver:
    def __init__(self, inner: StaticKeyResolver) -> None:
        self.inner = inner
        self.calls = 0

    def key_for(self, kid: KeyId) -> VerificationKey:
        self.calls += 1
        return self.inner.key_for(kid)


def cached(max_entries: int = 8) -> tuple[CachedTokenValidator, CountingResolver, TokenCache]:
    keys = CountingResolver(KEYS)
    cache = TokenCache(max_entries)
    return CachedTokenValidator(validator(keys), cache), keys, cache


def test_cache_hit() -> None:
    tokens, keys, cache = cached()
    token = issue()
    first = tokens.validate(token, now=NOW)
    assert tokens.validate(token, now=NOW + 10) == first
    assert (keys.calls, len(cache)) == (1, 1)


def test_cache_does_not_serve_an_expired_entry() -> None:
    tokens, keys, cache = cached()
    token = issue()
    exp = NOW + DEFAULT_LIFETIME
    tokens.validate(token, now=NOW)
    assert tokens.validate(token, now=exp).jti == "t-1"
    assert keys.calls == 1
    # past exp the entry is dropped and the token is validated afresh (still within skew) ...
    tokens.validate(token, now=exp + 1)
    assert keys.calls == 2
    # ... and past exp + skew it is refused
    with pytest.raises(TokenError) as info:
        tokens.validate(token, now=exp + CLOCK_SKEW + 1)
    assert info.value.code == "token.expired"
    assert len(cache) == 0


def test_cache_failures_are_not_cached() -> None:
    tokens, keys, cache = cached()
    token = signed(claims(iss="http://evil.test"))
    for _ in range(2):
        with pytest.raises(TokenError) as info:
            tokens.validate(token, now=NOW)
        assert info.value.code == "token.wrong_issuer"
    assert (keys.calls, len(cache)) == (2, 0)


def test_cache_distinguishes_tampered_tokens() -> None:
    tokens, _, _ = cached()
    token = issue()
    tokens.validate(token, now=NOW)
    header, _, signature = token.split(".")
    forged = b64url_encode(orjson.dumps(claims(scope="keys:admin")))
    with pytest.raises(TokenError) as info:
        tokens.validate(f"{header}.{forged}.{signature}", now=NOW)
    assert info.value.code == "token.bad_signature"


def test_cache_is_bounded_lru() -> None:
    tokens, keys, cache = cached(max_entries=2)
    a, b, c = (issue(jti=f"t-{n}") for n in range(3))
    tokens.validate(a, now=NOW)
    tokens.validate(b, now=NOW)
    tokens.validate(a, now=NOW)  # a is now the most recently used
    tokens.validate(c, now=NOW)  # evicts b
    assert (len(cache), keys.calls) == (2, 3)
    tokens.validate(a, now=NOW)
    assert keys.calls == 3
    tokens.validate(b, now=NOW)
    assert keys.calls == 4


def test_cache_oversized_token_refused_before_hashing() -> None:
    tokens, keys, cache = cached()
    with pytest.raises(TokenError) as info:
        tokens.validate("a" * (MAX_TOKEN_BYTES + 1), now=NOW)
    assert (info.value.code, keys.calls, len(cache)) == ("token.too_large", 0, 0)


def test_cache_clear() -> None:
    tokens, keys, cache = cached()
    token = issue()
    tokens.validate(token, now=NOW)
    cache.clear()
    tokens.validate(token, now=NOW)
    assert keys.calls == 2


def test_cache_needs_an_entry() -> None:
    with pytest.raises(ConfigError) as info:
        TokenCache(0)
    assert info.value.code == "config.invalid"
