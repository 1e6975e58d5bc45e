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

How a signature is verified. A node verifies many seals under few keys, so each public key
keeps two precomputed tables in Tongsuo: one of multiples of the base point G and one of
multiples of the key's own point P (:class:`_Tables`, built on first use, about a
millisecond). Verification is GB/T 32918.2 §7.1 step by step: B1, B2 and B5 here
(:func:`scalars`), B3-B4 ``e = SM3(Z_A || M)`` with ``Z_A`` computed once per key
(:func:`z_digest`), B6 ``(x1, y1) = [s]G + [t]P`` as two fixed-base multiplications in
Tongsuo and one addition, B7 ``(e + x1) mod n == r``. With both points' tables the
multiplication needs no long chain of doublings, which is what makes Tongsuo's own
``EVP_DigestVerify`` (an interleaved multiplication of G and P, ~290 µs here) cost 2.4 times
as much. The arithmetic is Tongsuo's public EC API (``EC_POINTs_mul``, ``EC_POINT_add``…),
reached through cffi in the same library tongsuopy loaded, since tongsuopy does not bind
those functions. Should that library not offer them (another build of tongsuopy), or its
answers disagree with the known-answer check made when this module loads, verification
falls back to ``EVP_DigestVerify``: slower, never different. The tests check both paths
against each other, against the GM/T 0003 example and against an independent
implementation (``gmssl``).
"""

from __future__ import annotations

import logging
from typing import Any, Final, cast

import cffi
from cryptography.hazmat.primitives import hashes as _pyca_hashes
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

log = logging.getLogger(__name__)

ORDER: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
"""n, the order of the SM2 base point (GB/T 32918.5)."""
_A: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
_B: Final = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
_GX: Final = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
_GY: Final = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0
"""The curve's a, b and base point G (GB/T 32918.5), as Z_A hashes them."""
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


def z_digest(public_raw: bytes, signer_id: bytes = DEFAULT_SIGNER_ID) -> bytes:
    """Z_A (GB/T 32918.2 §5.5): SM3 over the signer ID's bit length (2 bytes), the ID, the
    curve's a and b, G's coordinates and the key's ``x || y`` (``public_raw``)."""
    digest = _pyca_hashes.Hash(_pyca_hashes.SM3())
    digest.update((8 * len(signer_id)).to_bytes(2, "big") + signer_id)
    digest.update(b"".join(v.to_bytes(COORDINATE_BYTES, "big") for v in (_A, _B, _GX, _GY)))
    digest.update(public_raw)
    return digest.finalize()


def _sm3(data: bytes) -> bytes:
    digest = _pyca_hashes.Hash(_pyca_hashes.SM3())
    digest.update(data)
    return digest.finalize()


_CDEF: Final = """
typedef struct ec_group_st EC_GROUP;
typedef struct ec_point_st EC_POINT;
typedef struct bignum_st BIGNUM;
typedef struct bignum_ctx BN_CTX;
int OBJ_sn2nid(const char *s);
EC_GROUP *EC_GROUP_new_by_curve_name(int nid);
EC_GROUP *EC_GROUP_dup(const EC_GROUP *a);
void EC_GROUP_free(EC_GROUP *group);
const EC_POINT *EC_GROUP_get0_generator(const EC_GROUP *group);
const BIGNUM *EC_GROUP_get0_order(const EC_GROUP *group);
const BIGNUM *EC_GROUP_get0_cofactor(const EC_GROUP *group);
int EC_GROUP_set_generator(EC_GROUP *group, const EC_POINT *generator, const BIGNUM *order,
                           const BIGNUM *cofactor);
int EC_GROUP_precompute_mult(EC_GROUP *group, BN_CTX *ctx);
int EC_GROUP_have_precompute_mult(const EC_GROUP *group);
EC_POINT *EC_POINT_new(const EC_GROUP *group);
void EC_POINT_free(EC_POINT *point);
int EC_POINT_set_affine_coordinates(const EC_GROUP *group, EC_POINT *p, const BIGNUM *x,
                                    const BIGNUM *y, BN_CTX *ctx);
int EC_POINT_is_on_curve(const EC_GROUP *group, const EC_POINT *point, BN_CTX *ctx);
int EC_POINT_is_at_infinity(const EC_GROUP *group, const EC_POINT *p);
int EC_POINTs_mul(const EC_GROUP *group, EC_POINT *r, const BIGNUM *n, size_t num,
                  const EC_POINT *p[], const BIGNUM *m[], BN_CTX *ctx);
int EC_POINT_add(const EC_GROUP *group, EC_POINT *r, const EC_POINT *a, const EC_POINT *b,
                 BN_CTX *ctx);
int EC_POINT_get_affine_coordinates(const EC_GROUP *group, const EC_POINT *p, BIGNUM *x,
                                    BIGNUM *y, BN_CTX *ctx);
BIGNUM *BN_new(void);
void BN_free(BIGNUM *a);
BIGNUM *BN_bin2bn(const unsigned char *s, int len, BIGNUM *ret);
int BN_bn2binpad(const BIGNUM *a, unsigned char *to, int tolen);
BN_CTX *BN_CTX_new(void);
void BN_CTX_free(BN_CTX *c);
void ERR_clear_error(void);
"""
"""The part of Tongsuo's public EC API the fixed-base verifier uses (OpenSSL 1.1.1's
signatures, which Tongsuo 8 keeps)."""


