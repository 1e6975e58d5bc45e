"""Node-signed hop requests: each hop of a routed lookup authenticates the previous one.

A hop request carries a compact JWS (``typ`` ``hop+jws``) signed by the calling node's key,
over claims that bind it to one request::

    {"iss": "zhuji", "aud": "shaoxing", "htm": "POST", "htu": "/v1/hops/lookup?x=1",
     "digest": "<base64url SHA-256 of the body>", "iat": 1795507200, "nonce": "<128 bits>"}

(in the spirit of RFC 9449 DPoP proofs). The receiving node checks the signature against
the federation's keys, that the claims match the request it actually received, that the
proof is fresh (``max_age``) and that its nonce was never seen (replays are refused). Every
failure is an :class:`~gateway.errors.AuthError` (401) with a ``hop.*`` code; the reason an
attacker would want goes to ``log_detail`` only.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
import re
import secrets
from collections.abc import Callable
from typing import Any, Final, Protocol

import orjson

from gateway._internal.wire import b64url_encode, is_int
from gateway.clock import Clock
from gateway.crypto.jwks import KeyResolver
from gateway.crypto.seals import Signer, sign_compact, verify_compact
from gateway.errors import AuthError, ConfigError, InputError, SealError, SignedInFuture
from gateway.ids import NodeId

HOP_TYP: Final = "hop+jws"
HOP_HEADER: Final = "Tongban-Hop"
"""The request header that carries a hop proof."""
DEFAULT_MAX_AGE: Final = 30
NONCE_BYTES: Final = 16
"""128 bits of randomness in every default nonce."""

_NONCE: Final = re.compile(r"[A-Za-z0-9_-]{22,128}")
"""At least 22 base64url characters (≥ 128 bits), at most 128."""
_METHOD: Final = re.compile(r"[A-Z]{1,16}")
_CLAIMS_SKEW: Final = 1


def body_digest(body: bytes) -> str:
    """The ``digest`` claim: base64url (unpadded) of the SHA-256 of the exact body bytes."""
    return b64url_encode(hashlib.sha256(body).digest())


def new_nonce() -> str:
    return b64url_encode(secrets.token_bytes(NONCE_BYTES))


def sign_hop(
    signer: Signer,
    *,
    node: NodeId,
    audience: NodeId,
    method: str,
    path: str,
    body: bytes,
    now: float,
    nonce: str | None = None,
) -> str:
    """The hop proof ``node`` sends to ``audience`` for one request.

    ``path`` is the request target exactly as sent (path and query, origin-form). ``nonce``
    defaults to 128 fresh random bits; a given one must be base64url of at least 128 bits.
    """
    nonce = new_nonce() if nonce is None else nonce
    if not _NONCE.fullmatch(nonce):
        raise InputError("a hop nonce must be ≥ 128 bits of base64url", code="hop.bad_nonce")
    if not path.startswith("/"):
        raise InputError("a hop path must be origin-form (start with '/')", code="hop.bad_path")
    claims: dict[str, Any] = {
        "iss": node,
        "aud": audience,
        "htm": method.upper(),
        "htu": path,
        "digest": body_digest(body),
        "iat": int(now),
        "nonce": nonce,
    }
    payload = orjson.dumps(claims, option=orjson.OPT_SORT_KEYS)
    return sign_compact(signer, payload, typ=HOP_TYP, signed_at=now)


class NonceStore(Protocol):
    """Where a node keeps the hop-proof nonces it has seen: :class:`NonceCache` in memory
    (one process), :class:`gateway.storage.nonces.SqliteNonces` for every process of a node."""

    @property
    def ttl(self) -> float: ...

    def remember(self, nonce: str, *, issued_at: float, now: float) -> None:
        """Record ``nonce``; raise :class:`AuthError` ``hop.replay`` if it may have been seen."""
        ...


class NonceCache:
    """Nonces seen recently, each kept until ``ttl`` seconds after its proof was issued.

    Bounded by ``max_entries``. When full, the entry closest to expiry is dropped early, and
    from then on any proof issued no later than a dropped one is refused as a possible
    replay: a full cache fails closed, never open. State lives on the instance only.
    """

    __slots__ = ("_expiry", "_floor", "_heap", "max_entries", "ttl")

    def __init__(self, max_entries: int = 100_000, ttl: float = 60.0) -> None:
        if max_entries < 1:
            raise ConfigError("a nonce cache needs room for at least one entry", code="hop.cache")
        if not (math.isfinite(ttl) and ttl > 0):
            raise ConfigError("a nonce cache ttl must be positive", code="hop.cache")
        self.max_entries = max_entries
        self.ttl = ttl
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._floor = -math.inf
        """Proofs expiring at or before this may have had their nonce dropped early."""

    def __len__(self) -> int:
        return len(self._expiry)

    def remember(self, nonce: str, *, issued_at: float, now: float) -> None:
        """Record ``nonce``; raise :class:`AuthError` ``hop.replay`` if it may have been seen."""
        self._purge(now)
        expires = issued_at + self.ttl
        if nonce in self._expiry or expires <= self._floor:
            raise AuthError("the hop request was already used (replay)", code="hop.replay")
        while len(self._expiry) >= self.max_entries:
            dropped_expiry, dropped = heapq.heappop(self._heap)
            del self._expiry[dropped]
            self._floor = max(self._floor, dropped_expiry)
            if expires <= self._floor:
                raise AuthError(
                    "the hop request cannot be told from a replay (nonce cache full)",
                    code="hop.replay",
                )
        self._expiry[nonce] = expires
        heapq.heappush(self._heap, (expires, nonce))

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            _, nonce = heapq.heappop(self._heap)
            del self._expiry[nonce]


def _invalid(detail: str, log_detail: str | None = None) -> AuthError:
    return AuthError(detail, code="hop.invalid", log_detail=log_detail)


def _mismatch(what: str) -> AuthError:
    return AuthError(
        "the hop proof does not match this request", code="hop.mismatch", log_detail=what
    )


class HopVerifier:
    """Checks the hop proofs a node (``audience``) receives from its peers."""

    __slots__ = ("audience", "keys", "max_age", "nonces")

    def __init__(
        self,
        keys: KeyResolver,
        *,
        audience: NodeId,
        nonces: NonceStore,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        if not (math.isfinite(max_age) and max_age > 0):
            raise ConfigError("a hop max_age must be positive", code="hop.cache")
        if nonces.ttl < max_age:
            raise ConfigError(
                "the nonce cache must remember nonces at least as long as max_age",
                code="hop.cache",
            )
        self.keys = keys
        self.audience = audience
        self.max_age = max_age
        self.nonces = nonces

    def verify(self, token: str, *, method: str, path: str, body: bytes, now: float) -> NodeId:
        """The calling node, once its proof for this exact request checks out; else raises."""
        # 1. signature, header and key: the strict JWS verifier, with our typ pinned; a
        #    proof signed further in the future than max_age is stale, not merely invalid
        try:
            verified = verify_compact(token, self.keys, typ=HOP_TYP, now=now, skew=self.max_age)
        except SealError as exc:
            if isinstance(exc, SignedInFuture):
                raise AuthError(
                    "the hop request is not fresh", code="hop.stale", log_detail=exc.code
                ) from exc
            raise _invalid("the hop proof does not verify", exc.code) from exc
        claims = verified.payload
        # 2. the issuer is the node that owns the signing key
        if claims.get("iss") != verified.node:
            raise _invalid("the hop proof's issuer is not its key's node", "iss")
        # 3. every claim is present and of its type
        iat = claims.get("iat")
        if not is_int(iat):
            raise _invalid("the hop proof's iat must be an integer", "iat")
        if abs(iat - verified.signed_at) > _CLAIMS_SKEW:
            raise _invalid("the hop proof's iat does not match its signing time", "iat")
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            raise _invalid("the hop proof's nonce is missing or too short", "nonce")
        fields = {name: claims.get(name) for name in ("aud", "htm", "htu", "digest")}
        for name, value in fields.items():
            if not isinstance(value, str):
                raise _invalid(f"the hop proof's {name} must be a string", name)
        # 4. it was made for this node, this method, this target and these body bytes
        if fields["aud"] != self.audience:
            raise _mismatch("aud")
        if not _METHOD.fullmatch(method.upper()) or fields["htm"] != method.upper():
            raise _mismatch("htm")
        if fields["htu"] != path:
            raise _mismatch("htu")
        if not hmac.compare_digest(str(fields["digest"]), body_digest(body)):
            raise _mismatch("digest")
        # 5. fresh: issued within max_age of now, either way
        if abs(now - iat) > self.max_age:
            raise AuthError("the hop request is not fresh", code="hop.stale", log_detail="iat")
        # 6. never seen before (nonces are per calling node)
        self.nonces.remember(f"{verified.node} {nonce}", issued_at=iat, now=now)
        return verified.node


class HopGate:
    """The door of a node's node-to-node endpoints: who signed this request, checked once.

    One per node, with one :class:`NonceStore` (a serving node's is shared by all its worker
    processes; its bounds come from the federation file's ``[network]``), so a proof replayed
    to any of its endpoints, at any worker, is refused. ``trust`` gives the federation's keys
    as of a time (the trust list in force).
    """

    __slots__ = ("_clock", "_me", "_nonces", "_trust")

    def __init__(
        self,
        me: NodeId,
        *,
        trust: Callable[[float], KeyResolver],
        nonces: NonceStore,
        clock: Clock,
    ) -> None:
        self._me = me
        self._trust = trust
        self._nonces = nonces
        self._clock = clock

    def authenticate(
        self, proof: str | None, *, path: str, body: bytes, method: str = "POST"
    ) -> NodeId:
        """The node that signed this request (hop proof over its exact bytes); else raises
        :class:`AuthError` ``hop.*``."""
        if proof is None:
            raise AuthError("a node-to-node request needs a hop proof", code="hop.missing")
        now = self._clock.now()
        verifier = HopVerifier(self._trust(now), audience=self._me, nonces=self._nonces)
        return verifier.verify(proof, method=method, path=path, body=body, now=now)
