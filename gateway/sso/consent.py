"""Holder consent grants (用证授权): a holder lets one department use named certificate types
for one matter until a time.

A grant is a compact JWS with ``typ`` ``consent+jwt``, signed by the IdP::

    {"iss": "https://idp…", "sub": "<holder digest>", "aud": "zhuji-civil-affairs",
     "matter": "marriage-registration", "types": ["resident_id", "household_register"],
     "iat": 1795507200, "exp": 1795593600, "jti": "…"}

``sub`` is the holder's keyed digest, never the clear id. The node holding a personal
certificate calls :meth:`ConsentVerifier.verify` with what the request is about; every
refusal is a :class:`~gateway.errors.Forbidden` (403) with its own ``consent.*`` code.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from gateway._internal.wire import is_int
from gateway.crypto.jwks import KeyResolver
from gateway.crypto.seals import SealMemo, Signer, sign_compact, verify_compact
from gateway.errors import Forbidden, InputError, SealError
from gateway.ids import DepartmentId

CONSENT_TYP: Final = "consent+jwt"
CLOCK_SKEW: Final = 60
MAX_CONSENT_BYTES: Final = 8192
MAX_TYPES: Final = 64
MEMO_ENTRIES: Final = 16_384
"""Grants a verifier remembers having verified (a grant is used for every certificate of a
matter, at every hop); at most :data:`~gateway.crypto.seals.SEAL_MEMO_BYTES` of them in all."""
_MAX_STRING: Final = 512

CONSENT_HEADER: Final = "Tongban-Consent"
"""The request header that carries a holder's consent grant (compact JWS)."""


@dataclass(frozen=True, slots=True)
class ConsentGrant:
    """A grant whose signature and claims verified and which covers the request."""

    issuer: str
    holder_digest: str
    department: DepartmentId
    matter: str
    types: tuple[str, ...]
    issued_at: int
    expires_at: int
    jti: str


def issue_consent(
    signer: Signer,
    *,
    issuer: str,
    holder_digest: str,
    department: DepartmentId,
    matter: str,
    types: tuple[str, ...] | list[str],
    now: float,
    until: float,
    jti: str,
) -> str:
    """Sign a consent grant valid from ``now`` until ``until``."""
    if not types or len(types) > MAX_TYPES or len(set(types)) != len(types):
        raise InputError(
            f"a grant names 1 to {MAX_TYPES} distinct certificate types",
            code="consent.bad_request",
        )
    if int(until) <= int(now):
        raise InputError("a grant must end after it starts", code="consent.bad_request")
    claims = {
        "iss": issuer,
        "sub": holder_digest,
        "aud": department,
        "matter": matter,
        "types": list(types),
        "iat": int(now),
        "exp": int(until),
        "jti": jti,
    }
    payload = orjson.dumps(claims, option=orjson.OPT_SORT_KEYS)
    return sign_compact(signer, payload, typ=CONSENT_TYP, signed_at=int(now))


def _invalid(detail: str, log_detail: str | None = None) -> Forbidden:
    return Forbidden(detail, code="consent.invalid", log_detail=log_detail)


def _string(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value or len(value) > _MAX_STRING:
        raise _invalid("the consent grant is malformed", f"claim {name!r} is not a string")
    return value


def _time(payload: Mapping[str, Any], name: str) -> int:
    value = payload.get(name)
    if not is_int(value):
        raise _invalid("the consent grant is malformed", f"claim {name!r} is not an integer")
    return value


def _types(payload: Mapping[str, Any]) -> tuple[str, ...]:
    value = payload.get("types")
    if (
        not isinstance(value, list)
        or not value
        or len(value) > MAX_TYPES
        or not all(isinstance(t, str) and t for t in value)
    ):
        raise _invalid("the consent grant is malformed", "claim 'types' is not a list of names")
    return tuple(value)


class ConsentVerifier:
    """Verifies consent grants issued by one IdP. Raises :class:`Forbidden` (``consent.*``)."""

    def __init__(self, keys: KeyResolver, *, issuer: str, skew: float = CLOCK_SKEW) -> None:
        self._keys = keys
        self.issuer = issuer
        self.skew = skew
        # a grant's decoding and signature are remembered: the key's state, the claims and
        # the times are checked on every use
        self._memo = SealMemo(MEMO_ENTRIES)

    def verify(
        self,
        token: str,
        *,
        holder_digest: str,
        department: DepartmentId,
        matter: str,
        cert_type: str,
        now: float,
    ) -> ConsentGrant:
        """The full check, at the node that holds the certificate."""
        grant = self.verify_in_transit(token, department=department, matter=matter, now=now)
        # 5. bound to this holder and this type
        if not hmac.compare_digest(grant.holder_digest.encode(), holder_digest.encode()):
            raise Forbidden("the consent grant is for another holder", code="consent.wrong_holder")
        if cert_type not in grant.types:
            raise Forbidden(
                "the consent grant does not cover this certificate type",
                code="consent.type_not_granted",
            )
        return grant

    def verify_in_transit(
        self, token: str, *, department: DepartmentId, matter: str, now: float
    ) -> ConsentGrant:
        """Every check a relaying hop can make: it never sees the certificate, so the holder
        and the type are left to the holding node (:meth:`verify`)."""
        # 1. bounded, then the JWS (typ consent+jwt, the IdP's keys); the reason is logged
        if not isinstance(token, str) or len(token) > MAX_CONSENT_BYTES:
            raise _invalid("the consent grant is too large", "token.too_large")
        try:
            verified = verify_compact(
                token, self._keys, typ=CONSENT_TYP, now=now, skew=self.skew, memo=self._memo
            )
        except SealError as exc:
            raise _invalid("the consent grant is not valid", exc.code) from exc
        payload = verified.payload
        # 2. well-formed claims
        iss = _string(payload, "iss")
        sub = _string(payload, "sub")
        aud = _string(payload, "aud")
        grant_matter = _string(payload, "matter")
        jti = _string(payload, "jti")
        types = _types(payload)
        iat, exp = _time(payload, "iat"), _time(payload, "exp")
        # 3. from our IdP, and in force now
        if iss != self.issuer:
            raise Forbidden("the consent grant is from another issuer", code="consent.wrong_issuer")
        if now > exp + self.skew:
            raise Forbidden("the consent grant has expired", code="consent.expired")
        if iat > now + self.skew:
            raise Forbidden("the consent grant is not yet valid", code="consent.not_yet_valid")
        # 4. for this department and this matter
        if aud != department:
            raise Forbidden(
                "the consent grant is for another department", code="consent.wrong_department"
            )
        if grant_matter != matter:
            raise Forbidden("the consent grant is for another matter", code="consent.wrong_matter")
        return ConsentGrant(
            issuer=iss,
            holder_digest=sub,
            department=DepartmentId(aud),
            matter=grant_matter,
            types=types,
            issued_at=iat,
            expires_at=exp,
            jti=jti,
        )