class _Tongsuo:
    """Tongsuo's libcrypto, as tongsuopy loaded it, with the functions of :data:`_CDEF`."""

    def __init__(self) -> None:
        from tongsuopy.backends import _tongsuo  # the extension that carries libcrypto

        self.ffi = cffi.FFI()
        self.ffi.cdef(_CDEF)
        self.lib: Any = cast(Any, self.ffi.dlopen(_tongsuo.__file__))
        self.nid = self.lib.OBJ_sn2nid(b"SM2")
        if self.nid <= 0:
            raise OSError("Tongsuo does not name the SM2 curve")

    def group(self) -> Any:
        """A new SM2 group object (freed with its last reference)."""
        group = self.lib.EC_GROUP_new_by_curve_name(self.nid)
        if group == self.ffi.NULL:
            raise OSError("Tongsuo cannot make the SM2 group")
        return self.ffi.gc(group, self.lib.EC_GROUP_free)


class _Tables:
    """One key's verification in Tongsuo: the SM2 group with precomputed multiples of G,
    and a copy whose generator is the key's point P, with precomputed multiples of P."""

    __slots__ = ("_g", "_p", "_point", "_tongsuo", "_z")

    def __init__(self, tongsuo: _Tongsuo, public_raw: bytes) -> None:
        ffi, lib = tongsuo.ffi, tongsuo.lib
        self._tongsuo = tongsuo
        self._z = z_digest(public_raw)
        ctx = lib.BN_CTX_new()
        x = lib.BN_bin2bn(public_raw[:COORDINATE_BYTES], COORDINATE_BYTES, ffi.NULL)
        y = lib.BN_bin2bn(public_raw[COORDINATE_BYTES:], COORDINATE_BYTES, ffi.NULL)
        try:
            if ffi.NULL in (ctx, x, y):
                raise MemoryError("Tongsuo could not allocate")
            self._g = tongsuo.group()
            self._p = ffi.gc(lib.EC_GROUP_dup(self._g), lib.EC_GROUP_free)
            self._point = ffi.gc(lib.EC_POINT_new(self._g), lib.EC_POINT_free)
            g, p, point = self._g, self._p, self._point
            if not (
                lib.EC_POINT_set_affine_coordinates(g, point, x, y, ctx) == 1
                and lib.EC_POINT_is_on_curve(g, point, ctx) == 1
                and not lib.EC_POINT_is_at_infinity(g, point)
                # SM2's cofactor is 1: every point of the curve but O generates the group
                and lib.EC_GROUP_set_generator(
                    p, point, lib.EC_GROUP_get0_order(g), lib.EC_GROUP_get0_cofactor(g)
                )
                == 1
                and lib.EC_GROUP_precompute_mult(g, ctx) == 1
                and lib.EC_GROUP_precompute_mult(p, ctx) == 1
            ):
                lib.ERR_clear_error()
                raise ValueError("not a point on the SM2 curve")
        finally:
            lib.BN_free(x)
            lib.BN_free(y)
            lib.BN_CTX_free(ctx)

    def verify(self, r: int, s: int, data: bytes) -> bool:
        """GB/T 32918.2 §7.1 B3-B7 for ``(r, s)`` already in range (B1, B2, B5)."""
        tongsuo = self._tongsuo
        ffi, lib = tongsuo.ffi, tongsuo.lib
        t = (r + s) % ORDER
        e = int.from_bytes(_sm3(self._z + data), "big")
        g, p = self._g, self._p
        ctx = lib.BN_CTX_new()
        s_bn = lib.BN_bin2bn(s.to_bytes(COORDINATE_BYTES, "big"), COORDINATE_BYTES, ffi.NULL)
        t_bn = lib.BN_bin2bn(t.to_bytes(COORDINATE_BYTES, "big"), COORDINATE_BYTES, ffi.NULL)
        zero, x1_bn = lib.BN_new(), lib.BN_new()
        sg, tp = lib.EC_POINT_new(g), lib.EC_POINT_new(g)
        try:
            if ffi.NULL in (ctx, s_bn, t_bn, zero, x1_bn, sg, tp):
                raise MemoryError("Tongsuo could not allocate")
            # One more point with the scalar 0 keeps Tongsuo on its (variable-time,
            # table-using) path: a lone generator multiple takes the constant-time ladder,
            # which ignores the tables. Nothing here is secret.
            points = ffi.new("const EC_POINT *[1]", [lib.EC_GROUP_get0_generator(g)])
            scalars = ffi.new("const BIGNUM *[1]", [zero])
            x1 = ffi.new("unsigned char[]", COORDINATE_BYTES)
            if not (
                lib.EC_POINTs_mul(g, sg, s_bn, 1, points, scalars, ctx) == 1  # [s]G
                and lib.EC_POINTs_mul(p, tp, t_bn, 1, points, scalars, ctx) == 1  # [t]P
                and lib.EC_POINT_add(g, sg, sg, tp, ctx) == 1
                and not lib.EC_POINT_is_at_infinity(g, sg)
                and lib.EC_POINT_get_affine_coordinates(g, sg, x1_bn, ffi.NULL, ctx) == 1
                and lib.BN_bn2binpad(x1_bn, x1, COORDINATE_BYTES) == COORDINATE_BYTES
            ):
                lib.ERR_clear_error()
                return False
            return (e + int.from_bytes(ffi.buffer(x1), "big")) % ORDER == r
        finally:
            lib.EC_POINT_free(sg)
            lib.EC_POINT_free(tp)
            for bn in (s_bn, t_bn, zero, x1_bn):
                lib.BN_free(bn)
            lib.BN_CTX_free(ctx)


