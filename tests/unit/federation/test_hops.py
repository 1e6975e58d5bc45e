"""Node-signed hop requests: one test per refusal, replays, staleness, the nonce cache."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.crypto.jwks import KeyState, StaticKeyResolver, VerificationKey
from gateway.crypto.seals import SEAL_TYP, PrivateKeySigner, sign_compact, verify_compact
from gateway.errors import AuthError, ConfigError, InputError
from gateway.federation.hops import (
    HOP_TYP,
    HopVerifier,
    NonceCache,
    body_digest,
    new_nonce,
    sign_hop,
)
from gateway.ids import NodeId

NOW = 1_795_507_200.0  # 2026-11-24T08:00:00Z
ZHUJI = NodeId("zhuji")
SHAOXING = NodeId("shaoxing")
PATH = "/v1/hops/lookup?type=marriage"
BODY = b'{"certificate":"1.2.156.3005.2.x"}'
NONCE = "AAECAwQFBgcICQoLDA0ODw"  # 16 bytes, base64url

# Fixed test keys, generated here: zhuji signs with Ed25519, linquan with P-256.
ZHUJI_KEY = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
LINQUAN_KEY = PrivateKeySigner(ec.derive_private_key(0x11_9C0A, ec.SECP256R1()))
UNKNOWN_KEY = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))


def vkey(signer: PrivateKeySigner, node: str, **changes: Any) -> VerificationKey:
    fields: dict[str, Any] = {
        "node": NodeId(node),
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


KEYS = StaticKeyResolver(
    {ZHUJI_KEY.kid: vkey(ZHUJI_KEY, "zhuji"), LINQUAN_KEY.kid: vkey(LINQUAN_KEY, "linquan")}
)


@pytest.fixture
def verifier() -> HopVerifier:
    return HopVerifier(KEYS, audience=SHAOXING, nonces=NonceCache(max_entries=1000, ttl=60))


def hop(**changes: Any) -> str:
    args: dict[str, Any] = {
        "node": ZHUJI,
        "audience": SHAOXING,
        "method": "POST",
        "path": PATH,
        "body": BODY,
        "now": NOW,
        "nonce": NONCE,
    }
    signer = changes.pop("signer", ZHUJI_KEY)
    args.update(changes)
    return sign_hop(signer, **args)


def forged(
    claims: dict[str, Any], *, signer: PrivateKeySigner = ZHUJI_KEY, typ: str = HOP_TYP
) -> str:
    """A proof signed by a real key over arbitrary claims."""
    return sign_compact(signer, orjson.dumps(claims), typ=typ, signed_at=NOW)


def good_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "zhuji",
        "aud": "shaoxing",
        "htm": "POST",
        "htu": PATH,
        "digest": body_digest(BODY),
        "iat": int(NOW),
        "nonce": NONCE,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not REMOVE}


REMOVE = object()


def verify(verifier: HopVerifier, token: str, **changes: Any) -> NodeId:
    args: dict[str, Any] = {"method": "POST", "path": PATH, "body": BODY, "now": NOW}
    args.update(changes)
    return verifier.verify(token, **args)


def refused(verifier: HopVerifier, token: str, code: str, **changes: Any) -> AuthError:
    with pytest.raises(AuthError) as info:
        verify(verifier, token, **changes)
    assert info.value.code == code
    assert info.value.status == 401
    return info.value


# --- signing ----------------------------------------------------------------------------------


def test_a_hop_proof_is_a_compact_jws_over_the_request() -> None:
    token = hop()
    verified = verify_compact(token, KEYS, typ=HOP_TYP, now=NOW)
    assert verified.header["typ"] == "hop+jws"
    assert dict(verified.payload) == {
        "iss": "zhuji",
        "aud": "shaoxing",
        "htm": "POST",
        "htu": PATH,
        "digest": b64url_encode(hashlib.sha256(BODY).digest()),
        "iat": int(NOW),
        "nonce": NONCE,
    }


def test_default_nonces_carry_128_random_bits() -> None:
    nonces = {new_nonce() for _ in range(64)}
    assert len(nonces) == 64
    assert all(len(b64url_decode(n)) == 16 for n in nonces)
    first = verify_compact(hop(nonce=None), KEYS, typ=HOP_TYP, now=NOW).payload["nonce"]
    second = verify_compact(hop(nonce=None), KEYS, typ=HOP_TYP, now=NOW).payload["nonce"]
    assert first != second


@pytest.mark.parametrize(
    "nonce", ["", "short", "A" * 21, "A" * 129, "A" * 21 + "=", "A" * 21 + "+"]
)
def test_a_weak_or_malformed_nonce_is_refused_when_signing(nonce: str) -> None:
    with pytest.raises(InputError) as info:
        hop(nonce=nonce)
    assert info.value.code == "hop.bad_nonce"


def test_the_path_must_be_origin_form() -> None:
    with pytest.raises(InputError) as info:
        hop(path="http://shaoxing/v1/hops/lookup")
    assert info.value.code == "hop.bad_path"


# --- verification: the good path -----------------------------------------------------------------


@pytest.mark.parametrize(("signer", "node"), [(ZHUJI_KEY, "zhuji"), (LINQUAN_KEY, "linquan")])
def test_a_good_proof_names_the_calling_node(
    verifier: HopVerifier, signer: PrivateKeySigner, node: str
) -> None:
    assert verify(verifier, hop(signer=signer, node=NodeId(node))) == node


def test_the_method_is_compared_case_insensitively(verifier: HopVerifier) -> None:
    assert verify(verifier, hop(method="post"), method="POST") == "zhuji"


def test_an_empty_body_has_a_digest_too(verifier: HopVerifier) -> None:
    assert verify(verifier, hop(method="GET", body=b""), method="GET", body=b"") == "zhuji"


@pytest.mark.parametrize("offset", [-30, 30])
def test_proofs_up_to_max_age_either_way_are_fresh(verifier: HopVerifier, offset: int) -> None:
    assert verify(verifier, hop(), now=NOW + offset) == "zhuji"


# --- hop.invalid ------------------------------------------------------------------------------


def other_signature(token: str) -> str:
    header, payload, _ = token.split(".")
    return f"{header}.{payload}.{b64url_encode(bytes(64))}"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "seal.malformed"),
        ("not.a.jws", "seal.bad_encoding"),
        (other_signature(hop()), "seal.bad_signature"),
        (hop(signer=UNKNOWN_KEY), "seal.unknown_kid"),
        (forged(good_claims(), typ=SEAL_TYP), "seal.wrong_typ"),  # a seal is not a hop proof
    ],
)
def test_a_proof_that_does_not_verify_is_invalid(
    verifier: HopVerifier, token: str, reason: str
) -> None:
    error = refused(verifier, token, "hop.invalid")
    assert error.log_detail == reason


def test_a_revoked_key_makes_the_proof_invalid() -> None:
    keys = StaticKeyResolver(
        {ZHUJI_KEY.kid: vkey(ZHUJI_KEY, "zhuji", state=KeyState.REVOKED, revoked_at=NOW - 60)}
    )
    verifier = HopVerifier(keys, audience=SHAOXING, nonces=NonceCache(ttl=60))
    error = refused(verifier, hop(), "hop.invalid")
    assert error.log_detail == "seal.key_revoked"


def test_the_issuer_must_be_the_keys_node(verifier: HopVerifier) -> None:
    # linquan's key, claiming to be zhuji
    error = refused(verifier, hop(signer=LINQUAN_KEY), "hop.invalid")
    assert error.log_detail == "iss"


@pytest.mark.parametrize(
    ("changes", "claim"),
    [
        ({"iss": REMOVE}, "iss"),
        ({"iat": REMOVE}, "iat"),
        ({"iat": str(int(NOW))}, "iat"),
        ({"iat": True}, "iat"),
        ({"iat": NOW + 0.5}, "iat"),
        ({"iat": int(NOW) - 10}, "iat"),  # does not match the signing time
        ({"nonce": REMOVE}, "nonce"),
        ({"nonce": 12345}, "nonce"),
        ({"nonce": "short"}, "nonce"),
        ({"aud": REMOVE}, "aud"),
        ({"htm": ["POST"]}, "htm"),
        ({"htu": None}, "htu"),
        ({"digest": 0}, "digest"),
    ],
)
def test_a_missing_or_mistyped_claim_is_invalid(
    verifier: HopVerifier, changes: dict[str, Any], claim: str
) -> None:
    error = refused(verifier, forged(good_claims(**changes)), "hop.invalid")
    assert error.log_detail == claim


# --- hop.mismatch -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "claim"),
    [
        ({"method": "PUT"}, "htm"),
        ({"method": "PO ST"}, "htm"),
        ({"path": "/v1/hops/lookup?type=divorce"}, "htu"),
        ({"path": "/v1/hops/lookup"}, "htu"),
        ({"body": BODY + b" "}, "digest"),
        ({"body": BODY.replace(b"x", b"y")}, "digest"),
    ],
)
def test_a_proof_for_another_request_is_a_mismatch(
    verifier: HopVerifier, changes: dict[str, Any], claim: str
) -> None:
    error = refused(verifier, hop(), "hop.mismatch", **changes)
    assert error.log_detail == claim


def test_a_proof_made_for_another_node_is_a_mismatch() -> None:
    zhejiang = HopVerifier(KEYS, audience=NodeId("zhejiang"), nonces=NonceCache(ttl=60))
    error = refused(zhejiang, hop(), "hop.mismatch")
    assert error.log_detail == "aud"


# --- hop.stale --------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [-31, 31, -3600, 3600])
def test_a_proof_older_or_newer_than_max_age_is_stale(verifier: HopVerifier, offset: int) -> None:
    refused(verifier, hop(), "hop.stale", now=NOW + offset)


def test_max_age_is_the_verifiers_choice() -> None:
    strict = HopVerifier(KEYS, audience=SHAOXING, max_age=5, nonces=NonceCache(ttl=5))
    refused(strict, hop(), "hop.stale", now=NOW + 6)
    assert verify(strict, hop(), now=NOW + 5) == "zhuji"


# --- hop.replay -------------------------------------------------------------------------------


def test_a_replay_within_the_window_is_refused(verifier: HopVerifier) -> None:
    token = hop()
    assert verify(verifier, token) == "zhuji"
    refused(verifier, token, "hop.replay")
    refused(verifier, token, "hop.replay", now=NOW + 30)


def test_a_new_proof_reusing_a_nonce_is_a_replay(verifier: HopVerifier) -> None:
    verify(verifier, hop())
    other = hop(method="GET", path="/v1/other", body=b"", now=NOW + 1)
    refused(verifier, other, "hop.replay", method="GET", path="/v1/other", body=b"", now=NOW + 1)


def test_the_same_nonce_after_the_window_is_stale_anyway(verifier: HopVerifier) -> None:
    token = hop()
    verify(verifier, token)
    refused(verifier, token, "hop.stale", now=NOW + 31)
    refused(verifier, token, "hop.stale", now=NOW + 3600)


def test_nonces_are_kept_per_calling_node(verifier: HopVerifier) -> None:
    verify(verifier, hop())
    assert verify(verifier, hop(signer=LINQUAN_KEY, node=NodeId("linquan"))) == "linquan"


def test_a_refused_proof_does_not_burn_its_nonce(verifier: HopVerifier) -> None:
    refused(verifier, hop(), "hop.mismatch", body=b"tampered")
    assert verify(verifier, hop()) == "zhuji"


# --- the nonce cache --------------------------------------------------------------------------


def test_the_cache_forgets_a_nonce_after_its_ttl() -> None:
    cache = NonceCache(max_entries=10, ttl=60)
    cache.remember("n", issued_at=NOW, now=NOW)
    with pytest.raises(AuthError) as info:
        cache.remember("n", issued_at=NOW, now=NOW + 60)
    assert info.value.code == "hop.replay"
    cache.remember("other", issued_at=NOW + 61, now=NOW + 61)
    assert len(cache) == 1  # "n" expired and is gone
    cache.remember("n", issued_at=NOW + 61, now=NOW + 61)


def test_the_ttl_runs_from_issue_not_from_arrival() -> None:
    cache = NonceCache(max_entries=10, ttl=60)
    cache.remember("n", issued_at=NOW + 30, now=NOW)  # issued slightly in our future
    with pytest.raises(AuthError):
        cache.remember("n", issued_at=NOW + 30, now=NOW + 89)


def test_a_full_cache_fails_closed_for_what_it_dropped() -> None:
    cache = NonceCache(max_entries=3, ttl=60)
    for i in range(3):
        cache.remember(f"n{i}", issued_at=NOW + i, now=NOW + 3)
    cache.remember("n3", issued_at=NOW + 3, now=NOW + 3)  # drops n0, the soonest to expire
    assert len(cache) == 3
    with pytest.raises(AuthError) as info:
        cache.remember("n0", issued_at=NOW, now=NOW + 4)  # not provably new: refused
    assert info.value.code == "hop.replay"
    with pytest.raises(AuthError) as info:
        cache.remember("fresh", issued_at=NOW - 1, now=NOW + 4)  # older than what was dropped
    assert info.value.code == "hop.replay"
    cache.remember("n4", issued_at=NOW + 4, now=NOW + 4)  # newer proofs still pass
    assert len(cache) == 3


def test_a_cache_too_small_for_the_burst_refuses_rather_than_forgets() -> None:
    cache = NonceCache(max_entries=1, ttl=60)
    cache.remember("a", issued_at=NOW + 5, now=NOW)
    with pytest.raises(AuthError) as info:
        cache.remember("b", issued_at=NOW, now=NOW)  # would need to drop a newer entry
    assert info.value.code == "hop.replay"
    with pytest.raises(AuthError):
        cache.remember("a", issued_at=NOW + 5, now=NOW)


def test_caches_share_nothing() -> None:
    first, second = NonceCache(ttl=60), NonceCache(ttl=60)
    first.remember("n", issued_at=NOW, now=NOW)
    second.remember("n", issued_at=NOW, now=NOW)


@pytest.mark.parametrize(("entries", "ttl"), [(0, 60.0), (10, 0.0), (10, float("nan"))])
def test_a_bad_cache_fails_at_start_up(entries: int, ttl: float) -> None:
    with pytest.raises(ConfigError) as info:
        NonceCache(max_entries=entries, ttl=ttl)
    assert info.value.code == "hop.cache"


def test_a_cache_that_forgets_within_max_age_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        HopVerifier(KEYS, audience=SHAOXING, max_age=30, nonces=NonceCache(ttl=29))
    assert info.value.code == "hop.cache"
    with pytest.raises(ConfigError) as info:
        HopVerifier(KEYS, audience=SHAOXING, max_age=0, nonces=NonceCache(ttl=29))
    assert info.value.code == "hop.cache"
