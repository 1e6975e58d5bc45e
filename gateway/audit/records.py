"""The node's tamper-evident audit log: an append-only Merkle tree log (RFC 9162 style).

Every issuance, status change, lookup hop, fetch, verification, consent use, key event and
trust-list change is one :class:`AuditRecord`. Its canonical bytes (orjson, sorted keys) are
a leaf of a Merkle tree (:mod:`gateway.crypto.merkle`); the node signs tree heads with its seal key
(:data:`STH_TYP`) and keeps every head it signed, so that:

- :func:`~gateway.storage.audit_verify.verify_log` (``tongban audit verify``) re-reads the
  whole file and finds an altered, removed or reordered entry, or a history rewritten under
  an older signed head;
- a partner holding an older head asks for a consistency proof and
  :class:`~gateway.audit.watch.HeadWatcher` reports a fork when the log it sees now does not
  extend the one it saw before.

Holder ids never enter the log in clear: a ``holder`` member must be a keyed digest
(:mod:`gateway.certificates.holders`), and anything shaped like a resident ID number is refused.

This module says what a record is and may hold; the store is
:mod:`gateway.storage.audit_log`, its signed heads :mod:`gateway.audit.heads`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

import orjson

from gateway._internal.wire import JsonLimits, is_int, loads
from gateway.errors import (
    InputError,
    InvalidIdentifier,
)
from gateway.identifiers import HOLDER_DIGEST, parse_certificate_id
from gateway.ids import NodeId

MAX_DETAILS_BYTES: Final = 4096

_DETAILS_LIMITS: Final = JsonLimits(max_depth=4, max_string=1024, max_members=64)
_ENTRY_LIMITS: Final = JsonLimits(max_depth=6, max_string=2048, max_members=128)
# A resident ID number (GB 11643): 17 digits and a check character, standing on its own.
_ID_NUMBER: Final = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
_ID_NUMBER_LENGTH: Final = 18


class AuditKind(StrEnum):
    ISSUANCE = "issuance"
    STATUS = "status"
    LOOKUP_HOP = "lookup_hop"
    FETCH = "fetch"
    VERIFICATION = "verification"
    CONSENT_USE = "consent_use"
    KEY_EVENT = "key_event"
    TRUST_LIST = "trust_list"
    CASE_EVENT = "case_event"
    """A case received, or a transition of a case taken at this node (its sealed event's
    digest; the applicant only as a digest)."""


AuditItem = tuple[AuditKind, str, str | None, Mapping[str, Any] | None]
"""A record to append: (kind, actor, subject, details)."""


@dataclass(frozen=True, slots=True)
class CheckedItem:
    """A record :func:`check_items` accepted; its details are a private copy."""

    kind: AuditKind
    actor: str
    subject: str | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry of the log. ``seq`` is its 0-based leaf index."""

    seq: int
    at: float
    kind: AuditKind
    node: NodeId
    actor: str
    """The client id or node id that caused the event."""
    subject: str | None
    """A certificate id or kid, when the event is about one."""
    details: Mapping[str, Any]

    def entry(self) -> bytes:
        """The canonical entry bytes: the leaf's input."""
        return orjson.dumps(
            {
                "seq": self.seq,
                "at": self.at,
                "kind": self.kind.value,
                "node": self.node,
                "actor": self.actor,
                "subject": self.subject,
                "details": dict(self.details),
            },
            option=orjson.OPT_SORT_KEYS,
        )


# --- records --------------------------------------------------------------------------------


def _clear_holder(where: str) -> InputError:
    return InputError(
        f"{where} looks like a holder id in clear; the audit log takes only holder digests",
        code="audit.clear_holder_id",
    )


def _has_id_number(text: str) -> bool:
    """Something shaped like a resident ID number in clear somewhere in ``text``.

    A GB/T 36904 certificate identifier is not one, though its all-digit issuer credit code
    can look like one: identifiers are recognised and allowed whole.
    """
    # shape alone: a mistyped number is still personal data
    if len(text) < _ID_NUMBER_LENGTH or _ID_NUMBER.search(text) is None:
        return False
    try:
        parse_certificate_id(text)
    except InvalidIdentifier:
        return True
    return False


