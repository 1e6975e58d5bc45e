"""Electronic seals (电子印章) as compact JWS (RFC 7515), and the strict JWS verifier.

A seal is ``BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature)`` with the
protected header ``{"alg", "kid", "typ": "tongban-seal+jws", "sigT"}``: ``alg`` is EdDSA (or
its RFC 9864 name Ed25519), ES256 or SM2, ``kid`` the RFC 7638 thumbprint of the seal key and
``sigT`` the JAdES signing time.
The payload is the certificate JSON, with ``iss`` (the sealing node) and ``iat``.

:func:`verify_compact` is the one generic verifier (seals, status-list tokens, trust lists).
It follows RFC 8725: the caller pins ``typ``; the *key* pins the algorithm, never the header;
key-carrying headers are refused, never fetched; every rejection raises a
:class:`~gateway.errors.SealError` (FAILED) or :class:`~gateway.errors.SealIndeterminate`
with a stable code and the report check (``step``) it failed at.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Protocol

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

from gateway._internal.wire import JsonLimits, b64url_decode, b64url_encode, is_int, loads
from gateway.clock import from_rfc3339, to_rfc3339
from gateway.crypto.jwks import (
    Alg,
    Ed25519Name,
    JwsAlg,
    KeyResolver,
    KeyState,
    PublicKey,
    VerificationKey,
    alg_for,
    jws_name,
    jws_names,
    thumbprint,
)
from gateway.crypto.reports import SEAL_CHECKS, Check
from gateway.crypto.sm2 import Sm2PrivateKey, Sm2PublicKey
from gateway.errors import (
    DuplicateMember,
    Indication,
    InputError,
    KeyStoreError,
    RevocationUnproven,
    SealError,
    SealIndeterminate,
    SignedInFuture,
    TooLarge,
    VerificationError,
)
from gateway.ids import KeyId, NodeId

SEAL_TYP: Final = "tongban-seal+jws"
MAX_SEAL_BYTES: Final = 65_536
MAX_HEADER_BYTES: Final = 4096
CLOCK_SKEW_SECONDS: Final = 60
SEAL_MEMO_BYTES: Final = 16 * 1024 * 1024
"""The default bound of a :class:`SealMemo`: the bytes of the seals it keeps."""

SIGNATURE_BYTES: Final = 64
"""Ed25519 signatures, ES256 signatures as r || s (IEEE P1363, RFC 7518 §3.4), and SM2
signatures as r || s (GB/T 32918, never DER)."""

_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SCALAR_BYTES: Final = 32

_ALGS: Final[frozenset[str]] = frozenset({"EdDSA", "Ed25519", "ES256", "SM2"})
_KEY_CARRYING: Final = ("jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256")
# RFC 7515 §4.1.11: crit must not name the parameters the JWS spec itself defines.
_JWS_DEFINED: Final[frozenset[str]] = frozenset(
    {"alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit"}
)
_SIGNER_SETS: Final[frozenset[str]] = frozenset({"alg", "kid", "typ", "sigT"})
_KID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_HEADER_LIMITS: Final = JsonLimits(max_depth=4, max_string=1024, max_members=64)
_PAYLOAD_LIMITS: Final = JsonLimits(max_depth=16)
_CLAIMS_SKEW: Final = 1

_COMPACT_CHECKS: Final = tuple(Check(name, Indication.PASSED) for name in SEAL_CHECKS[:-1])
_SEAL_CHECKS: Final = tuple(Check(name, Indication.PASSED) for name in SEAL_CHECKS)


class Signer(Protocol):
    """Signs with one seal key. The key store implements it; private keys stay inside."""

    @property
    def kid(self) -> KeyId: ...

    @property
    def alg(self) -> Alg:
        """The algorithm the key is pinned to."""
        ...

    @property
    def jws_alg(self) -> JwsAlg:
        """The name the header carries: ``alg``, or for Ed25519 the configured one of
        ``EdDSA`` and ``Ed25519``."""
        ...

    def sign(self, data: bytes) -> bytes:
        """The raw JWS signature: 64 bytes (Ed25519, or ES256 or SM2 r || s)."""
        ...


class PrivateKeySigner:
    """A :class:`Signer` over an Ed25519, P-256 or SM2 private key held in memory."""

    __slots__ = ("_ed25519_secret", "_private_key", "alg", "jws_alg", "kid", "public_key")

    def __init__(
        self,
        private_key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey | Sm2PrivateKey,
        *,
        kid: KeyId | None = None,
        ed25519_name: Ed25519Name = "EdDSA",
    ) -> None:
        public_key = private_key.public_key()
        self.alg: Alg = alg_for(public_key)
        self.jws_alg: JwsAlg = jws_name(self.alg, ed25519_name)
        self.kid: KeyId = thumbprint(public_key)
        if kid is not None and kid != self.kid:
            raise KeyStoreError(
                "a seal key's kid must be its RFC 7638 thumbprint", code="keys.kid_mismatch"
            )
        self.public_key: PublicKey = public_key
        self._private_key = private_key
        # Ed25519 signs through libsodium (the same deterministic RFC 8032 signature as
        # OpenSSL's, in half the time); its secret key is the seed followed by the public key.
        self._ed25519_secret: bytes | None = None
        if isinstance(private_key, Ed25519PrivateKey):
            self._ed25519_secret = crypto_sign_seed_keypair(private_key.private_bytes_raw())[1]

    def sign(self, data: bytes) -> bytes:
        if self._ed25519_secret is not None:
            return crypto_sign(data, self._ed25519_secret)[:SIGNATURE_BYTES]
        if isinstance(self._private_key, Sm2PrivateKey):
            return self._private_key.sign(data)
        assert isinstance(self._private_key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(self._private_key.sign(data, ec.ECDSA(SHA256())))
        return r.to_bytes(_SCALAR_BYTES, "big") + s.to_bytes(_SCALAR_BYTES, "big")

    def __repr__(self) -> str:
        return f"PrivateKeySigner(kid={self.kid!r}, alg={self.jws_alg!r})"


@dataclass(frozen=True)
class VerifiedSeal:
    """A compact JWS whose every check passed. Built only by :func:`verify_compact`."""

    kid: KeyId
    node: NodeId
    alg: Alg
    signed_at: float
    header: MappingProxyType[str, Any]
    payload: MappingProxyType[str, Any]
    """Read-only; ``payload.copy()`` is a plain ``dict`` of it (a shallow copy, at C speed)."""
    payload_bytes: bytes
    checks: tuple[Check, ...]

    @property
    def signed_at_text(self) -> str:
        """The signing time as the header states it: verification accepts only the one
        strict form :func:`~gateway.clock.to_rfc3339` writes, so it is that of ``signed_at``."""
        return str(self.header["sigT"])


# --- signing --------------------------------------------------------------------------------


def sign_compact(
    signer: Signer,
    payload: bytes,
    *,
    typ: str,
    signed_at: float,
    extra_header: Mapping[str, Any] | None = None,
) -> str:
    """Sign ``payload`` as a compact JWS with header ``{alg, kid, typ, sigT, **extra}``."""
    header: dict[str, Any] = dict(extra_header or {})
    refused = header.keys() & (_SIGNER_SETS | {"crit", "b64", *_KEY_CARRYING})
    if refused:
        raise SealError(
            f"extra header members {sorted(refused)} are set by the signer or refused",
            code="seal.bad_header",
        )
    header.update(alg=signer.jws_alg, kid=signer.kid, typ=typ, sigT=to_rfc3339(signed_at))
    header_b64 = b64url_encode(orjson.dumps(header, option=orjson.OPT_SORT_KEYS))
    if len(header_b64) > MAX_HEADER_BYTES:
        raise SealError("seal header too large", code="seal.too_large")
    signing_input = f"{header_b64}.{b64url_encode(payload)}"
    token = f"{signing_input}.{b64url_encode(signer.sign(signing_input.encode('ascii')))}"
    if len(token) > MAX_SEAL_BYTES:
        raise SealError(f"a seal may be at most {MAX_SEAL_BYTES} bytes", code="seal.too_large")
    return token


def seal(signer: Signer, payload: bytes, *, signed_at: float) -> str:
    """Seal a certificate document (JSON bytes carrying ``iss`` and ``iat``)."""
    return sign_compact(signer, payload, typ=SEAL_TYP, signed_at=signed_at)


# --- the signature primitive ----------------------------------------------------------------


def _bad_signature(exc: Exception | None = None) -> SealError:
    return SealError(
        "the signature does not verify",
        code="seal.bad_signature",
        log_detail=None if exc is None else type(exc).__name__,
    )


def verify_signature(
    alg: Alg, public_key: PublicKey, signing_input: bytes, signature: bytes
) -> None:
    """Verify a raw JWS signature. Raises :class:`SealError` ``seal.bad_signature``.

    The signature must be exactly 64 bytes; for ES256, r and s must each lie in [1, n-1]
    before anything is handed to the library (no r = s = 0, no overlong encodings); for SM2
    also (r + s) mod n != 0 (:func:`gateway.crypto.sm2.scalars`).
    """
    if len(signature) != SIGNATURE_BYTES:  # a DER signature, say
        raise SealError(
            "the signature does not verify",
            code="seal.bad_signature",
            log_detail=f"a JWS signature here is 64 bytes (r || s), not {len(signature)}",
        )
    if alg == "SM2" and isinstance(public_key, Sm2PublicKey):
        public_key.verify(signature, signing_input)  # Tongsuo, SM3 with the default signer ID
        return
    if alg == "EdDSA" and isinstance(public_key, Ed25519PublicKey):
        # libsodium: the same RFC 8032 cofactorless check as OpenSSL in half the time, and
        # stricter (it also refuses small-order and non-canonical keys and small-order R,
        # which no honest signer produces). Every Wycheproof vector agrees
        # (tests/interop/test_wycheproof.py).
        try:
            crypto_sign_open(signature + signing_input, public_key.public_bytes_raw())
        except BadSignatureError as exc:
            raise _bad_signature(exc) from exc
        return
    if (
        alg == "ES256"
        and isinstance(public_key, ec.EllipticCurvePublicKey)
        and isinstance(public_key.curve, ec.SECP256R1)
    ):
        r = int.from_bytes(signature[:_SCALAR_BYTES], "big")
        s = int.from_bytes(signature[_SCALAR_BYTES:], "big")
        if not (0 < r < _P256_ORDER and 0 < s < _P256_ORDER):
            raise _bad_signature()
        try:
            public_key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(SHA256()))
        except InvalidSignature as exc:
            raise _bad_signature(exc) from exc
        return
    raise SealError("the key cannot verify this algorithm", code="seal.alg_mismatch")


@dataclass(frozen=True, slots=True)
class _Remembered:
    """What a seal's pure checks established: the parts the format and header checks read,
    and the key (algorithm and public key bytes) its signature verified under."""

    kid: KeyId
    alg: Alg
    public_key: bytes
    typ: str
    signed_at: float
    header_bytes: bytes
    payload_bytes: bytes


class SealMemo:
    """Seals that verified, remembered so the same bytes need not be decoded and verified
    again.

    Steps 1-10, 14 and 17 of :func:`verify_compact` are functions of the seal's bytes (and,
    for the signature, of the public key) alone: the same string gives the same answer every
    time. An entry, keyed by the exact seal string, is made only after every step passed,
    and records those steps' results with the public key the signature verified under. A
    seal found here skips them; everything that depends on the moment or on the key's
    current state runs on every call: the caller's pinned ``typ``, the key's resolution,
    allowed use and algorithm, its public key being the remembered one (else the seal is
    verified afresh), the signing time against now and the key's validity, and its
    revocation. The header and payload are parsed afresh from the remembered bytes, so no
    caller shares a mutable object with another.

    Bounded by entries and by the bytes of the seals it keeps (least recently used first).
    The gateway gives one to the paths that see the same bytes again and again (a caller's
    consent grant, the node's own stored seals on fetch, foreign seals it fetched for
    callers); a batch verification of seals handed in by a caller verifies each one afresh.
    """

    def __init__(self, max_entries: int = 8_192, *, max_bytes: int = SEAL_MEMO_BYTES) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a seal memo needs room for at least one entry")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Remembered] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """The bytes of the seals kept (their strings and decoded parts)."""
        return self._bytes

    def recall(self, token: str) -> _Remembered | None:
        """The entry of exactly this seal string, if it verified before."""
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None:
                self._entries.move_to_end(token)
            return entry

    def remember(self, token: str, entry: _Remembered) -> None:
        size = _size(token, entry)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(token, None)
            if old is not None:
                self._bytes -= _size(token, old)
            self._entries[token] = entry
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                gone, gone_entry = self._entries.popitem(last=False)
                self._bytes -= _size(gone, gone_entry)


def _size(token: str, entry: _Remembered) -> int:
    return len(token) + len(entry.header_bytes) + len(entry.payload_bytes) + len(entry.public_key)


def _public_bytes(public_key: PublicKey) -> bytes:
    if isinstance(public_key, Ed25519PublicKey):
        return b"ed25519:" + public_key.public_bytes_raw()
    if isinstance(public_key, Sm2PublicKey):
        return b"sm2:" + public_key.public_bytes_raw()
    return b"p256:" + public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


# --- verification ---------------------------------------------------------------------------


def _decode_segment(segment: str, *, max_length: int | None = None) -> bytes:
    try:
        return b64url_decode(segment, max_length=max_length)
    except TooLarge as exc:
        raise SealError("a seal segment is too large", code="seal.too_large") from exc
    except InputError as exc:
        raise SealError(
            "a seal segment is not strict base64url",
            code="seal.bad_encoding",
            log_detail=exc.detail,
        ) from exc


def _decode_json(
    data: bytes, limits: JsonLimits, *, code: str, what: str
) -> MappingProxyType[str, Any]:
    try:
        value = loads(data, limits)
    except DuplicateMember as exc:
        raise SealError(
            f"the seal {what} has a duplicate member name", code="seal.duplicate_member"
        ) from exc
    except InputError as exc:
        raise SealError(
            f"the seal {what} is not strict JSON", code=code, log_detail=exc.detail
        ) from exc
    if not isinstance(value, dict):
        raise SealError(f"the seal {what} is not a JSON object", code=code)
    return MappingProxyType(value)


def _check_crit(unverified_header: Mapping[str, Any]) -> None:
    if "b64" in unverified_header:
        raise SealError("unencoded payloads (b64) are not supported", code="seal.b64_unsupported")
    if "crit" not in unverified_header:
        return
    crit = unverified_header["crit"]
    if (
        not isinstance(crit, list)
        or not crit
        or not all(isinstance(name, str) for name in crit)
        or len(set(crit)) != len(crit)
        or _JWS_DEFINED.intersection(crit)
    ):
        raise SealError("the crit header is malformed", code="seal.bad_crit")
    # We understand no extension header, so any well-formed crit names one we do not.
    raise SealError(
        "the seal requires a header extension that is not supported", code="seal.unsupported_crit"
    )


def _signing_time(unverified_header: Mapping[str, Any]) -> float:
    sig_t = unverified_header.get("sigT")
    if not isinstance(sig_t, str):
        raise SealError("the signing time (sigT) must be a string", code="seal.bad_signing_time")
    try:
        return from_rfc3339(sig_t)
    except ValueError as exc:
        raise SealError(
            "the signing time is not an RFC 3339 UTC time", code="seal.bad_signing_time"
        ) from exc


def verify_compact(
    token: str,
    keys: KeyResolver,
    *,
    typ: str,
    now: float,
    skew: float = CLOCK_SKEW_SECONDS,
    memo: SealMemo | None = None,
) -> VerifiedSeal:
    """Verify a compact JWS of type ``typ`` against ``keys`` at time ``now``.

    Returns the verified seal or raises :class:`SealError`/:class:`SealIndeterminate`; the
    error's ``step`` names the report check that failed.
    """
    return _verify_compact(token, keys, typ=typ, now=now, skew=skew, memo=memo)


def _verify_compact(
    token: str,
    keys: KeyResolver,
    *,
    typ: str,
    now: float,
    skew: float = CLOCK_SKEW_SECONDS,
    memo: SealMemo | None = None,
    checks: tuple[Check, ...] = _COMPACT_CHECKS,
) -> VerifiedSeal:
    if memo is not None and (remembered := memo.recall(token)) is not None:
        recalled = _recall(remembered, keys, typ=typ, now=now, skew=skew, checks=checks)
        if recalled is not None:
            return recalled
    step = "format"
    try:
        # 1. a string, bounded, ASCII
        if not isinstance(token, str):
            raise SealError("a seal must be a string", code="seal.malformed")
        if len(token) > MAX_SEAL_BYTES:
            raise SealError(f"a seal may be at most {MAX_SEAL_BYTES} bytes", code="seal.too_large")
        if not token.isascii():
            raise SealError("a seal must be ASCII", code="seal.malformed")
        # 2. exactly three segments, none empty (no unsecured JWS, no detached payload)
        segments = token.split(".")
        if len(segments) != 3 or not all(segments):
            raise SealError("a seal must have three non-empty segments", code="seal.malformed")
        header_b64, payload_b64, signature_b64 = segments
        # 3. strict base64url: no padding, URL alphabet only, canonical; a bounded header
        header_bytes = _decode_segment(header_b64, max_length=MAX_HEADER_BYTES)
        payload_bytes = _decode_segment(payload_b64)
        signature = _decode_segment(signature_b64)

        step = "header"
        # 4. the header is a strict JSON object: no duplicate members, shallow
        unverified_header = _decode_json(
            header_bytes, _HEADER_LIMITS, code="seal.bad_header", what="header"
        )
        # 5. the algorithm is one we allow at all (never none, never HS*)
        unverified_alg = unverified_header.get("alg")
        if not isinstance(unverified_alg, str) or unverified_alg not in _ALGS:
            raise SealError("the seal's algorithm is not allowed", code="seal.alg_not_allowed")
        # 6. key-carrying headers are refused: never fetched, never used
        if not unverified_header.keys().isdisjoint(_KEY_CARRYING):
            raise SealError(
                "headers that carry or point to keys are refused", code="seal.forbidden_header"
            )
        # 7. b64 is not supported; crit must be well formed and names nothing we understand
        _check_crit(unverified_header)
        # 8. the type is pinned by the caller, exactly
        if unverified_header.get("typ") != typ:
            raise SealError("the seal has the wrong type (typ)", code="seal.wrong_typ")
        # 9. the kid is a short token, so nothing path-like ever reaches a key lookup
        unverified_kid = unverified_header.get("kid")
        if not isinstance(unverified_kid, str) or not _KID.fullmatch(unverified_kid):
            raise SealError("the seal's kid is malformed", code="seal.bad_kid")
        # 10. the signing time is a strict RFC 3339 UTC string
        unverified_signed_at = _signing_time(unverified_header)

        step = "key"
        key = _resolve_key(keys, unverified_kid, unverified_alg)  # 11-13
        step = "signature"
        # 14. the signature over ASCII(header_b64 "." payload_b64), with the key's algorithm
        signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
        verify_signature(key.alg, key.public_key, signing_input, signature)
        header, signed_at = unverified_header, unverified_signed_at

        step = "time"
        _check_time(key, signed_at, now=now, skew=skew)  # 15
        step = "revocation"
        _check_revocation(key, signed_at)  # 16

        step = "payload"
        # 17. the payload is a strict JSON object (claims are checked by the caller)
        payload = _decode_json(
            payload_bytes, _PAYLOAD_LIMITS, code="seal.bad_payload", what="payload"
        )
    except VerificationError as exc:
        if exc.step is None:
            exc.step = step
        raise
    if memo is not None:
        memo.remember(
            token,
            _Remembered(
                kid=key.kid,
                alg=key.alg,
                public_key=_public_bytes(key.public_key),
                typ=typ,
                signed_at=signed_at,
                header_bytes=header_bytes,
                payload_bytes=payload_bytes,
            ),
        )
    return VerifiedSeal(
        kid=key.kid,
        node=key.node,
        alg=key.alg,
        signed_at=signed_at,
        header=header,
        payload=payload,
        payload_bytes=payload_bytes,
        checks=checks,
    )


def _resolve_key(keys: KeyResolver, kid: str, alg: str) -> VerificationKey:
    # 11. resolve the key (an unknown kid cannot be judged: INDETERMINATE)
    key = keys.key_for(KeyId(kid))
    if key.kid != kid:
        raise SealIndeterminate("the seal names an unknown key", code="seal.unknown_kid")
    # 12. the key must be allowed to verify
    if not key.verify_allowed:
        raise SealError("the key may not be used to verify seals", code="seal.key_use")
    # 13. the key pins the algorithm; the header only has to agree with it (an Ed25519 key
    #     answers to both its names, EdDSA and Ed25519, and no other key to either)
    if alg not in jws_names(key.alg):
        raise SealError("the seal's algorithm is not its key's", code="seal.alg_mismatch")
    return key


def _check_time(key: VerificationKey, signed_at: float, *, now: float, skew: float) -> None:
    # 15. the signing time: not in the future, within the key's validity, key in service
    if signed_at > now + skew:
        raise SignedInFuture("the seal is signed in the future")
    if key.not_before is not None and signed_at < key.not_before:
        raise SealError("the seal predates its key's validity", code="seal.key_not_yet_valid")
    if key.not_after is not None and signed_at > key.not_after:
        raise SealError("the seal postdates its key's validity", code="seal.key_expired")
    if key.state is KeyState.NEXT:
        raise SealError("the seal's key is not yet in service", code="seal.key_not_active")


def _check_revocation(key: VerificationKey, signed_at: float) -> None:
    # 16. a revoked key fails every seal that cannot be shown to predate the revocation;
    #     sigT is the signer's own claim, so "before" stays unproven (INDETERMINATE)
    if key.state is KeyState.REVOKED or key.revoked_at is not None:
        if key.revoked_at is None or signed_at >= key.revoked_at:
            raise SealError("the seal's key is revoked", code="seal.key_revoked")
        raise RevocationUnproven("the seal's key was revoked later; the signing time is not proven")


def _recall(
    remembered: _Remembered,
    keys: KeyResolver,
    *,
    typ: str,
    now: float,
    skew: float,
    checks: tuple[Check, ...],
) -> VerifiedSeal | None:
    """A remembered seal, verified again in everything that depends on the moment or on the
    key's current state. ``None`` when its key is no longer the one its signature verified
    under: the caller then verifies the seal afresh."""
    step = "header"
    try:
        # 8. the caller pins the type (a memo could be shared by callers pinning others)
        if remembered.typ != typ:
            raise SealError("the seal has the wrong type (typ)", code="seal.wrong_typ")
        step = "key"
        key = _resolve_key(keys, remembered.kid, remembered.alg)  # 11-13
        if _public_bytes(key.public_key) != remembered.public_key:
            return None
        step = "time"
        _check_time(key, remembered.signed_at, now=now, skew=skew)  # 15
        step = "revocation"
        _check_revocation(key, remembered.signed_at)  # 16
    except VerificationError as exc:
        if exc.step is None:
            exc.step = step
        raise
    # 4 and 17 passed the strict parser for exactly these bytes before: orjson reads them
    # to the same values, into objects no other caller holds.
    return VerifiedSeal(
        kid=key.kid,
        node=key.node,
        alg=key.alg,
        signed_at=remembered.signed_at,
        header=MappingProxyType(orjson.loads(remembered.header_bytes)),
        payload=MappingProxyType(orjson.loads(remembered.payload_bytes)),
        payload_bytes=remembered.payload_bytes,
        checks=checks,
    )


def _check_claims(verified: VerifiedSeal) -> None:
    payload = verified.payload
    if payload.get("iss") != verified.node:
        raise SealError("the seal's issuer (iss) is not its key's node", code="seal.bad_claims")
    iat = payload.get("iat")
    if not is_int(iat):
        raise SealError("the seal's iat must be an integer", code="seal.bad_claims")
    if abs(iat - int(verified.signed_at)) > _CLAIMS_SKEW:
        raise SealError("the seal's iat does not match its signing time", code="seal.bad_claims")


def verify_seal(
    token: str, keys: KeyResolver, *, now: float, memo: SealMemo | None = None
) -> VerifiedSeal:
    """Verify a seal: :func:`verify_compact` with the seal ``typ``, then ``iss`` and ``iat``."""
    verified = _verify_compact(
        token, keys, typ=SEAL_TYP, now=now, memo=memo, checks=_SEAL_CHECKS
    )  # the claims check is reported too: it passes below, or the seal fails
    try:
        # 18. claims: iss is the key's node, iat an integer matching the signing time
        _check_claims(verified)
    except VerificationError as exc:
        exc.step = "claims"
        raise
    return verified
