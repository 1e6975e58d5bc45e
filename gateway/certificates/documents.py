"""Electronic certificates (电子证照): building the document a department asks to issue.

The sealed document's payload is the certificate JSON (GB/T 36903 metadata, see
``schemas/certificate.schema.json``). This module turns an issue request into that document:
it checks every identifier inside it (holder ID numbers and credit codes, with their check
characters), mints the GB/T 36904 identifier and fills in what only the node may set (issuer,
sealing node, time, status reference). Pure and synchronous.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from gateway.certificates.schemas import CertificateTypeInfo
from gateway.certificates.status import StatusSlot
from gateway.certificates.status_list import status_claim
from gateway.config import Department, NodeConfig
from gateway.errors import InvalidIdentifier
from gateway.identifiers import build_certificate_id, validate_credit_code, validate_resident_id
from gateway.ids import CertificateId, RegionCode

ID_TYPE_RESIDENT = "111"
ID_TYPE_CREDIT_CODE = "001"

CERTIFICATE_TZ = timezone(timedelta(hours=8), "UTC+08:00")
"""China Standard Time (no daylight saving since 1991). A certificate's dates (``issued``,
``valid_from``, ``valid_until``) are calendar days there, whatever the server's clock zone."""


def certificate_date(ts: float) -> date:
    """The calendar day, in :data:`CERTIFICATE_TZ`, of the instant ``ts`` (epoch seconds)."""
    return datetime.fromtimestamp(ts, CERTIFICATE_TZ).date()


@dataclass(frozen=True, slots=True)
class IssueContext:
    """Everything the node decides about a new certificate."""

    node: NodeConfig
    department: Department
    cert_type: CertificateTypeInfo
    slot: StatusSlot
    status_uri: str
    sealed_at: float


def check_party(party: Mapping[str, Any], pointer: str) -> None:
    """Validate the check character of a party's identifier by its ``id_type``."""
    id_type = party.get("id_type")
    value = party.get("id")
    if not isinstance(value, str):
        return  # the schema reports the missing or mistyped member with its pointer
    try:
        if id_type == ID_TYPE_RESIDENT:
            validate_resident_id(value)
        elif id_type == ID_TYPE_CREDIT_CODE:
            validate_credit_code(value)
    except InvalidIdentifier as exc:
        raise InvalidIdentifier(
            f"{pointer}/id: {exc.detail}", code=exc.code, pointers=(f"{pointer}/id",)
        ) from exc


def check_identifiers(document: Mapping[str, Any]) -> None:
    """Every party (an object with ``id`` and ``id_type``) anywhere in the document."""
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        node, pointer = stack.pop()
        if isinstance(node, Mapping):
            if "id_type" in node and "id" in node:
                check_party(node, pointer)
            stack.extend((v, f"{pointer}/{_escape(str(k))}") for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{pointer}/{i}") for i, v in enumerate(node))


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def serial_for(slot: StatusSlot, year: int) -> str:
    """A serial unique per node: the year and the never-reused status slot."""
    return f"{year}{slot.list_id:03d}{slot.index:07d}"


def build_document(request: Mapping[str, Any], ctx: IssueContext) -> dict[str, Any]:
    """The certificate document for a validated issue request."""
    sealed = certificate_date(ctx.sealed_at)
    serial = serial_for(ctx.slot, sealed.year)
    cert_id = build_certificate_id(
        ctx.cert_type.type_code, ctx.department.credit_code, serial, version="001"
    )
    jurisdiction = ctx.node.region or RegionCode("000000")
    number = request.get("number") or f"{jurisdiction}-{serial}"
    return {
        "iss": ctx.node.id,
        "iat": int(ctx.sealed_at),
        "id": str(cert_id),
        "type": ctx.cert_type.name,
        "type_code": ctx.cert_type.type_code,
        "name": ctx.cert_type.title,
        "number": number,
        "holder": dict(request["holder"]),
        "issuer": {"name": ctx.department.name, "code": ctx.department.credit_code},
        "issued": sealed.isoformat(),
        "valid_from": request["valid_from"],
        "valid_until": request.get("valid_until"),
        "jurisdiction": jurisdiction,
        "data": request["data"],
        "status": status_claim(ctx.status_uri, ctx.slot.index),
    }


def certificate_id_of(document: Mapping[str, Any]) -> CertificateId:
    return CertificateId(str(document["id"]))
