"""The materials of an application (申请材料): checked against the matter, content-addressed,
each with its credibility level (国办函〔2016〕108号):

- **A**: an electronic certificate issued and sealed by an authority, referenced by id (never
  copied unverified);
- **B**: checked against the original by window staff (核验原件);
- **C**: uploaded by the applicant or the window (a scan, a filled form);
- **D**: declared by the applicant (告知承诺), no document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway._internal.wire import JsonLimits, b64url_decode
from gateway.certificates.matters import Form, Matter
from gateway.config import Limits
from gateway.errors import InputError, SchemaViolation, TooLarge
from gateway.identifiers import parse_certificate_id


class Level(StrEnum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"


@dataclass(frozen=True, slots=True)
class Material:
    """One material as received: what the receipt lists and the package carries."""

    id: str
    name: str
    form: Form
    level: Level
    sha256: str | None = None
    """Hex SHA-256 of the bytes (levels B and C); the package carries the bytes by it."""
    size: int = 0
    media_type: str | None = None
    certificate_id: str | None = None
    """Level A: the certificate it is."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "form": self.form.value,
            "level": self.level.value,
        }
        if self.sha256 is not None:
            out.update(sha256=self.sha256, bytes=self.size, media_type=self.media_type)
        if self.certificate_id is not None:
            out["certificate_id"] = self.certificate_id
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Material:
        return cls(
            id=str(raw["id"]),
            name=str(raw["name"]),
            form=Form(raw["form"]),
            level=Level(raw["level"]),
            sha256=raw.get("sha256"),
            size=int(raw.get("bytes", 0)),
            media_type=raw.get("media_type"),
            certificate_id=raw.get("certificate_id"),
        )


@dataclass(frozen=True, slots=True)
class Received:
    """Materials checked at the door, and the bytes they name (by SHA-256)."""

    materials: tuple[Material, ...]
    blobs: Mapping[str, bytes]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def receive_materials(
    matter: Matter,
    given: Mapping[str, Any],
    *,
    limits: Limits,
    in_person: bool,
    complete: bool = True,
) -> Received:
    """Check the ``materials`` object of an application (or of a supplement) against the
    matter: every member a material it lists, in one of the four shapes, within the limits.

    With ``complete``, every required material must be there: a 422 ``case.materials_missing``
    names **every** missing one by pointer (``/materials/<id>``), never only the first.
    ``in_person``: window staff can vouch for an original (level B); online filing cannot."""
    if len(given) > limits.max_materials_per_case:
        raise InputError(
            f"at most {limits.max_materials_per_case} materials per case",
            code="case.too_many_materials",
        )
    unknown = [f"/materials/{name}" for name in given if matter.material(name) is None]
    if unknown:
        raise SchemaViolation(
            f"matter {matter.id!r} does not ask for these materials",
            pointers=tuple(unknown),
            errors=tuple("not a material of this matter" for _ in unknown),
            code="case.unknown_material",
        )
    if complete:
        missing = [m for m in matter.materials if m.required and m.id not in given]
        if missing:
            raise SchemaViolation(
                "materials missing: " + "、".join(m.name for m in missing),
                pointers=tuple(f"/materials/{m.id}" for m in missing),
                errors=tuple(f"required: {m.name} ({m.form.value})" for m in missing),
                code="case.materials_missing",
            )
    materials: list[Material] = []
    blobs: dict[str, bytes] = {}
    for name, raw in given.items():
        material, content = _one(matter, name, raw, limits=limits, in_person=in_person)
        materials.append(material)
        if content is not None and material.sha256 is not None:
            blobs[material.sha256] = content
    return Received(tuple(materials), blobs)


def _one(
    matter: Matter, name: str, raw: Any, *, limits: Limits, in_person: bool
) -> tuple[Material, bytes | None]:
    spec = matter.material(name)
    assert spec is not None  # checked by the caller
    where = f"/materials/{name}"
    if not isinstance(raw, Mapping):
        raise _bad(where, "a material is an object")
    if "certificate_id" in raw:
        cert_id = raw["certificate_id"]
        if set(raw) != {"certificate_id"} or not isinstance(cert_id, str):
            raise _bad(where, "a certificate material is {certificate_id} alone")
        if spec.certificate_type is None:
            raise _bad(where, f"{spec.name} is not an electronic certificate")
        parse_certificate_id(cert_id)  # input.identifier.* on a bad id
        return Material(spec.id, spec.name, spec.form, Level.A, certificate_id=cert_id), None
    if raw.get("declared") is True:
        if set(raw) != {"declared"}:
            raise _bad(where, "a declared material is {declared: true} alone")
        return Material(spec.id, spec.name, spec.form, Level.D), None
    content, media_type = raw.get("content"), raw.get("media_type")
    checked = raw.get("checked_original", False)
    extra = set(raw) - {"content", "media_type", "checked_original"}
    if extra or not isinstance(content, str) or not isinstance(media_type, str):
        raise _bad(where, "a document material is {content (base64url), media_type}")
    if not isinstance(checked, bool):
        raise _bad(where, "checked_original is true or false")
    if checked and not in_person:
        raise _bad(where, "only window staff can check an original (online filing cannot)")
    if len(media_type) > 100 or "/" not in media_type:
        raise _bad(where, "media_type is a MIME type such as application/pdf")
    if len(content) > content_chars(limits):
        raise _too_large(spec.name, limits)
    data = b64url_decode(content)
    if len(data) > limits.max_material_bytes:
        raise _too_large(spec.name, limits)
    if not data:
        raise _bad(where, "a document material may not be empty")
    level = Level.B if checked else Level.C
    digest = sha256_hex(data)
    material = Material(spec.id, spec.name, spec.form, level, digest, len(data), media_type)
    return material, data


def _bad(pointer: str, detail: str) -> SchemaViolation:
    return SchemaViolation(detail, pointers=(pointer,), errors=(detail,))


def _too_large(name: str, limits: Limits) -> TooLarge:
    return TooLarge(
        f"{name}: a material may be at most {limits.max_material_bytes} bytes",
        code="case.material_too_large",
    )


def content_chars(limits: Limits) -> int:
    """The longest base64url text of one material within ``max_material_bytes``."""
    return (limits.max_material_bytes * 4 + 2) // 3


def case_json_limits(limits: Limits) -> JsonLimits:
    """The JSON parser's bounds for bodies that carry materials (an application, a
    supplement, a package between nodes): strings as long as one material's base64url."""
    return JsonLimits(
        max_depth=limits.max_json_depth,
        max_string=max(limits.max_string_length, content_chars(limits)),
        max_members=limits.max_json_members,
    )
