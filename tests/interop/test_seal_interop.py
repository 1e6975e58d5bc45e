"""Seals interoperate with standard JOSE libraries, in both directions.

Tongban → jwcrypto / pyjwt: a verifier holding only the published JWKS JSON verifies a seal.
jwcrypto / pyjwt → Tongban: a JWS made by those libraries verifies under ``verify_seal``.
"""

from __future__ import annotations

from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from gateway.crypto.jwks import KeyState, StaticKeyResolver, VerificationKey, public_jwk
from gateway.crypto.seals import SEAL_TYP, PrivateKeySigner, seal, verify_seal
from gateway.errors import SealError
from gateway.ids import NodeId

NOW = 1_795_507_200.0
SIG_T = "2026-11-24T08:00:00Z"
ZHUJI = NodeId("zhuji")
ALGS = ["EdDSA", "ES256"]


def _private_key(alg: str) -> Ed25519PrivateKey | ec.EllipticCurvePrivateKey:
    if alg == "EdDSA":
        return Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _claims() -> bytes:
    return orjson.dumps({"iss": "zhuji", "iat": int(NOW), "certificate": {"name": "户口簿"}})


def _published_jwks(signer: PrivateKeySigner) -> bytes:
    """What a node serves at /.well-known/jwks.json, as bytes on the wire."""
    key = VerificationKey(
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
    return orjson.dumps({"keys": [public_jwk(key)]})


# --- Tongban seals, verified by other libraries ---------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_jwcrypto_verifies_a_tongban_seal(alg: str) -> None:
    signer = PrivateKeySigner(_private_key(alg))
    token = seal(signer, _claims(), signed_at=NOW)

    keyset = jwcrypto_jwk.JWKSet.from_json(_published_jwks(signer).decode())
    key = keyset.get_key(signer.kid)
    assert key is not None
    assert key.thumbprint() == signer.kid  # jwcrypto agrees on the RFC 7638 kid
    verifier = jwcrypto_jws.JWS()
    verifier.deserialize(token)
    verifier.verify(key, alg=alg)
    assert verifier.payload == _claims()
    assert verifier.jose_header == {"alg": alg, "kid": signer.kid, "typ": SEAL_TYP, "sigT": SIG_T}


@pytest.mark.parametrize("alg", ALGS)
def test_jwcrypto_rejects_a_tampered_tongban_seal(alg: str) -> None:
    signer = PrivateKeySigner(_private_key(alg))
    head, _, sig = seal(signer, _claims(), signed_at=NOW).split(".")
    forged = f"{head}.{jwcrypto_jws.base64url_encode(b'{}')}.{sig}"
    key = jwcrypto_jwk.JWKSet.from_json(_published_jwks(signer).decode()).get_key(signer.kid)
    verifier = jwcrypto_jws.JWS()
    verifier.deserialize(forged)
    with pytest.raises(jwcrypto_jws.InvalidJWSSignature):
        verifier.verify(key, alg=alg)


@pytest.mark.parametrize("alg", ALGS)
def test_pyjwt_verifies_a_tongban_seal(alg: str) -> None:
    signer = PrivateKeySigner(_private_key(alg))
    token = seal(signer, _claims(), signed_at=NOW)

    keyset = jwt.PyJWKSet.from_json(_published_jwks(signer).decode())
    key = keyset[signer.kid]
    decoded = jwt.api_jws.PyJWS().decode_complete(token, key, algorithms=[alg])
    assert decoded["payload"] == _claims()
    assert decoded["header"] == {"alg": alg, "kid": signer.kid, "typ": SEAL_TYP, "sigT": SIG_T}


@pytest.mark.parametrize("alg", ALGS)
def test_pyjwt_rejects_a_tampered_tongban_seal(alg: str) -> None:
    signer = PrivateKeySigner(_private_key(alg))
    head, _, sig = seal(signer, _claims(), signed_at=NOW).split(".")
    forged = f"{head}.{jwcrypto_jws.base64url_encode(b'{}')}.{sig}"
    key = jwt.PyJWK(orjson.loads(_published_jwks(signer))["keys"][0])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.api_jws.PyJWS().decode_complete(forged, key, algorithms=[alg])


# --- seals made by other libraries, verified by Tongban -------------------------------------


def _resolver_for(public: dict[str, Any]) -> StaticKeyResolver:
    return StaticKeyResolver.from_jwks({"keys": [public]}, node=ZHUJI)


def _seal_header(alg: str, kid: str) -> dict[str, Any]:
    return {"alg": alg, "kid": kid, "typ": SEAL_TYP, "sigT": SIG_T}


@pytest.mark.parametrize(
    ("alg", "kty", "crv"), [("EdDSA", "OKP", "Ed25519"), ("ES256", "EC", "P-256")]
)
def test_tongban_verifies_a_jwcrypto_seal(alg: str, kty: str, crv: str) -> None:
    key = jwcrypto_jwk.JWK.generate(kty=kty, crv=crv)
    kid = key.thumbprint()
    public = {**key.export_public(as_dict=True), "kid": kid}
    token = jwcrypto_jws.JWS(_claims())
    token.add_signature(key, alg=None, protected=orjson.dumps(_seal_header(alg, kid)).decode())
    compact = token.serialize(compact=True)

    verified = verify_seal(compact, _resolver_for(public), now=NOW)
    assert verified.kid == kid
    assert verified.alg == alg
    assert verified.node == ZHUJI
    assert verified.payload_bytes == _claims()


@pytest.mark.parametrize("alg", ALGS)
def test_tongban_verifies_a_pyjwt_seal(alg: str) -> None:
    private_key = _private_key(alg)
    # The public JWK as pyjwt writes it, plus its RFC 7638 kid as jwcrypto computes it.
    exported = jwt.get_algorithm_by_name(alg).to_jwk(private_key.public_key(), as_dict=True)
    kid = jwcrypto_jwk.JWK(**exported).thumbprint()
    token = jwt.api_jws.PyJWS().encode(
        _claims(), private_key, algorithm=alg, headers=_seal_header(alg, kid)
    )

    verified = verify_seal(token, _resolver_for({**exported, "kid": kid}), now=NOW)
    assert verified.kid == kid
    assert verified.alg == alg
    assert verified.payload_bytes == _claims()


@pytest.mark.parametrize("alg", ALGS)
def test_tongban_rejects_a_plain_pyjwt_token(alg: str) -> None:
    """A standard JWT (typ JWT, no signing time) signed by a known key is still not a seal."""
    private_key = _private_key(alg)
    algorithm = jwt.get_algorithm_by_name(alg)
    signer = PrivateKeySigner(private_key)
    exported = algorithm.to_jwk(private_key.public_key(), as_dict=True)
    token = jwt.encode(
        {"iss": "zhuji", "iat": int(NOW)}, private_key, algorithm=alg, headers={"kid": signer.kid}
    )
    with pytest.raises(SealError) as info:
        verify_seal(token, _resolver_for({**exported, "kid": signer.kid}), now=NOW)
    assert info.value.code == "seal.wrong_typ"
