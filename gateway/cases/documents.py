"""The sealed documents of a case: the window's receipt (收件凭证) and each transition's event.

Both are compact JWS sealed by the node that made them (its trust-listed key, the algorithm
from the key), with their own ``typ`` so that neither can pass for the other or for a
certificate. Anyone verifies them offline like a seal (``tongban verify``, any JOSE library).

- The **receipt** binds the case number, the matter, the window and the owner, the
  applicant's keyed digest, every material's SHA-256, form and credibility level, the
  promised date and the staff member who checked the applicant's identity in person.
- An **event** binds one transition: the case, its number in the case's sequence, the action,
  the states before and after, the acting node, department and actor, the time, the reason
  and the action's details (a correction list, the supplemented materials, the result).
  Notices to the applicant (受理通知书, 不予受理决定, 一次性补正告知) are such events.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from gateway._internal.wire import b64url_decode
from gateway.cases.lifecycle import Action, CaseState, Role
from gateway.clock import from_rfc3339, to_rfc3339
from gateway.crypto.jwks import KeyResolver
from gateway.crypto.seals import Signer, VerifiedSeal, sign_compact, verify_compact
from gateway.errors import InputError, SealError

RECEIPT_TYP: Final = "case-receipt+jws"
EVENT_TYP: Final = "case-event+jws"
CASE_TYPS: Final = frozenset({RECEIPT_TYP, EVENT_TYP})
_EVENT_ID = re.compile(r"[0-9a-f]{32}")


def seal_receipt(signer: Signer, claims: Mapping[str, Any], *, at: float) -> str:
    payload = {**claims, "iss": claims["window"]["node"], "iat": int(at)}
    return sign_compact(signer, orjson.dumps(payload), typ=RECEIPT_TYP, signed_at=at)


def verify_receipt(token: str, keys: KeyResolver, *, now: float) -> VerifiedSeal:
    """The receipt's seal, by the window's node (its ``iss``); raises :class:`SealError`."""
    verified = verify_compact(token, keys, typ=RECEIPT_TYP, now=now)
    window = verified.payload.get("window")
    if verified.payload.get("iss") != verified.node or not (
        isinstance(window, Mapping) and window.get("node") == verified.node
    ):
        raise SealError("the receipt was not sealed by its window's node", code="case.bad_seal")
    return verified


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """One transition, as sealed by the node that took it."""

    id: str
    case: str
    seq: int
    action: Action
    source: CaseState
    target: CaseState
    node: str
    department: str | None
    actor: str
    role: Role
    at: float
    reason: str | None
    details: Mapping[str, Any]
    token: str = ""

    def claims(self) -> dict[str, Any]:
        return {
            "iss": self.node,
            "iat": int(self.at),
            "jti": self.id,
            "case": self.case,
            "seq": self.seq,
            "action": self.action.value,
            "from": self.source.value,
            "to": self.target.value,
            "department": self.department,
            "actor": self.actor,
            "role": self.role.value,
            "at": to_rfc3339(self.at),
            "reason": self.reason,
            "details": dict(self.details),
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.claims(), "event": self.token}


def seal_event(signer: Signer, event: CaseEvent) -> CaseEvent:
    token = sign_compact(signer, orjson.dumps(event.claims()), typ=EVENT_TYP, signed_at=event.at)
    return CaseEvent(**{**_fields(event), "token": token})


def verify_event(token: str, keys: KeyResolver, *, now: float) -> CaseEvent:
    """An event sealed by the node it names; raises :class:`SealError` ``case.bad_event``
    when its seal or its shape is wrong."""
    return _event_of(verify_compact(token, keys, typ=EVENT_TYP, now=now), token)


def _event_of(verified: VerifiedSeal, token: str) -> CaseEvent:
    """The event a verified ``case-event+jws`` (``token``) carries, its shape checked."""
    claims = verified.payload
    if claims.get("iss") != verified.node:
        raise SealError("the event was not sealed by its acting node", code="case.bad_event")
    try:
        event = CaseEvent(
            id=_text(claims, "jti"),
            case=_text(claims, "case"),
            seq=_number(claims, "seq"),
            action=Action(claims["action"]),
            source=CaseState(claims["from"]),
            target=CaseState(claims["to"]),
            node=verified.node,
            department=claims.get("department"),
            actor=_text(claims, "actor"),
            role=Role(claims["role"]),
            at=from_rfc3339(_text(claims, "at")),
            reason=claims.get("reason"),
            details=dict(claims["details"]),
            token=token,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SealError(f"the event is malformed: {exc}", code="case.bad_event") from exc
    optional = (event.department, event.reason)
    if not _EVENT_ID.fullmatch(event.id) or not all(
        v is None or isinstance(v, str) for v in optional
    ):
        raise SealError("the event is malformed", code="case.bad_event")
    return event


def case_document_type(token: str) -> str | None:
    """The ``typ`` of a compact JWS when it is a receipt or an event (read before any check,
    only to choose the verifier; the chosen verifier pins it again)."""
    try:
        header = orjson.loads(b64url_decode(token.split(".", 1)[0], max_length=4096))
    except (InputError, orjson.JSONDecodeError, ValueError):
        return None
    typ = header.get("typ") if isinstance(header, dict) else None
    return typ if typ in CASE_TYPS else None


def verify_case_document(token: str, keys: KeyResolver, *, now: float) -> VerifiedSeal:
    """A receipt or an event, by its ``typ``, verified like a seal (``tongban verify``)."""
    if case_document_type(token) == RECEIPT_TYP:
        return verify_receipt(token, keys, now=now)
    verified = verify_compact(token, keys, typ=EVENT_TYP, now=now)
    _event_of(verified, token)  # its shape, as a node receiving it checks it
    return verified


def stored_claims(token: str) -> dict[str, Any]:
    """The claims of a sealed document this node verified before it stored it (a reading,
    not a verification: what came from elsewhere is verified with :func:`verify_event`)."""
    claims: dict[str, Any] = orjson.loads(b64url_decode(token.split(".")[1]))
    return claims


def _fields(event: CaseEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in CaseEvent.__dataclass_fields__}


def _text(claims: Mapping[str, Any], name: str) -> str:
    value = claims[name]
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ValueError(f"{name} must be a short string")
    return value


def _number(claims: Mapping[str, Any], name: str) -> int:
    value = claims[name]
    if type(value) is not int or not 1 <= value <= 10_000:
        raise ValueError(f"{name} must be a positive integer")
    return value
