"""SM2 seals: the published examples, a second implementation both ways, every rejection.

The second, independent SM2 implementation is ``gmssl`` (pure Python, PyPI, BSD licence:
no code shared with Tongsuo, which the gateway uses). It is first held to the worked example
of GM/T 0003.2-2012 Appendix A (= GB/T 32918.2-2016 Appendix A), then signatures go both
ways between it and the gateway on the GB/T 32918.5 curve.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from gmssl import sm2 as gmssl_sm2
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway._internal.secret import Secret
from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.clock import FixedClock
from gateway.crypto import sm2
from gateway.crypto.jwks import (
    KeyState,
    StaticKeyResolver,
    VerificationKey,
    jws_names,
    parse_jwk,
    public_jwk,
)
from gateway.crypto.keystore import KeyStore, iter_key_files
from gateway.crypto.seals import SEAL_TYP, PrivateKeySigner, seal, verify_seal
from gateway.errors import KeyStoreError, SealError
from gateway.ids import NodeId

NOW = 1_795_507_200.0  # 2026-11-24T08:00:00Z
SIG_T = "2026-11-24T08:00:00Z"
ZHUJI = NodeId("zhuji")
N = sm2.ORDER

# Fixed test keys (deterministic, generated here, never secrets of anything).
SM2_KEY = sm2.Sm2PrivateKey.from_private_value(0x5EA1_5EA1_C0DE)
SM2 = PrivateKeySigner(SM2_KEY)
ED = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
EC = PrivateKeySigner(ec.derive_private_key(0x5EA1_C0DE, ec.SECP256R1()))


def vkey(signer: PrivateKeySigner) -> VerificationKey:
    return VerificationKey(
        node=ZHUJI,
        kid=signer.kid,
        alg=signer.alg,
        public_key=signer.public_key,
        state=KeyState.ACTIVE,
        not_before=NOW - 86_400,
        not_after=NOW + 86_400,
        revoked_at=None,
        verify_allowed=True,
    )


KEYS = StaticKeyResolver({s.kid: vkey(s) for s in (SM2, ED, EC)})


def claims() -> bytes:
    return orjson.dumps({"iss": "zhuji", "iat": int(NOW), "certificate": {"name": "结婚证"}})


def signing_input(alg: str, kid: str) -> bytes:
    header = {"alg": alg, "kid": kid, "typ": SEAL_TYP, "sigT": SIG_T}
    raw = json.dumps(header, separators=(",", ":")).encode()
    return f"{b64url_encode(raw)}.{b64url_encode(claims())}".encode("ascii")


def compact(data: bytes, signature: bytes) -> str:
    return f"{data.decode('ascii')}.{b64url_encode(signature)}"


def rejects(token: str, code: str, step: str) -> SealError:
    with pytest.raises(SealError) as info:
        verify_seal(token, KEYS, now=NOW)
    assert (info.value.code, info.value.step) == (code, step)
    return info.value


def sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


# --- the second implementation: gmssl, pure Python ------------------------------------------


def _hex(value: int) -> str:
    return f"{value:064x}"


def z_a(identity: bytes, table: dict[str, str], public_hex: str) -> bytes:
    """GB/T 32918.2 §5.5: Z_A = SM3(ENTL_A || ID_A || a || b || x_G || y_G || x_A || y_A)."""
    entl = (len(identity) * 8).to_bytes(2, "big")
    return sm3(
        entl
        + identity
        + bytes.fromhex(table["a"] + table["b"] + table["g"])
        + bytes.fromhex(public_hex)
    )


def gmssl_for(public: bytes, private: int | None = None) -> gmssl_sm2.CryptSM2:
    # gmssl strips leading "04" characters from a key given with its prefix: pass x || y only
    return gmssl_sm2.CryptSM2(
        private_key=_hex(private) if private is not None else "", public_key=public.hex()
    )


def gmssl_sign(private: int, public: bytes, data: bytes, identity: bytes) -> bytes:
    crypt = gmssl_for(public, private)
    e = sm3(z_a(identity, crypt.ecc_table, public.hex()) + data)
    signature: str = crypt.sign(e, _hex(int.from_bytes(hashlib.sha256(data).digest()) % N))
    return bytes.fromhex(signature)


def gmssl_verifies(public: bytes, data: bytes, signature: bytes) -> bool:
    crypt = gmssl_for(public)
    return bool(crypt.verify_with_sm3(signature.hex(), data))


# --- the published examples -----------------------------------------------------------------


def test_sm3_gives_the_gb_t_32905_examples() -> None:
    # GB/T 32905-2016 Appendix A.1 and A.2: the hash SM2 signs with.
    assert sm3(b"abc").hex() == ("66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")
    assert sm3(b"abcd" * 16).hex() == (
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    )


# GM/T 0003.2-2012 Appendix A.2 (GB/T 32918.2-2016 Appendix A): a signature over the
# 256-bit test curve (not the recommended one, so it applies to the reference
# implementation and to Z_A, not to Tongsuo, which knows only the named SM2 curve).
EXAMPLE_CURVE = {
    "p": "8542D69E4C044F18E8B92435BF6FF7DE457283915C45517D722EDB8B08F1DFC3",
    "a": "787968B4FA32C3FD2417842E73BBFEFF2F3C848B6831D7E0EC65228B3937E498",
    "b": "63E4C6D3B23B0C849CF84241484BFE48F61D59A5B16BA06E6E12D1DA27C5249A",
    "g": "421DEBD61B62EAB6746434EBC3CC315E32220B3BADD50BDC4C4E6C147FEDD43D"
    "0680512BCBB42C07D47349D2153B70C4E5D7FDFCBFA36EA1A85841B9E46E09A2",
    "n": "8542D69E4C044F18E8B92435BF6FF7DD297720630485628D5AE74EE7C32E79B7",
}
EXAMPLE = {
    "id": "ALICE123@YAHOO.COM",
    "message": "message digest",
    "d": "128B2FA8BD433C6C068C8D803DFF79792A519A55171B1B650C23661D15897263",
    "public": "0AE4C7798AA0F119471BEE11825BE46202BB79E2A5844495E97C04FF4DF2548A"
    "7C0240F88F1CD4E16352A73C17B7F16F07353E53A176D684A9FE0C6BB798E857",
    "z": "F4A38489E32B45B6F876E3AC2168CA392362DC8F23459C1D1146FC3DBFB7BC9A",
    "e": "B524F552CD82B8B028476E005C377FB19A87E6FC682D48BB5D42E3D9B9EFFE76",
    "k": "6CB28D99385C175C94F94E934817663FC176D925DD72B727260DBAAE1FB2F96F",
    "r": "40F1EC59F793D9F49E09DCEF49130D4194F79FB1EED2CAA55BACDB49C4E755D1",
    "s": "6FC6DAC32C5D5CF10C77DFB20F7C2EB667A457872FB09EC56327A67EC7DEEBE7",
}


def test_the_reference_implementation_gives_the_gm_t_0003_signature_example() -> None:
    public = EXAMPLE["public"]
    assert isinstance(public, str)
    crypt = gmssl_sm2.CryptSM2(
        private_key=str(EXAMPLE["d"]), public_key=public, ecc_table=EXAMPLE_CURVE
    )
    # the public key is d·G on the example curve
    assert crypt._kg(int(str(EXAMPLE["d"]), 16), EXAMPLE_CURVE["g"]).upper() == public
    z = z_a(b"ALICE123@YAHOO.COM", EXAMPLE_CURVE, public)
    assert z.hex().upper() == EXAMPLE["z"]
    e = sm3(z + b"message digest")
    assert e.hex().upper() == EXAMPLE["e"]
    signature = crypt.sign(e, str(EXAMPLE["k"]))
    assert signature.upper() == str(EXAMPLE["r"]) + str(EXAMPLE["s"])
    assert crypt.verify(signature, e)
    assert not crypt.verify(signature, sm3(z + b"message digesT"))


def test_z_a_with_the_default_id_is_what_the_gateway_signs_over() -> None:
    # The same Z_A construction on the recommended curve, with the default signer ID: a
    # signature the reference makes over SM3(Z_A || M) verifies at the gateway.
    public = SM2_KEY.public_key().public_bytes_raw()
    data = signing_input("SM2", SM2.kid)
    signature = gmssl_sign(0x5EA1_5EA1_C0DE, public, data, sm2.DEFAULT_SIGNER_ID)
    SM2_KEY.public_key().verify(signature, data)


# --- cross-verification, both ways ----------------------------------------------------------


@pytest.mark.parametrize("message", [b"", b"abc", "电子证照".encode() * 100])
def test_gateway_signatures_verify_in_the_reference_implementation(message: bytes) -> None:
    signature = SM2_KEY.sign(message)
    assert len(signature) == 64
    assert gmssl_verifies(SM2_KEY.public_key().public_bytes_raw(), message, signature)
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    assert not gmssl_verifies(SM2_KEY.public_key().public_bytes_raw(), message, tampered)


def test_a_gateway_seal_verifies_in_the_reference_implementation() -> None:
    token = seal(SM2, claims(), signed_at=NOW)
    head, payload, signature = token.split(".")
    assert json.loads(sm2_b64(head)) == {
        "alg": "SM2",
        "kid": SM2.kid,
        "typ": SEAL_TYP,
        "sigT": SIG_T,
    }
    jwk = public_jwk(vkey(SM2))
    public = sm2_b64(jwk["x"]) + sm2_b64(jwk["y"])
    assert gmssl_verifies(public, f"{head}.{payload}".encode(), sm2_b64(signature))


def sm2_b64(text: str) -> bytes:
    return b64url_decode(text)


def test_a_seal_made_by_the_reference_implementation_verifies_at_the_gateway() -> None:
    # A key the gateway has never held: the reference makes it and its seal.
    crypt = gmssl_sm2.CryptSM2(private_key=_hex(0xC0FFEE), public_key="")
    public = bytes.fromhex(crypt._kg(0xC0FFEE, crypt.ecc_table["g"]))
    jwk = {
        "kty": "EC",
        "crv": "SM2",
        "x": b64url_encode(public[:32]),
        "y": b64url_encode(public[32:]),
    }
    kid = b64url_encode(
        hashlib.sha256(json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()).digest()
    )  # RFC 7638, computed here independently of the gateway
    keys = StaticKeyResolver.from_jwks({"keys": [{**jwk, "kid": kid, "alg": "SM2"}]}, node=ZHUJI)
    data = signing_input("SM2", kid)
    signature = gmssl_sign(0xC0FFEE, public, data, sm2.DEFAULT_SIGNER_ID)
    verified = verify_seal(compact(data, signature), keys, now=NOW)
    assert (verified.kid, verified.alg, verified.node) == (kid, "SM2", ZHUJI)
    assert verified.payload_bytes == claims()


# --- keys -----------------------------------------------------------------------------------


def test_an_sm2_jwk_is_ec_sm2_with_its_rfc_7638_thumbprint_as_kid() -> None:
    jwk = public_jwk(vkey(SM2))
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "SM2", "SM2")
    required = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":")).encode()
    assert jwk["kid"] == b64url_encode(hashlib.sha256(canonical).digest()) == SM2.kid
    parsed = parse_jwk(jwk, node=ZHUJI)
    assert (parsed.kid, parsed.alg, parsed.public_key) == (SM2.kid, "SM2", SM2.public_key)


def _point(signer: PrivateKeySigner) -> tuple[str, str]:
    jwk = public_jwk(vkey(signer))
    return jwk["x"], jwk["y"]


@pytest.mark.parametrize(
    ("case", "crv", "signer"),
    [("p256-point-as-sm2", "SM2", EC), ("sm2-point-as-p256", "P-256", SM2)],
)
def test_a_point_of_the_wrong_curve_is_refused(
    case: str, crv: str, signer: PrivateKeySigner
) -> None:
    x, y = _point(signer)
    with pytest.raises(SealError) as info:
        parse_jwk({"kty": "EC", "crv": crv, "x": x, "y": y, "kid": "k"})
    assert info.value.code == "jwk.invalid_key", case


def test_a_point_off_the_sm2_curve_is_refused() -> None:
    x, y = _point(SM2)
    raw_y = bytearray(sm2_b64(y))
    raw_y[-1] ^= 1
    with pytest.raises(SealError) as info:
        parse_jwk({"kty": "EC", "crv": "SM2", "x": x, "y": b64url_encode(bytes(raw_y))})
    assert info.value.code == "jwk.invalid_key"


@pytest.mark.parametrize("alg", ["EdDSA", "Ed25519", "ES256", "sm2"])
def test_an_sm2_jwk_declaring_another_alg_is_refused(alg: str) -> None:
    with pytest.raises(SealError) as info:
        parse_jwk({**public_jwk(vkey(SM2)), "alg": alg})
    assert info.value.code == "jwk.alg_mismatch"


def test_the_key_store_keeps_sm2_keys_encrypted_and_owner_only(tmp_path: Any) -> None:
    clock = FixedClock(NOW)
    store = KeyStore.open(
        tmp_path, ZHUJI, clock=clock, passphrase=Secret("门禁"), default_alg="SM2"
    )
    record = store.active()
    assert record.alg == "SM2"
    (path,) = iter_key_files(store.directory)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    token = seal(store.current_signer(), claims(), signed_at=NOW)
    reopened = KeyStore.open(tmp_path, ZHUJI, clock=clock, passphrase=Secret("门禁"))
    assert reopened.jwks()["keys"][0]["crv"] == "SM2"
    assert verify_seal(token, reopened, now=NOW).alg == "SM2"
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        KeyStore.open(tmp_path, ZHUJI, clock=clock, passphrase=Secret("别的"))
    with pytest.raises(KeyStoreError, match="no passphrase"):
        KeyStore.open(tmp_path, ZHUJI, clock=clock)


def test_a_key_whose_file_is_not_its_recorded_algorithm_is_refused(tmp_path: Any) -> None:
    clock = FixedClock(NOW)
    store = KeyStore.open(tmp_path, ZHUJI, clock=clock, default_alg="SM2")
    keyring = store.directory / "keyring.json"
    keyring.write_bytes(keyring.read_bytes().replace(b'"SM2"', b'"ES256"'))
    with pytest.raises(KeyStoreError):
        KeyStore.open(tmp_path, ZHUJI, clock=clock)


# --- the rejections -------------------------------------------------------------------------


def test_an_sm2_seal_verifies() -> None:
    verified = verify_seal(seal(SM2, claims(), signed_at=NOW), KEYS, now=NOW)
    assert (verified.alg, verified.kid, verified.header["alg"]) == ("SM2", SM2.kid, "SM2")


def test_a_der_encoded_signature_is_refused() -> None:
    data = signing_input("SM2", SM2.kid)
    raw = SM2.sign(data)
    der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    error = rejects(compact(data, der), "seal.bad_signature", "signature")
    assert "64 bytes" in str(error.log_detail)


def test_a_signature_over_another_signer_id_is_refused() -> None:
    data = signing_input("SM2", SM2.kid)
    public = SM2_KEY.public_key().public_bytes_raw()
    other_id = gmssl_sign(0x5EA1_5EA1_C0DE, public, data, b"ALICE123@YAHOO.COM")
    no_id = gmssl_for(public, 0x5EA1_5EA1_C0DE).sign(sm3(data), _hex(12345))
    rejects(compact(data, other_id), "seal.bad_signature", "signature")
    rejects(compact(data, bytes.fromhex(no_id)), "seal.bad_signature", "signature")
    # and the same signer with the default ID passes: only the ID differed
    default = gmssl_sign(0x5EA1_5EA1_C0DE, public, data, sm2.DEFAULT_SIGNER_ID)
    verify_seal(compact(data, default), KEYS, now=NOW)


@pytest.mark.parametrize(
    ("header_alg", "signer"),
    [("SM2", ED), ("SM2", EC), ("EdDSA", SM2), ("Ed25519", SM2), ("ES256", SM2)],
)
def test_an_alg_that_is_not_the_keys_is_refused(header_alg: str, signer: PrivateKeySigner) -> None:
    # signed with the key itself, so only the algorithm name is wrong
    data = signing_input(header_alg, signer.kid)
    rejects(compact(data, signer.sign(data)), "seal.alg_mismatch", "key")


def _rs(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _genuine() -> tuple[bytes, int, int]:
    data = signing_input("SM2", SM2.kid)
    raw = SM2.sign(data)
    return data, int.from_bytes(raw[:32]), int.from_bytes(raw[32:])


@pytest.mark.parametrize(
    "case", ["r=0", "s=0", "r=n", "s=n", "r=2^256-1", "s=2^256-1", "r+s=n", "s=n-s"]
)
def test_out_of_range_r_or_s_is_refused(case: str) -> None:
    data, r, s = _genuine()
    forged = {
        "r=0": (0, s),
        "s=0": (r, 0),
        "r=n": (N, s),
        "s=n": (r, N),
        "r=2^256-1": (2**256 - 1, s),
        "s=2^256-1": (r, 2**256 - 1),
        "r+s=n": (r, N - r),
        "s=n-s": (r, N - s),  # ECDSA's malleability: no valid SM2 signature follows
    }[case]
    error = rejects(compact(data, _rs(*forged)), "seal.bad_signature", "signature")
    if case != "s=n-s":
        assert "SM2" in str(error.log_detail)
        assert "does not verify" not in str(error.log_detail)


def test_a_high_s_from_an_honest_signer_verifies() -> None:
    # GB/T 32918 has no low-s rule: s is uniform in [1, n-1], and a high one is valid.
    for n in range(64):
        data = signing_input("SM2", SM2.kid) + b"%d" % n
        signature = SM2.sign(data)
        if int.from_bytes(signature[32:]) > N // 2:
            SM2_KEY.public_key().verify(signature, data)
            return
    pytest.fail("no high s in 64 signatures")  # probability 2^-64


# --- both names of Ed25519 ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["EdDSA", "Ed25519"])
def test_an_ed25519_key_verifies_under_both_names(name: str) -> None:
    data = signing_input(name, ED.kid)
    verified = verify_seal(compact(data, ED.sign(data)), KEYS, now=NOW)
    assert (verified.alg, verified.header["alg"]) == ("EdDSA", name)


def test_the_configured_ed25519_name_is_what_seals_and_jwks_carry() -> None:
    signer = PrivateKeySigner(
        Ed25519PrivateKey.from_private_bytes(bytes(range(32))), ed25519_name="Ed25519"
    )
    token = seal(signer, claims(), signed_at=NOW)
    assert json.loads(sm2_b64(token.split(".")[0]))["alg"] == "Ed25519"
    assert verify_seal(token, KEYS, now=NOW).alg == "EdDSA"
    key = VerificationKey(**{**_fields(vkey(ED)), "published_alg": "Ed25519"})
    jwk = public_jwk(key)
    assert jwk["alg"] == "Ed25519"
    assert parse_jwk(jwk).published_alg == "Ed25519"  # republished as the node named it
    assert parse_jwk({**jwk, "alg": "EdDSA"}).published_alg is None


def _fields(key: VerificationKey) -> dict[str, Any]:
    return {name: getattr(key, name) for name in VerificationKey.__slots__}


@pytest.mark.parametrize("alg", ["Ed25519", "EdDSA"])
def test_neither_ed25519_name_is_accepted_on_a_p256_jwk(alg: str) -> None:
    with pytest.raises(SealError) as info:
        parse_jwk({**public_jwk(vkey(EC)), "alg": alg})
    assert info.value.code == "jwk.alg_mismatch"


def test_the_names_each_key_answers_to() -> None:
    assert jws_names("EdDSA") == {"EdDSA", "Ed25519"}
    assert jws_names("ES256") == {"ES256"}
    assert jws_names("SM2") == {"SM2"}


def test_the_sm2_public_key_is_its_uncompressed_coordinates() -> None:
    raw = SM2_KEY.public_key().public_bytes_raw()
    assert len(raw) == 64
    assert sm2.Sm2PublicKey.from_coordinates(raw[:32], raw[32:]) == SM2_KEY.public_key()
    with pytest.raises(ValueError, match="32 bytes"):
        sm2.Sm2PublicKey.from_coordinates(raw[:31], raw[32:])
    public = SM2_KEY.public_key()
    assert public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint) == b"\x04" + raw
    pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    with pytest.raises(ValueError, match="has no"):
        public.public_bytes(Encoding.Raw, PublicFormat.Raw)


# --- the two verification paths: precomputed tables and Tongsuo's EVP -----------------------


def test_this_build_verifies_with_precomputed_tables() -> None:
    # the known-answer check passed when the module loaded: the fast path is the one in use
    assert sm2._TONGSUO is not None


def test_z_a_is_the_reference_implementations() -> None:
    public = SM2_KEY.public_key().public_bytes_raw()
    table = gmssl_for(public).ecc_table
    assert sm2.z_digest(public) == z_a(sm2.DEFAULT_SIGNER_ID, table, public.hex())
    assert sm2.z_digest(public, b"ALICE123@YAHOO.COM") == z_a(
        b"ALICE123@YAHOO.COM", table, public.hex()
    )


def _both(key: sm2.Sm2PublicKey, signature: bytes, data: bytes) -> tuple[str | None, str | None]:
    """What each path answers: None when it verifies, else the error's code."""
    answers: list[str | None] = []
    for verify in (key.verify, key.verify_with_evp):
        try:
            verify(signature, data)
            answers.append(None)
        except SealError as exc:
            answers.append(exc.code)
    return answers[0], answers[1]


