"""``tongban seed``: realistic, self-consistent, reproducible certificates, in flat memory."""

from __future__ import annotations

import random
import re
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import NOW

from gateway._internal.wire import b64url_decode
from gateway.certificates.documents import certificate_date
from gateway.certificates.schemas import SchemaSet
from gateway.cli.seed import generate, seed_node
from gateway.clock import FixedClock
from gateway.config import Federation
from gateway.errors import ConfigError, Indication
from gateway.identifiers import ResidentId, validate_credit_code, validate_resident_id
from gateway.server.node import open_node_service
from gateway.services.node import NodeService

CJK_NAME = re.compile(r"[\u4e00-\u9fff]{2,3}")
ZHEJIANG_COUNTIES = {"330102", "330106", "330602", "330681", "330682", "330683"}
SHAOXING_COUNTIES = {"330602", "330681", "330682", "330683"}
ADULT_TYPES = {
    "marriage",
    "divorce",
    "social_insurance_record",
    "flexible_pension_enrolment",
    "maternity_benefit",
    "work_injury_settlement",
}


@pytest.fixture
def open_node(
    federation: Federation, clock: FixedClock, schemas: SchemaSet, tmp_path: Path
) -> Iterator[Any]:
    """Open a node of the default federation in its own directories; closed afterwards."""
    opened: list[NodeService] = []

    def open_(node_id: str, where: str) -> NodeService:
        fed = federation.with_overrides(
            data_dir=tmp_path / where / "var", keys_dir=tmp_path / where / "keys"
        )
        service = open_node_service(
            fed, node_id, clock=clock, schemas=schemas, public_url=f"http://{node_id}.test"
        )
        opened.append(service)
        return service

    yield open_
    for service in opened:
        service.close()


def documents(service: NodeService) -> list[dict[str, Any]]:
    """Every stored certificate, verified by the node: seal, schema, identifier, validity, status.

    Only an ID card past its last day may fail (an expired card on record is realistic).
    """
    out = []
    for token in service.registry.iter_seals():
        report, verified = service.verifier.report(token)
        if verified is not None:
            assert report.indication is Indication.PASSED
            out.append(dict(verified.document))
            continue
        document: dict[str, Any] = orjson.loads(b64url_decode(token.split(".")[1]))
        assert (document["type"], report.code) == ("resident_id", "certificate.expired")
        assert date.fromisoformat(document["valid_until"]) < certificate_date(NOW)
        out.append(document)
    return out


def age_on(person: ResidentId, day: date) -> int:
    born = person.birth_date
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def test_seeded_certificates_are_realistic_and_consistent(service: NodeService) -> None:
    assert seed_node(service, 400, rng_seed=7) == 400
    assert service.registry.count() == 400
    seeded = documents(service)
    today = certificate_date(NOW)

    issued_here = {t for d in service.node.departments for t in d.issues}
    assert Counter(d["type"] for d in seeded).keys() == issued_here
    assert len({d["id"] for d in seeded}) == 400

    for doc in seeded:
        holder = doc["holder"]
        valid_from = date.fromisoformat(doc["valid_from"])
        assert date(2015, 1, 1) <= valid_from <= today
        assert doc["jurisdiction"] == "330681"
        if doc["type"] == "business_licence":
            code = validate_credit_code(holder["id"])
            assert holder["id_type"] == "001"
            assert code.region == "330681"
            assert holder["name"].endswith("有限公司")
            continue
        assert holder["id_type"] == "111"
        assert CJK_NAME.fullmatch(holder["name"]), holder["name"]
        person = validate_resident_id(holder["id"])
        assert person.region == "330681"  # a county of the node's own region
        assert date(1950, 1, 1) <= person.birth_date < valid_from
        if doc["type"] in ADULT_TYPES:
            assert age_on(person, valid_from) >= 22, doc["type"]
        _check_type_data(doc, person, valid_from)


def _check_type_data(doc: dict[str, Any], person: ResidentId, valid_from: date) -> None:
    data = doc["data"]
    if doc["type"] == "resident_id":
        # the card says what the number says
        assert data["birth_date"] == person.birth_date.isoformat()
        assert data["sex"] == ("男" if person.sex == "male" else "女")
        age = age_on(person, valid_from)
        assert age >= 16
        until = doc["valid_until"]
        if age >= 46:
            assert until is None
        else:
            years = 10 if age < 26 else 20
            assert date.fromisoformat(until).year == valid_from.year + years
    if doc["type"] in ("marriage", "divorce"):
        spouse = data["spouse" if doc["type"] == "marriage" else "former_spouse"]
        partner = validate_resident_id(spouse["id"])
        assert CJK_NAME.fullmatch(spouse["name"])
        assert partner.sex != person.sex
        assert age_on(partner, valid_from) >= 22
        assert data["registration_date"] == doc["valid_from"]
    if doc["type"] == "maternity_benefit":
        assert person.sex == "female"
    if doc["type"] == "social_insurance_record":
        for period in data["periods"]:
            assert period["month"] < doc["valid_from"][:7]


@pytest.mark.parametrize(
    ("node_id", "counties"),
    [("shaoxing", SHAOXING_COUNTIES), ("zhejiang", ZHEJIANG_COUNTIES), ("linquan", {"341221"})],
)
def test_holders_come_from_counties_of_the_node_region(
    open_node: Any, node_id: str, counties: set[str]
) -> None:
    service = open_node(node_id, node_id)
    seed_node(service, 60, rng_seed=3)
    seen: set[str] = set()
    for doc in documents(service):
        holder_id = doc["holder"]["id"]
        if doc["holder"]["id_type"] == "001":
            region = validate_credit_code(holder_id).region
        else:
            region = validate_resident_id(holder_id).region
        assert region in counties
        seen.add(region)
        assert doc["jurisdiction"] == service.node.region
    assert seen == counties


def test_the_same_seed_gives_the_same_certificates(open_node: Any) -> None:
    first = open_node("zhuji", "first")
    second = open_node("zhuji", "second")
    third = open_node("zhuji", "third")
    seed_node(first, 40, rng_seed=11)
    seed_node(second, 40, rng_seed=11)
    seed_node(third, 40, rng_seed=12)
    # different key stores: different seals and kids, the very same documents
    assert first.keys.signer().kid != second.keys.signer().kid
    assert documents(first) == documents(second)
    assert documents(first) != documents(third)


def test_a_node_without_issuing_departments_cannot_be_seeded(open_node: Any) -> None:
    national = open_node("national", "national")
    with pytest.raises(ConfigError) as caught:
        generate(national, 1, random.Random(1))
    assert caught.value.code == "config.invalid"
    assert "no department that issues" in caught.value.detail
    assert national.registry.count() == 0


@pytest.mark.slow
def test_seeding_streams_in_flat_memory(service: NodeService) -> None:
    # Holding every sealed certificate of 20,000 would take about 36 MB on its own (measured:
    # 9 MB for 5,000); streaming in batches of 2,000 peaks near 8 MB. A memory bound only.
    tracemalloc.start()
    try:
        stored = seed_node(service, 20_000, rng_seed=5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stored == 20_000
    assert service.registry.count() == 20_000
    assert peak < 20 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
