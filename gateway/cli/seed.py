"""``tongban seed``: realistic certificates for a node, generated and loaded in a stream.

Holders get valid resident ID numbers (GB 11643 check character, a real birth date, a
county code of the node's region, the sequence's parity matching the sex) and plausible names;
companies get valid credit codes. The facts agree with each other: an ID card's birth date
and sex are those its holder's number encodes, and its validity follows the holder's age
(GB 11643 / the Resident Identity Card Law: 5, 10 or 20 years, or long-term from 46); spouses
are of opposite sexes and of marriageable age; every holder but a household member is an
adult when the certificate starts.
Each certificate is built, schema-checked and sealed exactly as ``POST /v1/certificates``
does it (:meth:`gateway.services.node.NodeService.mint`), then written in batches, so memory stays
flat whether the count is ten or a million.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from tqdm import tqdm

from gateway.config import Department
from gateway.errors import ConfigError
from gateway.identifiers import make_credit_code, resident_id_check, validate_resident_id
from gateway.services.node import NodeService
from gateway.storage.registry import NewCertificate

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"  # noqa: E501
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕彬鹏辉建国志文俊峰磊晨欣怡子涵浩宇梓萱一诺雨泽思远晓燕立新佳琪"  # noqa: E501
ETHNICITIES = ("汉族",) * 12 + ("回族", "满族", "壮族", "畲族")
# County-level codes used when a node's own region is a province or a city.
COUNTIES = {
    "33": ("330102", "330106", "330602", "330681", "330682", "330683"),
    "31": ("310101", "310104", "310105", "310112", "310115"),
    "34": ("340102", "340104", "341202", "341221", "341222"),
}
STREETS = ("人民路", "解放路", "建设路", "中山路", "和平路", "望云路", "艮塔路", "浣纱路")
BATCH = 2000
EARLIEST_BIRTH = date(1950, 1, 1)
ISSUE_WINDOW = (date(2015, 1, 1), date(2026, 1, 1))
"""Certificates start (``valid_from``) in this window."""
ADULT = 22
"""Age every holder is at least when the certificate starts (22: the legal marriage age for
men, so also covers women's 20), except household members and ID card holders."""
ID_CARD_AGE = 16
MALE, FEMALE = "男", "女"


class Generator:
    """Random but well-formed issue requests for the node's departments."""

    def __init__(self, service: NodeService, rng: random.Random) -> None:
        self.service = service
        self.rng = rng
        region = service.node.region or "000000"
        self.counties = _counties(region)
        self.departments = [d for d in service.node.departments if d.issues]
        self.insurance_kinds = _insurance_kinds(service)

    def name(self) -> str:
        given = "".join(self.rng.choice(GIVEN) for _ in range(self.rng.choice((1, 2))))
        return self.rng.choice(SURNAMES) + given

    def day(self, start: date, end: date) -> date:
        return start + timedelta(days=self.rng.randrange((end - start).days))

    def resident_id(self, born: date, sex: str) -> str:
        """A GB 11643 number: county, birth date, a sequence odd for men and even for women."""
        sequence = self.rng.randrange(500) * 2 + (1 if sex == MALE else 0)
        first17 = f"{self.rng.choice(self.counties)}{born:%Y%m%d}{sequence:03d}"
        return first17 + resident_id_check(first17)

    def credit_code(self) -> str:
        org8 = "".join(self.rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(8))
        return make_credit_code("9", "1", self.rng.choice(self.counties), org8)

    def address(self) -> str:
        return f"{self.service.node.name}{self.rng.choice(STREETS)}{self.rng.randrange(1, 999)}号"

    def person(self, *, aged: int, on: date, sex: str | None = None) -> dict[str, str]:
        """Someone at least ``aged`` years old on ``on`` (born no earlier than 1950)."""
        born = self.day(EARLIEST_BIRTH, _years_before(on, aged))
        sex = sex or self.rng.choice((MALE, FEMALE))
        return {"name": self.name(), "id": self.resident_id(born, sex), "id_type": "111"}

    def holder(self, cert_type: str, valid_from: date) -> dict[str, str]:
        if cert_type == "business_licence":
            return {"name": self.company(), "id": self.credit_code(), "id_type": "001"}
        if cert_type == "household_register":
            return self.person(aged=0, on=valid_from)
        if cert_type == "resident_id":
            return self.person(aged=ID_CARD_AGE, on=valid_from)
        if cert_type == "maternity_benefit":
            return self.person(aged=ADULT, on=valid_from, sex=FEMALE)
        return self.person(aged=ADULT, on=valid_from)

    def request(self) -> tuple[Department, dict[str, Any]]:
        dept = self.rng.choice(self.departments)
        cert_type = self.rng.choice(dept.issues)
        valid_from = self.day(*ISSUE_WINDOW)
        holder = self.holder(cert_type, valid_from)
        request: dict[str, Any] = {
            "type": cert_type,
            "holder": holder,
            "valid_from": valid_from.isoformat(),
            "valid_until": None,
            "data": self.data(cert_type, dept, valid_from, holder),
        }
        if cert_type == "resident_id":
            request["valid_until"] = _id_card_expiry(holder["id"], valid_from)
        return dept, request

    def company(self) -> str:
        trade = self.rng.choice(("贸易", "科技", "纺织"))
        return f"{self.service.node.name}{self.name()}{trade}有限公司"

    def data(
        self, cert_type: str, dept: Department, when: date, holder: dict[str, str]
    ) -> dict[str, Any]:
        rng = self.rng
        office = dept.name
        if cert_type == "resident_id":
            number = validate_resident_id(holder["id"])
            return {
                "sex": MALE if number.sex == "male" else FEMALE,
                "ethnicity": rng.choice(ETHNICITIES),
                "birth_date": number.birth_date.isoformat(),
                "address": self.address(),
                "issuing_office": office,
            }
        if cert_type == "household_register":
            return {
                "household_number": f"{rng.randrange(10**8, 10**9)}",
                "household_type": rng.choice(("家庭户", "集体户")),
                "relation_to_head": rng.choice(("户主", "配偶", "子", "女")),
                "address": self.address(),
                "registration_office": office,
            }
        if cert_type in ("marriage", "divorce"):
            key = "spouse" if cert_type == "marriage" else "former_spouse"
            holder_sex = validate_resident_id(holder["id"]).sex
            return {
                "registration_date": when.isoformat(),
                key: self.person(aged=ADULT, on=when, sex=FEMALE if holder_sex == "male" else MALE),
                "registration_office": office,
            }
        if cert_type == "social_insurance_record":
            # Months paid before the record was issued: up to a year, within the last ten.
            start = rng.randrange(when.year - 10, when.year)
            base = rng.randrange(3000, 20000)
            return {
                "insurance_kind": rng.choice(self.insurance_kinds),
                "periods": [
                    {
                        "month": f"{start + m // 12}-{m % 12 + 1:02d}",
                        "base": base,
                        "amount_personal": round(base * 0.08, 2),
                        "amount_employer": round(base * 0.16, 2),
                    }
                    for m in range(rng.randrange(1, 13))
                ],
            }
        if cert_type == "flexible_pension_enrolment":
            return {
                "enrolment_date": when.isoformat(),
                "contribution_base": rng.randrange(3000, 20000),
                "insured_region": rng.choice(self.counties),
            }
        if cert_type == "maternity_benefit":
            days = rng.choice((98, 113, 128, 158))
            return {
                "decision_date": when.isoformat(),
                "medical_expenses": rng.randrange(2000, 30000),
                "allowance_days": days,
                "allowance_amount": days * rng.randrange(150, 600),
            }
        if cert_type == "work_injury_settlement":
            return {
                "injury_decision_number": f"工伤认定〔{when.year}〕{rng.randrange(1, 9999)}号",
                "hospital": f"{self.service.node.name}人民医院",
                "settlement_date": when.isoformat(),
                "medical_costs": rng.randrange(1000, 90000),
                "device_costs": rng.randrange(0, 9000),
                "rehab_costs": rng.randrange(0, 20000),
            }
        if cert_type == "business_licence":
            return {
                "entity_type": "有限责任公司（自然人投资或控股）",
                "legal_representative": self.name(),
                "registered_capital": f"{rng.randrange(10, 5000)}万元人民币",
                "established": when.isoformat(),
                "business_scope": "纺织品、服装的生产与销售",
                "address": self.address(),
            }
        raise ValueError(f"no generator for {cert_type}")  # pragma: no cover


def _insurance_kinds(service: NodeService) -> tuple[str, ...]:
    """The enum of insurance kinds, read once from the type's schema."""
    schema = service.schemas.schema_documents().get("type:social_insurance_record", {})
    enum = schema.get("properties", {}).get("data", {}).get("properties", {})
    kinds = enum.get("insurance_kind", {}).get("enum")
    return tuple(kinds) if kinds else ("企业职工基本养老保险",)


def _years_before(day: date, years: int) -> date:
    return _years_later(day, -years)


def _years_later(day: date, years: int) -> date:
    """The same calendar day ``years`` later (28 February for a 29 February)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def _id_card_expiry(resident_id: str, valid_from: date) -> str | None:
    """An ID card's last day: 5, 10 or 20 years by the holder's age at issue; long-term at 46."""
    born = validate_resident_id(resident_id).birth_date
    birthday_to_come = (valid_from.month, valid_from.day) < (born.month, born.day)
    age = valid_from.year - born.year - birthday_to_come
    if age >= 46:
        return None
    years = 5 if age < 16 else 10 if age < 26 else 20
    return _years_later(valid_from, years).isoformat()


def _counties(region: str) -> tuple[str, ...]:
    if region.endswith("0000"):
        return COUNTIES.get(region[:2], (region[:2] + "0102",))
    if region.endswith("00"):
        return tuple(c for c in COUNTIES.get(region[:2], ()) if c.startswith(region[:4])) or (
            region[:4] + "02",
        )
    return (region,)


def generate(service: NodeService, count: int, rng: random.Random) -> Iterator[NewCertificate]:
    """Seal ``count`` certificates, lazily, reserving status slots a batch at a time.

    A node with nothing to issue is refused here, at the call, not at the first ``next``.
    """
    gen = Generator(service, rng)
    if not gen.departments:
        raise ConfigError(f"node {service.node.id!r} has no department that issues certificates")
    return _sealed(service, gen, count)


def _sealed(service: NodeService, gen: Generator, count: int) -> Iterator[NewCertificate]:
    left = count
    while left > 0:
        block = service.registry.reserve_slots(min(BATCH, left))
        now = service.clock.now()
        for slot in block:
            dept, request = gen.request()
            new, _ = service.mint(request, dept, slot, now)
            yield new
        left -= len(block)


def seed_node(
    service: NodeService, count: int, *, rng_seed: int | None = None, progress: bool = False
) -> int:
    rng = random.Random(rng_seed)
    stream: Iterator[NewCertificate] = generate(service, count, rng)
    if progress:
        stream = iter(tqdm(stream, total=count, unit="cert", desc=f"seed {service.node.id}"))
    return service.registry.add_many(stream, batch=BATCH)
