"""Seals as compact JWS: signing, the strict verifier (one test per rejection), reports."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.clock import to_rfc3339
from gateway.crypto import seals as seals_module
from gateway.crypto.jwks import (
    KeyState,
    StaticKeyResolver,
    VerificationKey,
    parse_jwk,
    public_jwk,
)
from gateway.crypto.reports import SEAL_CHECKS, Check, VerificationReport, report_for
from gateway.crypto.seals import (
    CLOCK_SKEW_SECONDS,
    MAX_HEADER_BYTES,
    MAX_SEAL_BYTES,
    SEAL_TYP,
    PrivateKeySigner,
    SealMemo,
    Signer,
    VerifiedSeal,
    seal,
    sign_compact,
    verify_compact,
    verify_seal,
    verify_signature,
)
from gateway.errors import (
    Indication,
    KeyStoreError,
    NetworkError,
    SealError,
    SealIndeterminate,
)
from gateway.ids import KeyId, NodeId

NOW = 1_795_507_200.0  # 2026-11-24T08:00:00Z
SIG_T = "2026-11-24T08:00:00Z"
ZHUJI = NodeId("zhuji")
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# Fixed test keys (deterministic, generated here, never secrets of anything).
ED = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
EC = PrivateKeySigner(ec.derive_private_key(0x5EA1_C0DE, ec.SECP256R1()))
OTHER_ED = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
SIGNERS = {"EdDSA": ED, "ES256": EC}

REMOVE = object()


def vkey(signer: PrivateKeySigner, **changes: Any) -> VerificationKey:
    fields: dict[str, Any] = {
        "node": ZHUJI,
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


def resolver(*keys: VerificationKey) -> StaticKeyResolver:
    return StaticKeyResolver({key.kid: key for key in keys})


KEYS = resolver(vkey(ED), vkey(EC))


def claims(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "iss": "zhuji",
        "iat": int(NOW),
        "certificate": {"name": "结婚证", "number": "330681-2026-000001"},
    }
    for name, value in changes.items():
        if value is REMOVE:
            del body[name]
        else:
            body[name] = value
    return orjson.dumps(body)


def header(signer: Signer = ED, **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"alg": signer.alg, "kid": signer.kid, "typ": SEAL_TYP, "sigT": SIG_T}
    for name, value in changes.items():
        if value is REMOVE:
            del out[name]
        else:
            out[name] = value
    return out


def _json(value: Any) -> bytes:
    # the standard library, not orjson: it writes integers beyond 64 bits too
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def craft(
    hdr: dict[str, Any] | bytes | None = None,
    payload: bytes | None = None,
    *,
    signer: Signer = ED,
    signature: bytes | None = None,
) -> str:
    """A compact JWS assembled by hand, so every header and byte is under the test's control."""
    raw_header = hdr if isinstance(hdr, bytes) else _json(header(signer) if hdr is None else hdr)
    signing_input = (
        f"{b64url_encode(raw_header)}.{b64url_encode(claims() if payload is None else payload)}"
    )
    if signature is None:
        signature = signer.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"


def rejects(
    token: Any,
    code: str,
    step: str,
    indication: Indication = Indication.FAILED,
    *,
    keys: Any = KEYS,
    now: float = NOW,
) -> SealError:
    with pytest.raises(SealError) as info:
        verify_seal(token, keys, now=now)
    error = info.value
    assert (error.code, error.step, error.indication) == (code, step, indication)
    assert isinstance(error, SealIndeterminate) == (indication is Indication.INDETERMINATE)
    return error


def swap_segment(token: str, index: int, segment: str) -> str:
    parts = token.split(".")
    parts[index] = segment
    return ".".join(parts)


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_round_trip(alg: str) -> None:
    signer = SIGNERS[alg]
    payload = claims()
    token = seal(signer, payload, signed_at=NOW)
    verified = verify_seal(token, KEYS, now=NOW)
    assert verified.kid == signer.kid
    assert verified.alg == alg
    assert verified.node == ZHUJI
    assert verified.signed_at == NOW
    assert verified.payload_bytes == payload
    assert verified.payload == orjson.loads(payload)
    assert dict(verified.header) == {"alg": alg, "kid": signer.kid, "typ": SEAL_TYP, "sigT": SIG_T}
    assert [check.name for check in verified.checks] == list(SEAL_CHECKS)
    assert {check.result for check in verified.checks} == {Indication.PASSED}


def test_signer_writes_compact_sorted_header() -> None:
    token = seal(ED, claims(), signed_at=NOW)
    assert b64url_decode(token.split(".")[0]) == orjson.dumps(
        header(ED), option=orjson.OPT_SORT_KEYS
    )


def test_signatures_are_raw_64_bytes() -> None:
    for signer in (ED, EC):
        assert len(signer.sign(b"data")) == 64
        verify_signature(signer.alg, signer.public_key, b"data", signer.sign(b"data"))


@pytest.mark.parametrize("data", [b"", b"data", "证照".encode() * 500])
def test_ed25519_signature_is_rfc8032s_and_verifies_under_openssl(data: bytes) -> None:
    """Signing goes through libsodium: byte for byte the signature OpenSSL makes."""
    private_key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    assert ED.sign(data) == private_key.sign(data)
    private_key.public_key().verify(ED.sign(data), data)


def test_signing_time_is_whole_seconds() -> None:
    token = seal(ED, claims(), signed_at=NOW + 0.9)
    assert verify_seal(token, KEYS, now=NOW).signed_at == NOW


