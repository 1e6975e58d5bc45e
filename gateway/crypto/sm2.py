"""SM2 seal keys (GB/T 32918, GM/T 0003) with SM3 (GB/T 32905), over Tongsuo.

pyca/cryptography has SM3 but no SM2, so SM2 goes through ``tongsuopy`` (the Tongsuo
project's Python binding: C, Apache-2.0, the same API shape as pyca/cryptography, and the
fastest verifier of the C-backed SM2 packages measured in ``docs/operations.md``: twice
``gmssl-pyx``'s rate). Nothing outside this module touches it.

A Tongban SM2 signature (JWS ``alg`` ``SM2``, private use: there is no JOSE registration)
is GB/T 32918.2's: ``e = SM3(Z_A || M)`` with ``Z_A`` over the default signer ID
``1234567812345678`` (GM/T 0009), ``M`` the JWS signing input, and the signature the raw
``r || s``, 32 bytes each, big-endian — never DER.

What "in range" means (GB/T 32918.2 §7.1 B1, B2, B5), checked here before anything reaches
the library: ``1 <= r <= n-1``, ``1 <= s <= n-1`` and ``(r + s) mod n != 0``. There is no
low-s rule: SM2 has no ECDSA-style ``s -> n-s`` malleability (``t = r + s`` enters the
verification point), so a high ``s`` from an honest signer verifies and ``(r, n-s)`` does not.
"""

from __future__ import annotations

from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tongsuopy.crypto import hashes as _hashes
from tongsuopy.crypto import serialization as _serialization
from tongsuopy.crypto.asymciphers import ec as _ec
from tongsuopy.crypto.exceptions import InvalidSignature

from gateway.errors import KeyStoreError, SealError

ORDER: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
"""n, the order of the SM2 base point (GB/T 32918.5)."""
DEFAULT_SIGNER_ID: Final = b"1234567812345678"
"""The signer ID every Tongban SM2 signature uses (GB/T 32918 / GM/T 0009 default)."""
SIGNATURE_BYTES: Final = 64
COORDINATE_BYTES: Final = 32
_SCHEME: Final = _ec.ECDSA(_hashes.SM3())
"""Tongsuo's SM2 signing: Z_A over the default signer ID, then SM3, then SM2."""


