"""CertificateVerifier on its own: every step, in order, and each failure with its code and step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from conftest import GROOM, NOW, marriage_request

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.certificates.status import CertStatus
from gateway.certificates.verification import (
    CertificateFailure,
    CertificateVerifier,
    StatusRef,
    StatusResolver,
    VerificationFailed,
    statuses_one_by_one,
)
from gateway.clock import FixedClock
from gateway.crypto.jwks import StaticKeyResolver
from gateway.crypto.reports import SEAL_CHECKS, VerificationReport, dump_reports
from gateway.crypto.seals import seal
from gateway.errors import Indication, SealIndeterminate, VerificationError
from gateway.identifiers import build_certificate_id, parse_certificate_id
from gateway.ids import DepartmentId, NodeId
from gateway.services.node import NodeService
from gateway.sso.auth import Principal, Scope

CERTIFICATE_CHECKS = [*SEAL_CHECKS, "schema", "identifier", "validity", "status"]
SHANGHAI_CIVIL_AFFAIRS = "11310000002452019W"
DIVORCE_TYPE_CODE = "111000000000MCA07A004"
CIVIL_AFFAIRS = Principal(
    subject="zhuji-civil-affairs",
    client_id="zhuji-civil-affairs",
    scopes=frozenset(s.value for s in Scope),
    department=DepartmentId("zhuji-civil-affairs"),
    node=NodeId("zhuji"),
)
"""Zhuji's civil-affairs bureau: it issues and owns marriage certificates."""
PUBLIC_SECURITY = Principal(
    subject="zhuji-public-security",
    client_id="zhuji-public-security",
    scopes=frozenset(s.value for s in Scope),
    department=DepartmentId("zhuji-public-security"),
    node=NodeId("zhuji"),
)
"""Zhuji's public-security bureau: it issues resident ID records."""


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


class Statuses:
    """A status source holding a few entries; anything else is INDETERMINATE."""

    def __init__(self, entries: dict[tuple[str, int], CertStatus] | None = None) -> None:
        self.entries = dict(entries or {})
        self.asked: list[tuple[str, int]] = []
        self.batches: list[list[StatusRef]] = []

    def status_of(self, uri: str, index: int) -> CertStatus:
        self.asked.append((uri, index))
        try:
            return self.entries[(uri, index)]
        except KeyError:
            raise SealIndeterminate(
                "the status list of that certificate is not available here",
                code="status.unavailable",
            ) from None

    def statuses_of(self, refs: Sequence[StatusRef]) -> list[CertStatus | VerificationError]:
        self.batches.append(list(refs))
        return statuses_one_by_one(self, refs)


def verifier(
    service: NodeService, clock: FixedClock, statuses: StatusResolver | None
) -> CertificateVerifier:
    keys = StaticKeyResolver(service.keys.verification_keys())
    return CertificateVerifier(keys, service.schemas, clock=clock, statuses=statuses)


def status_ref(document: dict[str, Any]) -> tuple[str, int]:
    ref = document["status"]["status_list"]
    return ref["uri"], ref["idx"]


def resident_id_request(valid_until: str) -> dict[str, Any]:
    return {
        "type": "resident_id",
        "holder": dict(GROOM),
        "valid_from": "2016-12-31",
        "valid_until": valid_until,
        "data": {
            "sex": "男",
            "ethnicity": "汉族",
            "birth_date": "1990-01-01",
            "address": "浙江省诸暨市暨阳街道人民路1号",
            "issuing_office": "诸暨市公安局",
        },
    }


@pytest.fixture
def document(service: NodeService) -> dict[str, Any]:
    """A genuine marriage certificate issued by zhuji (a fresh, mutable copy)."""
    document: dict[str, Any] = orjson.loads(
        orjson.dumps(service.issue(CIVIL_AFFAIRS, marriage_request()).document)
    )
    return document


def reseal(service: NodeService, document: dict[str, Any]) -> str:
    """Seal a document with the node's own key: the seal is good, the content is on trial."""
    return seal(service.keys.signer(), orjson.dumps(document), signed_at=service.clock.now())


def names(report: VerificationReport) -> list[str]:
    return [check.name for check in report.checks]


def assert_failed_at(
    report: VerificationReport, step: str, code: str, indication: Indication = Indication.FAILED
) -> None:
    """Every check up to ``step`` passed, in order, and ``step`` failed with ``code``."""
    assert report.indication is indication
    assert report.code == code
    assert names(report) == CERTIFICATE_CHECKS[: CERTIFICATE_CHECKS.index(step) + 1]
    assert all(check.result is Indication.PASSED for check in report.checks[:-1])
    assert report.checks[-1].result is indication
    assert report.kid is None
    assert report.certificate_id is None


# --- passing ---------------------------------------------------------------------------------


