"""Seal public keys: thumbprints, publishing, strict parsing, resolvers."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.crypto.jwks import (
    KeyState,
    StaticKeyResolver,
    VerificationKey,
    alg_for,
    parse_jwk,
    parse_jwks,
    public_jwk,
    thumbprint,
    thumbprint_of_members,
)
from gateway.errors import Indication, SealError, SealIndeterminate
from gateway.ids import KeyId, NodeId

ZHUJI = NodeId("zhuji")
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# RFC 7638 §3.1: the example RSA key and its thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qvzq"
    "Y368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0"
    "fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
# RFC 8037 §A.2/A.3: the example Ed25519 public key and its thumbprint.
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_KID = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def _key(public_key: Any, **changes: Any) -> VerificationKey:
    fields: dict[str, Any] = {
        "node": ZHUJI,
        "kid": thumbprint(public_key),
        "alg": alg_for(public_key),
        "public_key": public_key,
        "state": KeyState.ACTIVE,
        "not_before": 1_795_000_000.0,
        "not_after": 1_826_000_000.0,
        "revoked_at": None,
        "verify_allowed": True,
    }
    fields.update(changes)
    return VerificationKey(**fields)


@pytest.fixture(params=["EdDSA", "ES256"])
def key(request: pytest.FixtureRequest) -> VerificationKey:
    if request.param == "EdDSA":
        return _key(Ed25519PrivateKey.generate().public_key())
    return _key(ec.generate_private_key(ec.SECP256R1()).public_key())


@pytest.fixture
def ed_jwk() -> dict[str, Any]:
    return public_jwk(_key(Ed25519PrivateKey.generate().public_key()))


@pytest.fixture
def ec_jwk() -> dict[str, Any]:
    return public_jwk(_key(ec.generate_private_key(ec.SECP256R1()).public_key()))


def _rejects(obj: Any, code: str, **kwargs: Any) -> None:
    with pytest.raises(SealError) as info:
        parse_jwk(obj, **kwargs)
    assert info.value.code == code
    assert info.value.indication is Indication.FAILED


# --- thumbprints ----------------------------------------------------------------------------


def test_thumbprint_rfc7638_example() -> None:
    members = {"kty": "RSA", "e": "AQAB", "n": RFC7638_N}
    assert thumbprint_of_members(members) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_rfc8037_ed25519_example() -> None:
    public_key = Ed25519PublicKey.from_public_bytes(b64url_decode(RFC8037_X))
    assert thumbprint(public_key) == RFC8037_KID


def test_rfc8037_example_parses_with_its_thumbprint_as_kid() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": RFC8037_KID}
    key = parse_jwk(jwk, node=ZHUJI)
    assert key.kid == RFC8037_KID
    assert key.alg == "EdDSA"


def test_thumbprint_ignores_optional_members(ec_jwk: dict[str, Any]) -> None:
    required = {name: ec_jwk[name] for name in ("crv", "kty", "x", "y")}
    assert thumbprint_of_members(required) == ec_jwk["kid"]


def test_alg_for_rejects_other_keys() -> None:
    with pytest.raises(SealError) as info:
        alg_for(ec.generate_private_key(ec.SECP384R1()).public_key())
    assert info.value.code == "jwk.unsupported_key"
    with pytest.raises(SealError) as info:
        alg_for(X25519PrivateKey.generate().public_key())
    assert info.value.code == "jwk.unsupported_key"


# --- publishing and round trip --------------------------------------------------------------


def test_public_jwk_shape(key: VerificationKey) -> None:
    jwk = public_jwk(key)
    assert jwk["kid"] == key.kid
    assert jwk["alg"] == key.alg
    assert jwk["use"] == "sig"
    assert jwk["key_ops"] == ["verify"]
    assert jwk["status"] == "active"
    assert jwk["nbf"] == 1_795_000_000
    assert jwk["exp"] == 1_826_000_000
    assert "revoked_at" not in jwk
    assert jwk["node"] == "zhuji"
    assert "d" not in jwk
    if key.alg == "EdDSA":
        assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
        assert "y" not in jwk
    else:
        assert (jwk["kty"], jwk["crv"]) == ("EC", "P-256")
        assert len(b64url_decode(jwk["y"])) == 32
    assert len(b64url_decode(jwk["x"])) == 32


def test_round_trip(key: VerificationKey) -> None:
    assert parse_jwk(public_jwk(key)) == key


def test_round_trip_revoked_without_times() -> None:
    key = _key(
        Ed25519PrivateKey.generate().public_key(),
        state=KeyState.REVOKED,
        not_before=None,
        not_after=None,
        revoked_at=1_800_000_000.0,
    )
    jwk = public_jwk(key)
    assert "nbf" not in jwk
    assert "exp" not in jwk
    assert jwk["revoked_at"] == 1_800_000_000
    assert parse_jwk(jwk) == key


def test_plain_jwk_defaults(ed_jwk: dict[str, Any]) -> None:
    """A bare JWK from any JOSE library is an active key, usable to verify."""
    bare = {name: ed_jwk[name] for name in ("kty", "crv", "x", "kid")}
    key = parse_jwk(bare, node=ZHUJI)
    assert key.state is KeyState.ACTIVE
    assert key.verify_allowed
    assert (key.not_before, key.not_after, key.revoked_at) == (None, None, None)
    assert key.node == ZHUJI


def test_use_enc_parses_but_may_not_verify(ed_jwk: dict[str, Any]) -> None:
    assert parse_jwk({**ed_jwk, "use": "enc"}).verify_allowed is False


def test_key_ops_without_verify_parses_but_may_not_verify(ed_jwk: dict[str, Any]) -> None:
    assert parse_jwk({**ed_jwk, "key_ops": ["sign"]}).verify_allowed is False
    assert parse_jwk({**ed_jwk, "key_ops": []}).verify_allowed is False
    assert parse_jwk({**ed_jwk, "key_ops": ["sign", "verify"]}).verify_allowed is True


@pytest.mark.parametrize("state", list(KeyState))
def test_every_state_parses(ed_jwk: dict[str, Any], state: KeyState) -> None:
    jwk = {**ed_jwk, "status": state.value}
    if state is KeyState.REVOKED:
        jwk["revoked_at"] = 1_800_000_000
    assert parse_jwk(jwk).state is state


def test_node_argument_agrees_with_member(ed_jwk: dict[str, Any]) -> None:
    assert parse_jwk(ed_jwk, node=ZHUJI).node == ZHUJI


# --- rejections -----------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [[], "key", None, 1])
def test_not_an_object(obj: Any) -> None:
    _rejects(obj, "jwk.invalid")


def test_private_key_okp(ed_jwk: dict[str, Any]) -> None:
    _rejects({**ed_jwk, "d": b64url_encode(b"\x01" * 32)}, "jwk.private_key")


def test_private_key_ec(ec_jwk: dict[str, Any]) -> None:
    _rejects({**ec_jwk, "d": b64url_encode(b"\x01" * 32)}, "jwk.private_key")


@pytest.mark.parametrize(
    ("kty", "crv"),
    [
        ("RSA", None),
        ("oct", None),
        ("OKP", "X25519"),
        ("OKP", "Ed448"),
        ("EC", "P-384"),
        (None, None),
    ],
)
def test_unsupported_key_types(ed_jwk: dict[str, Any], kty: Any, crv: Any) -> None:
    jwk = {**ed_jwk, "kty": kty, "crv": crv}
    _rejects(jwk, "jwk.unsupported_key")


def test_rsa_example_is_unsupported() -> None:
    _rejects(
        {
            "kty": "RSA",
            "e": "AQAB",
            "n": RFC7638_N,
            "kid": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
        },
        "jwk.unsupported_key",
    )


@pytest.mark.parametrize(
    "x",
    [
        b64url_encode(b"\x01" * 31),  # too short
        b64url_encode(b"\x01" * 33),  # too long
        b64url_encode(b"\x01" * 32) + "=",  # padded
        b64url_encode(b"\xfb" * 32).replace("-", "+").replace("_", "/"),  # base64, not url
        "",
        32,
        None,
    ],
)
def test_bad_x(ed_jwk: dict[str, Any], x: Any) -> None:
    _rejects({**ed_jwk, "x": x}, "jwk.bad_member")


def test_non_canonical_x(ed_jwk: dict[str, Any]) -> None:
    # 32 bytes are 43 characters with 2 spare bits in the last one: set them.
    x = ed_jwk["x"]
    tweaked = x[:-1] + B64URL_ALPHABET[B64URL_ALPHABET.index(x[-1]) | 1]
    # a lenient decoder reads the same key from it: that is the ambiguity refused
    assert base64.urlsafe_b64decode(tweaked + "=") == b64url_decode(x)
    _rejects({**ed_jwk, "x": tweaked}, "jwk.bad_member")


def test_missing_y(ec_jwk: dict[str, Any]) -> None:
    jwk = dict(ec_jwk)
    del jwk["y"]
    _rejects(jwk, "jwk.bad_member")


def test_bad_y_length(ec_jwk: dict[str, Any]) -> None:
    _rejects({**ec_jwk, "y": b64url_encode(b"\x01" * 31)}, "jwk.bad_member")


def test_ec_point_not_on_curve(ec_jwk: dict[str, Any]) -> None:
    y = bytearray(b64url_decode(ec_jwk["y"]))
    y[-1] ^= 1
    _rejects({**ec_jwk, "y": b64url_encode(bytes(y))}, "jwk.invalid_key")


@pytest.mark.parametrize(
    "point",
    [bytes([1]) + bytes(31), bytes(32), bytes.fromhex("ec" + "ff" * 30 + "7f")],
    ids=["identity", "order-4", "order-2"],
)
def test_small_order_ed25519_key_refused(ed_jwk: dict[str, Any], point: bytes) -> None:
    """Any message "verifies" under a small-order key (see test_seals): refused on import."""
    _rejects({**ed_jwk, "x": b64url_encode(point)}, "jwk.invalid_key")


def test_non_canonical_ed25519_key_refused(ed_jwk: dict[str, Any]) -> None:
    """y >= p: an encoding no private key produces."""
    _rejects({**ed_jwk, "x": b64url_encode(b"\xee" + b"\xff" * 30 + b"\x7f")}, "jwk.invalid_key")


@pytest.mark.parametrize("alg", ["ES256", "HS256", "none", "RS256", 1])
def test_alg_mismatch(ed_jwk: dict[str, Any], alg: Any) -> None:
    code = "jwk.bad_member" if not isinstance(alg, str) else "jwk.alg_mismatch"
    _rejects({**ed_jwk, "alg": alg}, code)


def test_ec_key_declared_eddsa(ec_jwk: dict[str, Any]) -> None:
    _rejects({**ec_jwk, "alg": "EdDSA"}, "jwk.alg_mismatch")


def test_kid_mismatch(ed_jwk: dict[str, Any], ec_jwk: dict[str, Any]) -> None:
    _rejects({**ed_jwk, "kid": ec_jwk["kid"]}, "jwk.kid_mismatch")
    _rejects({**ed_jwk, "kid": "2011-04-29"}, "jwk.kid_mismatch")


def test_kid_missing_or_not_a_string(ed_jwk: dict[str, Any]) -> None:
    jwk = dict(ed_jwk)
    del jwk["kid"]
    _rejects(jwk, "jwk.bad_member")
    _rejects({**ed_jwk, "kid": 7}, "jwk.bad_member")


@pytest.mark.parametrize("member", ["nbf", "exp", "revoked_at"])
@pytest.mark.parametrize("value", ["1795000000", True, 1.795e9, -1, 10**20, None])
def test_times_must_be_integers(ed_jwk: dict[str, Any], member: str, value: Any) -> None:
    jwk = {**ed_jwk, member: value}
    if member == "revoked_at":
        jwk["status"] = "revoked"
    _rejects(jwk, "jwk.bad_member")


def test_validity_ends_before_it_starts(ed_jwk: dict[str, Any]) -> None:
    _rejects({**ed_jwk, "nbf": 1_900_000_000, "exp": 1_800_000_000}, "jwk.bad_member")


def test_unknown_status(ed_jwk: dict[str, Any]) -> None:
    _rejects({**ed_jwk, "status": "compromised"}, "jwk.bad_member")
    _rejects({**ed_jwk, "status": "Active"}, "jwk.bad_member")


def test_revoked_needs_revoked_at_and_the_reverse(ed_jwk: dict[str, Any]) -> None:
    _rejects({**ed_jwk, "status": "revoked"}, "jwk.bad_member")
    _rejects({**ed_jwk, "status": "active", "revoked_at": 1_800_000_000}, "jwk.bad_member")


@pytest.mark.parametrize("ops", ["verify", ["verify", "verify"], [1], None])
def test_bad_key_ops(ed_jwk: dict[str, Any], ops: Any) -> None:
    _rejects({**ed_jwk, "key_ops": ops}, "jwk.bad_member")


def test_use_not_a_string(ed_jwk: dict[str, Any]) -> None:
    _rejects({**ed_jwk, "use": ["sig"]}, "jwk.bad_member")


def test_node_missing(ed_jwk: dict[str, Any]) -> None:
    jwk = dict(ed_jwk)
    del jwk["node"]
    _rejects(jwk, "jwk.bad_member")


@pytest.mark.parametrize("node", ["../etc", "", 5, "a" * 65])
def test_node_malformed(ed_jwk: dict[str, Any], node: Any) -> None:
    _rejects({**ed_jwk, "node": node}, "jwk.bad_member")


def test_node_disagrees_with_publisher(ed_jwk: dict[str, Any]) -> None:
    _rejects(ed_jwk, "jwk.bad_member", node=NodeId("linquan"))


# --- sets and resolvers ---------------------------------------------------------------------


def test_parse_jwks(ed_jwk: dict[str, Any], ec_jwk: dict[str, Any]) -> None:
    keys = parse_jwks({"keys": [ed_jwk, ec_jwk]})
    assert set(keys) == {ed_jwk["kid"], ec_jwk["kid"]}
    assert keys[KeyId(ec_jwk["kid"])].alg == "ES256"


def test_parse_jwks_empty() -> None:
    assert parse_jwks({"keys": []}) == {}


def test_parse_jwks_duplicate_kid(ed_jwk: dict[str, Any]) -> None:
    with pytest.raises(SealError) as info:
        parse_jwks({"keys": [ed_jwk, {**ed_jwk, "status": "retired"}]})
    assert info.value.code == "jwk.duplicate_kid"


@pytest.mark.parametrize("obj", [[], {"keys": {}}, {}, {"keys": None}, "keys"])
def test_parse_jwks_not_a_set(obj: Any) -> None:
    with pytest.raises(SealError) as info:
        parse_jwks(obj)
    assert info.value.code == "jwk.invalid"


def test_parse_jwks_too_many_keys(ed_jwk: dict[str, Any]) -> None:
    with pytest.raises(SealError) as info:
        parse_jwks({"keys": [ed_jwk] * 257})
    assert info.value.code == "jwk.invalid"


def test_parse_jwks_one_bad_key_rejects_the_set(ed_jwk: dict[str, Any]) -> None:
    with pytest.raises(SealError) as info:
        parse_jwks({"keys": [ed_jwk, {**ed_jwk, "d": "AA"}]})
    assert info.value.code == "jwk.private_key"


def test_static_resolver(ed_jwk: dict[str, Any]) -> None:
    resolver = StaticKeyResolver.from_jwks({"keys": [ed_jwk]})
    assert resolver.key_for(KeyId(ed_jwk["kid"])).kid == ed_jwk["kid"]
    with pytest.raises(SealIndeterminate) as info:
        resolver.key_for(KeyId("unknown"))
    assert info.value.code == "seal.unknown_kid"
    assert info.value.indication is Indication.INDETERMINATE


def test_static_resolver_refuses_misfiled_key(key: VerificationKey) -> None:
    with pytest.raises(SealError) as info:
        StaticKeyResolver({KeyId("other"): key})
    assert info.value.code == "jwk.kid_mismatch"


def test_static_resolver_is_a_snapshot(key: VerificationKey) -> None:
    keys = {key.kid: key}
    resolver = StaticKeyResolver(keys)
    keys.clear()
    assert resolver.key_for(key.kid) is key