def test_extra_header_is_signed() -> None:
    token = sign_compact(ED, claims(), typ=SEAL_TYP, signed_at=NOW, extra_header={"cty": "json"})
    assert verify_seal(token, KEYS, now=NOW).header["cty"] == "json"


@pytest.mark.parametrize("name", ["alg", "kid", "typ", "sigT", "crit", "b64", "jku", "jwk", "x5c"])
def test_extra_header_may_not_override_or_add_refused_members(name: str) -> None:
    with pytest.raises(SealError) as info:
        sign_compact(ED, claims(), typ=SEAL_TYP, signed_at=NOW, extra_header={name: "x"})
    assert info.value.code == "seal.bad_header"


def test_signer_refuses_oversized_seal() -> None:
    with pytest.raises(SealError) as info:
        seal(ED, claims(pad="x" * MAX_SEAL_BYTES), signed_at=NOW)
    assert info.value.code == "seal.too_large"


def test_signer_refuses_oversized_header() -> None:
    with pytest.raises(SealError) as info:
        sign_compact(ED, claims(), typ=SEAL_TYP, signed_at=NOW, extra_header={"x": "y" * 4000})
    assert info.value.code == "seal.too_large"


def test_signer_kid_must_be_thumbprint() -> None:
    private_key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    assert PrivateKeySigner(private_key, kid=ED.kid).kid == ED.kid
    with pytest.raises(KeyStoreError) as info:
        PrivateKeySigner(private_key, kid=KeyId("my-key"))
    assert info.value.code == "keys.kid_mismatch"


def test_signer_repr_hides_the_key() -> None:
    assert repr(ED) == f"PrivateKeySigner(kid={ED.kid!r}, alg='EdDSA')"


def test_signer_refuses_unsupported_curve() -> None:
    with pytest.raises(SealError) as info:
        PrivateKeySigner(ec.generate_private_key(ec.SECP384R1()))
    assert info.value.code == "jwk.unsupported_key"


def test_seal_verifies_from_published_jwks() -> None:
    jwks = orjson.loads(orjson.dumps({"keys": [public_jwk(vkey(ED)), public_jwk(vkey(EC))]}))
    keys = StaticKeyResolver.from_jwks(jwks)
    for signer in (ED, EC):
        assert verify_seal(seal(signer, claims(), signed_at=NOW), keys, now=NOW).kid == signer.kid


def test_verify_compact_other_type_without_claims() -> None:
    token = sign_compact(EC, b'{"status_list":{}}', typ="statuslist+jwt", signed_at=NOW)
    verified = verify_compact(token, KEYS, typ="statuslist+jwt", now=NOW)
    assert verified.payload == {"status_list": {}}
    assert [check.name for check in verified.checks] == list(SEAL_CHECKS[:-1])
    # ...and a seal verifier does not accept it: the caller pins the type
    rejects(token, "seal.wrong_typ", "header")


# --- 1. type and size -----------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, 5, b"a.b.c", ["a", "b", "c"]])
def test_not_a_string(token: Any) -> None:
    rejects(token, "seal.malformed", "format")


def test_not_ascii() -> None:
    token = craft()
    rejects(token[:-1] + "é", "seal.malformed", "format")
    rejects("印章." + token, "seal.malformed", "format")


def test_oversized_token() -> None:
    token = craft(payload=claims(pad="x" * MAX_SEAL_BYTES))
    assert len(token) > MAX_SEAL_BYTES
    rejects(token, "seal.too_large", "format")
    rejects("a" * (MAX_SEAL_BYTES + 1), "seal.too_large", "format")


def test_largest_token_is_accepted() -> None:
    base = len(craft(payload=claims(pad="")))
    # each pad character adds 4/3 base64 characters: land at or just under the limit
    pad = (MAX_SEAL_BYTES - base) * 3 // 4
    token = craft(payload=claims(pad="x" * pad))
    while len(token) > MAX_SEAL_BYTES:
        pad -= 1
        token = craft(payload=claims(pad="x" * pad))
    assert MAX_SEAL_BYTES - 4 <= len(token) <= MAX_SEAL_BYTES
    verify_seal(token, KEYS, now=NOW)


# --- 2. three segments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    ["{h}.{p}", "{h}.{p}.", "{h}.{p}.{s}.{s}", "{h}{p}{s}", "", "..", "{h}..{s}", ".{p}.{s}"],
)
def test_not_three_non_empty_segments(shape: str) -> None:
    h, p, s = craft().split(".")
    rejects(shape.format(h=h, p=p, s=s), "seal.malformed", "format")


def test_alg_none_unsecured() -> None:
    """The classic unsecured JWS: alg none and an empty signature."""
    unsecured = craft(header(alg="none"), signature=b"")
    assert unsecured.endswith(".")
    rejects(unsecured, "seal.malformed", "format")


# --- 3. strict base64url --------------------------------------------------------------------


def test_padded_signature() -> None:
    token = craft()
    assert len(token.split(".")[2]) % 4 != 0
    rejects(token + "=", "seal.bad_encoding", "format")
    rejects(token + "==", "seal.bad_encoding", "format")


def test_padded_header() -> None:
    h, p, s = craft().split(".")
    rejects(f"{h}==.{p}.{s}", "seal.bad_encoding", "format")


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize(("url", "std"), [("-", "+"), ("_", "/")])
def test_standard_alphabet(index: int, url: str, std: str) -> None:
    # find a token whose segment contains the URL-safe character, then use the standard one
    for n in range(200):
        token = craft(header(x=">>>???" + "a" * n), claims(n=n, pad=">>>???"))
        if url in token.split(".")[index]:
            break
    else:  # pragma: no cover - 200 tries always find one
        pytest.fail("no segment with the character")
    segment = token.split(".")[index]
    rejects(swap_segment(token, index, segment.replace(url, std)), "seal.bad_encoding", "format")


