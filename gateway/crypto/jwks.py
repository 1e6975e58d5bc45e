"""Seal public keys as JWKs (RFC 7517), with Tongban's status and validity members.

A node publishes its seal keys at ``/.well-known/jwks.json``. Each key is an ``OKP``/``Ed25519``
(alg ``EdDSA``, RFC 8037, or its fully-specified name ``Ed25519``, RFC 9864), ``EC``/``P-256``
(alg ``ES256``) or ``EC``/``SM2`` (alg ``SM2``, GB/T 32918: private use, no JOSE registration)
public key whose ``kid`` is its RFC 7638 SHA-256 thumbprint, plus members of our own::

    {"kty": "OKP", "crv": "Ed25519", "x": "…", "kid": "…", "alg": "EdDSA",
     "use": "sig", "key_ops": ["verify"], "status": "active",
     "nbf": 1795507200, "exp": 1827043200, "node": "zhuji"}

:func:`parse_jwk` is strict: it accepts nothing it would have to guess about. A key whose
``use``/``key_ops`` do not allow verification still parses (``verify_allowed=False``) so the
verifier can reject a seal made with it under its own code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal, Protocol

import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.bindings import crypto_core_ed25519_is_valid_point

from gateway._internal.wire import b64url_decode, b64url_encode, is_int
from gateway.crypto.sm2 import Sm2PublicKey
from gateway.errors import InputError, SealError, SealIndeterminate
from gateway.ids import KeyId, NodeId

Alg = Literal["EdDSA", "ES256", "SM2"]
"""The algorithm a key is pinned to (``EdDSA`` for every Ed25519 key, whatever its name)."""
JwsAlg = Literal["EdDSA", "Ed25519", "ES256", "SM2"]
"""A name a JWS header (and a JWK's ``alg``) may carry."""
Ed25519Name = Literal["EdDSA", "Ed25519"]
"""The two names of Ed25519 signatures: RFC 8037's ``EdDSA`` and RFC 9864's ``Ed25519``."""
ED25519_NAMES: tuple[Ed25519Name, ...] = ("EdDSA", "Ed25519")
PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey | Sm2PublicKey

_NAMES: Mapping[Alg, frozenset[str]] = MappingProxyType(
    {
        "EdDSA": frozenset(ED25519_NAMES),
        "ES256": frozenset({"ES256"}),
        "SM2": frozenset({"SM2"}),
    }
)


def jws_names(alg: Alg) -> frozenset[str]:
    """The header ``alg`` values a key pinned to ``alg`` verifies: both names of Ed25519 on an
    Ed25519 key (and on nothing else), exactly ``ES256`` and ``SM2`` on the others."""
    return _NAMES[alg]


def key_alg(name: str) -> Alg:
    """A configured seal algorithm (``seal_alg``) as a key algorithm."""
    if name == "ES256":
        return "ES256"
    if name == "SM2":
        return "SM2"
    if name in ED25519_NAMES:
        return "EdDSA"
    raise SealError(f"unsupported seal algorithm {name[:16]!r}", code="jwk.unsupported_key")


def ed25519_name(name: str) -> Ed25519Name:
    """A configured name of Ed25519 signatures (``ed25519_alg``)."""
    if name == "Ed25519":
        return "Ed25519"
    if name == "EdDSA":
        return "EdDSA"
    raise SealError(f"{name[:16]!r} is not a name of Ed25519", code="jwk.unsupported_key")


def jws_name(alg: Alg, ed25519_name: Ed25519Name = "EdDSA") -> JwsAlg:
    """The name new signatures by a key pinned to ``alg`` carry."""
    return ed25519_name if alg == "EdDSA" else alg


MAX_JWKS_KEYS = 256
"""A JWKS with more keys than this is refused (bounded work on untrusted input)."""

_COORD_BYTES = 32  # Ed25519 public keys, and P-256 x and y coordinates
_MAX_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z
_NODE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class KeyState(StrEnum):
    """Where a key is in its life: pre-published, signing, verify-only, or revoked."""

    NEXT = "next"
    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public seal key of one node, with the metadata the verifier judges it by."""

    node: NodeId
    kid: KeyId
    alg: Alg
    public_key: PublicKey
    state: KeyState
    not_before: float | None
    """Validity start (epoch seconds): seals claiming an earlier signing time fail."""
    not_after: float | None
    """Validity end: seals claiming a later signing time fail."""
    revoked_at: float | None
    verify_allowed: bool
    """False when the JWK's ``use`` is not ``sig`` or its ``key_ops`` lack ``verify``."""
    published_alg: JwsAlg | None = None
    """The JWK ``alg`` the key is published under when it is not ``alg`` (``Ed25519``, the
    RFC 9864 name of an Ed25519 key): kept so the trust list republishes it as the node did."""


class KeyResolver(Protocol):
    def key_for(self, kid: KeyId) -> VerificationKey:
        """The key named ``kid``; raises :class:`SealIndeterminate` (``seal.unknown_kid``)."""
        ...


class StaticKeyResolver:
    """A fixed set of keys: offline verification from a JWKS file, and tests."""

    def __init__(self, keys: Mapping[KeyId, VerificationKey]) -> None:
        for kid, key in keys.items():
            if kid != key.kid:
                raise SealError(
                    f"key registered as {kid!r} has kid {key.kid!r}", code="jwk.kid_mismatch"
                )
        self._keys: Mapping[KeyId, VerificationKey] = MappingProxyType(dict(keys))

    @classmethod
    def from_jwks(cls, obj: Any, *, node: NodeId | None = None) -> StaticKeyResolver:
        return cls(parse_jwks(obj, node=node))

    def key_for(self, kid: KeyId) -> VerificationKey:
        try:
            return self._keys[kid]
        except KeyError:
            raise SealIndeterminate(
                "the seal names a key that is not known", code="seal.unknown_kid"
            ) from None


# --- thumbprints and algorithms -------------------------------------------------------------


def thumbprint_of_members(required: Mapping[str, str]) -> KeyId:
    """RFC 7638 §3: SHA-256 over the required members, sorted, no whitespace, base64url."""
    canonical = orjson.dumps(dict(required), option=orjson.OPT_SORT_KEYS)
    return KeyId(b64url_encode(hashlib.sha256(canonical).digest()))


def thumbprint(public_key: PublicKey) -> KeyId:
    """The RFC 7638 SHA-256 thumbprint of an Ed25519, P-256 or SM2 public key."""
    return thumbprint_of_members(_required_members(public_key))


def alg_for(public_key: object) -> Alg:
    """The one JWS algorithm a key may be used with. Anything else is unsupported."""
    if isinstance(public_key, Ed25519PublicKey):
        return "EdDSA"
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(
        public_key.curve, ec.SECP256R1
    ):
        return "ES256"
    if isinstance(public_key, Sm2PublicKey):
        return "SM2"
    raise SealError(
        "only Ed25519, P-256 and SM2 keys are supported",
        code="jwk.unsupported_key",
        log_detail=f"key type {type(public_key).__name__}",
    )


def _required_members(public_key: PublicKey) -> dict[str, str]:
    if isinstance(public_key, Sm2PublicKey):
        raw = public_key.public_bytes_raw()
        x, y = raw[:_COORD_BYTES], raw[_COORD_BYTES:]
        return {"crv": "SM2", "kty": "EC", "x": b64url_encode(x), "y": b64url_encode(y)}
    if alg_for(public_key) == "EdDSA":
        raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw)}
    point = public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    x, y = point[1 : 1 + _COORD_BYTES], point[1 + _COORD_BYTES :]
    return {"crv": "P-256", "kty": "EC", "x": b64url_encode(x), "y": b64url_encode(y)}


