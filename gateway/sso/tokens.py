"""Access tokens (RFC 9068 JWT profile): issuing, validating, and a verified-token cache.

An access token is a compact JWS with ``typ`` ``at+jwt``, signed by the IdP with
:func:`gateway.crypto.seals.sign_compact` and verified with the one strict verifier,
:func:`gateway.crypto.seals.verify_compact` (RFC 8725: algorithm from the key, key-carrying headers
refused, strict base64url and JSON). Every seal-level rejection is re-raised as a
:class:`~gateway.errors.TokenError` with the same suffix (``seal.bad_kid`` ->
``token.bad_kid``); the claims are then checked strictly, each failure with its own code.

Claims::

    {"iss": "https://idp…", "sub": "…", "aud": "tongban" | ["tongban", …], "exp": 1795507500,
     "iat": 1795507200, "jti": "…", "client_id": "…", "scope": "cert:read seal:verify",
     "department": "zhuji-civil-affairs", "region": "330681", "holder": false}

Nothing here reads a clock: ``now`` is passed in; :class:`gateway.sso.node_auth.NodeAuthenticator`
binds a :class:`~gateway.clock.Clock` for the HTTP layer.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import orjson

from gateway._internal.wire import is_int
from gateway.crypto.jwks import KeyResolver
from gateway.crypto.seals import Signer, sign_compact, verify_compact
from gateway.errors import ConfigError, InputError, SealError, TokenError
from gateway.identifiers import REGION_CODE
from gateway.ids import DepartmentId, RegionCode
from gateway.sso.auth import Principal, Scope

ACCESS_TOKEN_TYP: Final = "at+jwt"  # noqa: S105 - a media type, not a secret
DEFAULT_LIFETIME: Final = 300
CLOCK_SKEW: Final = 60
MAX_TOKEN_BYTES: Final = 8192

_KNOWN_SCOPES: Final[frozenset[str]] = frozenset(s.value for s in Scope)
_MAX_STRING: Final = 512
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The claims of an access token whose signature and claims all verified."""

    iss: str
    sub: str
    aud: tuple[str, ...]
    exp: int
    iat: int
    jti: str
    client_id: str
    scope: tuple[str, ...]
    department: DepartmentId | None = None
    region: RegionCode | None = None
    holder: bool = False

    def to_principal(self) -> Principal:
        return Principal(
            subject=self.sub,
            client_id=self.client_id,
            scopes=frozenset(self.scope),
            department=self.department,
            holder=self.holder,
        )


# --- issuing --------------------------------------------------------------------------------


def issue_access_token(
    signer: Signer,
    *,
    issuer: str,
    audience: str,
    subject: str,
    client_id: str,
    scopes: tuple[str, ...] | list[str] | frozenset[str],
    department: DepartmentId | None,
    region: RegionCode | None,
    now: float,
    lifetime: int = DEFAULT_LIFETIME,
    jti: str,
    holder: bool = False,
) -> str:
    """Sign an RFC 9068 access token valid from ``now`` for ``lifetime`` seconds."""
    if lifetime <= 0:
        raise InputError("a token lifetime must be positive", code="token.bad_request")
    wanted = set(scopes)
    unknown = wanted - _KNOWN_SCOPES
    if unknown:
        raise InputError(f"unknown scopes {sorted(unknown)}", code="token.bad_request")
    iat = int(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "exp": iat + lifetime,
        "iat": iat,
        "jti": jti,
        "client_id": client_id,
        "scope": " ".join(s.value for s in Scope if s.value in wanted),
        "holder": holder,
    }
    if department is not None:
        claims["department"] = department
    if region is not None:
        claims["region"] = region
    payload = orjson.dumps(claims, option=orjson.OPT_SORT_KEYS)
    return sign_compact(signer, payload, typ=ACCESS_TOKEN_TYP, signed_at=iat)


# --- validating -----------------------------------------------------------------------------


def _missing(name: str) -> TokenError:
    return TokenError(f"the token has no {name!r} claim", code="token.missing_claim")


def _bad(name: str, what: str) -> TokenError:
    return TokenError(f"the token's {name!r} claim must be {what}", code="token.bad_claim")