@settings(max_examples=60, deadline=None)
@given(
    value=st.integers(min_value=1, max_value=N - 2),
    data=st.binary(max_size=2000),
    other=st.binary(min_size=1, max_size=64),
    tweak=st.integers(min_value=1, max_value=N - 1),
)
def test_the_two_paths_agree(value: int, data: bytes, other: bytes, tweak: int) -> None:
    private = sm2.Sm2PrivateKey.from_private_value(value)
    key = private.public_key()
    signature = private.sign(data)
    r, s = int.from_bytes(signature[:32]), int.from_bytes(signature[32:])
    assert _both(key, signature, data) == (None, None)
    bad = "seal.bad_signature"
    assert _both(key, signature, data + other) == (bad, bad)
    assert _both(key, _rs(r, (s + tweak) % N or 1), data) == (bad, bad)
    assert _both(key, _rs((r + tweak) % N or 1, s), data) == (bad, bad)
    assert _both(SM2_KEY.public_key(), signature, data) == (bad, bad)


def test_a_verification_point_at_infinity_is_refused_by_both_paths() -> None:
    # With the private key d known, s = -r·d / (1 + d) mod n makes [s]G + [r + s]P = O,
    # whose x1 does not exist: no e can match, and neither path may treat O as x1 = 0.
    d = 0x5EA1_5EA1_C0DE
    r = 0x1234_5678_9ABC_DEF0
    s = (-r * d * pow(1 + d, -1, N)) % N
    assert (s + (r + s) * d) % N == 0
    bad = "seal.bad_signature"
    assert _both(SM2_KEY.public_key(), _rs(r, s), b"any message") == (bad, bad)


