"""The matters (事项): what a service window handles, and which certificates it may use.

A lookup or fetch names its matter; a department may fetch only the certificate types that
matter needs (purpose limitation). A case (办件) names its matter too, which says who owns
it, which windows may receive it, the materials it needs, its time limit and how its result
is delivered. The catalog is data (``gateway/matters.toml``, sources named there), read once.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, Forbidden, NotFoundError


class Level(StrEnum):
    """Where a matter can be handled (通办 levels)."""

    INTER_PROVINCIAL = "inter-provincial"  # 跨省通办
    PROVINCE = "province"  # 全省通办
    CITY = "city"  # 全城办
    COUNTY = "county"  # 县域通办


LEVEL_NAMES = {
    Level.INTER_PROVINCIAL: "跨省通办",
    Level.PROVINCE: "全省通办",
    Level.CITY: "全城办",
    Level.COUNTY: "县域通办",
}

ALL_LEVELS = (Level.INTER_PROVINCIAL, Level.PROVINCE, Level.CITY, Level.COUNTY)


class Form(StrEnum):
    """How a material is handed in (材料形式)."""

    ELECTRONIC = "electronic"
    PAPER = "paper"
    SCAN = "scan"


class Delivery(StrEnum):
    """How a result reaches the applicant (送达方式)."""

    ONLINE = "online"
    POST = "post"
    WINDOW = "window"


EVERYWHERE = "000000"
"""The area code meaning every region's windows (全国通办)."""


@dataclass(frozen=True, slots=True)
class MaterialSpec:
    """One material a matter requires (申请材料): what, in which form, whether required."""

    id: str
    name: str
    form: Form
    required: bool = True
    certificate_type: str | None = None
    """The electronic certificate type this material is, when it is one (referenced by id,
    never copied unverified)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "form": self.form.value,
            "required": self.required,
            "certificate_type": self.certificate_type,
        }


@dataclass(frozen=True, slots=True)
class Matter:
    id: str
    name: str
    lead: str
    """The lead department kind (牵头单位) in the seed's annex."""
    types: tuple[str, ...]
    consent_required: bool
    levels: tuple[Level, ...]
    scenario: str
    owner: str = ""
    """The kind of department that decides it (业务属地部门), e.g. ``healthcare-security``."""
    areas: tuple[str, ...] = ()
    """Region codes whose windows may receive it for another region (代收代办 areas)."""
    materials: tuple[MaterialSpec, ...] = ()
    limit_days: int = 20
    """Promised time limit (承诺时限) in working days, from receipt."""
    delivery: tuple[Delivery, ...] = (Delivery.WINDOW,)
    online: bool = False
    """全程网办: the applicant may file it online with their own token."""
    on_site: str | None = None
    """A step needing the applicant in person at the receiving window (e.g. fingerprints)."""
    result_type: str | None = None
    """The certificate type approval issues, if any."""

    def received_in(self, region: str) -> bool:
        """Whether a window of ``region`` may receive this matter for another region: one
        of :attr:`areas` is every region, or contains ``region`` (GB/T 2260: ``330000`` a
        province, ``330600`` a city, any other code itself)."""
        return any(_contains(area, region) for area in self.areas)

    def material(self, material_id: str) -> MaterialSpec | None:
        return next((m for m in self.materials if m.id == material_id), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "lead": self.lead,
            "certificate_types": list(self.types),
            "consent_required": self.consent_required,
            "levels": [level.value for level in self.levels],
            "level_names": [LEVEL_NAMES[level] for level in self.levels],
            "scenario": self.scenario,
            "owner": self.owner,
            "areas": list(self.areas),
            "materials": [m.to_json() for m in self.materials],
            "limit_days": self.limit_days,
            "delivery": [d.value for d in self.delivery],
            "online": self.online,
            "on_site": self.on_site,
            "result_type": self.result_type,
        }


def _contains(area: str, region: str) -> bool:
    if area == EVERYWHERE:
        return True
    if area.endswith("0000"):
        return region[:2] == area[:2]
    if area.endswith("00"):
        return region[:4] == area[:4]
    return region == area


DEFAULT_MATTERS_FILE = Path(__file__).resolve().parent.parent / "matters.toml"
_ID = re.compile(r"[a-z][a-z0-9-]{1,63}")
_AREA = re.compile(r"[0-9]{6}")