# --- writing --------------------------------------------------------------------------------


def public_jwk(key: VerificationKey) -> dict[str, Any]:
    """The JWK a node publishes for ``key``: public members only, plus status and times."""
    jwk: dict[str, Any] = _required_members(key.public_key)
    jwk.update(
        kid=key.kid,
        alg=key.published_alg or key.alg,
        use="sig",
        key_ops=["verify"],
        status=key.state.value,
        node=key.node,
    )
    if key.not_before is not None:
        jwk["nbf"] = int(key.not_before)
    if key.not_after is not None:
        jwk["exp"] = int(key.not_after)
    if key.revoked_at is not None:
        jwk["revoked_at"] = int(key.revoked_at)
    return jwk


# --- parsing --------------------------------------------------------------------------------


def _bad(detail: str, code: str = "jwk.bad_member") -> SealError:
    return SealError(detail, code=code)


def _string(obj: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = obj.get(name)
    if value is None and name not in obj and not required:
        return None
    if not isinstance(value, str):
        raise _bad(f"JWK member {name!r} must be a string")
    return value


def _coordinate(obj: Mapping[str, Any], name: str) -> bytes:
    text = _string(obj, name, required=True)
    assert text is not None  # required=True
    try:
        raw = b64url_decode(text, max_length=64)
    except InputError as exc:
        raise _bad(f"JWK member {name!r} is not strict base64url") from exc
    if len(raw) != _COORD_BYTES:
        raise _bad(f"JWK member {name!r} must encode exactly {_COORD_BYTES} bytes")
    return raw


def _time(obj: Mapping[str, Any], name: str) -> float | None:
    if name not in obj:
        return None
    value = obj[name]
    # bool is an int subclass: ``true`` is not a time.
    if not is_int(value) or not 0 <= value <= _MAX_TIME:
        raise _bad(f"JWK member {name!r} must be an integer number of seconds since the epoch")
    return float(value)


def _public_key(obj: Mapping[str, Any]) -> PublicKey:
    kty = obj.get("kty")
    crv = obj.get("crv")
    if kty == "OKP" and crv == "Ed25519":
        x = _coordinate(obj, "x")
        # A canonical point of the prime-order subgroup, as every key made from a private
        # scalar is: a small-order key has "signatures" that fit any message.
        if not crypto_core_ed25519_is_valid_point(x):
            raise _bad("OKP public key is not a valid Ed25519 point", "jwk.invalid_key")
        return Ed25519PublicKey.from_public_bytes(x)
    if kty == "EC" and crv == "P-256":
        point = b"\x04" + _coordinate(obj, "x") + _coordinate(obj, "y")
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError as exc:
            raise _bad("EC public key is not a point on P-256", "jwk.invalid_key") from exc
    if kty == "EC" and crv == "SM2":
        try:
            return Sm2PublicKey.from_coordinates(_coordinate(obj, "x"), _coordinate(obj, "y"))
        except ValueError as exc:
            raise _bad("EC public key is not a point on SM2", "jwk.invalid_key") from exc
    raise SealError(
        "only OKP/Ed25519, EC/P-256 and EC/SM2 keys are supported",
        code="jwk.unsupported_key",
        log_detail=f"kty={str(kty)[:16]!r} crv={str(crv)[:16]!r}",
    )


def _verify_allowed(obj: Mapping[str, Any]) -> bool:
    use = _string(obj, "use", required=False)
    allowed = use is None or use == "sig"
    if "key_ops" in obj:
        ops = obj["key_ops"]
        if (
            not isinstance(ops, list)
            or not all(isinstance(op, str) for op in ops)
            or len(set(ops)) != len(ops)
        ):
            raise _bad("JWK member 'key_ops' must be a list of unique strings")
        allowed = allowed and "verify" in ops
    return allowed


def _node(obj: Mapping[str, Any], node: NodeId | None) -> NodeId:
    declared = _string(obj, "node", required=node is None)
    if declared is not None and not _NODE.fullmatch(declared):
        raise _bad("JWK member 'node' is not a node name")
    if node is not None and declared is not None and declared != node:
        raise _bad("JWK names a different node than the one publishing it")
    return node if node is not None else NodeId(declared or "")


def parse_jwk(obj: Mapping[str, Any], *, node: NodeId | None = None) -> VerificationKey:
    """Parse one public seal key. Raises :class:`SealError` with a ``jwk.*`` code.

    ``node`` is the node the key was fetched from; when given, a ``node`` member must agree.
    """
    if not isinstance(obj, Mapping):
        raise _bad("a JWK must be a JSON object", "jwk.invalid")
    # 1. never accept private material, whatever else the object says
    if "d" in obj:
        raise _bad("a JWKS must not contain private keys", "jwk.private_key")
    # 2. the key itself: only the three supported types, strictly encoded, on the curve
    public_key = _public_key(obj)
    alg = alg_for(public_key)
    # 3. `alg`, if present, must name the key type's one algorithm (Ed25519: either name)
    declared_alg = _string(obj, "alg", required=False)
    if declared_alg is not None and declared_alg not in jws_names(alg):
        raise _bad(f"JWK declares alg {declared_alg[:16]!r} for an {alg} key", "jwk.alg_mismatch")
    # 4. `kid` must be the RFC 7638 thumbprint, so a kid names exactly one key
    kid = _string(obj, "kid", required=True)
    if kid != thumbprint(public_key):
        raise _bad("JWK kid is not the key's RFC 7638 thumbprint", "jwk.kid_mismatch")
    # 5. usage, status, times, node
    verify_allowed = _verify_allowed(obj)
    status = _string(obj, "status", required=False)
    try:
        state = KeyState.ACTIVE if status is None else KeyState(status)
    except ValueError as exc:
        raise _bad("JWK member 'status' is not a key state") from exc
    not_before, not_after = _time(obj, "nbf"), _time(obj, "exp")
    revoked_at = _time(obj, "revoked_at")
    if not_before is not None and not_after is not None and not_before > not_after:
        raise _bad("JWK validity ends before it starts")
    if (revoked_at is not None) != (state is KeyState.REVOKED):
        raise _bad("JWK 'revoked_at' must be present exactly when the status is 'revoked'")
    return VerificationKey(
        node=_node(obj, node),
        kid=KeyId(kid),
        alg=alg,
        public_key=public_key,
        state=state,
        not_before=not_before,
        not_after=not_after,
        revoked_at=revoked_at,
        verify_allowed=verify_allowed,
        published_alg="Ed25519" if declared_alg == "Ed25519" else None,
    )


def parse_jwks(obj: Any, *, node: NodeId | None = None) -> dict[KeyId, VerificationKey]:
    """Parse a JWKS (``{"keys": [...]}``) into keys by kid. Duplicate kids are refused."""
    keys = obj.get("keys") if isinstance(obj, Mapping) else None
    if not isinstance(keys, list):
        raise _bad('a JWKS must be an object with a "keys" list', "jwk.invalid")
    if len(keys) > MAX_JWKS_KEYS:
        raise _bad(f"a JWKS may hold at most {MAX_JWKS_KEYS} keys", "jwk.invalid")
    out: dict[KeyId, VerificationKey] = {}
    for member in keys:
        key = parse_jwk(member, node=node)
        if key.kid in out:
            raise _bad("a JWKS lists the same kid twice", "jwk.duplicate_kid")
        out[key.kid] = key
    return out
