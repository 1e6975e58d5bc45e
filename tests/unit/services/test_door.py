"""The door of a node: what the node a fetch or a lookup enters judges before it routes it.

One test per refusal, each with its code, and the audit log untouched by every refusal (a
refused request costs no other node a request and leaves no record anywhere).
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import BRIDE, GROOM, NOW, Tokens, household_request

from gateway.certificates.holders import holder_digest
from gateway.clock import FixedClock
from gateway.errors import Forbidden, GatewayError, InvalidIdentifier, UnknownCertificateType
from gateway.identifiers import build_certificate_id, make_credit_code, parse_certificate_id
from gateway.ids import DepartmentId, NodeId
from gateway.services.node import NodeService
from gateway.sso.auth import Principal, Scope

MARRIAGE = "marriage-registration"
HOUSEHOLD = "household_register"
ALL_SCOPES = frozenset(s.value for s in Scope)
SHANGHAI_POLICE = "11310000002451120G"  # a credit code of the default federation


def caller(
    dept: str | None = "zhuji-civil-affairs",
    *,
    node: str = "zhuji",
    scopes: frozenset[str] = ALL_SCOPES,
) -> Principal:
    return Principal(
        subject=dept or "nobody",
        client_id=dept or "nobody",
        scopes=scopes,
        department=DepartmentId(dept) if dept else None,
        node=NodeId(node),
    )


@pytest.fixture
def door(service: NodeService) -> NodeService:
    assert service.audit.size() == 0
    return service


def refused(call: Any, code: str, service: NodeService) -> None:
    with pytest.raises(GatewayError) as caught:
        call()
    assert caught.value.code == code
    assert service.audit.size() == 0  # nothing recorded


def a_household_id(service: NodeService) -> str:
    """A household register id of the type code the schemas give it (not issued anywhere)."""
    info = service.schemas.certificate_type(HOUSEHOLD)
    return build_certificate_id(info.type_code, SHANGHAI_POLICE, "0000001").certificate_id


def test_the_household_id_used_here_names_the_household_type(door: NodeService) -> None:
    cert_id = a_household_id(door)
    assert door.schemas.certificate_type_of(parse_certificate_id(cert_id)).name == HOUSEHOLD


def test_a_fetch_with_a_grant_for_it_is_admitted(door: NodeService, tokens: Tokens) -> None:
    consent = tokens.consent(GROOM["id"], types=(HOUSEHOLD,))
    door.admit_fetch(caller(), a_household_id(door), MARRIAGE, consent)
    assert door.audit.size() == 0


def test_a_token_without_cert_read_is_refused(door: NodeService, tokens: Tokens) -> None:
    ops = caller("zhuji-ops", scopes=frozenset({"keys:admin", "audit:read"}))
    refused(
        lambda: door.admit_fetch(ops, a_household_id(door), MARRIAGE, tokens.consent()),
        "auth.scope",
        door,
    )


def test_a_department_of_another_node_is_refused(door: NodeService, tokens: Tokens) -> None:
    theirs = caller("shanghai-public-security", node="shanghai")
    refused(
        lambda: door.admit_fetch(theirs, a_household_id(door), MARRIAGE, tokens.consent()),
        "auth.department",
        door,
    )


def test_a_citizen_token_is_refused(door: NodeService, tokens: Tokens) -> None:
    citizen = Principal(subject="hd", client_id="portal", scopes=ALL_SCOPES, holder=True)
    refused(
        lambda: door.admit_fetch(citizen, a_household_id(door), MARRIAGE, tokens.consent()),
        "auth.department",
        door,
    )


def test_a_malformed_id_is_refused(door: NodeService) -> None:
    with pytest.raises(InvalidIdentifier):
        door.admit_fetch(caller(), "1.2.156.3005.2.nonsense", MARRIAGE, None)
    assert door.audit.size() == 0


def test_an_id_of_no_known_type_is_refused(door: NodeService) -> None:
    unknown = build_certificate_id("11100000000013338W999", SHANGHAI_POLICE, "1").certificate_id
    with pytest.raises(UnknownCertificateType):
        door.admit_fetch(caller(), unknown, MARRIAGE, None)


def test_a_matter_that_does_not_use_the_type_is_refused(door: NodeService) -> None:
    refused(
        lambda: door.admit_fetch(caller(), a_household_id(door), "business-registration", None),
        "matter.type_not_allowed",
        door,
    )


def test_an_unknown_matter_is_refused(door: NodeService) -> None:
    refused(
        lambda: door.admit_fetch(caller(), a_household_id(door), "no-such-matter", None),
        "matter.unknown",
        door,
    )


@pytest.mark.parametrize(
    ("grant", "code"),
    [
        (None, "consent.required"),
        ({"department": "zhuji-public-security"}, "consent.wrong_department"),
        ({"matter": "household-transfer"}, "consent.wrong_matter"),
        ({"types": ("resident_id",)}, "consent.type_not_granted"),
        ({"expired": True}, "consent.expired"),
        ({"forged": True}, "consent.invalid"),
    ],
)
def test_a_fetch_without_a_fitting_grant_is_refused(
    door: NodeService,
    tokens: Tokens,
    clock: FixedClock,
    grant: dict[str, Any] | None,
    code: str,
) -> None:
    consent = None
    if grant is not None:
        consent = tokens.consent(
            GROOM["id"],
            department=grant.get("department", "zhuji-civil-affairs"),
            matter=grant.get("matter", MARRIAGE),
            types=grant.get("types", (HOUSEHOLD,)),
            until=NOW + 60 if grant.get("expired") else None,
        )
        if grant.get("expired"):
            clock.advance(3600)
        if grant.get("forged"):
            head, body, signature = consent.split(".")
            consent = f"{head}.{body}.{signature[::-1]}"
    refused(
        lambda: door.admit_fetch(caller(), a_household_id(door), MARRIAGE, consent),
        code,
        door,
    )


def test_an_organisations_certificate_needs_no_grant(door: NodeService) -> None:
    info = door.schemas.certificate_type("business_licence")
    company = make_credit_code("9", "1", "330681", "MA2BTE7T")
    licence = build_certificate_id(info.type_code, company, "1").certificate_id
    door.admit_fetch(caller(), licence, "business-registration", None)


# --- lookups ---------------------------------------------------------------------------------


def digest(service: NodeService, person: dict[str, str]) -> str:
    return holder_digest(service.keys.holder_secret, "111", person["id"])


def test_a_lookup_with_the_holders_grant_is_admitted(door: NodeService, tokens: Tokens) -> None:
    consent = tokens.consent(GROOM["id"])
    door.admit_lookup(caller(), MARRIAGE, ["household_register"], consent, digest(door, GROOM))


@pytest.mark.parametrize(
    ("grant", "types", "code"),
    [
        (None, [HOUSEHOLD], "consent.required"),
        ({"holder": BRIDE["id"]}, [HOUSEHOLD], "consent.wrong_holder"),
        ({"types": ("resident_id",)}, ["resident_id", HOUSEHOLD], "consent.type_not_granted"),
        ({"department": "zhuji-public-security"}, [HOUSEHOLD], "consent.wrong_department"),
        ({}, ["business_licence"], "matter.type_not_allowed"),
    ],
)
def test_a_lookup_without_a_fitting_grant_is_refused_before_the_catalog(
    door: NodeService,
    tokens: Tokens,
    grant: dict[str, Any] | None,
    types: list[str],
    code: str,
) -> None:
    consent = (
        None
        if grant is None
        else tokens.consent(
            grant.get("holder", GROOM["id"]),
            department=grant.get("department", "zhuji-civil-affairs"),
            types=grant.get("types", ("resident_id", "household_register")),
        )
    )
    refused(
        lambda: door.admit_lookup(caller(), MARRIAGE, types, consent, digest(door, GROOM)),
        code,
        door,
    )


def test_a_refused_lookup_says_the_same_whether_or_not_the_person_holds_anything(
    door: NodeService,
) -> None:
    door.issue(caller("zhuji-public-security"), household_request(GROOM))
    size = door.audit.size()
    answers = []
    for person in (GROOM, BRIDE):  # the groom holds one here, the bride nothing
        with pytest.raises(Forbidden) as caught:
            door.admit_lookup(caller(), MARRIAGE, [HOUSEHOLD], None, digest(door, person))
        answers.append((caught.value.status, caught.value.code, caught.value.detail))
    assert answers[0] == answers[1] == (403, "consent.required", answers[0][2])
    assert door.audit.size() == size
