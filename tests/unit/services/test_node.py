"""The node's service layer: who may issue what, purpose limitation, status, batch, status lists."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import (
    BRIDE,
    GROOM,
    NOW,
    Tokens,
    fetch_now,
    household_request,
    marriage_request,
    verify_now,
)

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.audit.records import AuditKind
from gateway.certificates.holders import holder_digest
from gateway.certificates.schemas import SchemaSet
from gateway.certificates.status import CertStatus
from gateway.certificates.status_list import STATUS_LIST_TYP, parse_status_list
from gateway.clock import FixedClock
from gateway.config import Department, Federation, Limits
from gateway.crypto.jwks import StaticKeyResolver
from gateway.crypto.seals import SEAL_TYP, seal, verify_compact
from gateway.errors import (
    ConflictError,
    Forbidden,
    GatewayError,
    Indication,
    InputError,
    InvalidIdentifier,
    NotFoundError,
    SchemaViolation,
    SealError,
    StorageError,
)
from gateway.identifiers import make_credit_code, parse_certificate_id
from gateway.ids import CertificateId, DepartmentId, NodeId
from gateway.server.node import open_node_service
from gateway.services.node import STATUS_LIST_TTL, NodeService
from gateway.sso.auth import Principal, Scope
from gateway.storage.registry import Outbox

CIVIL_AFFAIRS_CODE = "11330681002521002U"
PUBLIC_SECURITY_CODE = "113306810025211840"
ALL_SCOPES = frozenset(scope.value for scope in Scope)


def department(dept: str | None, scopes: frozenset[str] = ALL_SCOPES) -> Principal:
    """A departmental caller, as :class:`gateway.sso.node_auth.NodeAuthenticator` produces it."""
    return Principal(
        subject=dept or "nobody",
        client_id=dept or "nobody",
        scopes=scopes,
        department=DepartmentId(dept) if dept else None,
        node=NodeId("zhuji"),
    )


def civil_affairs() -> Principal:
    """Zhuji's civil-affairs bureau: it issues (and owns) marriage certificates."""
    return department("zhuji-civil-affairs")


def public_security() -> Principal:
    """Zhuji's public-security bureau: it issues resident ID records and household registers."""
    return department("zhuji-public-security")


def business_licence_request() -> dict[str, Any]:
    return {
        "type": "business_licence",
        "holder": {
            "name": "诸暨市暨阳纺织有限公司",
            "id": make_credit_code("9", "1", "330681", "MA2D0K5Q"),
            "id_type": "001",
        },
        "valid_from": "2020-03-01",
        "valid_until": None,
        "data": {
            "entity_type": "有限责任公司（自然人投资或控股）",
            "legal_representative": "赵立新",
            "registered_capital": "100万元人民币",
            "established": "2020-03-01",
            "business_scope": "纺织品、服装的生产与销售",
            "address": "浙江省诸暨市暨阳街道人民路1号",
        },
    }


def open_service(
    federation: Federation, clock: FixedClock, schemas: SchemaSet, where: Path
) -> NodeService:
    """A second, independent zhuji node in its own directories."""
    federation = federation.with_overrides(data_dir=where / "var", keys_dir=where / "keys")
    return open_node_service(
        federation, "zhuji", clock=clock, schemas=schemas, public_url="http://zhuji.test"
    )


def reseal(service: NodeService, document: dict[str, Any]) -> str:
    return seal(service.keys.signer(), orjson.dumps(document), signed_at=service.clock.now())


def tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    document = orjson.loads(b64url_decode(payload))
    document["holder"]["name"] = "李四"
    return ".".join((header, b64url_encode(orjson.dumps(document)), signature))


# --- the audit outbox: no committed change without its audit record ------------------------


def audit_kinds(node: NodeService) -> list[tuple[AuditKind, str | None, dict[str, Any]]]:
    return [(r.kind, r.subject, dict(r.details)) for r in node.audit.entries(0, node.audit.size())]


