"""Building certificate documents: identifier checks anywhere, the fields the node sets, serials."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from conftest import BRIDE, GROOM, NOW, household_request, marriage_request

from gateway.certificates.documents import (
    IssueContext,
    build_document,
    certificate_date,
    certificate_id_of,
    check_identifiers,
    serial_for,
)
from gateway.certificates.schemas import SchemaSet
from gateway.certificates.status import StatusSlot
from gateway.config import Federation
from gateway.errors import InvalidIdentifier
from gateway.identifiers import build_certificate_id, make_credit_code, parse_certificate_id

STATUS_URI = "http://zhuji.test/v1/status-lists/2"
SLOT = StatusSlot(2, 17)
GOOD_CREDIT_CODE = make_credit_code("9", "1", "330681", "MA2D0K5Q")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def wrong_check(identifier: str) -> str:
    return identifier[:-1] + ("1" if identifier[-1] != "1" else "2")


def context(
    federation: Federation,
    schemas: SchemaSet,
    *,
    cert_type: str = "marriage",
    slot: StatusSlot = SLOT,
    sealed_at: float = NOW,
) -> IssueContext:
    node = federation.node("zhuji")
    dept = next(d for d in node.departments if cert_type in d.issues)
    return IssueContext(
        node=node,
        department=dept,
        cert_type=schemas.certificate_type(cert_type),
        slot=slot,
        status_uri=STATUS_URI,
        sealed_at=sealed_at,
    )


# --- check_identifiers -----------------------------------------------------------------------


def test_valid_identifiers_pass() -> None:
    request = marriage_request()
    request["data"]["witnesses"] = [dict(GROOM), {"id": GOOD_CREDIT_CODE, "id_type": "001"}]
    check_identifiers(request)


@pytest.mark.parametrize(
    ("path", "pointer"),
    [
        (("holder",), "/holder/id"),
        (("data", "spouse"), "/data/spouse/id"),
        (("data", "parties", 1), "/data/parties/1/id"),
        (("data", "deep", "a/b", "c~d"), "/data/deep/a~1b/c~0d/id"),
    ],
)
def test_a_wrong_resident_id_is_found_anywhere_with_its_pointer(
    path: tuple[str | int, ...], pointer: str
) -> None:
    request = marriage_request()
    request["data"]["parties"] = [dict(GROOM), dict(BRIDE)]
    request["data"]["deep"] = {"a/b": {"c~d": dict(BRIDE)}}
    party: Any = request
    for step in path:
        party = party[step]
    party["id"] = wrong_check(party["id"])

    with pytest.raises(InvalidIdentifier) as caught:
        check_identifiers(request)
    assert caught.value.code == "input.identifier.check"
    assert caught.value.pointers == (pointer,)
    assert caught.value.detail.startswith(f"{pointer}: ")
    assert party["id"] not in caught.value.detail  # personal data is never echoed


def test_a_wrong_credit_code_is_found_by_its_id_type() -> None:
    request = {"holder": {"name": "某公司", "id": wrong_check(GOOD_CREDIT_CODE), "id_type": "001"}}
    with pytest.raises(InvalidIdentifier) as caught:
        check_identifiers(request)
    assert caught.value.code == "input.identifier.check"
    assert caught.value.pointers == ("/holder/id",)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("33068119900101001", "input.identifier.format"),  # 17 characters
        ("33068119900101001x", "input.identifier.format"),  # lower-case x
        ("330681199002300014", "input.identifier.date"),  # 30 February
    ],
)
def test_a_malformed_resident_id_keeps_its_code(value: str, code: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        check_identifiers({"data": {"spouse": {"id": value, "id_type": "111"}}})
    assert caught.value.code == code
    assert caught.value.pointers == ("/data/spouse/id",)


@pytest.mark.parametrize(
    "party",
    [
        {"id": 330681199001010015, "id_type": "111"},  # not a string: the schema reports it
        {"id": "not checked", "id_type": "999"},  # an id type with no check character
        {"id": "330681199001010016"},  # no id_type: not a party
        {"id_type": "111"},
    ],
)
def test_members_that_are_not_checkable_parties_are_left_to_the_schema(
    party: dict[str, Any],
) -> None:
    check_identifiers({"holder": party})


# --- build_document --------------------------------------------------------------------------


def test_build_document_sets_what_only_the_node_may_set(
    federation: Federation, schemas: SchemaSet
) -> None:
    request = marriage_request()
    document = build_document(request, context(federation, schemas))

    ident = parse_certificate_id(document["id"])
    assert ident.type_code == "111000000000MCA07A003" == document["type_code"]
    assert ident.issuer_code == "11330681002521002U"
    assert ident.serial == "20260020000017"
    assert ident.version == "001"
    assert document == {
        "iss": "zhuji",
        "iat": int(NOW),
        "id": document["id"],
        "type": "marriage",
        "type_code": "111000000000MCA07A003",
        "name": "结婚证",
        "number": "330681-20260020000017",
        "holder": GROOM,
        "issuer": {"name": "诸暨市民政局", "code": "11330681002521002U"},
        "issued": "2026-11-24",
        "valid_from": "2026-11-24",
        "valid_until": None,
        "jurisdiction": "330681",
        "data": request["data"],
        "status": {"status_list": {"idx": 17, "uri": STATUS_URI}},
    }
    schemas.validate("type:marriage", document)
    assert certificate_id_of(document) == document["id"]


def test_build_document_copies_the_holder(federation: Federation, schemas: SchemaSet) -> None:
    request = household_request()
    document = build_document(request, context(federation, schemas, cert_type="household_register"))
    request["holder"]["name"] = "李四"
    assert document["holder"]["name"] == GROOM["name"]
    assert document["issuer"]["code"] == "113306810025211840"


def test_build_document_keeps_a_number_the_department_gives(
    federation: Federation, schemas: SchemaSet
) -> None:
    request = marriage_request(number="J330681-2026-001234")
    document = build_document(request, context(federation, schemas))
    assert document["number"] == "J330681-2026-001234"


@pytest.mark.parametrize(
    ("sealed_at", "issued", "year"),
    [
        (utc(2026, 11, 24, 15, 59, 59), "2026-11-24", "2026"),
        (utc(2026, 11, 24, 16), "2026-11-25", "2026"),  # midnight in China
        (utc(2026, 12, 31, 16, 30), "2027-01-01", "2027"),  # a new year in China
    ],
)
def test_the_issue_date_is_the_day_in_china(
    federation: Federation, schemas: SchemaSet, sealed_at: float, issued: str, year: str
) -> None:
    document = build_document(marriage_request(), context(federation, schemas, sealed_at=sealed_at))
    assert document["issued"] == issued
    assert document["iat"] == int(sealed_at)
    assert parse_certificate_id(document["id"]).serial.startswith(year)


def test_certificate_date_is_china_standard_time() -> None:
    assert certificate_date(utc(2026, 11, 24, 15, 59, 59)) == date(2026, 11, 24)
    assert certificate_date(utc(2026, 11, 24, 16)) == date(2026, 11, 25)
    # no daylight saving: the same offset in summer
    assert certificate_date(utc(2026, 7, 1, 16)) == date(2026, 7, 2)


# --- serials ---------------------------------------------------------------------------------


def test_serial_layout() -> None:
    assert serial_for(StatusSlot(0, 0), 2026) == "20260000000000"
    assert serial_for(StatusSlot(2, 17), 2026) == "20260020000017"
    assert serial_for(StatusSlot(1234, 131_071), 2027) == "202712340131071"


def test_serials_are_unique_across_slots_and_valid_in_an_identifier() -> None:
    list_ids = [0, 1, 9, 10, 99, 100, 999, 1000, 1001, 12_345]
    indexes = [0, 1, 9, 10, 99, 100, 1000, 131_071]
    slots = [StatusSlot(list_id, index) for list_id in list_ids for index in indexes]
    serials = [serial_for(slot, 2026) for slot in slots]
    assert len(set(serials)) == len(slots)
    for serial in serials:
        build_certificate_id("111000000000MCA07A003", "11330681002521002U", serial)