def test_non_canonical_trailing_bits() -> None:
    token = craft()
    signature = token.split(".")[2]
    assert len(b64url_decode(signature)) == 64  # 86 characters, 4 spare bits in the last
    last = B64URL_ALPHABET.index(signature[-1])
    assert last & 0b1111 == 0
    tweaked = signature[:-1] + B64URL_ALPHABET[last | 0b0001]
    rejects(swap_segment(token, 2, tweaked), "seal.bad_encoding", "format")


@pytest.mark.parametrize("junk", [" ", "\n", "*", "\t"])
def test_characters_outside_the_alphabet(junk: str) -> None:
    rejects(craft() + junk, "seal.bad_encoding", "format")


def test_impossible_length() -> None:
    rejects(craft() + "AAA", "seal.bad_encoding", "format")  # 86 + 3 = 89 = 1 mod 4


def test_oversized_header_segment() -> None:
    token = craft(header(pad="x" * MAX_HEADER_BYTES))
    assert len(token) < MAX_SEAL_BYTES
    rejects(token, "seal.too_large", "format")


# --- 4. header is strict JSON ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'["EdDSA"]',
        b'"EdDSA"',
        b"null",
        b'{"alg":"EdDSA",}',
        b'{"alg":NaN}',
        b'{"alg":"EdDSA"} {}',
        b'{"alg":"\xff"}',
        b'{"alg":"\\ud800"}',
    ],
)
def test_header_not_a_strict_json_object(raw: bytes) -> None:
    rejects(craft(raw), "seal.bad_header", "header")


def test_header_too_deep() -> None:
    ok = header(ext={"a": {"b": {}}})  # depth 4
    verify_seal(craft(ok), KEYS, now=NOW)
    rejects(craft(header(ext={"a": {"b": {"c": {}}}})), "seal.bad_header", "header")


def test_header_duplicate_member() -> None:
    raw = orjson.dumps(header())[:-1] + b',"alg":"none"}'
    rejects(craft(raw), "seal.duplicate_member", "header")


def test_header_duplicate_kid() -> None:
    raw = orjson.dumps(header())[:-1] + f',"kid":"{EC.kid}"}}'.encode()
    rejects(craft(raw), "seal.duplicate_member", "header")


# --- 5. alg ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alg",
    ["none", "None", "NONE", "HS256", "HS512", "RS256", "PS256", "ES384", "ES256K", "eddsa",
     "Ed448", "sm2", "SM3", "", 0, None, ["EdDSA"]],
)  # fmt: skip
def test_alg_not_allowed(alg: Any) -> None:
    rejects(craft(header(alg=alg)), "seal.alg_not_allowed", "header")


def test_alg_missing() -> None:
    rejects(craft(header(alg=REMOVE)), "seal.alg_not_allowed", "header")


def test_alg_none_with_a_signature() -> None:
    rejects(craft(header(alg="none"), signature=b"\x00" * 64), "seal.alg_not_allowed", "header")


def _hs256(secret: bytes, signer: PrivateKeySigner) -> str:
    hdr = header(signer, alg="HS256")
    signing_input = f"{b64url_encode(orjson.dumps(hdr))}.{b64url_encode(claims())}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(mac)}"


@pytest.mark.parametrize("signer", [ED, EC], ids=["EdDSA", "ES256"])
@pytest.mark.parametrize("form", ["raw", "der", "pem", "jwk"])
def test_hs256_with_the_public_key_as_secret(signer: PrivateKeySigner, form: str) -> None:
    """Key confusion: an HMAC keyed with the verifier's public key, in every usual form."""
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
    rejects(_hs256(secret, signer), "seal.alg_not_allowed", "header")


# --- 6. key-carrying headers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        (
            "jwk",
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        ),
        ("x5c", ["MIIB"]),
        ("x5t", "dGh1bWI"),
        ("x5t#S256", "dGh1bWI"),
    ],
)
def test_forbidden_header(name: str, value: Any) -> None:
    rejects(craft(header(**{name: value})), "seal.forbidden_header", "header")


def test_embedded_jwk_signed_by_its_own_key_is_refused() -> None:
    """The attacker embeds their own key and signs with it: the header is never trusted."""
    attacker = OTHER_ED
    hdr = header(attacker, jwk=public_jwk(vkey(attacker)))
    rejects(craft(hdr, signer=attacker), "seal.forbidden_header", "header")


# --- 7. crit and b64 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "crit", ["exp", [], [1], ["exp", "exp"], {"exp": True}, None, ["alg"], ["kid", "x"], ["crit"]]
)
def test_bad_crit(crit: Any) -> None:
    rejects(craft(header(crit=crit, exp=1)), "seal.bad_crit", "header")


@pytest.mark.parametrize("crit", [["exp"], ["sigT"], ["http://example.com/ext"], ["a", "b"]])
def test_unsupported_crit(crit: list[str]) -> None:
    rejects(craft(header(crit=crit, exp=1)), "seal.unsupported_crit", "header")


@pytest.mark.parametrize(
    "changes",
    [
        {"b64": False, "crit": ["b64"]},
        {"b64": False},
        {"b64": True},
        {"b64": True, "crit": ["b64"]},
        {"b64": "false"},
    ],
)
def test_b64_unsupported(changes: dict[str, Any]) -> None:
    rejects(craft(header(**changes)), "seal.b64_unsupported", "header")