def test_a_genuine_certificate_passes_every_check_in_order(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    statuses = Statuses({status_ref(document): CertStatus.VALID})
    report, verified = verifier(service, clock, statuses).report(reseal(service, document))

    assert report.indication is Indication.PASSED
    assert report.code == "ok"
    assert names(report) == CERTIFICATE_CHECKS
    assert all(check.result is Indication.PASSED for check in report.checks)
    details = {check.name: check.detail for check in report.checks}
    assert details["schema"] == "type:marriage"
    assert details["status"] == "valid"
    assert report.certificate_id == document["id"]
    assert report.node == "zhuji"
    assert report.kid == service.keys.signer().kid
    assert report.signed_at == "2026-11-24T08:00:00Z"
    assert statuses.asked == [status_ref(document)]

    assert verified is not None
    assert verified.document == document
    assert verified.status is CertStatus.VALID
    assert verified.seal.node == "zhuji"
    service.schemas.validate("exchange:verification-report", report.to_json())


def test_offline_verification_passes_without_checking_status(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    report, verified = verifier(service, clock, None).report(reseal(service, document))

    assert report.indication is Indication.PASSED
    assert names(report) == CERTIFICATE_CHECKS
    last = report.checks[-1]
    assert (last.name, last.result) == ("status", Indication.INDETERMINATE)
    assert last.detail is not None
    assert "not checked" in last.detail
    assert verified is not None
    assert verified.status is None


# --- the document ----------------------------------------------------------------------------


def test_a_schema_invalid_document_fails_at_the_schema_step(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    del document["data"]["spouse"]
    document["holder"]["id_type"] = "001"  # a marriage certificate's holder is a person
    token = reseal(service, document)

    report, verified = verifier(service, clock, Statuses()).report(token)
    assert verified is None
    assert_failed_at(report, "schema", "certificate.schema")
    service.schemas.validate("exchange:verification-report", report.to_json())

    with pytest.raises(VerificationFailed) as caught:
        verifier(service, clock, Statuses()).verify(token)
    error = caught.value.error
    assert isinstance(error, CertificateFailure)
    assert (error.code, error.step) == ("certificate.schema", "schema")
    assert "/data/spouse" in error.pointers
    assert "/holder/id_type" in error.pointers
    assert [c.name for c in caught.value.checks] == list(SEAL_CHECKS)


@pytest.mark.parametrize("change", ["unknown", "missing", "number"])
def test_a_document_without_a_known_type_fails_at_the_schema_step(
    service: NodeService, clock: FixedClock, document: dict[str, Any], change: str
) -> None:
    # e.g. a type added to a newer federation's schemas: not a crash, a FAILED report
    if change == "unknown":
        document["type"] = "fishing_licence"
    elif change == "missing":
        del document["type"]
    else:
        document["type"] = 3
    report, _ = verifier(service, clock, Statuses()).report(reseal(service, document))
    assert_failed_at(report, "schema", "certificate.schema")


def test_an_identifier_naming_another_issuer_fails_at_the_identifier_step(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    ident = parse_certificate_id(document["id"])
    document["id"] = str(
        build_certificate_id(ident.type_code, SHANGHAI_CIVIL_AFFAIRS, ident.serial)
    )
    report, _ = verifier(service, clock, Statuses()).report(reseal(service, document))
    assert_failed_at(report, "identifier", "certificate.identifier")


def test_an_identifier_naming_another_type_fails_at_the_identifier_step(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    ident = parse_certificate_id(document["id"])
    document["id"] = str(build_certificate_id(DIVORCE_TYPE_CODE, ident.issuer_code, ident.serial))
    report, _ = verifier(service, clock, Statuses()).report(reseal(service, document))
    assert_failed_at(report, "identifier", "certificate.identifier")


def test_an_identifier_with_a_wrong_check_character_fails_at_the_identifier_step(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    check = document["id"][-1]
    document["id"] = document["id"][:-1] + ("0" if check != "0" else "1")
    report, _ = verifier(service, clock, Statuses()).report(reseal(service, document))
    assert_failed_at(report, "identifier", "certificate.identifier")
    assert report.checks[-1].detail == "certificate identifier check character is wrong"


def test_a_certificate_not_yet_valid_fails_until_its_first_day_in_china(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    document["valid_from"] = "2026-11-25"
    token = reseal(service, document)
    check = verifier(service, clock, Statuses({status_ref(document): CertStatus.VALID}))

    report, _ = check.report(token)  # 2026-11-24T16:00+08:00
    assert_failed_at(report, "validity", "certificate.not_yet_valid")
    clock.set(utc(2026, 11, 24, 15, 59, 59))  # 23:59:59 in China
    assert check.report(token)[0].code == "certificate.not_yet_valid"
    clock.set(utc(2026, 11, 24, 16))  # midnight in China: 2026-11-25 has begun
    assert check.report(token)[0].indication is Indication.PASSED


def test_a_certificate_expires_after_its_last_day_in_china(
    service: NodeService, clock: FixedClock
) -> None:
    issued = service.issue(PUBLIC_SECURITY, resident_id_request(valid_until="2026-12-31"))
    status = Statuses({status_ref(dict(issued.document)): CertStatus.VALID})
    check = verifier(service, clock, status)

    assert check.report(issued.certificate.seal)[0].indication is Indication.PASSED
    clock.set(utc(2026, 12, 31, 15, 59, 59))  # 2026-12-31T23:59:59+08:00: its last second
    assert check.report(issued.certificate.seal)[0].indication is Indication.PASSED
    clock.set(utc(2026, 12, 31, 16))  # 2027-01-01T00:00:00+08:00
    report, _ = check.report(issued.certificate.seal)
    assert_failed_at(report, "validity", "certificate.expired")


# --- status ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [(CertStatus.REVOKED, "status.revoked"), (CertStatus.SUSPENDED, "status.suspended")],
)
def test_a_revoked_or_suspended_certificate_fails_at_the_status_step(
    service: NodeService,
    clock: FixedClock,
    document: dict[str, Any],
    status: CertStatus,
    code: str,
) -> None:
    statuses = Statuses({status_ref(document): status})
    report, verified = verifier(service, clock, statuses).report(reseal(service, document))
    assert verified is None
    assert_failed_at(report, "status", code)


@pytest.mark.parametrize(
    ("action", "code"), [("revoke", "status.revoked"), ("suspend", "status.suspended")]
)
def test_the_nodes_own_verifier_reads_status_from_its_registry(
    service: NodeService, action: str, code: str
) -> None:
    issued = service.issue(CIVIL_AFFAIRS, marriage_request())
    assert service.verifier.report(issued.certificate.seal)[0].indication is Indication.PASSED
    service.change_status(CIVIL_AFFAIRS, issued.certificate.id, {"action": action, "reason": "t"})
    report, _ = service.verifier.report(issued.certificate.seal)
    assert_failed_at(report, "status", code)


def test_a_status_that_cannot_be_read_is_indeterminate(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    report, verified = verifier(service, clock, Statuses()).report(reseal(service, document))
    assert verified is None
    assert_failed_at(report, "status", "status.unavailable", Indication.INDETERMINATE)


def test_a_status_list_of_another_node_is_indeterminate_at_the_node(
    service: NodeService, document: dict[str, Any]
) -> None:
    document["status"]["status_list"]["uri"] = "http://shanghai.test/v1/status-lists/0"
    report, _ = service.verifier.report(reseal(service, document))
    assert_failed_at(report, "status", "status.unavailable", Indication.INDETERMINATE)


# --- a batch ---------------------------------------------------------------------------------


def _variants(service: NodeService, document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Seals of one document's variants, each naming its own status entry."""
    out = []
    for n in range(6):
        variant = orjson.loads(orjson.dumps(document))
        variant["status"]["status_list"]["idx"] = 1000 + n
        out.append((reseal(service, variant), variant))
    return out


@pytest.mark.parametrize("offline", [False, True], ids=["with-statuses", "offline"])
def test_a_batch_reports_what_each_seal_alone_reports(
    service: NodeService, clock: FixedClock, document: dict[str, Any], offline: bool
) -> None:
    """reports() reads the statuses of a batch at once, after every other check: same
    reports, same order, and only the seals that reached the status step are asked about."""
    (good, doc_good), (revoked, doc_rev), (suspended, doc_sus), (unknown, _), (bad, _), _ = (
        _variants(service, document)
    )
    broken = dict(document, valid_from="2099-01-01")
    statuses = Statuses(
        {
            status_ref(doc_good): CertStatus.VALID,
            status_ref(doc_rev): CertStatus.REVOKED,
            status_ref(doc_sus): CertStatus.SUSPENDED,
        }
    )
    batch = [
        good,
        revoked,
        "not-a-seal",
        suspended,
        unknown,
        _tampered(bad),
        reseal(service, broken),
        good,
    ]
    checker = verifier(service, clock, None if offline else statuses)
    one_by_one = [checker.report(token)[0] for token in batch]
    statuses.asked.clear()

    reports = checker.reports(batch)

    assert reports == one_by_one
    expected = [
        "ok",
        "status.revoked",
        "seal.malformed",
        "status.suspended",
        "status.unavailable",
        "seal.bad_signature",
        "certificate.not_yet_valid",
        "ok",
    ]
    if offline:
        expected = [
            "ok",
            "ok",
            "seal.malformed",
            "ok",
            "ok",
            "seal.bad_signature",
            "certificate.not_yet_valid",
            "ok",
        ]
        assert statuses.batches == []
    else:
        reached = [good, revoked, suspended, unknown, good]
        assert statuses.batches == [[status_ref(_payload(t)) for t in reached]]
    assert [r.code for r in reports] == expected
    assert checker.reports([]) == []


def _payload(token: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(b64url_decode(token.split(".")[1]))
    return document


def test_the_nodes_batch_reads_its_registry_once_and_agrees_entry_by_entry(
    service: NodeService,
) -> None:
    issued = [service.issue(CIVIL_AFFAIRS, marriage_request()) for _ in range(4)]
    seals = [i.certificate.seal for i in issued]
    service.change_status(
        CIVIL_AFFAIRS, issued[1].certificate.id, {"action": "revoke", "reason": "t"}
    )
    service.change_status(
        CIVIL_AFFAIRS, issued[2].certificate.id, {"action": "suspend", "reason": "t"}
    )
    elsewhere = dict(issued[3].document)
    elsewhere["status"] = {
        "status_list": {"uri": "http://shanghai.test/v1/status-lists/0", "idx": 1}
    }
    beyond = orjson.loads(orjson.dumps(issued[3].document))
    beyond["status"]["status_list"]["idx"] = 10**9
    batch = [*seals, reseal(service, elsewhere), reseal(service, beyond)]

    reports = service.verifier.reports(batch)

    assert reports == [service.verifier.report(token)[0] for token in batch]
    assert [r.code for r in reports] == [
        "ok",
        "status.revoked",
        "status.suspended",
        "ok",
        "status.unavailable",
        "status.unknown_index",
    ]


# --- the seal --------------------------------------------------------------------------------


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    document = orjson.loads(b64url_decode(payload))
    document["holder"]["name"] = "李四"
    return ".".join((header, b64url_encode(orjson.dumps(document)), signature))


def test_a_failed_seal_lists_the_seal_checks_that_passed_before_it(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    report, _ = verifier(service, clock, Statuses()).report(_tampered(reseal(service, document)))
    assert_failed_at(report, "signature", "seal.bad_signature")
    service.schemas.validate("exchange:verification-report", report.to_json())


def test_an_unknown_key_is_indeterminate_at_the_key_step(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    strangers = CertificateVerifier(
        StaticKeyResolver({}), service.schemas, clock=clock, statuses=Statuses()
    )
    report, _ = strangers.report(reseal(service, document))
    assert_failed_at(report, "key", "seal.unknown_kid", Indication.INDETERMINATE)


def test_a_seal_claiming_another_node_fails_at_the_claims_step(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    document["iss"] = "shanghai"
    report, _ = verifier(service, clock, Statuses()).report(reseal(service, document))
    assert_failed_at(report, "claims", "seal.bad_claims")


def test_a_seal_signed_in_the_future_fails_at_the_time_step(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    token = reseal(service, document)
    clock.set(NOW - 3600)
    report, _ = verifier(service, clock, Statuses()).report(token)
    assert_failed_at(report, "time", "seal.signed_in_future")


def test_a_seal_made_with_a_key_of_another_node_is_not_trusted(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    # the same key material published under another node's name: the claims do not match
    keys = {
        kid: replace(key, node=NodeId("shanghai"))
        for kid, key in service.keys.verification_keys().items()
    }
    foreign = CertificateVerifier(
        StaticKeyResolver(keys), service.schemas, clock=clock, statuses=Statuses()
    )
    report, _ = foreign.report(reseal(service, document))
    assert_failed_at(report, "claims", "seal.bad_claims")


def test_verify_raises_with_the_checks_done(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    with pytest.raises(VerificationFailed) as caught:
        verifier(service, clock, Statuses()).verify(_tampered(reseal(service, document)))
    assert caught.value.error.code == "seal.bad_signature"
    assert caught.value.error.step == "signature"
    # the seal verifier raised before handing back its checks: the report rebuilds them
    assert caught.value.checks == ()


def test_a_reports_json_is_its_own_and_a_batch_is_written_the_same(
    service: NodeService, clock: FixedClock, document: dict[str, Any]
) -> None:
    """Checks are shared between reports (one object per passed check); their JSON is not."""
    checker = verifier(service, clock, Statuses({status_ref(document): CertStatus.VALID}))
    token = reseal(service, document)
    first, second = checker.reports([token, token])
    assert first.checks[-1] is second.checks[-1]
    mutated = first.to_json()
    mutated["checks"][0]["result"] = "FAILED"
    mutated["checks"][-1]["detail"] = "changed"
    assert second.to_json() == first.to_json() != mutated
    assert first.to_json()["checks"][-1]["detail"] == "valid"
    failed = checker.reports(["not-a-seal"])[0]
    assert orjson.loads(dump_reports([first, failed, second])) == {
        "reports": [first.to_json(), failed.to_json(), second.to_json()]
    }