def load_matters(path: Path = DEFAULT_MATTERS_FILE) -> tuple[Matter, ...]:
    """Read and check the matter catalog (``matters.toml``); :class:`ConfigError` naming the
    matter and the problem otherwise."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the matter catalog: {exc}") from exc
    tables = raw.get("matters")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: expected [[matters]] tables")
    matters = tuple(_matter(path, table) for table in tables)
    ids = [m.id for m in matters]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: a matter id is defined twice")
    return matters


def _matter(path: Path, table: dict[str, Any]) -> Matter:
    where = f"{path}: matter {table.get('id')!r}"

    def get(key: str, kind: type, default: Any = ...) -> Any:
        value = table.get(key, default)
        if value is ...:
            raise ConfigError(f"{where}: missing {key!r}")
        if value is not None and not isinstance(value, kind):
            raise ConfigError(f"{where}: {key!r} must be a {kind.__name__}")
        return value

    def strings(key: str, default: Any = ...) -> tuple[str, ...]:
        values = get(key, list, default)
        if not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{where}: {key!r} must list strings")
        return tuple(values)

    matter_id = get("id", str)
    if not _ID.fullmatch(matter_id):
        raise ConfigError(f"{where}: id must match {_ID.pattern}")
    areas = strings("areas", [])
    if not all(_AREA.fullmatch(a) for a in areas):
        raise ConfigError(f"{where}: areas are 6-digit GB/T 2260 region codes")
    limit = get("limit_days", int)
    if isinstance(limit, bool) or not 1 <= limit <= 365:
        raise ConfigError(f"{where}: limit_days must be 1..365 working days")
    try:
        levels = tuple(Level(v) for v in strings("levels"))
        delivery = tuple(Delivery(v) for v in strings("delivery"))
        materials = tuple(_material(m) for m in get("materials", list, []))
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if not delivery:
        raise ConfigError(f"{where}: name at least one delivery method")
    if len({m.id for m in materials}) != len(materials):
        raise ConfigError(f"{where}: a material id is listed twice")
    return Matter(
        id=matter_id,
        name=get("name", str),
        lead=get("lead", str),
        types=strings("certificate_types"),
        consent_required=get("consent_required", bool),
        levels=levels,
        scenario=get("scenario", str),
        owner=get("owner", str),
        areas=areas,
        materials=materials,
        limit_days=limit,
        delivery=delivery,
        online=get("online", bool, False),
        on_site=get("on_site", str, None),
        result_type=get("result_type", str, None),
    )


def _material(table: Any) -> MaterialSpec:
    if not isinstance(table, dict):
        raise TypeError("each material is a table")
    material_id, name = table["id"], table["name"]
    required, cert_type = table.get("required", True), table.get("certificate_type")
    if not (isinstance(material_id, str) and _ID.fullmatch(material_id)):
        raise ValueError(f"material id {material_id!r} must match {_ID.pattern}")
    if not isinstance(name, str) or not isinstance(required, bool):
        raise TypeError(f"material {material_id!r}: name is text, required true or false")
    if cert_type is not None and not isinstance(cert_type, str):
        raise TypeError(f"material {material_id!r}: certificate_type is a type name")
    return MaterialSpec(material_id, name, Form(table["form"]), required, cert_type)


MATTERS: tuple[Matter, ...] = load_matters()


class MatterSet:
    def __init__(self, matters: tuple[Matter, ...] = MATTERS) -> None:
        self._by_id = {m.id: m for m in matters}

    def all(self) -> list[Matter]:
        return list(self._by_id.values())

    def get(self, matter_id: str) -> Matter:
        try:
            return self._by_id[matter_id]
        except KeyError:
            raise NotFoundError(
                f"unknown matter {matter_id[:64]!r}", code="matter.unknown"
            ) from None

    def require_type(self, matter_id: str, cert_type: str) -> Matter:
        """Purpose limitation: the matter must use this certificate type, or 403."""
        matter = self.get(matter_id)
        if cert_type not in matter.types:
            raise Forbidden(
                f"matter {matter.id!r} does not use certificate type {cert_type!r}",
                code="matter.type_not_allowed",
            )
        return matter