def test_b64_false_unencoded_payload() -> None:
    """RFC 7797 style: the signing input carries the raw payload; never accepted."""
    hdr = orjson.dumps(header(b64=False, crit=["b64"]))
    payload = claims()
    signature = ED.sign(b64url_encode(hdr).encode() + b"." + payload)
    token = f"{b64url_encode(hdr)}.{b64url_encode(payload)}.{b64url_encode(signature)}"
    rejects(token, "seal.b64_unsupported", "header")


# --- 8. typ ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typ",
    [REMOVE, "JWT", "jose", "TONGBAN-SEAL+JWS", "Tongban-Seal+JWS", "application/tongban-seal+jws",
     "tongban-seal+jws ", "statuslist+jwt", 1, None, [SEAL_TYP]],
)  # fmt: skip
def test_wrong_typ(typ: Any) -> None:
    rejects(craft(header(typ=typ)), "seal.wrong_typ", "header")


# --- 9. kid ---------------------------------------------------------------------------------


class SpyResolver:
    """Fails the test if a lookup happens at all."""

    def key_for(self, kid: KeyId) -> VerificationKey:
        pytest.fail(f"key lookup for {kid!r} happened")


@pytest.mark.parametrize(
    "kid",
    ["../../x", "..%2F..%2Fx", "keys/zhuji", "a.b", "", "k" * 129, "kid\n", "kid ", "ķ", 7, None,
     ["a"], REMOVE],
)  # fmt: skip
def test_bad_kid(kid: Any) -> None:
    rejects(craft(header(kid=kid)), "seal.bad_kid", "header", keys=SpyResolver())


def test_longest_kid_reaches_lookup() -> None:
    rejects(craft(header(kid="k" * 128)), "seal.unknown_kid", "key", Indication.INDETERMINATE)


# --- 10. sigT -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sig_t",
    [REMOVE, NOW, int(NOW), None, True, "", "2026-11-24T08:00:00+00:00", "2026-11-24T08:00:00z",
     "2026-11-24 08:00:00Z", "2026-11-24T08:00:00.5Z", "2026-02-30T00:00:00Z",
     "2026-11-24T24:00:00Z", "1795507200", " 2026-11-24T08:00:0Z", "2026-11-24T08:00Z",
     "2026-11- 4T08:00:00Z", "2026-11-2\u0664T08:00:00Z", "2026-12-31T23:59:60Z"],
)  # fmt: skip
def test_bad_signing_time(sig_t: Any) -> None:
    rejects(craft(header(sigT=sig_t)), "seal.bad_signing_time", "header")


# --- 11. key resolution ---------------------------------------------------------------------


def test_unknown_kid() -> None:
    token = craft(signer=OTHER_ED)
    rejects(token, "seal.unknown_kid", "key", Indication.INDETERMINATE)


def test_resolver_returning_another_key_is_unknown_kid() -> None:
    class Confused:
        def key_for(self, kid: KeyId) -> VerificationKey:
            return vkey(OTHER_ED)

    rejects(craft(), "seal.unknown_kid", "key", Indication.INDETERMINATE, keys=Confused())


# --- 12. key usage --------------------------------------------------------------------------


@pytest.mark.parametrize("changes", [{"use": "enc"}, {"key_ops": ["sign"]}, {"key_ops": []}])
def test_key_use_forbids_verification(changes: dict[str, Any]) -> None:
    key = parse_jwk({**public_jwk(vkey(ED)), **changes})
    assert key.verify_allowed is False
    rejects(craft(), "seal.key_use", "key", keys=resolver(key))


# --- 13. the key pins the algorithm ---------------------------------------------------------


def test_header_alg_eddsa_for_es256_key() -> None:
    token = craft(header(EC, alg="EdDSA"), signer=ED)
    rejects(token, "seal.alg_mismatch", "key")


def test_header_alg_es256_for_eddsa_key() -> None:
    token = craft(header(ED, alg="ES256"), signer=EC)
    rejects(token, "seal.alg_mismatch", "key")


def test_verify_signature_refuses_key_of_another_type() -> None:
    with pytest.raises(SealError) as info:
        verify_signature("ES256", ED.public_key, b"data", EC.sign(b"data"))
    assert info.value.code == "seal.alg_mismatch"
    with pytest.raises(SealError) as info:
        verify_signature("EdDSA", EC.public_key, b"data", ED.sign(b"data"))
    assert info.value.code == "seal.alg_mismatch"


# --- 14. signature --------------------------------------------------------------------------


@pytest.mark.parametrize("signer", [ED, EC], ids=["EdDSA", "ES256"])
def test_flipped_signature_bit(signer: PrivateKeySigner) -> None:
    token = craft(header(signer), signer=signer)
    signature = bytearray(b64url_decode(token.split(".")[2]))
    signature[10] ^= 0x01
    rejects(
        swap_segment(token, 2, b64url_encode(bytes(signature))), "seal.bad_signature", "signature"
    )


@pytest.mark.parametrize("signer", [ED, EC], ids=["EdDSA", "ES256"])
def test_payload_swapped_under_a_valid_signature(signer: PrivateKeySigner) -> None:
    token = craft(header(signer), signer=signer)
    forged = swap_segment(token, 1, b64url_encode(claims(certificate={"name": "伪造"})))
    rejects(forged, "seal.bad_signature", "signature")


def test_signed_by_another_key_under_our_kid() -> None:
    rejects(craft(header(ED), signer=OTHER_ED), "seal.bad_signature", "signature")