def _int_claim(payload: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    if name not in payload:
        if required:
            raise _missing(name)
        return None
    value = payload[name]
    # bool is an int subclass: ``true`` is not a time; "1795507500" is not a number.
    if not is_int(value):
        raise _bad(name, "an integer number of seconds")
    return value


def _str_claim(payload: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    if name not in payload:
        if required:
            raise _missing(name)
        return None
    value = payload[name]
    if not isinstance(value, str) or not value or len(value) > _MAX_STRING:
        raise _bad(name, "a non-empty string")
    return value


def _required(value: _T | None, name: str) -> _T:
    if value is None:  # pragma: no cover - required=True already raised
        raise _missing(name)
    return value


def _audiences(payload: Mapping[str, Any]) -> tuple[str, ...]:
    if "aud" not in payload:
        raise _missing("aud")
    aud = payload["aud"]
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        return tuple(aud)
    raise _bad("aud", "a string or a non-empty list of strings")


def _scopes(payload: Mapping[str, Any]) -> tuple[str, ...]:
    if "scope" not in payload:
        return ()
    scope = payload["scope"]
    if not isinstance(scope, str):
        raise _bad("scope", "a space-separated string")
    # Scopes this gateway does not know grant nothing; they are dropped, not refused.
    return tuple(dict.fromkeys(s for s in scope.split(" ") if s in _KNOWN_SCOPES))


class TokenValidator:
    """Validates access tokens of one issuer for one audience. Raises :class:`TokenError`."""

    def __init__(
        self,
        keys: KeyResolver,
        *,
        issuer: str,
        audience: str,
        skew: float = CLOCK_SKEW,
        max_bytes: int = MAX_TOKEN_BYTES,
    ) -> None:
        self._keys = keys
        self.issuer = issuer
        self.audience = audience
        self.skew = skew
        self.max_bytes = max_bytes

    def check_size(self, token: str) -> None:
        if not isinstance(token, str) or len(token) > self.max_bytes:
            raise TokenError(
                f"an access token may be at most {self.max_bytes} bytes", code="token.too_large"
            )

    def validate(self, token: str, *, now: float) -> AccessClaims:
        # 1. bounded before any work
        self.check_size(token)
        # 2. the JWS: format, header, typ at+jwt, key, signature, payload (RFC 8725)
        try:
            verified = verify_compact(
                token, self._keys, typ=ACCESS_TOKEN_TYP, now=now, skew=self.skew
            )
        except SealError as exc:
            error = TokenError(
                "the access token is not valid",
                code="token." + exc.code.partition(".")[2],
                log_detail=exc.log_detail or exc.detail,
            )
            error.step = exc.step
            error.indication = exc.indication
            raise error from exc
        try:
            return self._claims(verified.payload, now=now)
        except TokenError as exc:
            exc.step = "claims"
            raise

    def _claims(self, payload: Mapping[str, Any], *, now: float) -> AccessClaims:
        # 3. issuer: exactly the pinned one
        iss = _required(_str_claim(payload, "iss", required=True), "iss")
        if iss != self.issuer:
            raise TokenError("the token is from another issuer", code="token.wrong_issuer")
        # 4. audience: required, and ours among them
        aud = _audiences(payload)
        if self.audience not in aud:
            raise TokenError("the token is for another audience", code="token.wrong_audience")
        # 5. times are integers; exp required; iat required (RFC 9068 §2.2)
        exp = _required(_int_claim(payload, "exp", required=True), "exp")
        iat = _required(_int_claim(payload, "iat", required=True), "iat")
        nbf = _int_claim(payload, "nbf", required=False)
        if exp < iat:
            raise _bad("exp", "later than iat")
        # 6. the token is valid now, give or take the skew
        if now > exp + self.skew:
            raise TokenError("the token has expired", code="token.expired")
        if iat > now + self.skew or (nbf is not None and nbf > now + self.skew):
            raise TokenError("the token is not yet valid", code="token.not_yet_valid")
        # 7. who: subject, client and token id are non-empty strings
        sub = _required(_str_claim(payload, "sub", required=True), "sub")
        client_id = _required(_str_claim(payload, "client_id", required=True), "client_id")
        jti = _required(_str_claim(payload, "jti", required=True), "jti")
        # 8. what: known scopes, department, region, holder flag
        scope = _scopes(payload)
        department = _str_claim(payload, "department", required=False)
        region = _str_claim(payload, "region", required=False)
        if region is not None and not REGION_CODE.fullmatch(region):
            raise _bad("region", "a six-digit region code")
        holder = payload.get("holder", False)
        if not isinstance(holder, bool):
            raise _bad("holder", "a boolean")
        return AccessClaims(
            iss=iss,
            sub=sub,
            aud=aud,
            exp=exp,
            iat=iat,
            jti=jti,
            client_id=client_id,
            scope=scope,
            department=None if department is None else DepartmentId(department),
            region=None if region is None else RegionCode(region),
            holder=holder,
        )


# --- the verified-token cache ---------------------------------------------------------------


class TokenCache:
    """Verified tokens by SHA-256, each until its ``exp``; least recently used evicted first.

    It holds only tokens that fully verified; a cached token stays accepted until its own
    ``exp`` even if its key is revoked meanwhile, so :meth:`clear` on key events.
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ConfigError("the token cache needs at least one entry", code="config.invalid")
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, AccessClaims] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8")).digest()

    def get(self, key: bytes, *, now: float) -> AccessClaims | None:
        claims = self._entries.get(key)
        if claims is None:
            return None
        if now > claims.exp:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return claims

    def put(self, key: bytes, claims: AccessClaims, *, now: float) -> None:
        if now > claims.exp:
            return
        self._entries[key] = claims
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


class AccessTokenValidator(Protocol):
    def validate(self, token: str, *, now: float) -> AccessClaims: ...


class CachedTokenValidator:
    """A :class:`TokenValidator` in front of which sits a :class:`TokenCache`."""

    def __init__(self, validator: TokenValidator, cache: TokenCache) -> None:
        self._validator = validator
        self._cache = cache

    def validate(self, token: str, *, now: float) -> AccessClaims:
        # the size limit comes before hashing, so an oversized token costs nothing
        self._validator.check_size(token)
        key = TokenCache.key(token)
        cached = self._cache.get(key, now=now)
        if cached is not None:
            return cached
        claims = self._validator.validate(token, now=now)
        self._cache.put(key, claims, now=now)
        return claims
