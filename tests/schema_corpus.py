"""Documents for the schema tests: valid ones for every type and envelope, and broken ones.

Type codes are never written here: they come from the catalog (the schema files are the only
table of them), so :func:`valid_documents` takes the loaded catalog.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from gateway.certificates.schemas import CERTIFICATE, EXCHANGE_PREFIX, TYPE_PREFIX, SchemaSet

PERSON = {"name": "张三", "id": "11010519491231002X", "id_type": "111"}
COMPANY = {"name": "诸暨市暨阳纺织有限公司", "id": "91330681MA2BCDEF1X", "id_type": "001"}
ISSUER_CODES = {"person": "11330681MB1234567X", "organisation": "11330681MB7654321Y"}
SPOUSE = {"name": "李四", "id": "34122119900307002X", "id_type": "111"}
SEAL = "eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJ6aHVqaSJ9.c2lnbmF0dXJl"

DATA: dict[str, dict[str, Any]] = {
    "resident_id": {
        "sex": "男",
        "ethnicity": "汉",
        "birth_date": "1949-12-31",
        "address": "北京市朝阳区建国路1号",
        "issuing_office": "北京市公安局朝阳分局",
        "photo_digest": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    },
    "household_register": {
        "household_number": "330681001234",
        "household_type": "家庭户",
        "relation_to_head": "户主",
        "address": "浙江省诸暨市暨阳街道人民路10号",
        "registration_office": "诸暨市公安局暨阳派出所",
    },
    "marriage": {
        "registration_date": "2026-11-24",
        "spouse": SPOUSE,
        "registration_office": "诸暨市民政局婚姻登记处",
    },
    "divorce": {
        "registration_date": "2026-11-24",
        "former_spouse": SPOUSE,
        "registration_office": "诸暨市民政局婚姻登记处",
    },
    "social_insurance_record": {
        "insurance_kind": "企业职工基本养老保险",
        "periods": [
            {
                "month": f"2026-{month:02d}",
                "base": 4462,
                "amount_personal": 356.96,
                "amount_employer": 713.92,
                "employer_code": "91330681MA2BCDEF1X",
            }
            for month in range(1, 7)
        ],
    },
    "flexible_pension_enrolment": {
        "enrolment_date": "2026-03-01",
        "contribution_base": 4462,
        "insured_region": "330681",
    },
    "maternity_benefit": {
        "decision_date": "2026-09-15",
        "medical_expenses": 5200.5,
        "allowance_days": 98,
        "allowance_amount": 21560,
    },
    "work_injury_settlement": {
        "injury_decision_number": "诸人社工认〔2026〕123号",
        "hospital": "上海交通大学医学院附属瑞金医院",
        "settlement_date": "2026-10-08",
        "medical_costs": 18230.4,
        "device_costs": 0,
        "rehab_costs": 3600,
    },
    "business_licence": {
        "entity_type": "有限责任公司（自然人投资或控股）",
        "legal_representative": "王五",
        "registered_capital": "100万元人民币",
        "established": "2019-05-20",
        "business_scope": "纺织品、服装的生产与销售；货物进出口。",
        "address": "浙江省诸暨市暨阳街道艮塔西路8号",
    },
}


def certificate(catalog: SchemaSet, type_name: str) -> dict[str, Any]:
    """A valid certificate document of ``type_name``."""
    info = catalog.certificate_type(type_name)
    issuer_code = ISSUER_CODES[info.holder_kind]
    return {
        "iss": "zhuji",
        "iat": 1_764_000_000,
        "id": f"1.2.156.3005.2.{info.type_code}.{issuer_code}.2026000123.001.K",
        "type": type_name,
        "type_code": info.type_code,
        "name": info.title,
        "number": "330681-2026-000123",
        "holder": copy.deepcopy(PERSON if info.holder_kind == "person" else COMPANY),
        "issuer": {"name": "诸暨市公安局", "code": issuer_code},
        "issued": "2026-11-24",
        "valid_from": "2026-11-24",
        "valid_until": None if type_name == "business_licence" else "2036-11-24",
        "jurisdiction": "330681",
        "data": copy.deepcopy(DATA[type_name]),
        "status": {"status_list": {"idx": 12, "uri": "http://127.0.0.1:8404/v1/status-lists/0"}},
    }


def issue_request(catalog: SchemaSet, type_name: str) -> dict[str, Any]:
    document = certificate(catalog, type_name)
    return {
        "type": type_name,
        "holder": document["holder"],
        "number": document["number"],
        "valid_from": document["valid_from"],
        "valid_until": document["valid_until"],
        "data": document["data"],
    }


def report(indication: str = "PASSED") -> dict[str, Any]:
    result: dict[str, Any] = {
        "indication": indication,
        "code": "seal.valid" if indication == "PASSED" else "seal.invalid",
        "checks": [
            {"name": "format", "result": "PASSED"},
            {"name": "signature", "result": indication, "detail": "EdDSA over the JWS input"},
        ],
    }
    if indication == "PASSED":
        result |= {
            "kid": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
            "node": "zhuji",
            "certificate_id": (
                "1.2.156.3005.2.11100000000013338W002.11330681MB1234567X.2026000123.001.K"
            ),
            "signed_at": "2025-11-24T16:00:00Z",
        }
    return result


def envelopes() -> list[tuple[str, dict[str, Any]]]:
    """Valid envelopes other than issue requests (which need the catalog's types)."""
    return [
        (
            "exchange:case-request",
            {
                "matter": "maternity-benefit",
                "owner": {"node": "shanghai"},
                "channel": "window",
                "applicant": {"id_type": "111", "id": PERSON["id"], "name": "陈思远"},
                "identity_checked_by": "zj-0421",
                "delivery": "online",
                "materials": {
                    "application-form": {"content": "eyJhIjoxfQ", "media_type": "application/json"},
                    "birth-medical-certificate": {
                        "content": "JVBERi0",
                        "media_type": "application/pdf",
                        "checked_original": True,
                    },
                    "bank-account": {"declared": True},
                },
            },
        ),
        (
            "exchange:case-action",
            {"action": "request_correction", "items": [{"material": "x-1", "reason": "不清晰"}]},
        ),
        ("exchange:status-request", {"action": "suspend", "reason": "x"}),
        (
            "exchange:lookup-request",
            {
                "matter": "marriage-registration",
                "holder": {"id": PERSON["id"], "id_type": "111"},
                "types": ["resident_id", "household_register"],
            },
        ),
        (
            "exchange:lookup-request",
            {
                "matter": "business-registration",
                "holder": {"id": COMPANY["id"], "id_type": "001"},
                "types": ["business_licence"],
            },
        ),
        (
            "exchange:lookup-response",
            {
                "results": [
                    {
                        "certificate_id": report()["certificate_id"],
                        "type": "household_register",
                        "node": "shanghai",
                        "seal": SEAL,
                        "report": report(),
                        "route": ["zhuji", "shaoxing", "zhejiang", "national", "shanghai"],
                    }
                ]
            },
        ),
        ("exchange:lookup-response", {"results": []}),
        ("exchange:verify-request", {"seals": [SEAL, SEAL]}),
        ("exchange:verification-report", report()),
        ("exchange:verification-report", report("FAILED")),
        (
            "exchange:verification-report",
            {"indication": "INDETERMINATE", "code": "seal.kid_unknown", "checks": []},
        ),
        ("exchange:verify-response", {"reports": [report(), report("FAILED")]}),
    ]


def valid_documents(catalog: SchemaSet) -> list[tuple[str, dict[str, Any]]]:
    """(schema name, document) pairs that must validate."""
    documents: list[tuple[str, dict[str, Any]]] = []
    for info in catalog.certificate_types():
        documents.append((TYPE_PREFIX + info.name, certificate(catalog, info.name)))
        documents.append((CERTIFICATE, certificate(catalog, info.name)))
        documents.append((EXCHANGE_PREFIX + "issue-request", issue_request(catalog, info.name)))
    minimal = issue_request(catalog, "household_register")
    del minimal["number"]
    minimal["valid_until"] = None
    documents.append((EXCHANGE_PREFIX + "issue-request", minimal))
    documents.extend(envelopes())
    return documents


# --- broken documents ------------------------------------------------------------------------


def _parent(document: Any, pointer: str) -> tuple[Any, str | int]:
    parts = pointer.split("/")[1:]
    node = document
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    return node, int(last) if isinstance(node, list) else last


def with_value(document: Any, pointer: str, value: Any) -> Any:
    """A copy of ``document`` with ``value`` at ``pointer`` (a plain, unescaped path)."""
    result = copy.deepcopy(document)
    parent, key = _parent(result, pointer)
    parent[key] = value
    return result


def without(document: Any, pointer: str) -> Any:
    result = copy.deepcopy(document)
    parent, key = _parent(result, pointer)
    del parent[key]
    return result


@dataclass(frozen=True)
class Broken:
    label: str
    schema: str
    document: Any
    pointers: frozenset[str]


def broken_documents(catalog: SchemaSet) -> list[Broken]:
    """Invalid documents, each with the exact set of pointers that must be reported."""
    hr = certificate(catalog, "household_register")
    marriage = certificate(catalog, "marriage")
    insurance = certificate(catalog, "social_insurance_record")
    licence = certificate(catalog, "business_licence")
    maternity = certificate(catalog, "maternity_benefit")
    resident = certificate(catalog, "resident_id")
    t_hr, t_marriage, t_insurance = (
        "type:household_register",
        "type:marriage",
        "type:social_insurance_record",
    )
    t_licence, t_maternity, t_resident = (
        "type:business_licence",
        "type:maternity_benefit",
        "type:resident_id",
    )
    issue, status, lookup = (
        "exchange:issue-request",
        "exchange:status-request",
        "exchange:lookup-request",
    )
    verify, rep = "exchange:verify-request", "exchange:verification-report"
    envelopes_by_name = dict(reversed(envelopes()))
    a_lookup = envelopes_by_name[lookup]
    a_response = envelopes_by_name["exchange:lookup-response"]
    a_report = report()
    marriage_issue = issue_request(catalog, "marriage")
    licence_issue = issue_request(catalog, "business_licence")
    b = Broken
    return [
        # wrong JSON type of a field
        b("iat as a string", t_hr, with_value(hr, "/iat", "1764000000"), frozenset({"/iat"})),
        b(
            "iat as a string (generic)",
            CERTIFICATE,
            with_value(hr, "/iat", "1764000000"),
            frozenset({"/iat"}),
        ),
        b("iat fractional", t_hr, with_value(hr, "/iat", 1764000000.5), frozenset({"/iat"})),
        b("iat boolean", t_hr, with_value(hr, "/iat", True), frozenset({"/iat"})),
        b("iat negative", t_hr, with_value(hr, "/iat", -1), frozenset({"/iat"})),
        b("iat beyond 9999", t_hr, with_value(hr, "/iat", 10**30), frozenset({"/iat"})),
        b("holder as a string", t_hr, with_value(hr, "/holder", "张三"), frozenset({"/holder"})),
        b("data as a list", t_hr, with_value(hr, "/data", []), frozenset({"/data"})),
        b("number as a number", t_hr, with_value(hr, "/number", 123), frozenset({"/number"})),
        b(
            "idx as a string",
            t_hr,
            with_value(hr, "/status/status_list/idx", "12"),
            frozenset({"/status/status_list/idx"}),
        ),
        b(
            "amount as a string",
            t_maternity,
            with_value(maternity, "/data/allowance_amount", "21560"),
            frozenset({"/data/allowance_amount"}),
        ),
        b(
            "days fractional",
            t_maternity,
            with_value(maternity, "/data/allowance_days", 98.5),
            frozenset({"/data/allowance_days"}),
        ),
        b("document is a list", t_hr, [hr], frozenset({""})),
        b("document is null", CERTIFICATE, None, frozenset({""})),
        # missing required members
        b("missing holder id", t_hr, without(hr, "/holder/id"), frozenset({"/holder/id"})),
        b("missing status", t_hr, without(hr, "/status"), frozenset({"/status"})),
        b(
            "missing iat and iss",
            CERTIFICATE,
            without(without(hr, "/iat"), "/iss"),
            frozenset({"/iat", "/iss"}),
        ),
        b(
            "missing status list uri",
            t_hr,
            without(hr, "/status/status_list/uri"),
            frozenset({"/status/status_list/uri"}),
        ),
        b("missing data field", t_hr, without(hr, "/data/address"), frozenset({"/data/address"})),
        b(
            "missing spouse id",
            t_marriage,
            without(marriage, "/data/spouse/id"),
            frozenset({"/data/spouse/id"}),
        ),
        b("missing valid_until", t_hr, without(hr, "/valid_until"), frozenset({"/valid_until"})),
        # extra members at every level
        b("extra at the top", t_hr, with_value(hr, "/extra", 1), frozenset({"/extra"})),
        b(
            "extra in holder",
            t_hr,
            with_value(hr, "/holder/nickname", "三"),
            frozenset({"/holder/nickname"}),
        ),
        b("extra in issuer", t_hr, with_value(hr, "/issuer/x", None), frozenset({"/issuer/x"})),
        b("extra in status", t_hr, with_value(hr, "/status/x", {}), frozenset({"/status/x"})),
        b(
            "extra in status list",
            t_hr,
            with_value(hr, "/status/status_list/bits", 2),
            frozenset({"/status/status_list/bits"}),
        ),
        b("extra in data", t_hr, with_value(hr, "/data/x", "y"), frozenset({"/data/x"})),
        b(
            "extra in spouse",
            t_marriage,
            with_value(marriage, "/data/spouse/sex", "女"),
            frozenset({"/data/spouse/sex"}),
        ),
        b(
            "extra in a period",
            t_insurance,
            with_value(insurance, "/data/periods/2/x", 0),
            frozenset({"/data/periods/2/x"}),
        ),
        b(
            "extra needing escapes",
            t_hr,
            with_value(hr, "/data", {**hr["data"], "a/b~c": 0}),
            frozenset({"/data/a~1b~0c"}),
        ),
        # bad patterns and enums
        b("node id upper case", t_hr, with_value(hr, "/iss", "Zhuji"), frozenset({"/iss"})),
        b(
            "node id with a final line feed",
            t_hr,
            with_value(hr, "/iss", "zhuji\n"),
            frozenset({"/iss"}),
        ),
        b(
            "certificate id prefix",
            t_hr,
            with_value(hr, "/id", hr["id"].replace("1.2.156", "1.2.157")),
            frozenset({"/id"}),
        ),
        b(
            "certificate id final line feed",
            t_hr,
            with_value(hr, "/id", hr["id"][:-1] + "\n"),
            frozenset({"/id"}),
        ),
        b(
            "type code lower case",
            CERTIFICATE,
            with_value(hr, "/type_code", hr["type_code"].lower()),
            frozenset({"/type_code"}),
        ),
        b(
            "jurisdiction five digits",
            t_hr,
            with_value(hr, "/jurisdiction", "33068"),
            frozenset({"/jurisdiction"}),
        ),
        b(
            "jurisdiction arabic-indic digits",
            t_hr,
            with_value(hr, "/jurisdiction", "٣٣٠٦٨١"),
            frozenset({"/jurisdiction"}),
        ),
        b(
            "jurisdiction trailing line feed",
            t_hr,
            with_value(hr, "/jurisdiction", "330681\n"),
            frozenset({"/jurisdiction"}),
        ),
        b(
            "issuer code with I",
            t_hr,
            with_value(hr, "/issuer/code", "11330681MB1234567I"),
            frozenset({"/issuer/code"}),
        ),
        b(
            "status uri not http",
            t_hr,
            with_value(hr, "/status/status_list/uri", "ftp://127.0.0.1/0"),
            frozenset({"/status/status_list/uri"}),
        ),
        b("unknown type", CERTIFICATE, with_value(hr, "/type", "passport"), frozenset({"/type"})),
        b(
            "unknown household type",
            t_hr,
            with_value(hr, "/data/household_type", "家庭"),
            frozenset({"/data/household_type"}),
        ),
        b(
            "photo digest upper case",
            t_resident,
            with_value(resident, "/data/photo_digest", resident["data"]["photo_digest"].upper()),
            frozenset({"/data/photo_digest"}),
        ),
        b(
            "unknown holder id type",
            t_hr,
            with_value(hr, "/holder/id_type", "999"),
            frozenset({"/holder/id_type"}),
        ),
        # bad dates
        b("impossible date", t_hr, with_value(hr, "/issued", "2026-02-30"), frozenset({"/issued"})),
        b(
            "date with slashes",
            t_hr,
            with_value(hr, "/issued", "2026/11/24"),
            frozenset({"/issued"}),
        ),
        b(
            "basic-format date",
            t_hr,
            with_value(hr, "/valid_from", "20261124"),
            frozenset({"/valid_from"}),
        ),
        b(
            "year zero",
            t_hr,
            with_value(hr, "/valid_from", "0000-01-01"),
            frozenset({"/valid_from"}),
        ),
        b(
            "date with a time",
            t_hr,
            with_value(hr, "/valid_until", "2036-11-24T00:00:00Z"),
            frozenset({"/valid_until"}),
        ),
        b(
            "empty valid_until",
            t_hr,
            with_value(hr, "/valid_until", ""),
            frozenset({"/valid_until"}),
        ),
        b(
            "not a leap year",
            t_marriage,
            with_value(marriage, "/data/registration_date", "2027-02-29"),
            frozenset({"/data/registration_date"}),
        ),
        # holder id must follow id type
        b(
            "resident id type, credit code",
            CERTIFICATE,
            with_value(hr, "/holder/id", COMPANY["id"]),
            frozenset({"/holder/id"}),
        ),
        b(
            "credit code type, resident id with lower x",
            CERTIFICATE,
            with_value(
                with_value(hr, "/holder/id_type", "001"), "/holder/id", "11010519491231002x"
            ),
            frozenset({"/holder/id"}),
        ),
        b(
            "person type given a company",
            t_hr,
            with_value(hr, "/holder", COMPANY),
            frozenset({"/holder/id_type"}),
        ),
        b(
            "licence held by a person",
            t_licence,
            with_value(licence, "/holder", PERSON),
            frozenset({"/holder/id_type"}),
        ),
        b(
            "licence, id type 111 with credit code",
            t_licence,
            with_value(licence, "/holder/id_type", "111"),
            frozenset({"/holder/id_type", "/holder/id"}),
        ),
        b(
            "spouse with credit code type",
            t_marriage,
            with_value(marriage, "/data/spouse/id_type", "001"),
            frozenset({"/data/spouse/id_type"}),
        ),
        # too long strings
        b("name too long", t_hr, with_value(hr, "/name", "证" * 65), frozenset({"/name"})),
        b(
            "holder name too long",
            t_hr,
            with_value(hr, "/holder/name", "张" * 129),
            frozenset({"/holder/name"}),
        ),
        b("empty number", t_hr, with_value(hr, "/number", ""), frozenset({"/number"})),
        b(
            "business scope too long",
            t_licence,
            with_value(licence, "/data/business_scope", "经" * 4001),
            frozenset({"/data/business_scope"}),
        ),
        b(
            "astral characters count once",
            t_hr,
            with_value(hr, "/name", "𠀀" * 65),
            frozenset({"/name"}),
        ),
        # nested errors
        b(
            "bad month in period 3",
            t_insurance,
            with_value(insurance, "/data/periods/3/month", "2026-13"),
            frozenset({"/data/periods/3/month"}),
        ),
        b(
            "negative base in period 0",
            t_insurance,
            with_value(insurance, "/data/periods/0/base", -1),
            frozenset({"/data/periods/0/base"}),
        ),
        b(
            "bad employer code in period 5",
            t_insurance,
            with_value(insurance, "/data/periods/5/employer_code", "91330681"),
            frozenset({"/data/periods/5/employer_code"}),
        ),
        b(
            "no periods",
            t_insurance,
            with_value(insurance, "/data/periods", []),
            frozenset({"/data/periods"}),
        ),
        b(
            "601 periods",
            t_insurance,
            with_value(insurance, "/data/periods", insurance["data"]["periods"][:1] * 601),
            frozenset({"/data/periods"}),
        ),
        b(
            "allowance days over a year",
            t_maternity,
            with_value(maternity, "/data/allowance_days", 366),
            frozenset({"/data/allowance_days"}),
        ),
        b(
            "many at once",
            t_marriage,
            with_value(
                with_value(without(marriage, "/holder/name"), "/iat", "now"),
                "/data/spouse/id",
                "123",
            ),
            frozenset({"/holder/name", "/iat", "/data/spouse/id"}),
        ),
        # one type's document against another type's schema
        b(
            "marriage as divorce",
            "type:divorce",
            marriage,
            frozenset({"/type", "/type_code", "/data/spouse", "/data/former_spouse"}),
        ),
        # issue requests
        b(
            "issue request sets iss",
            issue,
            with_value(marriage_issue, "/iss", "zhuji"),
            frozenset({"/iss"}),
        ),
        b(
            "issue request sets id and status",
            issue,
            with_value(with_value(marriage_issue, "/id", hr["id"]), "/status", hr["status"]),
            frozenset({"/id", "/status"}),
        ),
        b(
            "issue request without spouse",
            issue,
            without(marriage_issue, "/data/spouse"),
            frozenset({"/data/spouse"}),
        ),
        b(
            "issue request data extra",
            issue,
            with_value(marriage_issue, "/data/x", 1),
            frozenset({"/data/x"}),
        ),
        b(
            "licence issued to a person",
            issue,
            with_value(licence_issue, "/holder", PERSON),
            frozenset({"/holder/id_type"}),
        ),
        b(
            "issue request unknown type",
            issue,
            with_value(marriage_issue, "/type", "passport"),
            frozenset({"/type"}),
        ),
        b(
            "issue request without valid_from",
            issue,
            without(marriage_issue, "/valid_from"),
            frozenset({"/valid_from"}),
        ),
        # other envelopes
        b(
            "status action unknown",
            status,
            {"action": "delete", "reason": "x"},
            frozenset({"/action"}),
        ),
        b(
            "status reason too long",
            status,
            {"action": "revoke", "reason": "因" * 257},
            frozenset({"/reason"}),
        ),
        b("status without reason", status, {"action": "revoke"}, frozenset({"/reason"})),
        b(
            "lookup without types",
            lookup,
            with_value(a_lookup, "/types", []),
            frozenset({"/types"}),
        ),
        b(
            "lookup with 17 types",
            lookup,
            with_value(a_lookup, "/types", ["marriage"] * 17),
            frozenset({"/types"}),
        ),
        b(
            "lookup duplicate types",
            lookup,
            with_value(a_lookup, "/types", ["marriage", "marriage"]),
            frozenset({"/types"}),
        ),
        b(
            "lookup unknown type",
            lookup,
            with_value(a_lookup, "/types", ["marriage", "passport"]),
            frozenset({"/types/1"}),
        ),
        b(
            "lookup holder with name",
            lookup,
            with_value(a_lookup, "/holder/name", "张三"),
            frozenset({"/holder/name"}),
        ),
        b(
            "lookup holder id mismatch",
            lookup,
            with_value(a_lookup, "/holder/id", COMPANY["id"]),
            frozenset({"/holder/id"}),
        ),
        b(
            "lookup matter with line feed",
            lookup,
            with_value(a_lookup, "/matter", "marriage-registration\n"),
            frozenset({"/matter"}),
        ),
        b(
            "lookup response empty route",
            "exchange:lookup-response",
            with_value(a_response, "/results/0/route", []),
            frozenset({"/results/0/route"}),
        ),
        b(
            "lookup response nested report",
            "exchange:lookup-response",
            with_value(a_response, "/results/0/report/indication", "OK"),
            frozenset({"/results/0/report/indication"}),
        ),
        b("verify no seals", verify, {"seals": []}, frozenset({"/seals"})),
        b("verify 1001 seals", verify, {"seals": [SEAL] * 1001}, frozenset({"/seals"})),
        # A malformed seal is not refused by the envelope: the verifier reports on it.
        b(
            "verify seal too long",
            verify,
            {"seals": ["a." + "b" * 65535 + ".c"]},
            frozenset({"/seals/0"}),
        ),
        b(
            "verify seal as object",
            verify,
            {"seals": [{"protected": "a"}]},
            frozenset({"/seals/0"}),
        ),
        b(
            "report indication",
            rep,
            with_value(a_report, "/indication", "OK"),
            frozenset({"/indication"}),
        ),
        b(
            "report check result",
            rep,
            with_value(a_report, "/checks/1/result", "ok"),
            frozenset({"/checks/1/result"}),
        ),
        b(
            "report signed_at as a number",
            rep,
            with_value(a_report, "/signed_at", 1_764_000_000),
            frozenset({"/signed_at"}),
        ),
        b(
            "report code upper case",
            rep,
            with_value(a_report, "/code", "Seal.Invalid"),
            frozenset({"/code"}),
        ),
        b(
            "verify response nested",
            "exchange:verify-response",
            {"reports": [a_report, with_value(a_report, "/code", "")]},
            frozenset({"/reports/1/code"}),
        ),
    ]