@pytest.mark.parametrize(
    ("r", "s"),
    [(0, 0), (0, 1), (1, 0), (P256_ORDER, 1), (1, P256_ORDER), (2**256 - 1, 2**256 - 1)],
)
def test_es256_scalars_out_of_range(r: int, s: int) -> None:
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    rejects(craft(header(EC), signer=EC, signature=signature), "seal.bad_signature", "signature")


@pytest.mark.parametrize("signer", [ED, EC], ids=["EdDSA", "ES256"])
@pytest.mark.parametrize("length", [1, 32, 63, 65, 72, 128])
def test_signature_wrong_length(signer: PrivateKeySigner, length: int) -> None:
    good = b64url_decode(craft(header(signer), signer=signer).split(".")[2])
    signature = (good + good)[:length]
    rejects(
        craft(header(signer), signer=signer, signature=signature), "seal.bad_signature", "signature"
    )


def test_es256_der_signature_refused() -> None:
    """A DER-encoded ECDSA signature (what cryptography emits) is not a JWS signature."""
    token = craft(header(EC), signer=EC)
    raw = b64url_decode(token.split(".")[2])
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    rejects(swap_segment(token, 2, b64url_encode(der)), "seal.bad_signature", "signature")


SMALL_ORDER_POINTS = [
    bytes([1]) + bytes(31),  # the identity
    bytes(32),  # a point of order 4
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),  # order 2
]


@pytest.mark.parametrize("point", SMALL_ORDER_POINTS, ids=["identity", "order-4", "order-2"])
def test_small_order_ed25519_key_forges_nothing(point: bytes) -> None:
    """Under a small-order public key, R = identity and S = 0 satisfy the cofactorless
    equation for *every* message, and OpenSSL accepts that signature; the verifier refuses."""
    key = Ed25519PublicKey.from_public_bytes(point)
    forgery = bytes([1]) + bytes(31) + bytes(32)
    with pytest.raises(SealError) as info:
        verify_signature("EdDSA", key, b"any message at all", forgery)
    assert info.value.code == "seal.bad_signature"


# --- 15. time -------------------------------------------------------------------------------


def test_signed_in_future() -> None:
    late = to_rfc3339(NOW + CLOCK_SKEW_SECONDS + 1)
    token = craft(header(sigT=late), claims(iat=int(NOW) + CLOCK_SKEW_SECONDS + 1))
    rejects(token, "seal.signed_in_future", "time")


@pytest.mark.parametrize("at", [0, 1, 951_782_400, int(NOW) - 86_399, int(NOW)])
def test_the_signing_time_as_stated_is_the_one_strict_form(at: int) -> None:
    """A report shows the header's sigT as it is: the only form verification accepts is the
    one to_rfc3339 writes, so it is exactly that of the verified signing time."""
    token = craft(header(sigT=to_rfc3339(at)), claims(iat=at))
    verified = verify_seal(token, resolver(vkey(ED, not_before=None)), now=NOW)
    assert verified.signed_at == at
    assert verified.signed_at_text == to_rfc3339(verified.signed_at) == to_rfc3339(at)


def test_signed_within_clock_skew() -> None:
    late = NOW + CLOCK_SKEW_SECONDS
    token = craft(header(sigT=to_rfc3339(late)), claims(iat=int(late)))
    assert verify_seal(token, KEYS, now=NOW).signed_at == late


def test_key_not_yet_valid() -> None:
    keys = resolver(vkey(ED, not_before=NOW + 1))
    rejects(craft(), "seal.key_not_yet_valid", "time", keys=keys)
    verify_seal(craft(), resolver(vkey(ED, not_before=NOW)), now=NOW)


def test_key_expired() -> None:
    keys = resolver(vkey(ED, not_after=NOW - 1))
    rejects(craft(), "seal.key_expired", "time", keys=keys, now=NOW + 86_400)
    verify_seal(craft(), resolver(vkey(ED, not_after=NOW)), now=NOW)


def test_old_seal_outlives_its_key() -> None:
    """A seal made while the key was valid still verifies long after the key expired."""
    keys = resolver(vkey(ED, state=KeyState.RETIRED, not_after=NOW + 10))
    verify_seal(craft(), keys, now=NOW + 10 * 365 * 86_400)


def test_key_not_active() -> None:
    keys = resolver(vkey(ED, state=KeyState.NEXT))
    rejects(craft(), "seal.key_not_active", "time", keys=keys)


def test_retired_key_still_verifies() -> None:
    verify_seal(craft(), resolver(vkey(ED, state=KeyState.RETIRED)), now=NOW)


# --- 16. revocation -------------------------------------------------------------------------


@pytest.mark.parametrize("revoked_at", [NOW, NOW - 3_600])
def test_key_revoked(revoked_at: float) -> None:
    keys = resolver(vkey(ED, state=KeyState.REVOKED, revoked_at=revoked_at))
    rejects(craft(), "seal.key_revoked", "revocation", keys=keys)


def test_key_revoked_without_a_time() -> None:
    keys = resolver(vkey(ED, state=KeyState.REVOKED, revoked_at=None))
    rejects(craft(), "seal.key_revoked", "revocation", keys=keys)


def test_revocation_unproven() -> None:
    keys = resolver(vkey(ED, state=KeyState.REVOKED, revoked_at=NOW + 1))
    rejects(craft(), "seal.revocation_unproven", "revocation", Indication.INDETERMINATE, keys=keys)


# --- 17. payload and claims -----------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[]", b'"text"', b"1", b"null", b'{"iss":"zhuji",}', b'{"v":NaN}',
     b'{"v":Infinity}', b'{"v":"\xff"}', b'{"v":"\\udc00"}', b'{"v":1} {}', b'{"v":1e999}'],
)  # fmt: skip
def test_bad_payload(payload: bytes) -> None:
    rejects(craft(payload=payload), "seal.bad_payload", "payload")