def test_verification_is_safe_from_several_threads_at_once() -> None:
    key = sm2.Sm2PrivateKey.from_private_value(0xC0FFEE).public_key()
    private = sm2.Sm2PrivateKey.from_private_value(0xC0FFEE)
    signed = [(private.sign(b"%d" % n), b"%d" % n) for n in range(40)]

    def check(offset: int) -> int:
        done = 0
        for n in range(200):
            signature, data = signed[(n + offset) % len(signed)]
            key.verify(signature, data)  # the tables are built by whichever thread is first
            with pytest.raises(SealError):
                key.verify(signature, data + b"!")
            done += 1
        return done

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert sum(pool.map(check, range(4))) == 800


def test_without_the_tables_verification_goes_through_evp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sm2, "_TONGSUO", None)
    key = sm2.Sm2PrivateKey.from_private_value(0xFA11_BAC4).public_key()
    private = sm2.Sm2PrivateKey.from_private_value(0xFA11_BAC4)
    data = signing_input("SM2", SM2.kid)
    key.verify(private.sign(data), data)
    with pytest.raises(SealError) as info:
        key.verify(private.sign(data), data + b"!")
    assert info.value.code == "seal.bad_signature"
    assert key._tables is None  # nothing was precomputed


def test_the_known_answer_check_refuses_a_library_that_disagrees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sm2._Tables, "verify", lambda self, r, s, data: True)
    assert sm2._load() is None  # it "verified" the check's signature over another message