_CHECK_VALUE: Final = 0x7E57_C0DE_5EA1
_CHECK_MESSAGE: Final = b"Tongban SM2 known-answer check"


def _load() -> _Tongsuo | None:
    """Tongsuo's EC functions, once they have verified a signature Tongsuo made and refused
    it over another message; None (``EVP_DigestVerify`` then) when anything is amiss."""
    try:
        tongsuo = _Tongsuo()
        key = _ec.derive_private_key(_CHECK_VALUE, _ec.SM2())
        point: bytes = key.public_key().public_bytes(
            _serialization.Encoding.X962, _serialization.PublicFormat.UncompressedPoint
        )
        r, s = decode_dss_signature(key.sign(_CHECK_MESSAGE, _SCHEME))
        tables = _Tables(tongsuo, point[1:])
        if tables.verify(r, s, _CHECK_MESSAGE) and not tables.verify(r, s, _CHECK_MESSAGE[1:]):
            return tongsuo
        log.warning("SM2 with precomputed tables fails its known-answer check: EVP only")
    except (ImportError, OSError, AttributeError, ValueError, MemoryError, cffi.CDefError) as exc:
        log.warning("SM2 with precomputed tables is unavailable: EVP only (%s)", exc)
    return None


_TONGSUO: Final = _load()
"""The fixed-base verifier's library, or None when verification goes through EVP."""


class Sm2PublicKey:
    """An SM2 public key (a point of the GB/T 32918.5 curve, checked on construction)."""

    __slots__ = ("_key", "_raw", "_tables")

    def __init__(self, key: Any) -> None:
        self._key = key
        point: bytes = key.public_bytes(
            _serialization.Encoding.X962, _serialization.PublicFormat.UncompressedPoint
        )
        self._raw = point[1:]
        self._tables: _Tables | None = None

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
        """Verify a raw ``r || s`` signature over ``data``; raises ``seal.bad_signature``.

        With the key's precomputed tables (see the module's description), else with
        Tongsuo's ``EVP_DigestVerify`` (:meth:`verify_with_evp`)."""
        r, s = scalars(signature)
        tables = self._tables
        if tables is None and _TONGSUO is not None:
            # built once, on first use (two threads may both build it: either copy serves)
            tables = self._tables = _Tables(_TONGSUO, self._raw)
        if tables is None:
            self._verify_evp(r, s, data)
        elif not tables.verify(r, s, data):
            raise _bad_signature("SM2 signature does not verify")

    def verify_with_evp(self, signature: bytes, data: bytes) -> None:
        """:meth:`verify` through Tongsuo's ``EVP_DigestVerify`` (the library's own SM2
        verification: the tests hold the two paths to the same answers)."""
        r, s = scalars(signature)
        self._verify_evp(r, s, data)

    def _verify_evp(self, r: int, s: int, data: bytes) -> None:
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