def test_issuance_and_status_changes_reach_the_audit_log_through_the_outbox(
    service: NodeService,
) -> None:
    issued = service.issue(public_security(), household_request())
    cert_id = issued.certificate.id
    service.change_status(public_security(), cert_id, {"action": "suspend", "reason": "x"})
    records = audit_kinds(service)
    assert [(kind, subject) for kind, subject, _ in records] == [
        (AuditKind.ISSUANCE, cert_id),
        (AuditKind.STATUS, cert_id),
    ]
    # the status record names the registry's status event: one change, one event
    assert records[1][2] == {"action": "suspend", "status": "suspended", "event": 1}
    assert service.registry.pending(Outbox.AUDIT, every_owner=True) == []
    # national's catalog entries wait in the outbox for the exchange: a digest, no id in
    # clear; the status change sends the entry again, numbered by its status event
    entries = [orjson.loads(r) for _, r in service.registry.pending(Outbox.CATALOG)]
    entry = {
        "certificate_id": cert_id,
        "type": "household_register",
        "node": "zhuji",
        "holder_digest": issued.certificate.holder_digest,
    }
    assert entries == [
        {**entry, "status": "valid", "status_event": 0},
        {**entry, "status": "suspended", "status_event": 1},
    ]


def crash_restart(
    service: NodeService, federation: Federation, clock: FixedClock, schemas: SchemaSet
) -> NodeService:
    """The node's process dies (its stores closed as the kernel would), and starts again."""
    service.close()
    return open_node_service(
        federation, "zhuji", clock=clock, schemas=schemas, public_url="http://zhuji.test"
    )


