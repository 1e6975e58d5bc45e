"""The matters (事项): what a service window handles, and which certificates it may use.

A lookup or fetch names its matter; a department may fetch only the certificate types that
matter needs (purpose limitation). Sources: the seed plan's annex 2 (the national high-
frequency 跨省通办 list as adopted by Zhuji) plus household transfer, business registration
and housing-fund transfer, which the plan names under 多地联办.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.errors import Forbidden, NotFoundError


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
        }


MATTERS: tuple[Matter, ...] = (
    Matter(
        "first-id-card",
        "首次申领居民身份证件",
        "公安局",
        ("household_register",),
        True,
        ALL_LEVELS,
        "申请人可异地首次申领居民身份证件，不受户籍地限制。",
    ),
    Matter(
        "marriage-registration",
        "结婚登记",
        "民政局",
        ("resident_id", "household_register"),
        True,
        ALL_LEVELS,
        "申请人可在所在地婚姻登记机关办理结婚登记，不受户籍地限制。",
    ),
    Matter(
        "divorce-registration",
        "离婚登记",
        "民政局",
        ("resident_id", "household_register", "marriage"),
        True,
        ALL_LEVELS,
        "申请人可在所在地婚姻登记机关办理离婚登记，不受户籍地限制。",
    ),
    Matter(
        "flexible-pension-enrolment",
        "灵活就业人员申请企业职工基本养老保险参保登记",
        "人社局",
        ("resident_id", "household_register", "flexible_pension_enrolment"),
        True,
        ALL_LEVELS,
        "申请人可异地申请企业职工基本养老保险参保登记，不受地域限制。",
    ),
    Matter(
        "social-insurance-record-query",
        "社会保险参保缴费记录查询",
        "人社局",
        ("resident_id", "social_insurance_record"),
        True,
        ALL_LEVELS,
        "申请人可异地查询本人在各地的每月社会保险参保缴费记录，不受地域限制。",
    ),
    Matter(
        "work-injury-medical-settlement",
        "工伤职工异地就医结算",
        "人社局",
        ("resident_id", "work_injury_settlement"),
        True,
        ALL_LEVELS,
        "申请人可持社会保障卡直接结算工伤医疗费、辅助器具配置费、工伤康复费。",
    ),
    Matter(
        "maternity-benefit",
        "生育保险待遇核定与支付",
        "医保局",
        ("resident_id", "marriage", "maternity_benefit"),
        True,
        ALL_LEVELS,
        "申请人可异地申请报销生育医疗费用，申领生育津贴，不受参保地限制。",
    ),
    Matter(
        "household-transfer",
        "户口迁移",
        "公安局",
        ("resident_id", "household_register", "marriage"),
        True,
        ALL_LEVELS,
        "户口迁移多地联办：迁入地受理，迁出地协同办理。",
    ),
    Matter(
        "business-registration",
        "企业登记",
        "市场监管局",
        ("business_licence",),
        False,
        ALL_LEVELS,
        "市场主体跨地区登记注册；营业执照为公示信息，无需持证人授权。",
    ),
    Matter(
        "housing-fund-transfer",
        "住房公积金转移接续",
        "公积金中心",
        ("resident_id", "social_insurance_record"),
        True,
        (Level.INTER_PROVINCIAL, Level.PROVINCE),
        "住房公积金异地转移接续，转入地受理，转出地协同办理。",
    ),
)


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