def test_payload_duplicate_member() -> None:
    raw = claims()[:-1] + b',"iss":"linquan"}'
    rejects(craft(payload=raw), "seal.duplicate_member", "payload")


def test_payload_nested_too_deep() -> None:
    def nest(levels: int) -> Any:
        value: Any = {}
        for _ in range(levels - 1):
            value = {"a": value}
        return value

    verify_seal(craft(payload=claims(deep=nest(15))), KEYS, now=NOW)  # 16 levels in all
    rejects(craft(payload=claims(deep=nest(16))), "seal.bad_payload", "payload")


def test_payload_nested_beyond_the_recursion_limit() -> None:
    deep = b'{"iss":"zhuji","iat":1795507200,"x":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    rejects(craft(payload=deep), "seal.bad_payload", "payload")


@pytest.mark.parametrize(
    "changes",
    [
        {"iat": str(int(NOW))},
        {"iat": True},
        {"iat": NOW + 0.5},
        {"iat": float(NOW)},
        {"iat": None},
        {"iat": REMOVE},
        {"iat": int(NOW) - 2},
        {"iat": int(NOW) + 2},
        {"iss": "linquan"},
        {"iss": "Zhuji"},
        {"iss": REMOVE},
        {"iss": None},
        {"iss": ["zhuji"]},
    ],
)
def test_bad_claims(changes: dict[str, Any]) -> None:
    rejects(craft(payload=claims(**changes)), "seal.bad_claims", "claims")


@pytest.mark.parametrize("iat", [int(NOW) - 1, int(NOW) + 1])
def test_iat_within_a_second_of_signing_time(iat: int) -> None:
    verify_seal(craft(payload=claims(iat=iat)), KEYS, now=NOW)


# --- reports --------------------------------------------------------------------------------


def test_report_passed() -> None:
    token = seal(EC, claims(), signed_at=NOW)
    report, verified = report_for(lambda: verify_seal(token, KEYS, now=NOW))
    assert verified is not None
    assert verified.kid == EC.kid
    assert report.indication is Indication.PASSED
    assert report.to_json() == {
        "indication": "PASSED",
        "code": "ok",
        "checks": [{"name": name, "result": "PASSED"} for name in SEAL_CHECKS],
        "kid": EC.kid,
        "node": "zhuji",
        "signed_at": SIG_T,
    }


def test_report_failed_lists_checks_done_then_the_failure() -> None:
    token = craft(header(ED), signer=OTHER_ED)  # bad signature under our kid
    report, verified = report_for(lambda: verify_seal(token, KEYS, now=NOW))
    assert verified is None
    assert report.to_json() == {
        "indication": "FAILED",
        "code": "seal.bad_signature",
        "checks": [
            {"name": "format", "result": "PASSED"},
            {"name": "header", "result": "PASSED"},
            {"name": "key", "result": "PASSED"},
            {"name": "signature", "result": "FAILED", "detail": "the signature does not verify"},
        ],
    }


def test_report_indeterminate() -> None:
    report, _ = report_for(lambda: verify_seal(craft(signer=OTHER_ED), KEYS, now=NOW))
    assert report.indication is Indication.INDETERMINATE
    assert report.code == "seal.unknown_kid"
    assert [(c.name, c.result) for c in report.checks] == [
        ("format", Indication.PASSED),
        ("header", Indication.PASSED),
        ("key", Indication.INDETERMINATE),
    ]


def test_report_failed_first_check() -> None:
    report, _ = report_for(lambda: verify_seal("nope", KEYS, now=NOW))
    assert report.code == "seal.malformed"
    assert report.checks == (
        Check("format", Indication.FAILED, "a seal must have three non-empty segments"),
    )


def test_report_failed_at_claims() -> None:
    token = craft(payload=claims(iss="linquan"))
    report, _ = report_for(lambda: verify_seal(token, KEYS, now=NOW))
    assert report.code == "seal.bad_claims"
    assert [c.name for c in report.checks] == list(SEAL_CHECKS)
    assert [c.result for c in report.checks][-2:] == [Indication.PASSED, Indication.FAILED]


def test_report_failed_from_error_without_step() -> None:
    report = VerificationReport.failed_from(SealError("no", code="seal.x"))
    assert report.to_json() == {
        "indication": "FAILED",
        "code": "seal.x",
        "checks": [{"name": "verification", "result": "FAILED", "detail": "no"}],
    }


def test_report_for_lets_network_errors_through() -> None:
    """Failing to fetch a key is not a verdict on the seal: the caller decides."""

    class Down:
        def key_for(self, kid: KeyId) -> VerificationKey:
            raise NetworkError("jwks fetch failed")

    with pytest.raises(NetworkError):
        report_for(lambda: verify_seal(craft(), Down(), now=NOW))


def test_report_with_certificate_id() -> None:
    report = VerificationReport.passed((), kid="k", node="n", signed_at=NOW, certificate_id="1.2")
    assert report.to_json()["certificate_id"] == "1.2"


# --- properties -----------------------------------------------------------------------------


def outcome(token: Any) -> VerifiedSeal | SealError:
    """Verify; return the verified seal or the SealError (anything else propagates)."""
    try:
        return verify_seal(token, KEYS, now=NOW)
    except SealError as error:
        return error


