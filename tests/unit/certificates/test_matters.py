"""The catalog of matters (事项) and purpose limitation."""

from __future__ import annotations

import pytest

from gateway.certificates.matters import ALL_LEVELS, MATTERS, Level, Matter, MatterSet
from gateway.certificates.schemas import SchemaSet
from gateway.errors import Forbidden, NotFoundError

# The seed plan's annex 2 (诸暨市高频政务服务"跨省通办"事项清单), with their lead departments.
ANNEX_2 = {
    "first-id-card": ("首次申领居民身份证件", "公安局"),
    "marriage-registration": ("结婚登记", "民政局"),
    "divorce-registration": ("离婚登记", "民政局"),
    "flexible-pension-enrolment": ("灵活就业人员申请企业职工基本养老保险参保登记", "人社局"),
    "social-insurance-record-query": ("社会保险参保缴费记录查询", "人社局"),
    "work-injury-medical-settlement": ("工伤职工异地就医结算", "人社局"),
    "maternity-benefit": ("生育保险待遇核定与支付", "医保局"),
}
# The plan's 多地联办 matters, added by DESIGN.md.
JOINT = {
    "household-transfer": "户口迁移",
    "business-registration": "企业登记",
    "housing-fund-transfer": "住房公积金转移接续",
}


@pytest.fixture
def catalog() -> MatterSet:
    return MatterSet()


def test_catalog_holds_the_annex_matters_and_the_joint_ones(catalog: MatterSet) -> None:
    matters = {m.id: m for m in catalog.all()}
    assert set(matters) == set(ANNEX_2) | set(JOINT)
    for matter_id, (name, lead) in ANNEX_2.items():
        assert (matters[matter_id].name, matters[matter_id].lead) == (name, lead)
    for matter_id, name in JOINT.items():
        assert matters[matter_id].name == name


def test_the_demo_matter_uses_the_id_card_and_household_register(catalog: MatterSet) -> None:
    marriage = catalog.get("marriage-registration")
    assert marriage.types == ("resident_id", "household_register")
    assert marriage.consent_required


def test_only_business_registration_needs_no_consent(catalog: MatterSet) -> None:
    # a business licence is public information; everything else is personal data
    assert [m.id for m in catalog.all() if not m.consent_required] == ["business-registration"]


def test_levels(catalog: MatterSet) -> None:
    housing = catalog.get("housing-fund-transfer")
    assert housing.levels == (Level.INTER_PROVINCIAL, Level.PROVINCE)
    others = [m for m in catalog.all() if m.id != "housing-fund-transfer"]
    assert all(m.levels == ALL_LEVELS for m in others)
    assert [level.value for level in ALL_LEVELS] == [
        "inter-provincial",
        "province",
        "city",
        "county",
    ]


def test_every_matter_uses_known_certificate_types(catalog: MatterSet, schemas: SchemaSet) -> None:
    known = {t.name for t in schemas.certificate_types()}
    for matter in catalog.all():
        assert matter.types
        assert set(matter.types) <= known, matter.id
        assert len(set(matter.types)) == len(matter.types)


def test_matter_json(catalog: MatterSet) -> None:
    assert catalog.get("housing-fund-transfer").to_json() == {
        "id": "housing-fund-transfer",
        "name": "住房公积金转移接续",
        "lead": "公积金中心",
        "certificate_types": ["resident_id", "social_insurance_record"],
        "consent_required": True,
        "levels": ["inter-provincial", "province"],
        "level_names": ["跨省通办", "全省通办"],
        "scenario": catalog.get("housing-fund-transfer").scenario,
        "owner": "housing-fund",
        "areas": ["000000"],
        "materials": [
            {
                "id": "resident-id",
                "name": "居民身份证",
                "form": "electronic",
                "required": True,
                "certificate_type": "resident_id",
            }
        ],
        "limit_days": 15,
        "delivery": ["online"],
        "online": True,
        "on_site": None,
        "result_type": None,
    }


def test_get_an_unknown_matter(catalog: MatterSet) -> None:
    with pytest.raises(NotFoundError) as caught:
        catalog.get("fishing-licence")
    assert caught.value.code == "matter.unknown"
    assert caught.value.status == 404


def test_an_unknown_matter_id_is_not_echoed_in_full(catalog: MatterSet) -> None:
    with pytest.raises(NotFoundError) as caught:
        catalog.get("x" * 10_000)
    assert len(caught.value.detail) < 200


def test_require_type_allows_a_type_the_matter_uses(catalog: MatterSet) -> None:
    matter = catalog.require_type("divorce-registration", "marriage")
    assert matter.id == "divorce-registration"


@pytest.mark.parametrize(
    ("matter_id", "cert_type"),
    [
        ("marriage-registration", "marriage"),
        ("social-insurance-record-query", "household_register"),
        ("business-registration", "resident_id"),
    ],
)
def test_require_type_refuses_a_type_the_matter_does_not_use(
    catalog: MatterSet, matter_id: str, cert_type: str
) -> None:
    with pytest.raises(Forbidden) as caught:
        catalog.require_type(matter_id, cert_type)
    assert caught.value.code == "matter.type_not_allowed"
    assert caught.value.status == 403


def test_require_type_of_an_unknown_matter(catalog: MatterSet) -> None:
    with pytest.raises(NotFoundError) as caught:
        catalog.require_type("fishing-licence", "resident_id")
    assert caught.value.code == "matter.unknown"


def test_a_catalog_of_its_own_matters() -> None:
    only = Matter("m", "事项", "局", ("marriage",), True, (Level.COUNTY,), "场景")
    catalog = MatterSet((only,))
    assert catalog.all() == [only]
    with pytest.raises(NotFoundError) as caught:
        catalog.get(MATTERS[0].id)
    assert caught.value.code == "matter.unknown"