def _check_finite(value: Any) -> None:
    """orjson writes NaN and infinities as ``null``: refuse them rather than change them."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
        elif isinstance(node, float) and not math.isfinite(node):
            raise InputError("audit details must be finite numbers", code="audit.bad_details")


def _canonical_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """A private, JSON-only copy of ``details``, bounded, with no holder id in clear."""
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise InputError("audit details must be a JSON object", code="audit.bad_details")
    plain = dict(details)
    try:
        data = orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise InputError(
            "audit details must be plain JSON", code="audit.bad_details", log_detail=str(exc)
        ) from exc
    _check_finite(plain)  # after dumps, which refuses cycles and deep nesting
    if len(data) > MAX_DETAILS_BYTES:
        raise InputError(
            f"audit details may be at most {MAX_DETAILS_BYTES} bytes", code="audit.bad_details"
        )
    # orjson's own output reads back exactly (members unique, numbers finite as checked,
    # integers within 64 bits, strings valid UTF-8), so no strict parser is needed here
    value: dict[str, Any] = orjson.loads(data)
    _check_details(value)
    return value


def _check_details(details: dict[str, Any]) -> None:
    """One walk of a copy of details: within :data:`_DETAILS_LIMITS`, and no holder id in
    clear (a member whose name says ``holder`` holds a digest; no string holds an ID number)."""
    limits = _DETAILS_LIMITS
    members = 0
    stack: list[tuple[Any, str, int]] = [(details, "details", 1)]
    while stack:
        node, path, depth = stack.pop()
        if depth > limits.max_depth:
            raise _bad_details(f"nested deeper than {limits.max_depth} levels")
        members += len(node)
        if members > limits.max_members:
            raise _bad_details(f"more than {limits.max_members} members")
        named = node.items() if type(node) is dict else enumerate(node)
        for name, child in named:
            if type(name) is str:
                if len(name) > limits.max_string:
                    raise _bad_details(f"a name is longer than {limits.max_string} characters")
                if "holder" in name.lower() and not (
                    type(child) is str and HOLDER_DIGEST.fullmatch(child)
                ):
                    raise _clear_holder(f"{path}/{name}")
            if type(child) is str:
                if len(child) > limits.max_string:
                    raise _bad_details(f"a string is longer than {limits.max_string} characters")
                if _has_id_number(child):
                    raise _clear_holder(f"{path}/{name}")
            elif type(child) is dict or type(child) is list:
                stack.append((child, f"{path}/{name}", depth + 1))


def _bad_details(detail: str) -> InputError:
    return InputError(f"audit details exceed a limit: {detail}", code="audit.bad_details")


def _check_text(value: str | None, what: str) -> None:
    if value is None:
        if what == "subject":
            return
        raise InputError(f"audit {what} is required", code="audit.bad_record")
    if not isinstance(value, str) or not value or len(value) > 256:
        raise InputError(f"audit {what} must be a short string", code="audit.bad_record")
    if _has_id_number(value):
        raise _clear_holder(what)


def _canonical(record: AuditRecord | CheckedItem) -> bytes:
    """A record's event (kind, actor, subject, details) in one canonical form: what makes two
    records the same event whatever their place and time in the log, and what an outbox
    keeps (:func:`encode_item`)."""
    return orjson.dumps(
        [record.kind.value, record.actor, record.subject, dict(record.details)],
        option=orjson.OPT_SORT_KEYS,
    )


def check_items(items: Iterable[AuditItem]) -> list[CheckedItem]:
    """Records validated (and their details copied) before anything touches the store;
    raises :class:`InputError` ``audit.bad_record`` for the first bad one."""
    checked: list[CheckedItem] = []
    for kind, actor, subject, details in items:
        if not isinstance(kind, AuditKind):
            raise InputError("unknown audit record kind", code="audit.bad_record")
        _check_text(actor, "actor")
        _check_text(subject, "subject")
        checked.append(CheckedItem(kind, actor, subject, _canonical_details(details)))
    return checked


def encode_item(item: AuditItem) -> bytes:
    """A record to append later (a store's outbox), checked now: a bad record fails before
    the change it describes is committed. :func:`decode_item` reads it back."""
    (checked,) = check_items([item])
    return _canonical(checked)


def decode_item(data: bytes) -> AuditItem:
    """A record :func:`encode_item` wrote. Raises :class:`InputError` for anything else."""
    value = loads(data, _ENTRY_LIMITS)
    if not (isinstance(value, list) and len(value) == 4 and isinstance(value[3], dict)):
        raise InputError("not a pending audit record", code="audit.bad_record")
    kind, actor, subject, details = value
    try:
        return AuditKind(kind), actor, subject, details
    except ValueError as exc:
        raise InputError("not a pending audit record", code="audit.bad_record") from exc


def parse_entry(entry: bytes) -> AuditRecord:
    """An :class:`AuditRecord` from its entry bytes. Raises :class:`InputError`."""
    obj = loads(entry, _ENTRY_LIMITS)
    try:
        if not isinstance(obj, dict) or set(obj) != {
            "seq",
            "at",
            "kind",
            "node",
            "actor",
            "subject",
            "details",
        }:
            raise TypeError("wrong members")
        seq, at, details = obj["seq"], obj["at"], obj["details"]
        if not is_int(seq) or seq < 0:
            raise TypeError("seq")
        if not isinstance(at, float | int) or isinstance(at, bool):
            raise TypeError("at")
        if not isinstance(details, dict):
            raise TypeError("details")
        subject = obj["subject"]
        if not isinstance(obj["node"], str) or not isinstance(obj["actor"], str):
            raise TypeError("node/actor")
        if subject is not None and not isinstance(subject, str):
            raise TypeError("subject")
        return AuditRecord(
            seq=seq,
            at=float(at),
            kind=AuditKind(obj["kind"]),
            node=NodeId(obj["node"]),
            actor=obj["actor"],
            subject=subject,
            details=MappingProxyType(details),
        )
    except (TypeError, ValueError) as exc:
        raise InputError(
            "an audit entry is malformed", code="audit.bad_entry", log_detail=str(exc)
        ) from exc