def assert_rejected(result: VerifiedSeal | SealError) -> None:
    assert isinstance(result, SealError)
    assert result.code.startswith("seal.")
    assert result.step in SEAL_CHECKS


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.text(max_size=300) | st.text(alphabet=B64URL_ALPHABET + ".=+/", max_size=300))
def test_random_strings_only_raise_seal_errors(token: str) -> None:
    assert_rejected(outcome(token))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    header_obj=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "sigT", "crit", "b64", "jku", "x"]),
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=20)
        | st.lists(st.text(max_size=5)),
    ),
    payload=st.binary(max_size=64),
)
def test_random_headers_and_payloads_only_raise_seal_errors(
    header_obj: dict[str, Any], payload: bytes
) -> None:
    # random bytes are never a payload with iss and iat, so nothing here may verify
    assert_rejected(outcome(craft({**header(), **header_obj}, payload)))


GOOD = {"EdDSA": seal(ED, claims(), signed_at=NOW), "ES256": seal(EC, claims(), signed_at=NOW)}


def _mutate(token: str, data: st.DataObject) -> str:
    kind = data.draw(st.sampled_from(["replace", "insert", "delete", "swap_segments"]))
    parts = token.split(".")
    if kind == "swap_segments" and len(parts) > 1:  # an earlier mutation may have cut a dot
        i, j = data.draw(st.permutations(range(len(parts))))[:2]
        parts[i], parts[j] = parts[j], parts[i]
        return ".".join(parts)
    index = data.draw(st.integers(0, len(token) - 1))
    char = data.draw(st.sampled_from(B64URL_ALPHABET + ".=+/ é"))
    if kind == "replace":
        return token[:index] + char + token[index + 1 :]
    if kind == "insert":
        return token[:index] + char + token[index:]
    return token[:index] + token[index + 1 :]


@settings(max_examples=400, deadline=None, derandomize=True)
@given(alg=st.sampled_from(["EdDSA", "ES256"]), data=st.data())
def test_mutations_of_a_valid_seal_never_verify(alg: str, data: st.DataObject) -> None:
    token = GOOD[alg]
    mutated = _mutate(token, data)
    for _ in range(data.draw(st.integers(0, 3))):
        mutated = _mutate(mutated, data)
    result = outcome(mutated)
    if mutated == token:
        assert isinstance(result, VerifiedSeal)
    else:
        assert_rejected(result)


def test_good_seals_verify() -> None:
    """The property tests above would be vacuous if these did not."""
    for token in GOOD.values():
        assert isinstance(outcome(token), VerifiedSeal)


# --- helpers stay honest --------------------------------------------------------------------


def test_crafted_default_token_verifies() -> None:
    """Every rejection test starts from ``craft()``; it must verify when left alone."""
    for signer in (ED, EC):
        verify_seal(craft(header(signer), signer=signer), KEYS, now=NOW)


def test_rejects_helper_checks_the_code() -> None:
    with pytest.raises(AssertionError):
        rejects(craft(header(kid="../x")), "seal.unknown_kid", "header")


# --- the signature memo ---------------------------------------------------------------------