_FORMS: Final = (
    (
        (Encoding.X962, PublicFormat.UncompressedPoint),
        (_serialization.Encoding.X962, _serialization.PublicFormat.UncompressedPoint),
    ),
    (
        (Encoding.X962, PublicFormat.CompressedPoint),
        (_serialization.Encoding.X962, _serialization.PublicFormat.CompressedPoint),
    ),
    (
        (Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        (_serialization.Encoding.DER, _serialization.PublicFormat.SubjectPublicKeyInfo),
    ),
    (
        (Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
        (_serialization.Encoding.PEM, _serialization.PublicFormat.SubjectPublicKeyInfo),
    ),
)


def _bad_signature(detail: str) -> SealError:
    return SealError("the signature does not verify", code="seal.bad_signature", log_detail=detail)


def scalars(signature: bytes) -> tuple[int, int]:
    """``(r, s)`` of a raw 64-byte signature, each checked to be in range.

    Raises :class:`SealError` ``seal.bad_signature``: not 64 bytes (a DER signature, say),
    ``r`` or ``s`` outside ``[1, n-1]``, or ``(r + s) mod n == 0``.
    """
    if len(signature) != SIGNATURE_BYTES:
        raise _bad_signature(f"an SM2 signature is r || s, 64 bytes, not {len(signature)}")
    r = int.from_bytes(signature[:COORDINATE_BYTES], "big")
    s = int.from_bytes(signature[COORDINATE_BYTES:], "big")
    if not (0 < r < ORDER and 0 < s < ORDER):
        raise _bad_signature("SM2 r or s outside [1, n-1]")
    if (r + s) % ORDER == 0:
        raise _bad_signature("SM2 (r + s) mod n is 0")
    return r, s


class Sm2PublicKey:
    """An SM2 public key (a point of the GB/T 32918.5 curve, checked on construction)."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key: Any) -> None:
        self._key = key
        point: bytes = key.public_bytes(
            _serialization.Encoding.X962, _serialization.PublicFormat.UncompressedPoint
        )
        self._raw = point[1:]

    @classmethod
    def from_coordinates(cls, x: bytes, y: bytes) -> Sm2PublicKey:
        """The key at ``(x, y)``; raises :class:`ValueError` unless it is a curve point."""
        if len(x) != COORDINATE_BYTES or len(y) != COORDINATE_BYTES:
            raise ValueError("SM2 coordinates are 32 bytes each")
        try:
            key = _ec.EllipticCurvePublicKey.from_encoded_point(_ec.SM2(), b"\x04" + x + y)
        except Exception as exc:  # tongsuopy raises ValueError, or its own errors
            raise ValueError("not a point on the SM2 curve") from exc
        return cls(key)

    def public_bytes_raw(self) -> bytes:
        """``x || y``, 64 bytes."""
        return self._raw

    def public_bytes(self, encoding: Encoding, format: PublicFormat) -> bytes:
        """As pyca/cryptography's keys: X9.62 points, or SubjectPublicKeyInfo DER/PEM."""
        for ours, theirs in _FORMS:
            if ours == (encoding, format):
                data: bytes = self._key.public_bytes(*theirs)
                return data
        raise ValueError(f"an SM2 key has no {encoding}/{format} form")

    def verify(self, signature: bytes, data: bytes) -> None:
        """Verify a raw ``r || s`` signature over ``data``; raises ``seal.bad_signature``."""
        r, s = scalars(signature)
        try:
            self._key.verify(encode_dss_signature(r, s), data, _SCHEME)
        except InvalidSignature as exc:
            raise _bad_signature("SM2 signature does not verify") from exc
        except Exception as exc:  # any library error is a failed verification, never a 500
            raise _bad_signature(f"SM2 library error {type(exc).__name__}") from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sm2PublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"Sm2PublicKey({self._raw.hex()})"


class Sm2PrivateKey:
    """An SM2 private key. Its value never leaves except as (encrypted) PKCS#8 PEM."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: Any) -> None:
        if getattr(key.curve, "name", None) != "SM2":
            raise KeyStoreError("not an SM2 private key")
        self._key = key
        self._public = Sm2PublicKey(key.public_key())

    @classmethod
    def generate(cls) -> Sm2PrivateKey:
        return cls(_ec.generate_private_key(_ec.SM2()))

    @classmethod
    def from_private_value(cls, value: int) -> Sm2PrivateKey:
        """The key with secret scalar ``value`` (known-answer tests)."""
        return cls(_ec.derive_private_key(value, _ec.SM2()))

    @classmethod
    def from_pem(cls, pem: bytes, password: bytes | None) -> Sm2PrivateKey:
        """Load PKCS#8 PEM. :class:`TypeError` when a password is missing or superfluous,
        :class:`ValueError` when it is wrong or the key is not SM2 (as pyca's loader)."""
        key = _serialization.load_pem_private_key(pem, password=password)
        if getattr(getattr(key, "curve", None), "name", None) != "SM2":
            raise ValueError("not an SM2 private key")
        return cls(key)

    def to_pem(self, password: bytes | None) -> bytes:
        """PKCS#8 PEM, encrypted with ``password`` when one is given."""
        encryption: Any = (
            _serialization.BestAvailableEncryption(password)
            if password is not None
            else _serialization.NoEncryption()
        )
        pem: bytes = self._key.private_bytes(
            _serialization.Encoding.PEM, _serialization.PrivateFormat.PKCS8, encryption
        )
        return pem

    def public_key(self) -> Sm2PublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        """The raw ``r || s`` signature of ``data`` (SM3 with the default signer ID)."""
        r, s = decode_dss_signature(self._key.sign(data, _SCHEME))
        return r.to_bytes(COORDINATE_BYTES, "big") + s.to_bytes(COORDINATE_BYTES, "big")

    def __repr__(self) -> str:
        return "Sm2PrivateKey(…)"