def test_a_crash_before_the_audit_append_is_recovered_on_restart(
    service: NodeService,
    federation: Federation,
    clock: FixedClock,
    schemas: SchemaSet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def power_cut(_items: object) -> None:
        raise StorageError("the audit log failed", code="audit.storage")

    monkeypatch.setattr(service.audit, "append_checked", power_cut)
    with pytest.raises(StorageError):
        service.issue(public_security(), household_request())
    (stored,) = service.registry.list_by_holder(
        holder_digest(service.keys.holder_secret, "111", household_request()["holder"]["id"])
    )  # committed, not yet audited
    node = crash_restart(service, federation, clock, schemas)
    try:
        assert node.recover_audit() == 1
        ((kind, subject, details),) = audit_kinds(node)
        assert (kind, subject) == (AuditKind.ISSUANCE, stored.id)
        assert details["holder"] == stored.holder_digest
        assert node.registry.pending(Outbox.AUDIT, every_owner=True) == []
        assert node.recover_audit() == 0
    finally:
        node.close()


def test_a_crash_after_the_audit_append_does_not_duplicate_the_record(
    service: NodeService,
    federation: Federation,
    clock: FixedClock,
    schemas: SchemaSet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def power_cut(_seqs: object) -> None:
        raise StorageError("the registry failed", code="registry.storage")

    issued = service.issue(public_security(), household_request())
    monkeypatch.setattr(service.registry, "delivered", power_cut)
    with pytest.raises(StorageError):
        service.change_status(
            public_security(), issued.certificate.id, {"action": "revoke", "reason": "x"}
        )
    assert len(service.registry.pending(Outbox.AUDIT)) == 1  # appended, still in the outbox
    node = crash_restart(service, federation, clock, schemas)
    try:
        assert node.recover_audit() == 0
        assert [kind for kind, _, _ in audit_kinds(node)] == [AuditKind.ISSUANCE, AuditKind.STATUS]
        assert node.registry.pending(Outbox.AUDIT, every_owner=True) == []
    finally:
        node.close()


# --- issuing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dept", "request_", "issuer_name", "issuer_code"),
    [
        ("zhuji-civil-affairs", marriage_request(), "诸暨市民政局", CIVIL_AFFAIRS_CODE),
        ("zhuji-public-security", household_request(), "诸暨市公安局", PUBLIC_SECURITY_CODE),
    ],
    ids=["marriage", "household_register"],
)
def test_a_department_issues_its_own_type_under_its_name_and_code(
    service: NodeService,
    dept: str,
    request_: dict[str, Any],
    issuer_name: str,
    issuer_code: str,
) -> None:
    issued = service.issue(department(dept), request_)

    document = issued.document
    assert document["issuer"] == {"name": issuer_name, "code": issuer_code}
    assert parse_certificate_id(document["id"]).issuer_code == issuer_code
    assert document["iss"] == "zhuji"
    assert document["jurisdiction"] == "330681"
    assert issued.report.indication is Indication.PASSED
    assert issued.route == ("zhuji",)
    assert issued.certificate.status is CertStatus.VALID
    assert service.registry.get(issued.certificate.id).seal == issued.certificate.seal


def test_metrics_count_what_the_outbox_still_owes(service: NodeService) -> None:
    """The audit record is appended at once; the catalog entry waits for the exchange (none
    runs here), and the scrape shows it waiting."""
    service.issue(department("zhuji-civil-affairs"), marriage_request())
    lines = service.render_metrics().decode().splitlines()
    assert 'tongban_outbox_records{topic="audit"} 0.0' in lines
    assert 'tongban_outbox_records{topic="catalog"} 1.0' in lines


@pytest.mark.parametrize(
    "dept",
    [
        "zhuji-civil-affairs",
        "zhuji-public-security",
        "zhuji-human-resources",
        "zhuji-healthcare-security",
    ],
)
def test_no_department_here_issues_a_business_licence(service: NodeService, dept: str) -> None:
    with pytest.raises(Forbidden) as caught:
        service.issue(department(dept), business_licence_request())
    assert caught.value.code == "cert.type_not_issued_here"
    assert service.registry.count() == 0


def test_department_principal_cannot_issue_another_departments_type(
    service: NodeService,
) -> None:
    with pytest.raises(Forbidden) as caught:
        service.issue(department("zhuji-civil-affairs"), household_request())
    assert caught.value.code == "cert.type_not_issued_here"
    assert caught.value.status == 403
    assert service.registry.count() == 0


@pytest.mark.parametrize(
    "dept",
    ["shanghai-civil-affairs", "linquan-civil-affairs", "no-such-department", None],
)
def test_department_of_another_node_is_refused(service: NodeService, dept: str | None) -> None:
    # shanghai-civil-affairs and linquan-civil-affairs do issue marriage certificates, but at
    # their own nodes: a department issues only where it belongs.
    with pytest.raises(Forbidden) as caught:
        service.issue(department(dept), marriage_request())
    assert caught.value.code == "cert.foreign_department"


def test_issue_without_the_issue_scope_is_refused(service: NodeService) -> None:
    caller = department("zhuji-civil-affairs", ALL_SCOPES - {Scope.CERT_ISSUE.value})
    with pytest.raises(Forbidden) as caught:
        service.issue(caller, marriage_request())
    assert caught.value.code == "auth.scope"
    assert service.registry.count() == 0


def test_issue_checks_the_scope_before_looking_at_the_request(service: NodeService) -> None:
    caller = department("zhuji-civil-affairs", frozenset({Scope.CERT_READ.value}))
    with pytest.raises(Forbidden) as caught:
        service.issue(caller, {"type": "marriage"})
    assert caught.value.code == "auth.scope"


def test_issue_refuses_a_request_that_breaks_the_envelope_schema(service: NodeService) -> None:
    request = marriage_request()
    del request["valid_from"]
    request["iss"] = "shanghai"  # the node sets iss; a caller may not
    with pytest.raises(SchemaViolation) as caught:
        service.issue(civil_affairs(), request)
    assert caught.value.code == "input.schema"
    assert "/valid_from" in caught.value.pointers
    assert "/iss" in caught.value.pointers


@pytest.mark.parametrize(
    ("where", "pointer"),
    [("holder", "/holder/id"), ("spouse", "/data/spouse/id")],
)
def test_issue_refuses_a_wrong_check_character_with_its_pointer(
    service: NodeService, where: str, pointer: str
) -> None:
    request = marriage_request()
    party = request["holder"] if where == "holder" else request["data"]["spouse"]
    party["id"] = party["id"][:17] + ("1" if party["id"][17] != "1" else "2")
    with pytest.raises(InvalidIdentifier) as caught:
        service.issue(civil_affairs(), request)
    assert caught.value.code == "input.identifier.check"
    assert caught.value.pointers == (pointer,)
    assert service.registry.count() == 0


def test_issued_identifiers_parse_and_serials_are_unique(service: NodeService) -> None:
    issued = [service.issue(civil_affairs(), marriage_request()) for _ in range(5)]
    issued.append(service.issue(public_security(), household_request()))

    idents = [parse_certificate_id(f.document["id"]) for f in issued]
    for fetched, ident in zip(issued, idents, strict=True):
        assert str(ident) == fetched.document["id"] == fetched.certificate.id
        assert ident.type_code == fetched.document["type_code"]
        assert ident.issuer_code == fetched.document["issuer"]["code"]
        assert ident.version == "001"
    assert len({ident.serial for ident in idents}) == len(idents)
    assert len({f.certificate.slot for f in issued}) == len(issued)


def test_registry_keeps_the_holder_only_as_a_keyed_digest(
    service: NodeService, federation: Federation
) -> None:
    issued = service.issue(civil_affairs(), marriage_request())

    stored = service.registry.get(issued.certificate.id)
    assert re.fullmatch(r"[0-9a-f]{64}", stored.holder_digest)
    assert stored.holder_digest == holder_digest(service.keys.holder_secret, "111", GROOM["id"])
    found = service.registry.list_by_holder(stored.holder_digest)
    assert [c.id for c in found] == [issued.certificate.id]

    files = sorted((federation.data_dir / "zhuji").glob("registry.sqlite3*"))
    assert files, "the registry file and its WAL should exist"
    raw = b"".join(path.read_bytes() for path in files)
    assert issued.certificate.id.encode() in raw  # the store is the one we think it is
    for person in (GROOM, BRIDE):
        assert person["id"].encode() not in raw
        assert person["name"].encode() not in raw


# --- fetching --------------------------------------------------------------------------------


def test_fetch_returns_the_certificate_for_a_matter_that_uses_its_type(
    service: NodeService, tokens: Tokens
) -> None:
    issued = service.issue(public_security(), household_request())
    consent = tokens.consent(GROOM["id"], types=("household_register",))
    fetched = fetch_now(
        service, civil_affairs(), issued.certificate.id, "marriage-registration", consent=consent
    )
    assert fetched.document == issued.document
    assert fetched.report.indication is Indication.PASSED
    assert fetched.report.certificate_id == issued.certificate.id
    assert fetched.to_json()["route"] == ["zhuji"]


def test_fetch_refuses_a_type_the_matter_does_not_use(service: NodeService) -> None:
    issued = service.issue(civil_affairs(), marriage_request())
    with pytest.raises(Forbidden) as caught:
        fetch_now(service, civil_affairs(), issued.certificate.id, "social-insurance-record-query")
    assert caught.value.code == "matter.type_not_allowed"


def test_fetch_refuses_an_unknown_matter(service: NodeService) -> None:
    issued = service.issue(civil_affairs(), marriage_request())
    with pytest.raises(NotFoundError) as caught:
        fetch_now(service, civil_affairs(), issued.certificate.id, "no-such-matter")
    assert caught.value.code == "matter.unknown"


def test_fetch_of_an_unknown_certificate_is_not_found(service: NodeService) -> None:
    issued = service.issue(civil_affairs(), marriage_request())
    ident = parse_certificate_id(issued.certificate.id)
    unknown = _with_valid_check(ident.type_code, ident.issuer_code, "29990000000000")
    with pytest.raises(NotFoundError) as caught:
        fetch_now(service, civil_affairs(), unknown, "marriage-registration")
    assert caught.value.code == "cert.not_found"


def test_fetch_of_a_malformed_identifier_is_a_bad_request(service: NodeService) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        fetch_now(service, civil_affairs(), "1.2.156.3005.2.nonsense", "marriage-registration")
    assert caught.value.code == "input.identifier.format"


def test_fetch_without_the_read_scope_is_refused(service: NodeService) -> None:
    issued = service.issue(civil_affairs(), marriage_request())
    caller = department("zhuji-civil-affairs", ALL_SCOPES - {Scope.CERT_READ.value})
    with pytest.raises(Forbidden) as caught:
        fetch_now(service, caller, issued.certificate.id, "marriage-registration")
    assert caught.value.code == "auth.scope"


def test_fetch_of_a_suspended_certificate_reports_the_suspension(
    service: NodeService, tokens: Tokens
) -> None:
    issued = service.issue(civil_affairs(), marriage_request())
    service.change_status(
        civil_affairs(), issued.certificate.id, {"action": "suspend", "reason": "x"}
    )
    consent = tokens.consent(GROOM["id"], matter="divorce-registration", types=("marriage",))
    fetched = fetch_now(
        service, civil_affairs(), issued.certificate.id, "divorce-registration", consent=consent
    )
    assert fetched.certificate.status is CertStatus.SUSPENDED
    assert fetched.report.indication is Indication.FAILED
    assert fetched.report.code == "status.suspended"
    assert fetched.document == issued.document


# --- status ----------------------------------------------------------------------------------


def _suspend(reason: str = "under review") -> dict[str, Any]:
    return {"action": "suspend", "reason": reason}


def test_owning_department_walks_the_status_lifecycle(service: NodeService) -> None:
    owner = department("zhuji-civil-affairs")
    cert_id = service.issue(owner, marriage_request()).certificate.id

    steps = [("suspend", "suspended"), ("reinstate", "valid"), ("revoke", "revoked")]
    for action, expected in steps:
        updated = service.change_status(owner, cert_id, {"action": action, "reason": action})
        assert updated.status.value == expected
        assert service.registry.get(cert_id).status.value == expected

    history = service.registry.history(cert_id)
    assert [(e.from_status.value, e.to_status.value, e.reason) for e in history] == [
        ("valid", "suspended", "suspend"),
        ("suspended", "valid", "reinstate"),
        ("valid", "revoked", "revoke"),
    ]
    assert all(e.at == NOW for e in history)


@pytest.mark.parametrize(
    ("first", "then"),
    [
        (None, "reinstate"),  # a valid certificate cannot be reinstated
        ("suspend", "suspend"),
        ("revoke", "reinstate"),  # revocation is final
        ("revoke", "suspend"),
        ("revoke", "revoke"),
    ],
)
def test_impossible_transitions_conflict(
    service: NodeService, first: str | None, then: str
) -> None:
    cert_id = service.issue(civil_affairs(), marriage_request()).certificate.id
    if first is not None:
        service.change_status(civil_affairs(), cert_id, {"action": first, "reason": "first"})
    with pytest.raises(ConflictError) as caught:
        service.change_status(civil_affairs(), cert_id, {"action": then, "reason": "then"})
    assert caught.value.code == "cert.status_transition"
    assert caught.value.status == 409


@pytest.mark.parametrize("dept", ["zhuji-public-security", "shanghai-civil-affairs", None])
def test_only_the_owning_department_changes_a_status(
    service: NodeService, dept: str | None
) -> None:
    cert_id = service.issue(civil_affairs(), marriage_request()).certificate.id
    with pytest.raises(Forbidden) as caught:
        service.change_status(department(dept), cert_id, _suspend())
    assert caught.value.code == "cert.not_owner"
    assert service.registry.get(cert_id).status is CertStatus.VALID


def test_a_department_issuing_the_same_type_is_not_the_owner(
    federation: Federation, clock: FixedClock, schemas: SchemaSet, tmp_path: Path
) -> None:
    annex = Department(
        id=DepartmentId("zhuji-marriage-annex"),
        name="诸暨市民政局婚姻登记分处",
        credit_code=make_credit_code("1", "1", "330681", "00252199"),
        issues=("marriage",),
    )
    nodes = tuple(
        replace(node, departments=(*node.departments, annex)) if node.id == "zhuji" else node
        for node in federation.nodes
    )
    node = open_service(federation.with_overrides(nodes=nodes), clock, schemas, tmp_path / "two")
    try:
        cert_id = node.issue(department("zhuji-civil-affairs"), marriage_request()).certificate.id
        with pytest.raises(Forbidden) as caught:
            node.change_status(department("zhuji-marriage-annex"), cert_id, _suspend())
        assert caught.value.code == "cert.not_owner"
    finally:
        node.close()


def test_change_status_without_the_status_scope_is_refused(service: NodeService) -> None:
    cert_id = service.issue(civil_affairs(), marriage_request()).certificate.id
    caller = department("zhuji-civil-affairs", ALL_SCOPES - {Scope.CERT_STATUS.value})
    with pytest.raises(Forbidden) as caught:
        service.change_status(caller, cert_id, _suspend())
    assert caught.value.code == "auth.scope"


@pytest.mark.parametrize(
    "request_",
    [
        {"action": "delete", "reason": "x"},
        {"action": "suspend"},
        {"action": "suspend", "reason": ""},
        {"action": "suspend", "reason": "x", "extra": 1},
    ],
)
def test_change_status_refuses_a_malformed_request(
    service: NodeService, request_: dict[str, Any]
) -> None:
    cert_id = service.issue(civil_affairs(), marriage_request()).certificate.id
    with pytest.raises(SchemaViolation) as caught:
        service.change_status(civil_affairs(), cert_id, request_)
    assert caught.value.code == "input.schema"


def test_change_status_of_an_unknown_certificate_is_not_found(service: NodeService) -> None:
    issued = service.issue(civil_affairs(), marriage_request())
    ident = parse_certificate_id(issued.certificate.id)
    unknown = _with_valid_check(ident.type_code, ident.issuer_code, "29990000000000")
    with pytest.raises(NotFoundError) as caught:
        service.change_status(civil_affairs(), unknown, _suspend())
    assert caught.value.code == "cert.not_found"


# --- batch verification ----------------------------------------------------------------------


def test_verify_batch_reports_each_seal_in_order(service: NodeService) -> None:
    genuine = service.issue(civil_affairs(), marriage_request()).certificate.seal
    reports = verify_now(
        service, civil_affairs(), {"seals": [genuine, tamper(genuine), "not-a-seal"]}
    )
    assert [(r.indication, r.code) for r in reports] == [
        (Indication.PASSED, "ok"),
        (Indication.FAILED, "seal.bad_signature"),
        (Indication.FAILED, "seal.malformed"),
    ]
    samples = service.metrics.registry
    passed = {"indication": "PASSED", "code": "ok"}
    bad = {"indication": "FAILED", "code": "seal.bad_signature"}
    # issue() attaches a report without counting it: only the batch's three are counted
    assert samples.get_sample_value("tongban_verifications_total", passed) == 1
    assert samples.get_sample_value("tongban_verifications_total", bad) == 1


def test_verify_batch_counts_every_seal_and_audits_the_tally(service: NodeService) -> None:
    genuine = service.issue(civil_affairs(), marriage_request()).certificate.seal
    batch = [genuine, tamper(genuine), genuine, "x", tamper(genuine), genuine]
    verify_now(service, civil_affairs(), {"seals": batch})
    samples = service.metrics.registry
    for labels, n in (
        ({"indication": "PASSED", "code": "ok"}, 3),
        ({"indication": "FAILED", "code": "seal.bad_signature"}, 2),
        ({"indication": "FAILED", "code": "seal.malformed"}, 1),
    ):
        assert samples.get_sample_value("tongban_verifications_total", labels) == n
    last = service.audit.entries(service.audit.size() - 1, service.audit.size())[0]
    assert last.details == {"seals": 6, "PASSED": 3, "FAILED": 3}


def test_verify_batch_over_the_configured_limit_is_refused(
    federation: Federation, clock: FixedClock, schemas: SchemaSet, tmp_path: Path
) -> None:
    limited = federation.with_overrides(limits=Limits(max_batch=2))
    node = open_service(limited, clock, schemas, tmp_path / "limited")
    try:
        genuine = node.issue(civil_affairs(), marriage_request()).certificate.seal
        assert len(verify_now(node, civil_affairs(), {"seals": [genuine] * 2})) == 2
        with pytest.raises(InputError) as caught:
            verify_now(node, civil_affairs(), {"seals": [genuine] * 3})
        assert caught.value.code == "input.batch_too_large"
        assert caught.value.status == 400
    finally:
        node.close()


def test_verify_batch_over_the_default_limit_is_refused_before_the_schema(
    service: NodeService,
) -> None:
    with pytest.raises(InputError) as caught:
        verify_now(service, civil_affairs(), {"seals": ["x"] * 1001})
    assert caught.value.code == "input.batch_too_large"


def test_verify_batch_of_nothing_is_refused(service: NodeService) -> None:
    with pytest.raises(SchemaViolation) as caught:
        verify_now(service, civil_affairs(), {"seals": []})
    assert caught.value.code == "input.schema"


def test_verify_batch_without_the_verify_scope_is_refused(service: NodeService) -> None:
    caller = department("zhuji-civil-affairs", ALL_SCOPES - {Scope.SEAL_VERIFY.value})
    with pytest.raises(Forbidden) as caught:
        verify_now(service, caller, {"seals": ["x"]})
    assert caught.value.code == "auth.scope"


def test_a_seal_naming_a_status_list_this_node_does_not_have_is_indeterminate(
    service: NodeService,
) -> None:
    # e.g. a certificate sealed before the registry was reset, the keys kept
    document = dict(service.issue(civil_affairs(), marriage_request()).document)
    document["status"] = {"status_list": {"idx": 0, "uri": "http://zhuji.test/v1/status-lists/7"}}
    (report,) = verify_now(service, civil_affairs(), {"seals": [reseal(service, document)]})
    assert report.indication is Indication.INDETERMINATE
    assert report.code == "status.unavailable"


# --- status list tokens ----------------------------------------------------------------------


def _list_of(service: NodeService, cert_id: CertificateId) -> tuple[int, int, str]:
    slot = service.registry.get(cert_id).slot
    return slot.list_id, slot.index, f"http://zhuji.test/v1/status-lists/{slot.list_id}"


def _published_status(service: NodeService, token: str, uri: str, index: int) -> CertStatus:
    keys = StaticKeyResolver.from_jwks(service.jwks())  # what any verifier would fetch
    verified = verify_compact(token, keys, typ=STATUS_LIST_TYP, now=service.clock.now())
    assert verified.header["typ"] == "statuslist+jwt"
    assert verified.node == "zhuji"
    return parse_status_list(verified.payload, uri=uri, now=service.clock.now()).status(index)


def test_status_list_token_is_cached_until_a_status_changes(service: NodeService) -> None:
    cert_id = service.issue(civil_affairs(), marriage_request()).certificate.id
    list_id, index, uri = _list_of(service, cert_id)

    first = service.status_list_token(list_id)
    assert service.status_list_token(list_id) == first
    assert _published_status(service, first, uri, index) is CertStatus.VALID

    service.change_status(civil_affairs(), cert_id, _suspend())
    suspended = service.status_list_token(list_id)
    assert suspended != first
    assert service.status_list_token(list_id) == suspended
    assert _published_status(service, suspended, uri, index) is CertStatus.SUSPENDED

    service.change_status(civil_affairs(), cert_id, {"action": "revoke", "reason": "fraud"})
    revoked = service.status_list_token(list_id)
    assert revoked not in (first, suspended)
    assert _published_status(service, revoked, uri, index) is CertStatus.REVOKED


def test_status_list_token_is_renewed_before_it_expires(
    service: NodeService, clock: FixedClock
) -> None:
    list_id, _, _ = _list_of(
        service, service.issue(civil_affairs(), marriage_request()).certificate.id
    )
    first = service.status_list_token(list_id)
    assert _claims(first)["exp"] == NOW + 2 * STATUS_LIST_TTL
    # served from the cache while it has more than half a ttl to live...
    clock.advance(1.5 * STATUS_LIST_TTL - 1)
    assert service.status_list_token(list_id) == first
    # ...then signed afresh, so a verifier never receives a token about to expire
    clock.advance(1)
    renewed = service.status_list_token(list_id)
    assert renewed != first
    assert _claims(renewed)["iat"] == int(clock.now())
    assert _claims(renewed)["exp"] == int(clock.now()) + 2 * STATUS_LIST_TTL
    assert service.status_list_token(list_id) == renewed


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = orjson.loads(b64url_decode(token.split(".")[1]))
    return claims


def test_status_list_token_is_not_a_seal(service: NodeService) -> None:
    list_id, _, _ = _list_of(
        service, service.issue(civil_affairs(), marriage_request()).certificate.id
    )
    token = service.status_list_token(list_id)
    with pytest.raises(SealError) as caught:
        verify_compact(token, service.keys, typ=SEAL_TYP, now=NOW)
    assert caught.value.code == "seal.wrong_typ"


@pytest.mark.parametrize("list_id", [1, 7, -1])
def test_status_list_token_of_an_unknown_list_is_not_found(
    service: NodeService, list_id: int
) -> None:
    service.issue(civil_affairs(), marriage_request())
    with pytest.raises(NotFoundError) as caught:
        service.status_list_token(list_id)
    assert caught.value.code == "status_list.not_found"


def test_a_fresh_node_has_no_status_list(service: NodeService) -> None:
    with pytest.raises(NotFoundError) as caught:
        service.status_list_token(0)
    assert caught.value.code == "status_list.not_found"


# --- opening ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("node_id", "code"), [("idp", "config.node_kind"), ("nowhere", None)])
def test_open_refuses_a_node_that_is_not_a_region(
    federation: Federation,
    clock: FixedClock,
    schemas: SchemaSet,
    node_id: str,
    code: str | None,
) -> None:
    with pytest.raises(GatewayError) as caught:
        open_node_service(federation, node_id, clock=clock, schemas=schemas)
    assert caught.value.code == (code or "config.invalid")


@pytest.fixture
def two_services(
    federation: Federation, clock: FixedClock, schemas: SchemaSet, tmp_path: Path
) -> Iterator[tuple[NodeService, NodeService]]:
    first = open_service(federation, clock, schemas, tmp_path / "a")
    second = open_service(federation, clock, schemas, tmp_path / "b")
    yield first, second
    first.close()
    second.close()


def test_a_node_refuses_another_nodes_keys_seal(
    two_services: tuple[NodeService, NodeService],
) -> None:
    first, second = two_services
    token = first.issue(civil_affairs(), marriage_request()).certificate.seal
    (report,) = verify_now(second, civil_affairs(), {"seals": [token]})
    assert report.indication is Indication.INDETERMINATE
    assert report.code == "seal.unknown_kid"


def _with_valid_check(type_code: str, issuer_code: str, serial: str) -> str:
    from gateway.identifiers import build_certificate_id

    return str(build_certificate_id(type_code, issuer_code, serial))