@pytest.fixture
def arithmetic(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the signature verifications actually computed (by the memo or without one)."""
    done: list[str] = []
    real = seals_module.verify_signature

    def counting(alg: Any, public_key: Any, signing_input: bytes, signature: bytes) -> None:
        done.append(alg)
        real(alg, public_key, signing_input, signature)

    monkeypatch.setattr(seals_module, "verify_signature", counting)
    return done


@pytest.mark.parametrize("signer", [ED, EC], ids=["EdDSA", "ES256"])
def test_memo_computes_a_signature_once(signer: PrivateKeySigner, arithmetic: list[str]) -> None:
    memo = SealMemo()
    token = craft(header(signer), signer=signer)
    for _ in range(3):
        assert verify_seal(token, KEYS, now=NOW, memo=memo).kid == signer.kid
    assert arithmetic == [signer.alg]
    assert len(memo) == 1


def test_memo_does_not_remember_a_bad_signature(arithmetic: list[str]) -> None:
    memo = SealMemo()
    forged = swap_segment(craft(), 2, b64url_encode(bytes(64)))
    for _ in range(2):
        with pytest.raises(SealError) as info:
            verify_seal(forged, KEYS, now=NOW, memo=memo)
        assert info.value.code == "seal.bad_signature"
    assert len(arithmetic) == 2
    assert len(memo) == 0


def test_memo_still_checks_the_key_state_on_every_use() -> None:
    memo = SealMemo()
    token = craft()
    verify_seal(token, KEYS, now=NOW, memo=memo)
    revoked = resolver(vkey(ED, state=KeyState.REVOKED, revoked_at=NOW - 3_600))
    with pytest.raises(SealError) as info:
        verify_seal(token, revoked, now=NOW, memo=memo)
    assert (info.value.code, info.value.step) == ("seal.key_revoked", "revocation")
    retired = resolver(vkey(ED, not_after=NOW - 86_400 * 2))
    with pytest.raises(SealError) as info:
        verify_seal(token, retired, now=NOW, memo=memo)
    assert info.value.code == "seal.key_expired"


def test_memo_entry_is_bound_to_the_public_key(arithmetic: list[str]) -> None:
    """Another key published under the same kid does not inherit the first key's entry."""
    memo = SealMemo()
    token = craft()
    verify_seal(token, KEYS, now=NOW, memo=memo)
    impostor = resolver(vkey(ED, public_key=OTHER_ED.public_key))
    with pytest.raises(SealError) as info:
        verify_seal(token, impostor, now=NOW, memo=memo)
    assert info.value.code == "seal.bad_signature"
    assert len(arithmetic) == 2


def test_memo_is_bounded_least_recently_used_first(arithmetic: list[str]) -> None:
    memo = SealMemo(max_entries=2)
    tokens = [craft(payload=claims(n=n)) for n in range(3)]
    for token in (tokens[0], tokens[1], tokens[0], tokens[2]):
        verify_seal(token, KEYS, now=NOW, memo=memo)
    assert len(memo) == 2
    assert len(arithmetic) == 3
    verify_seal(tokens[0], KEYS, now=NOW, memo=memo)  # kept: used more recently than tokens[1]
    assert len(arithmetic) == 3
    verify_seal(tokens[1], KEYS, now=NOW, memo=memo)  # evicted: computed again
    assert len(arithmetic) == 4


def test_memo_needs_an_entry() -> None:
    with pytest.raises(ValueError, match="at least one entry"):
        SealMemo(max_entries=0)
    with pytest.raises(ValueError, match="at least one entry"):
        SealMemo(max_bytes=0)


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The base64url segments the verifier decodes."""
    done: list[str] = []
    real = seals_module._decode_segment

    def counting(segment: str, *, max_length: int | None = None) -> bytes:
        done.append(segment)
        return real(segment, max_length=max_length)

    monkeypatch.setattr(seals_module, "_decode_segment", counting)
    return done


@pytest.mark.parametrize("signer", [ED, EC], ids=["EdDSA", "ES256"])
def test_memo_recalls_a_seal_without_decoding_it_again(
    signer: PrivateKeySigner, decoded: list[str], arithmetic: list[str]
) -> None:
    memo = SealMemo()
    token = craft(header(signer), signer=signer)
    first = verify_seal(token, KEYS, now=NOW, memo=memo)
    assert len(decoded) == 3
    again = verify_seal(token, KEYS, now=NOW, memo=memo)
    assert len(decoded) == 3
    assert arithmetic == [signer.alg]
    assert again == first  # the same verdict, header, payload, bytes, time and checks
    assert again.checks == tuple(Check(name, Indication.PASSED) for name in SEAL_CHECKS)


def test_memo_hands_every_caller_its_own_objects() -> None:
    memo = SealMemo()
    token = craft()
    first = verify_seal(token, KEYS, now=NOW, memo=memo)
    first.payload["certificate"]["name"] = "tampered"  # nested values are plain dicts
    again = verify_seal(token, KEYS, now=NOW, memo=memo)
    assert again.payload["certificate"]["name"] == "结婚证"
    assert again.payload is not first.payload
    assert again.header is not first.header


def test_memo_still_pins_the_callers_typ() -> None:
    memo = SealMemo()
    token = craft()
    verify_seal(token, KEYS, now=NOW, memo=memo)
    with pytest.raises(SealError) as info:
        verify_compact(token, KEYS, typ="consent+jwt", now=NOW, memo=memo)
    assert (info.value.code, info.value.step) == ("seal.wrong_typ", "header")


@pytest.mark.parametrize(
    ("keys", "now", "code", "step"),
    [
        (resolver(vkey(ED, verify_allowed=False)), NOW, "seal.key_use", "key"),
        (resolver(vkey(ED, state=KeyState.NEXT)), NOW, "seal.key_not_active", "time"),
        (resolver(vkey(ED, not_before=NOW + 60)), NOW, "seal.key_not_yet_valid", "time"),
        (KEYS, NOW - 3_600, "seal.signed_in_future", "time"),
        (
            resolver(vkey(ED, state=KeyState.REVOKED, revoked_at=None)),
            NOW,
            "seal.key_revoked",
            "revocation",
        ),
    ],
    ids=["use", "next", "not-yet-valid", "future", "revoked"],
)
def test_memo_judges_the_moment_and_the_key_on_every_use(
    keys: StaticKeyResolver, now: float, code: str, step: str, decoded: list[str]
) -> None:
    memo = SealMemo()
    token = craft()
    verify_seal(token, KEYS, now=NOW, memo=memo)
    with pytest.raises(SealError) as info:
        verify_seal(token, keys, now=now, memo=memo)
    assert (info.value.code, info.value.step) == (code, step)
    assert len(decoded) == 3  # judged from the memo, not by decoding the seal again


def test_memo_recalled_seal_whose_key_is_gone_is_indeterminate() -> None:
    """A recalled seal whose key is gone cannot be judged: INDETERMINATE, as without a memo."""
    memo = SealMemo()
    token = craft()
    verify_seal(token, KEYS, now=NOW, memo=memo)
    with pytest.raises(SealIndeterminate) as info:
        verify_seal(token, resolver(vkey(EC)), now=NOW, memo=memo)
    assert (info.value.code, info.value.step) == ("seal.unknown_kid", "key")


def test_memo_is_bounded_by_bytes() -> None:
    tokens = [craft(payload=claims(n=n)) for n in range(4)]
    memo = SealMemo()
    verify_seal(tokens[0], KEYS, now=NOW, memo=memo)
    one = memo.bytes
    assert one > len(tokens[0])  # the string and its decoded parts
    memo = SealMemo(max_bytes=2 * one + one // 2)
    for token in tokens:
        verify_seal(token, KEYS, now=NOW, memo=memo)
    assert len(memo) == 2
    assert memo.bytes <= memo.max_bytes
    assert memo.recall(tokens[3]) is not None
    assert memo.recall(tokens[0]) is None
    tiny = SealMemo(max_bytes=one - 1)
    verify_seal(tokens[0], KEYS, now=NOW, memo=tiny)  # larger than the whole memo: not kept
    assert (len(tiny), tiny.bytes) == (0, 0)
