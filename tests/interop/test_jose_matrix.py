"""The interop matrix: which JOSE library verifies which Tongban seals and tokens, by name.

Each library verifies what a node publishes, as a partner region would: a seal or an access
token from the gateway's own signer, with only the published JWK (the ``alg`` member as the
node publishes it). ``MATRIX`` is the table ``docs/api.md`` prints; a cell that changes
(a library learning RFC 9864's ``Ed25519``, say) fails here until the docs say so too.

- jwcrypto (1.6): both Ed25519 names; no SM2 curve.
- joserfc (1.8): both names, once the JAdES ``sigT`` header is declared (it refuses headers
  it does not know); ``EdDSA`` warns "EdDSA is deprecated via RFC 9864"; no SM2 curve.
- pyjwt (2.15): ``EdDSA`` only; no SM2 curve, but an algorithm can be registered, which
  verifies SM2 seals with Tongsuo (the recipe in ``docs/api.md``, tested below).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwk as joserfc_jwk
from joserfc import jws as joserfc_jws
from joserfc import jwt as joserfc_jwt
from joserfc.errors import UnsupportedHeaderError
from joserfc.registry import HeaderParameter
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws
from jwcrypto import jwt as jwcrypto_jwt
from tongsuopy.crypto import hashes as tongsuo_hashes
from tongsuopy.crypto.asymciphers import ec as tongsuo_ec
from tongsuopy.crypto.exceptions import InvalidSignature

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.config import load_federation
from gateway.crypto.jwks import (
    Ed25519Name,
    KeyState,
    VerificationKey,
    public_jwk,
)
from gateway.crypto.seals import PrivateKeySigner, seal
from gateway.crypto.sm2 import Sm2PrivateKey
from gateway.ids import NodeId
from gateway.sso.tokens import issue_access_token

ZHUJI = NodeId("zhuji")
ISSUER = "https://idp.example"
AUDIENCE = "tongban"
LIBRARIES = ("jwcrypto", "joserfc", "pyjwt")
NAMES = ("EdDSA", "Ed25519", "ES256", "SM2")
KINDS = ("seal", "token")

MATRIX: dict[str, dict[str, bool]] = {
    #            EdDSA  Ed25519  ES256  SM2
    "jwcrypto": {"EdDSA": True, "Ed25519": True, "ES256": True, "SM2": False},
    "joserfc": {"EdDSA": True, "Ed25519": True, "ES256": True, "SM2": False},
    "pyjwt": {"EdDSA": True, "Ed25519": False, "ES256": True, "SM2": False},
}
"""Seals and tokens alike (both are compact JWS signed by the same kind of signer)."""

REFUSALS: dict[tuple[str, str], type[Exception]] = {
    ("pyjwt", "Ed25519"): jwt.PyJWKError,  # "Unable to find an algorithm for key"
    ("pyjwt", "SM2"): jwt.PyJWKError,
    ("jwcrypto", "SM2"): jwcrypto_jws.InvalidJWSSignature,  # "Algorithm not allowed"
    ("joserfc", "SM2"): KeyError,  # no curve 'SM2'
}
"""How each library refuses what it cannot verify."""


def _signer(name: str) -> PrivateKeySigner:
    if name == "SM2":
        return PrivateKeySigner(Sm2PrivateKey.generate())
    if name == "ES256":
        return PrivateKeySigner(ec.generate_private_key(ec.SECP256R1()))
    ed25519_name: Ed25519Name = "Ed25519" if name == "Ed25519" else "EdDSA"
    return PrivateKeySigner(Ed25519PrivateKey.generate(), ed25519_name=ed25519_name)


def _published(signer: PrivateKeySigner, now: float) -> dict[str, Any]:
    """The JWK as a node configured with this name publishes it (JSON round trip)."""
    key = VerificationKey(
        node=ZHUJI,
        kid=signer.kid,
        alg=signer.alg,
        public_key=signer.public_key,
        state=KeyState.ACTIVE,
        not_before=now - 86_400,
        not_after=now + 86_400,
        revoked_at=None,
        verify_allowed=True,
        published_alg="Ed25519" if signer.jws_alg == "Ed25519" else None,
    )
    published: dict[str, Any] = orjson.loads(orjson.dumps(public_jwk(key)))
    return published


def _made(kind: str, signer: PrivateKeySigner, now: float) -> tuple[str, bytes]:
    """A seal or an access token, with the payload a verifier must get back."""
    if kind == "seal":
        payload = orjson.dumps({"iss": "zhuji", "iat": int(now), "certificate": {"n": "结婚证"}})
        return seal(signer, payload, signed_at=now), payload
    token = issue_access_token(
        signer,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="zhuji-civil-affairs",
        client_id="zhuji-civil-affairs",
        scopes=["cert:read"],
        department=None,
        region=None,
        now=now,
        jti="t1",
    )
    return token, b64url_decode(token.split(".")[1])


# --- each library as a partner region configures it (the recipes of docs/api.md) -----------


def jwcrypto_verify(kind: str, token: str, jwk: dict[str, Any], name: str) -> bytes:
    key = jwcrypto_jwk.JWK(**jwk)
    if kind == "token":
        verified = jwcrypto_jwt.JWT(
            jwt=token, key=key, algs=[name], check_claims={"iss": ISSUER, "aud": AUDIENCE}
        )
        claims: str = verified.claims
        return claims.encode()
    verifier = jwcrypto_jws.JWS()
    verifier.deserialize(token)
    verifier.verify(key, alg=name)
    payload: bytes = verifier.payload
    return payload


# joserfc refuses any header it does not know: declare JAdES's signing time.
JOSERFC_HEADERS = {"sigT": HeaderParameter("JAdES signing time (RFC 3339)", "str")}


def joserfc_verify(kind: str, token: str, jwk: dict[str, Any], name: str) -> bytes:
    key = joserfc_jwk.import_key(jwk)
    registry = joserfc_jws.JWSRegistry(header_registry=JOSERFC_HEADERS, algorithms=[name])
    with warnings.catch_warnings():
        # joserfc warns on every EdDSA object: RFC 9864 deprecates the name
        warnings.filterwarnings("ignore", message="EdDSA is deprecated via RFC 9864")
        if kind == "token":
            decoded = joserfc_jwt.decode(token, key, algorithms=[name], registry=registry)
            joserfc_jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": AUDIENCE}
            ).validate(decoded.claims)
            return orjson.dumps(decoded.claims, option=orjson.OPT_SORT_KEYS)
        return joserfc_jws.deserialize_compact(
            token, key, algorithms=[name], registry=registry
        ).payload


def pyjwt_verify(kind: str, token: str, jwk: dict[str, Any], name: str) -> bytes:
    key = jwt.PyJWK(jwk)
    if kind == "token":
        claims = jwt.decode(token, key, algorithms=[name], audience=AUDIENCE, issuer=ISSUER)
        return orjson.dumps(claims, option=orjson.OPT_SORT_KEYS)
    payload: bytes = jwt.api_jws.PyJWS().decode_complete(token, key, algorithms=[name])["payload"]
    return payload


VERIFIERS: dict[str, Callable[[str, str, dict[str, Any], str], bytes]] = {
    "jwcrypto": jwcrypto_verify,
    "joserfc": joserfc_verify,
    "pyjwt": pyjwt_verify,
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("library", LIBRARIES)
def test_the_interop_matrix(library: str, kind: str, name: str) -> None:
    now = float(int(time.time()))  # the libraries check exp against their own clock
    signer = _signer(name)
    token, payload = _made(kind, signer, now)
    assert orjson.loads(_header(token))["alg"] == name
    jwk = _published(signer, now)
    verify = VERIFIERS[library]
    if MATRIX[library][name]:
        assert orjson.loads(verify(kind, token, jwk, name)) == orjson.loads(payload)
        # and a tampered one fails there too
        head, body, signature = token.split(".")
        forged = f"{head}.{_other(body)}.{signature}"
        with pytest.raises(Exception):  # noqa: PT011 - each library's own error
            verify(kind, forged, jwk, name)
    else:
        with pytest.raises(REFUSALS[library, name]):
            verify(kind, token, jwk, name)


def _other(body: str) -> str:
    """Another payload, with one claim changed, strictly encoded."""
    claims = orjson.loads(b64url_decode(body))
    claims["iss"] = "shanghai"
    return b64url_encode(orjson.dumps(claims))


def _header(token: str) -> bytes:
    return b64url_decode(token.split(".", maxsplit=1)[0])


def test_the_default_name_is_one_every_library_verifies() -> None:
    default = load_federation(env={}).ed25519_alg
    assert default == "EdDSA"
    assert all(MATRIX[library][default] for library in LIBRARIES)


def test_joserfc_refuses_a_seal_until_sigt_is_declared() -> None:
    now = float(int(time.time()))
    signer = _signer("Ed25519")
    token, _ = _made("seal", signer, now)
    key = joserfc_jwk.import_key(_published(signer, now))
    with pytest.raises(UnsupportedHeaderError):
        joserfc_jws.deserialize_compact(token, key, algorithms=["Ed25519"])


def test_joserfc_warns_that_eddsa_is_deprecated() -> None:
    now = float(int(time.time()))
    signer = _signer("EdDSA")
    token, _ = _made("seal", signer, now)
    key = joserfc_jwk.import_key(_published(signer, now))
    registry = joserfc_jws.JWSRegistry(header_registry=JOSERFC_HEADERS, algorithms=["EdDSA"])
    with pytest.warns(UserWarning, match="RFC 9864"):
        joserfc_jws.deserialize_compact(token, key, algorithms=["EdDSA"], registry=registry)


# --- SM2 in pyjwt, with an algorithm a partner registers ------------------------------------


class Sm2Algorithm(jwt.algorithms.Algorithm):
    """Verify-only SM2 for pyjwt over Tongsuo: raw r || s, SM3, default signer ID."""

    def prepare_key(self, key: Any) -> Any:
        if isinstance(key, jwt.PyJWK):
            key = key.key
        if isinstance(key, dict):
            point = b"\x04" + b64url_decode(key["x"]) + b64url_decode(key["y"])
            return tongsuo_ec.EllipticCurvePublicKey.from_encoded_point(tongsuo_ec.SM2(), point)
        return key

    def sign(self, msg: bytes, key: Any) -> bytes:
        raise NotImplementedError("verify only")

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        if len(sig) != 64:
            return False
        r, s = int.from_bytes(sig[:32]), int.from_bytes(sig[32:])
        try:
            key.verify(encode_dss_signature(r, s), msg, tongsuo_ec.ECDSA(tongsuo_hashes.SM3()))
        except InvalidSignature:
            return False
        return True

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> Any:
        raise NotImplementedError

    @staticmethod
    def from_jwk(jwk: str | dict[str, Any]) -> Any:
        raise NotImplementedError


def test_pyjwt_verifies_an_sm2_seal_with_a_registered_algorithm() -> None:
    now = float(int(time.time()))
    signer = _signer("SM2")
    token, payload = _made("seal", signer, now)
    jwk = _published(signer, now)
    jws = jwt.api_jws.PyJWS()
    jws.register_algorithm("SM2", Sm2Algorithm())
    key = Sm2Algorithm().prepare_key(jwk)
    assert jws.decode_complete(token, key, algorithms=["SM2"])["payload"] == payload
    head, body, signature = token.split(".")
    with pytest.raises(jwt.InvalidSignatureError):
        jws.decode_complete(f"{head}.{_other(body)}.{signature}", key, algorithms=["SM2"])
