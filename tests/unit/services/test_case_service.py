"""The case service at two nodes, without HTTP: Zhuji's windows receive, Shanghai's bureau
decides, their messages passed by hand from one's outbox to the other's ``receive``.

(Named ``test_case_service``: ``test_cases`` is the integration test's base name.)"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import APPLICANT, BIRTH, FORM, INVOICES, Tokens, maternity_application
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.cases.calendar import WorkingCalendar
from gateway.cases.case import Case
from gateway.cases.documents import CaseEvent, seal_event, verify_event, verify_receipt
from gateway.cases.lifecycle import Action, CaseState, Role
from gateway.certificates.holders import holder_digest
from gateway.certificates.matters import MATTERS, MatterSet
from gateway.certificates.schemas import SchemaSet
from gateway.clock import FixedClock
from gateway.config import Calendar, Federation
from gateway.crypto.jwks import StaticKeyResolver
from gateway.errors import (
    BadTransition,
    ConflictError,
    Forbidden,
    GatewayError,
    InputError,
    NotFoundError,
    SchemaViolation,
    TooLarge,
    Unprocessable,
)
from gateway.federation.cases import envelope
from gateway.identifiers import build_certificate_id
from gateway.ids import DepartmentId, NodeId
from gateway.server.node import open_node_service
from gateway.services.cases import ENVELOPE_RESERVE, CaseService
from gateway.services.node import NodeService
from gateway.sso.auth import Principal
from gateway.storage.cases import Message, SqliteCaseStore

OTHER_APPLICANT = {"id_type": "111", "id": "341221199607082464", "name": "王晓燕"}
RESIDENT_ID_TYPE = "11100000000013338W001"
HOUSEHOLD_TYPE = "11100000000013338W002"
CST = timezone(timedelta(hours=8))
CASE_SCOPES = frozenset(
    {"case:decide", "case:intake", "cert:read", "cert:issue", "cert:status", "seal:verify"}
)


def pension(**changes: Any) -> dict[str, Any]:
    """县域通办: flexible pension enrolment at Zhuji's township window for Zhuji's bureau."""
    body: dict[str, Any] = {
        "matter": "flexible-pension-enrolment",
        "owner": {"node": "zhuji"},
        "channel": "window",
        "applicant": dict(APPLICANT),
        "identity_checked_by": "dt-0007",
        "delivery": "window",
        "materials": {
            "application-form": {
                "content": b64url_encode(b"form"),
                "media_type": "application/pdf",
            },
            "resident-id": {"declared": True},
        },
    }
    body.update(changes)
    return body


def department(dept: str, node: str, scopes: frozenset[str] = CASE_SCOPES) -> Principal:
    return Principal(
        subject=dept,
        client_id=dept,
        scopes=scopes,
        department=DepartmentId(dept),
        node=NodeId(node),
    )


def authenticated(tokens: Tokens, client_id: str) -> Principal:
    """The principal a real access token of the federation file's client authenticates as."""
    return asyncio.run(tokens.authenticator().authenticate(tokens.client(client_id)))


class Nodes:
    """Zhuji and Shanghai, each a NodeService with its CaseService, one federation."""

    def __init__(
        self,
        federation: Federation,
        clock: FixedClock,
        schemas: SchemaSet,
        tokens: Tokens,
        tmp: Path,
    ) -> None:
        self.clock = clock
        self.tokens = tokens
        self.nodes: list[NodeService] = []

        def open_cases(node_id: str) -> CaseService:
            node = open_node_service(
                federation,
                node_id,
                clock=clock,
                schemas=schemas,
                public_url=f"http://{node_id}.test",
                idp_keys=tokens.resolver,
            )
            self.nodes.append(node)
            return CaseService(node, SqliteCaseStore(tmp / f"{node_id}-cases.sqlite3"))

        self.zhuji = open_cases("zhuji")
        self.shanghai = open_cases("shanghai")
        self.keys = StaticKeyResolver(
            {
                **self.zhuji.node.keys.verification_keys(),
                **self.shanghai.node.keys.verification_keys(),
            }
        )
        self.window = authenticated(tokens, "zhuji-service-center")
        self.owner = authenticated(tokens, "shanghai-healthcare-security")

    def close(self) -> None:
        for cases in (self.zhuji, self.shanghai):
            cases.close()
        for node in self.nodes:
            node.close()

    def messages(self, cases: CaseService) -> list[Message]:
        return cases.store.due_messages(self.clock.now() + 10**9)

    def deliver(self, source: CaseService, target: CaseService) -> list[dict[str, Any]]:
        """Every message ``source`` owes ``target``, received there and acknowledged."""
        answers = []
        for message in self.messages(source):
            if message.target != target.me:
                continue
            answers.append(target.receive(source.me, orjson.loads(message.body), self.keys))
            source.store.sent(message.seq)
        return answers

    def arrived(self) -> Case:
        """A maternity case received at Zhuji, arrived in Shanghai, Zhuji told so."""
        case, _ = self.zhuji.intake(self.window, maternity_application(), idempotency_key=None)
        self.deliver(self.zhuji, self.shanghai)
        self.deliver(self.shanghai, self.zhuji)
        return case

    def act(self, cases: CaseService, who: Principal, case_id: str, **body: Any) -> Case:
        """An action taken where ``who`` is, the other end brought up to date."""
        prepared = cases.prepare(who, case_id, body)
        owner = cases.needs_owner(prepared)
        if owner is not None:  # pushed to the owner first, as CaseExchange.act does
            other = self.shanghai if owner == "shanghai" else self.zhuji
            other.receive(cases.me, orjson.loads(prepared.message()), self.keys)
        case = cases.commit(prepared)
        for source, target in ((self.zhuji, self.shanghai), (self.shanghai, self.zhuji)):
            self.deliver(source, target)
        return case


@pytest.fixture
def nodes(
    federation: Federation, clock: FixedClock, schemas: SchemaSet, tokens: Tokens, tmp_path: Path
) -> Iterator[Nodes]:
    pair = Nodes(federation, clock, schemas, tokens, tmp_path)
    yield pair
    pair.close()


def holder(cases: CaseService, person: dict[str, str] = APPLICANT) -> Principal:
    digest = holder_digest(cases.node.keys.holder_secret, "111", person["id"])
    return Principal(subject=digest, client_id="citizen-portal", scopes=frozenset(), holder=True)


def fails(
    error: type[GatewayError], status: int, code: str, call: Any, *args: Any, **kw: Any
) -> GatewayError:
    with pytest.raises(error) as caught:
        call(*args, **kw)
    assert (caught.value.status, caught.value.code) == (status, code), caught.value
    return caught.value


def local(y: int, m: int, d: int, h: int = 0, minute: int = 0, s: int = 0) -> float:
    return datetime(y, m, d, h, minute, s, tzinfo=CST).timestamp()


# --- intake --------------------------------------------------------------------------------


def test_a_window_receives_for_another_region(nodes: Nodes) -> None:
    zhuji = nodes.zhuji
    case, created = zhuji.intake(nodes.window, maternity_application(), idempotency_key=None)
    assert created
    assert case.id == "330681-20261124-000001"
    assert (case.state, case.seq) == (CaseState.IN_TRANSIT, 1)
    assert (case.window.node, case.window.department) == ("zhuji", "zhuji-service-center")
    assert (case.owner.node, case.owner.department) == ("shanghai", "shanghai-healthcare-security")
    assert {m.id: m.level.value for m in case.materials} == {
        "application-form": "C",
        "birth-medical-certificate": "B",
        "medical-invoices": "C",
        "resident-id": "B",
    }
    # promised within the matter's 20 working days (Tue 24 November → Tue 22 December)
    assert case.due_at == local(2026, 12, 23)
    # the package is owed to Shanghai; the audit records are already in the log
    (message,) = nodes.messages(zhuji)
    assert (message.target, message.kind, message.case_id) == ("shanghai", "package", case.id)
    assert zhuji.store.pending_audit(every_owner=True) == []
    assert [e.seq for e in zhuji.store.events(case.id)] == [1]
    # the receipt binds the case, the parties and the materials' digests
    receipt = verify_receipt(case.receipt, nodes.keys, now=nodes.clock.now()).payload
    assert receipt["case"] == case.id
    assert receipt["identity_checked_by"] == "zj-window-0421"
    assert receipt["applicant"] == case.applicant.digest
    assert receipt["materials"] == [m.to_json() for m in case.materials]
    assert receipt["limit_days"] == 20


def test_the_receipt_verifies_with_an_independent_jose_library(nodes: Nodes) -> None:
    case, _ = nodes.zhuji.intake(nodes.window, maternity_application(), idempotency_key=None)
    jwks = orjson.dumps(nodes.zhuji.node.jwks()).decode()  # /.well-known/jwks.json
    kid = orjson.loads(b64url_decode(case.receipt.split(".")[0]))["kid"]
    key = jwcrypto_jwk.JWKSet.from_json(jwks).get_key(kid)
    assert key is not None
    verifier = jwcrypto_jws.JWS()
    verifier.deserialize(case.receipt)
    verifier.verify(key, alg=nodes.zhuji.node.keys.signer().alg)
    payload = orjson.loads(verifier.payload)
    assert (payload["case"], payload["iss"]) == (case.id, "zhuji")
    assert verifier.jose_header["typ"] == "case-receipt+jws"


def test_numbers_follow_each_other(nodes: Nodes) -> None:
    ids = [
        nodes.zhuji.intake(nodes.window, maternity_application(), idempotency_key=None)[0].id
        for _ in "ab"
    ]
    assert ids == ["330681-20261124-000001", "330681-20261124-000002"]


def test_an_idempotency_key_answers_the_same_case(nodes: Nodes) -> None:
    zhuji = nodes.zhuji
    first, created = zhuji.intake(nodes.window, maternity_application(), idempotency_key="k-1")
    again, created_again = zhuji.intake(
        nodes.window, maternity_application(), idempotency_key="k-1"
    )
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert len(nodes.messages(zhuji)) == 1
    fails(
        ConflictError,
        409,
        "case.idempotency_conflict",
        zhuji.intake,
        nodes.window,
        maternity_application(delivery="post", address="上海市徐汇区漕溪北路88号"),
        idempotency_key="k-1",
    )
    # keys are per department: another window may use the same one
    datang = authenticated(nodes.tokens, "zhuji-datang-service")
    other, created = zhuji.intake(datang, maternity_application(), idempotency_key="k-1")
    assert created
    assert other.id != first.id


def test_only_a_window_of_this_node_receives(nodes: Nodes) -> None:
    zhuji = nodes.zhuji
    # a bureau with the scope is still not a window
    bureau = department("zhuji-civil-affairs", "zhuji")
    fails(
        Forbidden,
        403,
        "case.not_window",
        zhuji.intake,
        bureau,
        maternity_application(),
        idempotency_key=None,
    )
    # another node's window
    shanghai_window = authenticated(nodes.tokens, "shanghai-service-center")
    fails(
        Forbidden,
        403,
        "case.not_window",
        zhuji.intake,
        shanghai_window,
        maternity_application(),
        idempotency_key=None,
    )
    # a window without case:intake
    no_scope = department("zhuji-service-center", "zhuji", frozenset({"cert:read"}))
    fails(
        Forbidden,
        403,
        "auth.scope",
        zhuji.intake,
        no_scope,
        maternity_application(),
        idempotency_key=None,
    )
    # an applicant at the window channel
    fails(
        Forbidden,
        403,
        "case.not_window",
        zhuji.intake,
        holder(zhuji),
        maternity_application(),
        idempotency_key=None,
    )
    assert zhuji.store.outbox_count() == 0


def test_online_filing_by_the_holder_token(nodes: Nodes) -> None:
    zhuji = nodes.zhuji
    body = maternity_application(channel="online")
    del body["identity_checked_by"]
    for material in body["materials"].values():
        material.pop("checked_original", None)
    case, created = zhuji.intake(holder(zhuji), body, idempotency_key="online-1")
    assert created
    assert case.channel.value == "online"
    assert (case.window.node, case.window.department) == ("zhuji", None)
    assert {m.level.value for m in case.materials} == {"C"}
    receipt = verify_receipt(case.receipt, nodes.keys, now=nodes.clock.now()).payload
    assert receipt["identity_checked_by"] is None
    # the applicant reads it, lists it
    assert zhuji.read(holder(zhuji), case.id)["id"] == case.id
    assert [
        c["id"]
        for c in zhuji.listing(holder(zhuji), box="", state=None, after=None, limit=None)["cases"]
    ] == [case.id]


def test_online_filing_refusals(nodes: Nodes) -> None:
    zhuji = nodes.zhuji
    body = maternity_application(channel="online")
    for material in body["materials"].values():
        material.pop("checked_original", None)
    # a department cannot file online
    fails(
        Forbidden, 403, "case.not_applicant", zhuji.intake, nodes.window, body, idempotency_key=None
    )
    # an applicant files only for themself
    fails(
        Forbidden,
        403,
        "case.not_applicant",
        zhuji.intake,
        holder(zhuji, OTHER_APPLICANT),
        body,
        idempotency_key=None,
    )
    # online, nobody vouches for an original
    checked = maternity_application(channel="online")
    error = fails(
        SchemaViolation,
        422,
        "input.schema",
        zhuji.intake,
        holder(zhuji),
        checked,
        idempotency_key=None,
    )
    assert error.pointers == ("/materials/birth-medical-certificate",)
    # a matter that is not 全程网办
    marriage = {**marriage_application(), "channel": "online", "owner": {"node": "zhuji"}}
    fails(
        Unprocessable,
        422,
        "case.not_online",
        zhuji.intake,
        holder(zhuji),
        marriage,
        idempotency_key=None,
    )


def test_a_matter_needing_the_applicant_in_person_is_not_filed_online(nodes: Nodes) -> None:
    zhuji = nodes.zhuji
    matter = replace(MatterSet().get("maternity-benefit"), on_site="现场核验")
    zhuji.node.matters = MatterSet(tuple(matter if m.id == matter.id else m for m in MATTERS))
    body = maternity_application(channel="online")
    for material in body["materials"].values():
        material.pop("checked_original", None)
    fails(
        Unprocessable,
        422,
        "case.on_site_required",
        zhuji.intake,
        holder(zhuji),
        body,
        idempotency_key=None,
    )


def marriage_application(owner: str = "linquan") -> dict[str, Any]:
    resident = build_certificate_id(RESIDENT_ID_TYPE, "113306810025211840", "R1")
    household = build_certificate_id(HOUSEHOLD_TYPE, "113306810025211840", "H1")
    return {
        "matter": "marriage-registration",
        "owner": {"node": owner},
        "channel": "window",
        "applicant": dict(OTHER_APPLICANT),
        "identity_checked_by": "zj-window-0421",
        "delivery": "window",
        "materials": {
            "resident-id": {"certificate_id": str(resident)},
            "household-register": {"certificate_id": str(household)},
            "declaration": {
                "content": b64url_encode(b"declaration"),
                "media_type": "application/pdf",
            },
        },
    }


def test_who_owns_the_case(nodes: Nodes) -> None:
    zhuji = nodes.zhuji
    for owner in ({"node": "atlantis"}, {"node": "idp"}, {"node": "linquan"}):
        # no such region node; the IdP; a node without a healthcare-security bureau
        fails(
            Unprocessable,
            422,
            "case.no_owner",
            zhuji.intake,
            nodes.window,
            maternity_application(owner=owner),
            idempotency_key=None,
        )
    wrong_dept = {"node": "shanghai", "department": "shanghai-civil-affairs"}
    fails(
        Unprocessable,
        422,
        "case.no_owner",
        zhuji.intake,
        nodes.window,
        maternity_application(owner=wrong_dept),
        idempotency_key=None,
    )
    named = {"node": "shanghai", "department": "shanghai-healthcare-security"}
    case, _ = zhuji.intake(nodes.window, maternity_application(owner=named), idempotency_key=None)
    assert case.owner.department == "shanghai-healthcare-security"


def test_only_delegable_matters_are_received_for_another_region(nodes: Nodes) -> None:
    zhuji = nodes.zhuji
    # marriage has no 代收代办 areas: not for Shanghai...
    fails(
        Unprocessable,
        422,
        "case.not_delegable",
        zhuji.intake,
        nodes.window,
        marriage_application("shanghai"),
        idempotency_key=None,
    )
    # ...but the Zhuji–Linquan agreement names it
    case, _ = zhuji.intake(nodes.window, marriage_application("linquan"), idempotency_key=None)
    assert (case.owner.node, case.owner.department) == ("linquan", "linquan-civil-affairs")
    assert {m.level.value for m in case.materials} == {"A", "C"}


def test_a_certificate_material_of_the_wrong_type(nodes: Nodes) -> None:
    body = marriage_application()
    body["materials"]["resident-id"] = body["materials"]["household-register"]
    error = fails(
        SchemaViolation,
        422,
        "case.wrong_certificate",
        nodes.zhuji.intake,
        nodes.window,
        body,
        idempotency_key=None,
    )
    assert error.pointers == ("/materials/resident-id",)


def test_intake_refusals(nodes: Nodes) -> None:
    zhuji = nodes.zhuji
    # marriage results are handed over at the window only
    body = marriage_application()
    body["delivery"] = "post"
    fails(
        Unprocessable,
        422,
        "case.bad_delivery",
        zhuji.intake,
        nodes.window,
        body,
        idempotency_key=None,
    )
    # a wrong check character in the applicant's id
    wrong = dict(APPLICANT, id="310104199503121231")
    fails(
        InputError,
        400,
        "input.identifier.check",
        zhuji.intake,
        nodes.window,
        maternity_application(applicant=wrong),
        idempotency_key=None,
    )
    # a window names who checked the applicant's identity
    body = maternity_application()
    del body["identity_checked_by"]
    error = fails(
        SchemaViolation, 422, "input.schema", zhuji.intake, nodes.window, body, idempotency_key=None
    )
    assert error.pointers == ("/identity_checked_by",)
    # an unknown matter
    fails(
        NotFoundError,
        404,
        "matter.unknown",
        zhuji.intake,
        nodes.window,
        maternity_application(matter="moon-landing"),
        idempotency_key=None,
    )
    assert zhuji.store.outbox_count() == 0


def test_every_missing_material_is_named_at_once(nodes: Nodes) -> None:
    body = maternity_application()
    for name in ("application-form", "medical-invoices", "resident-id"):
        del body["materials"][name]
    error = fails(
        SchemaViolation,
        422,
        "case.materials_missing",
        nodes.zhuji.intake,
        nodes.window,
        body,
        idempotency_key=None,
    )
    assert error.pointers == (
        "/materials/application-form",
        "/materials/resident-id",
        "/materials/medical-invoices",
    )


# --- 县域通办: the owner on the same node -----------------------------------------------------


def test_a_local_case_runs_with_nothing_sent(nodes: Nodes) -> None:
    zhuji = nodes.zhuji
    datang = authenticated(nodes.tokens, "zhuji-datang-service")
    bureau = department("zhuji-human-resources", "zhuji")
    case, _ = zhuji.intake(datang, pension(), idempotency_key=None)
    assert case.state is CaseState.PENDING_ACCEPTANCE
    assert case.arrived_at == nodes.clock.now()
    assert (case.owner.node, case.owner.department) == ("zhuji", "zhuji-human-resources")
    assert [
        orjson.loads(b64url_decode(e.token.split(".")[1]))["action"]
        for e in zhuji.store.events(case.id)
    ] == ["arrive"]
    assert zhuji.store.outbox_count() == 0
    # the bureau asks for a correction, the window supplements, the bureau accepts
    items = [{"material": "application-form", "reason": "未签名"}]
    prepared = zhuji.prepare(bureau, case.id, {"action": "request_correction", "items": items})
    assert zhuji.needs_owner(prepared) is None
    case = zhuji.commit(prepared)
    assert case.state is CaseState.AWAITING_CORRECTION
    assert [dict(c) for c in case.corrections] == items
    supplement = {
        "action": "supplement",
        "materials": {
            "application-form": {
                "content": b64url_encode(b"signed"),
                "media_type": "application/pdf",
            }
        },
    }
    case = zhuji.commit(zhuji.prepare(datang, case.id, supplement))
    assert case.state is CaseState.PENDING_ACCEPTANCE
    assert case.corrections == ()
    form = next(m for m in case.materials if m.id == "application-form")
    assert zhuji.store.blobs([form.sha256 or ""]) == {form.sha256: b"signed"}
    case = zhuji.commit(zhuji.prepare(bureau, case.id, {"action": "accept"}))
    assert (case.state, case.seq) == (CaseState.ACCEPTED, 4)
    assert zhuji.store.outbox_count() == 0
    # the window's own roles: it may not accept, it may withdraw
    assert zhuji.read(datang, case.id)["allowed_actions"] == ["withdraw"]
    assert zhuji.read(bureau, case.id)["allowed_actions"] == ["suspend", "approve", "refuse"]


# --- between two nodes ---------------------------------------------------------------------


def test_a_package_arrives_once_and_the_window_learns_it(nodes: Nodes) -> None:
    case, _ = nodes.zhuji.intake(nodes.window, maternity_application(), idempotency_key=None)
    (package,) = nodes.messages(nodes.zhuji)
    body = orjson.loads(package.body)
    assert nodes.shanghai.receive("zhuji", body, nodes.keys) == {"case": case.id, "arrived": True}
    assert nodes.shanghai.receive("zhuji", body, nodes.keys) == {"case": case.id, "arrived": False}
    there = nodes.shanghai.store.get(case.id)
    assert (there.state, there.seq) == (CaseState.PENDING_ACCEPTANCE, 2)
    assert there.receipt == case.receipt
    blobs = nodes.shanghai.store.blobs(m.sha256 for m in case.materials if m.sha256)
    assert set(blobs.values()) == {FORM, BIRTH, INVOICES, b"ID card, both sides"}
    # the arrival is owed to the window, once
    (arrival,) = nodes.messages(nodes.shanghai)
    assert (arrival.target, arrival.kind) == ("zhuji", "event")
    answer = nodes.zhuji.receive("shanghai", orjson.loads(arrival.body), nodes.keys)
    assert answer == {"case": case.id, "seq": 2, "applied": True}
    # an event delivered twice is applied once
    again = nodes.zhuji.receive("shanghai", orjson.loads(arrival.body), nodes.keys)
    assert again == {"case": case.id, "seq": 2, "applied": False}
    here = nodes.zhuji.store.get(case.id)
    assert (here.state, here.seq) == (CaseState.PENDING_ACCEPTANCE, 2)
    assert [e.token for e in nodes.zhuji.store.events(case.id)] == [
        e.token for e in nodes.shanghai.store.events(case.id)
    ]


def package_of(nodes: Nodes) -> dict[str, Any]:
    nodes.zhuji.intake(nodes.window, maternity_application(), idempotency_key=None)
    package = nodes.messages(nodes.zhuji)[-1]
    body: dict[str, Any] = orjson.loads(package.body)
    return body


def test_a_package_whose_material_bytes_were_altered_is_refused(nodes: Nodes) -> None:
    body = package_of(nodes)
    sha = next(iter(body["blobs"]))
    body["blobs"][sha] = b64url_encode(b"%PDF-1.7 something else")
    fails(
        Unprocessable,
        422,
        "case.package_mismatch",
        nodes.shanghai.receive,
        "zhuji",
        body,
        nodes.keys,
    )
    assert nodes.shanghai.store.outbox_count() == 0


def test_a_package_that_does_not_match_its_receipt_is_refused(nodes: Nodes) -> None:
    # the bytes replaced along with the digests the record names
    body = package_of(nodes)
    material = body["case"]["materials"][0]
    old = material["sha256"]
    forged = b"a forged application form"
    material["sha256"] = hashlib.sha256(forged).hexdigest()
    body["blobs"].pop(old)
    body["blobs"][material["sha256"]] = b64url_encode(forged)
    fails(
        Unprocessable,
        422,
        "case.package_mismatch",
        nodes.shanghai.receive,
        "zhuji",
        body,
        nodes.keys,
    )
    # a material left out
    body = package_of(nodes)
    body["blobs"].pop(next(iter(body["blobs"])))
    fails(
        Unprocessable,
        422,
        "case.package_mismatch",
        nodes.shanghai.receive,
        "zhuji",
        body,
        nodes.keys,
    )
    # a level raised
    body = package_of(nodes)
    body["case"]["materials"][0]["level"] = "B"
    fails(
        Unprocessable,
        422,
        "case.package_mismatch",
        nodes.shanghai.receive,
        "zhuji",
        body,
        nodes.keys,
    )


def test_a_package_for_another_owner_or_malformed(nodes: Nodes) -> None:
    body = package_of(nodes)
    fails(Forbidden, 403, "case.wrong_owner", nodes.zhuji.receive, "zhuji", body, nodes.keys)
    fails(
        InputError,
        400,
        "case.bad_message",
        nodes.shanghai.receive,
        "zhuji",
        {"kind": "package"},
        nodes.keys,
    )
    fails(
        InputError,
        400,
        "case.bad_message",
        nodes.shanghai.receive,
        "zhuji",
        {"kind": "gift"},
        nodes.keys,
    )


def test_an_event_from_the_wrong_node_is_refused(
    nodes: Nodes, federation: Federation, schemas: SchemaSet, tokens: Tokens
) -> None:
    case = nodes.arrived()
    linquan = open_node_service(
        federation,
        "linquan",
        clock=nodes.clock,
        schemas=schemas,
        public_url="http://linquan.test",
        idp_keys=tokens.resolver,
    )
    try:
        keys = StaticKeyResolver({**nodes.keys._keys, **linquan.keys.verification_keys()})
        here = nodes.zhuji.store.get(case.id)
        forged = seal_event(
            linquan.keys.signer(),
            CaseEvent(
                id="ab" * 16,
                case=case.id,
                seq=here.seq + 1,
                action=Action.ACCEPT,
                source=CaseState.PENDING_ACCEPTANCE,
                target=CaseState.ACCEPTED,
                node="linquan",
                department="linquan-civil-affairs",
                actor="linquan-civil-affairs",
                role=Role.OWNER,
                at=nodes.clock.now(),
                reason=None,
                details={},
            ),
        )
        message = {"kind": "event", "case": case.id, "event": forged.token, "blobs": {}}
        fails(Forbidden, 403, "case.wrong_owner", nodes.zhuji.receive, "linquan", message, keys)
    finally:
        linquan.close()
    assert nodes.zhuji.store.get(case.id).state is CaseState.PENDING_ACCEPTANCE


def test_an_owner_s_event_sealed_by_the_window_s_node_is_refused(nodes: Nodes) -> None:
    case = nodes.arrived()
    # Zhuji seals an "owner" acceptance and sends it to Shanghai
    forged = nodes.zhuji._event(
        nodes.zhuji.store.get(case.id),
        Action.ACCEPT,
        Role.OWNER,
        "zhuji-service-center",
        nodes.clock.now(),
    )
    message = {"kind": "event", "case": case.id, "event": forged.token, "blobs": {}}
    fails(Forbidden, 403, "case.wrong_owner", nodes.shanghai.receive, "zhuji", message, nodes.keys)


def test_events_out_of_order_and_diverged(nodes: Nodes) -> None:
    case = nodes.arrived()
    shanghai = nodes.shanghai
    items = [{"material": "medical-invoices", "reason": "不清晰"}]
    shanghai.commit(
        shanghai.prepare(nodes.owner, case.id, {"action": "request_correction", "items": items})
    )
    (first,) = nodes.messages(shanghai)
    shanghai.store.sent(first.seq)
    # forge a later event from Shanghai at seq 4 (sealed properly by Shanghai)
    later = shanghai._event(
        shanghai.store.get(case.id).evolve(state=CaseState.PENDING_ACCEPTANCE),
        Action.NOT_ACCEPT,
        Role.OWNER,
        "shanghai-healthcare-security",
        nodes.clock.now(),
    )
    # ...the window's copy is at seq 2: an event numbered 4 is out of order
    message = {"kind": "event", "case": case.id, "event": later.token, "blobs": {}}
    fails(
        ConflictError,
        409,
        "case.out_of_order",
        nodes.zhuji.receive,
        "shanghai",
        message,
        nodes.keys,
    )
    # the real third event applies
    assert nodes.zhuji.receive("shanghai", orjson.loads(first.body), nodes.keys)["applied"] is True
    # another event numbered 3 (not the one applied) is a divergence
    other = shanghai._event(
        nodes.zhuji.store.get(case.id).evolve(seq=2, state=CaseState.PENDING_ACCEPTANCE),
        Action.ACCEPT,
        Role.OWNER,
        "shanghai-healthcare-security",
        nodes.clock.now(),
    )
    message = {"kind": "event", "case": case.id, "event": other.token, "blobs": {}}
    fails(ConflictError, 409, "case.diverged", nodes.zhuji.receive, "shanghai", message, nodes.keys)
    assert nodes.zhuji.store.get(case.id).state is CaseState.AWAITING_CORRECTION


def test_the_window_supplements_through_the_owner(nodes: Nodes) -> None:
    case = nodes.arrived()
    items = [{"material": "medical-invoices", "reason": "发票不清晰"}]
    nodes.act(nodes.shanghai, nodes.owner, case.id, action="request_correction", items=items)
    assert nodes.zhuji.store.get(case.id).state is CaseState.AWAITING_CORRECTION
    rescanned = INVOICES + b" rescanned"
    body = {
        "action": "supplement",
        "materials": {
            "medical-invoices": {
                "content": b64url_encode(rescanned),
                "media_type": "application/pdf",
            }
        },
    }
    prepared = nodes.zhuji.prepare(nodes.window, case.id, body)
    assert nodes.zhuji.needs_owner(prepared) == "shanghai"
    # bytes altered on the way are refused by the owner
    tampered = orjson.loads(prepared.message())
    sha = next(iter(tampered["blobs"]))
    tampered["blobs"][sha] = b64url_encode(b"other")
    fails(
        Unprocessable,
        422,
        "case.package_mismatch",
        nodes.shanghai.receive,
        "zhuji",
        tampered,
        nodes.keys,
    )
    answer = nodes.shanghai.receive("zhuji", orjson.loads(prepared.message()), nodes.keys)
    assert answer["applied"] is True
    here = nodes.zhuji.commit(prepared)
    there = nodes.shanghai.store.get(case.id)
    assert here.state is there.state is CaseState.PENDING_ACCEPTANCE
    assert here.seq == there.seq == 4
    assert nodes.shanghai.store.blobs([sha]) == {sha: rescanned}
    # the owner echoes the window's event back (for a window that crashed before writing
    # it); the window, which has it, applies it once
    (echo,) = nodes.messages(nodes.shanghai)
    assert (echo.target, echo.kind) == ("zhuji", "event")
    answer = nodes.zhuji.receive("shanghai", orjson.loads(echo.body), nodes.keys)
    assert answer["applied"] is False
    assert nodes.zhuji.store.get(case.id).seq == 4


def test_a_whole_case_to_its_result(nodes: Nodes) -> None:
    case = nodes.arrived()
    nodes.act(nodes.shanghai, nodes.owner, case.id, action="accept")
    result = {
        "valid_from": "2026-12-04",
        "valid_until": None,
        "data": {
            "decision_date": "2026-12-04",
            "medical_expenses": 5230.0,
            "allowance_days": 128,
            "allowance_amount": 42150.4,
        },
    }
    approved = nodes.act(nodes.shanghai, nodes.owner, case.id, action="approve", result=result)
    assert approved.outcome == "approved"
    assert approved.result is not None
    fails(
        SchemaViolation,
        422,
        "input.schema",
        nodes.shanghai.prepare,
        nodes.owner,
        case.id,
        {"action": "deliver", "delivery": {"method": "post"}},
    )
    nodes.act(
        nodes.shanghai,
        nodes.owner,
        case.id,
        action="deliver",
        delivery={"method": "post", "tracking": "SF1"},
    )
    here = nodes.zhuji.store.get(case.id)
    assert (here.state, here.result, here.tracking) == (CaseState.DELIVERED, approved.result, "SF1")
    nodes.act(nodes.shanghai, nodes.owner, case.id, action="complete")
    actions = [e["action"] for e in nodes.zhuji.events(nodes.window, case.id)]
    assert actions == ["forward", "arrive", "accept", "approve", "deliver", "complete"]
    for stored in nodes.zhuji.store.events(case.id):
        verify_event(stored.token, nodes.keys, now=nodes.clock.now())


def test_action_refusals(nodes: Nodes) -> None:
    case = nodes.arrived()
    shanghai, owner = nodes.shanghai, nodes.owner

    def prepare(who: Principal, **body: Any) -> Any:
        return shanghai.prepare(who, case.id, body)

    # only the owner accepts (the window is no role at Shanghai: the case does not exist)
    fails(
        Forbidden,
        403,
        "case.wrong_owner",
        nodes.zhuji.prepare,
        nodes.window,
        case.id,
        {"action": "accept"},
    )
    fails(NotFoundError, 404, "case.not_found", prepare, nodes.window, action="accept")
    error = fails(BadTransition, 409, "case.bad_transition", prepare, owner, action="approve")
    assert isinstance(error, BadTransition)
    assert error.allowed == ("accept", "not_accept", "request_correction")
    error = fails(SchemaViolation, 422, "input.schema", prepare, owner, action="not_accept")
    assert error.pointers == ("/reason",)
    fails(
        InputError,
        400,
        "case.reason_too_long",
        prepare,
        owner,
        action="not_accept",
        reason="x" * 501,
    )
    error = fails(
        SchemaViolation, 422, "case.no_corrections", prepare, owner, action="request_correction"
    )
    assert error.pointers == ("/items",)
    fails(
        SchemaViolation, 422, "input.schema", prepare, owner, action="request_correction", items=[]
    )
    too_many = [{"reason": "r"}] * 21
    fails(
        InputError,
        400,
        "case.too_many_corrections",
        prepare,
        owner,
        action="request_correction",
        items=too_many,
    )
    unknown = [
        {"material": "horoscope", "reason": "r"},
        {"reason": "r"},
        {"material": "selfie", "reason": "r"},
    ]
    error = fails(
        SchemaViolation,
        422,
        "case.unknown_material",
        prepare,
        owner,
        action="request_correction",
        items=unknown,
    )
    assert error.pointers == ("/items/0/material", "/items/2/material")
    nodes.act(shanghai, owner, case.id, action="accept")
    nodes.act(shanghai, owner, case.id, action="refuse", reason="不符合条件")
    fails(BadTransition, 409, "case.bad_transition", prepare, owner, action="suspend", reason="r")


def test_the_applicant_withdraws_through_the_owner(nodes: Nodes) -> None:
    case = nodes.arrived()
    applicant = holder(nodes.zhuji)
    assert nodes.zhuji.read(applicant, case.id)["allowed_actions"] == ["withdraw"]
    withdrawn = nodes.act(nodes.zhuji, applicant, case.id, action="withdraw")
    assert (withdrawn.state, withdrawn.outcome) == (CaseState.CLOSED, "withdrawn")
    there = nodes.shanghai.store.get(case.id)
    assert (there.state, there.outcome, there.seq) == (CaseState.CLOSED, "withdrawn", 3)
    event = nodes.shanghai.events(nodes.owner, case.id)[-1]
    assert (event["role"], event["actor"], event["department"]) == ("applicant", "applicant", None)


# --- the clock -----------------------------------------------------------------------------


def test_deemed_acceptance_counts_holidays_and_make_up_workdays(nodes: Nodes) -> None:
    # Thursday 26 and Friday 27 November are holidays, Saturday 28 is worked (调休)
    calendar = Calendar(
        holidays=frozenset({date(2026, 11, 26), date(2026, 11, 27)}),
        workdays=frozenset({date(2026, 11, 28)}),
        acceptance_days=5,
    )
    nodes.shanghai.calendar = WorkingCalendar(calendar)
    case = nodes.arrived()  # arrived Tuesday 24 November, 16:00 local
    # Wed 25 (1), Sat 28 (2), Mon 30 (3), Tue 1 (4), Wed 2 December (5): deemed at its end
    nodes.clock.set(local(2026, 12, 2, 23, 59, 59))
    assert nodes.shanghai.deem_accepted() == []
    nodes.clock.set(local(2026, 12, 3))
    assert nodes.shanghai.deem_accepted() == [case.id]
    assert nodes.shanghai.deem_accepted() == []  # once
    there = nodes.shanghai.store.get(case.id)
    assert there.state is CaseState.ACCEPTED
    event = nodes.shanghai.events(nodes.owner, case.id)[-1]
    assert (event["action"], event["role"], event["reason"]) == ("accept", "system", "deemed")
    assert event["details"] == {"deemed": True, "acceptance_days": 5}
    assert there.outcome == "deemed_accepted"
    # the window learns it, and the applicant sees why the case is accepted
    nodes.deliver(nodes.shanghai, nodes.zhuji)
    here = nodes.zhuji.store.get(case.id)
    assert (here.state, here.outcome) == (CaseState.ACCEPTED, "deemed_accepted")
    view = nodes.zhuji.read(holder(nodes.zhuji), case.id)
    assert (view["state"], view["outcome"]) == ("accepted", "deemed_accepted")


def test_an_answered_case_is_not_deemed(nodes: Nodes) -> None:
    case = nodes.arrived()
    items = [{"material": "medical-invoices", "reason": "不清晰"}]
    nodes.act(nodes.shanghai, nodes.owner, case.id, action="request_correction", items=items)
    nodes.clock.set(local(2027, 1, 30))
    assert nodes.shanghai.deem_accepted() == []
    # the window's node deems nothing: it does not own the case
    assert nodes.zhuji.deem_accepted() == []


def test_suspension_moves_the_due_date_by_the_working_days_suspended(nodes: Nodes) -> None:
    case = nodes.arrived()
    accepted = nodes.act(nodes.shanghai, nodes.owner, case.id, action="accept")
    assert accepted.outcome is None  # accepted by the owner: nothing deemed
    due = nodes.shanghai.store.get(case.id).due_at
    assert due == local(2026, 12, 23)  # end of Tuesday 22 December
    nodes.clock.set(local(2026, 11, 27, 10))  # Friday
    suspended = nodes.act(nodes.shanghai, nodes.owner, case.id, action="suspend", reason="专家评审")
    assert suspended.state is CaseState.SUSPENDED
    assert not suspended.overdue(due + 1)
    nodes.clock.set(local(2026, 12, 3, 15))  # Thursday: Mon 30, Tue 1, Wed 2, Thu 3 suspended
    resumed = nodes.act(nodes.shanghai, nodes.owner, case.id, action="resume")
    assert resumed.state is CaseState.ACCEPTED
    assert resumed.suspended_at is None
    assert resumed.due_at == local(2026, 12, 29)  # four working days later: Mon 28 December
    # the window's copy agrees
    assert nodes.zhuji.store.get(case.id).due_at == resumed.due_at


# --- reading -------------------------------------------------------------------------------


def test_strangers_get_404(nodes: Nodes) -> None:
    case = nodes.arrived()
    strangers = [
        authenticated(nodes.tokens, "zhuji-civil-affairs"),
        authenticated(nodes.tokens, "zhuji-datang-service"),  # another window of the same node
        holder(nodes.zhuji, OTHER_APPLICANT),
        department("shanghai-healthcare-security", "zhuji"),  # a name, not the node's
    ]
    for stranger in strangers:
        fails(NotFoundError, 404, "case.not_found", nodes.zhuji.read, stranger, case.id)
        fails(NotFoundError, 404, "case.not_found", nodes.zhuji.events, stranger, case.id)
    # and a case that does not exist looks the same
    fails(
        NotFoundError,
        404,
        "case.not_found",
        nodes.zhuji.read,
        nodes.window,
        "330681-20261124-000099",
    )
    fails(InputError, 400, "case.bad_number", nodes.zhuji.read, nodes.window, "../etc")
    # the window, the owner and the applicant see it
    assert nodes.zhuji.read(nodes.window, case.id)["state"] == "pending_acceptance"
    assert nodes.shanghai.read(nodes.owner, case.id)["allowed_actions"] == [
        "accept",
        "not_accept",
        "request_correction",
    ]
    view = nodes.shanghai.read(holder(nodes.shanghai), case.id)
    assert view["allowed_actions"] == ["withdraw"]
    assert APPLICANT["id"] not in orjson.dumps(view).decode()


def test_listing_pages_with_next(nodes: Nodes) -> None:
    ids = [
        nodes.zhuji.intake(nodes.window, maternity_application(), idempotency_key=None)[0].id
        for _ in range(3)
    ]

    def page(after: str | None) -> dict[str, Any]:
        return nodes.zhuji.listing(nodes.window, box="outbox", state=None, after=after, limit=2)

    first = page(None)
    assert [c["id"] for c in first["cases"]] == ids[:2]
    assert first["next"] == ids[1]
    assert "receipt" not in first["cases"][0]
    assert "materials" not in first["cases"][0]
    second = page(first["next"])
    assert [c["id"] for c in second["cases"]] == ids[2:]
    assert second["next"] is None
    in_transit = nodes.zhuji.listing(
        nodes.window, box="outbox", state="in_transit", after=None, limit=None
    )
    assert len(in_transit["cases"]) == 3
    none = nodes.zhuji.listing(nodes.window, box="outbox", state="accepted", after=None, limit=None)
    assert none == {"cases": [], "next": None}
    # the owner's inbox, once they arrived
    nodes.deliver(nodes.zhuji, nodes.shanghai)
    inbox = nodes.shanghai.listing(nodes.owner, box="inbox", state=None, after=None, limit=None)
    assert [c["id"] for c in inbox["cases"]] == ids
    # the applicant's own cases
    mine = nodes.zhuji.listing(holder(nodes.zhuji), box="", state=None, after=None, limit=2)
    assert [c["id"] for c in mine["cases"]] == ids[:2]
    assert mine["next"] == ids[1]
    # the applicant's filter by state is honoured too
    nodes.deliver(nodes.shanghai, nodes.zhuji)  # the arrivals: pending acceptance
    nodes.act(nodes.shanghai, nodes.owner, ids[1], action="accept")
    accepted = nodes.zhuji.listing(
        holder(nodes.zhuji), box="", state="accepted", after=None, limit=None
    )
    assert [c["id"] for c in accepted["cases"]] == [ids[1]]


def test_listing_refusals(nodes: Nodes) -> None:
    zhuji, window = nodes.zhuji, nodes.window
    fails(
        InputError,
        400,
        "input.query",
        zhuji.listing,
        window,
        box="outbox",
        state=None,
        after=None,
        limit=0,
    )
    fails(
        InputError,
        400,
        "input.query",
        zhuji.listing,
        window,
        box="outbox",
        state="lost",
        after=None,
        limit=None,
    )
    fails(
        InputError,
        400,
        "input.query",
        zhuji.listing,
        window,
        box="spam",
        state=None,
        after=None,
        limit=None,
    )
    fails(
        InputError,
        400,
        "case.bad_number",
        zhuji.listing,
        window,
        box="outbox",
        state=None,
        after="x",
        limit=None,
    )
    # a window has no inbox (no case:decide)
    fails(
        Forbidden,
        403,
        "auth.scope",
        zhuji.listing,
        window,
        box="inbox",
        state=None,
        after=None,
        limit=None,
    )
    # another node's department lists nothing here
    fails(
        Forbidden,
        403,
        "auth.department",
        zhuji.listing,
        nodes.owner,
        box="inbox",
        state=None,
        after=None,
        limit=None,
    )


# --- notifications -------------------------------------------------------------------------


def test_subscribers_are_owed_their_cases_transitions(nodes: Nodes) -> None:
    shanghai = nodes.shanghai
    subscription = shanghai.subscribe(nodes.owner, "https://bureau.example/hooks")
    assert shanghai.subscribe(nodes.owner, "https://bureau.example/hooks") == subscription
    assert shanghai.subscriptions_of(nodes.owner) == [subscription]
    case = nodes.arrived()
    # the window's forward (replayed from the package) and the arrival
    forward, delivery = shanghai.store.due_deliveries(nodes.clock.now())
    assert orjson.loads(forward.body)["type"] == "cn.gov.tongban.case.forward"
    body = orjson.loads(delivery.body)
    assert body["specversion"] == "1.0"
    assert body["type"] == "cn.gov.tongban.case.arrive"
    assert body["subject"] == case.id
    assert body["source"] == f"http://shanghai.test/v1/cases/{case.id}"
    assert body["data"]["seq"] == 2
    assert body["id"] == delivery.event_id
    # nobody at Zhuji subscribed
    assert nodes.zhuji.store.delivery_count() == 0
    fails(InputError, 400, "webhook.bad_url", shanghai.subscribe, nodes.owner, "ftp://x")
    fails(
        Forbidden,
        403,
        "auth.scope",
        shanghai.subscribe,
        department("shanghai-ops", "shanghai", frozenset()),
        "https://x",
    )
    fails(Forbidden, 403, "auth.department", shanghai.subscribe, nodes.window, "https://x")
    fails(NotFoundError, 404, "webhook.not_found", shanghai.unsubscribe, nodes.owner, "nope")
    shanghai.unsubscribe(nodes.owner, subscription.id)
    assert shanghai.subscriptions_of(nodes.owner) == []


@pytest.mark.parametrize(
    "change",
    [
        {"matter": "housing-fund-transfer"},
        {"channel": "online"},
        {"delivery": "post"},
        {"due_at": local(2027, 1, 30)},
        {"received_at": local(2026, 11, 1)},
    ],
)
def test_a_package_must_be_what_its_receipt_seals(nodes: Nodes, change: dict[str, Any]) -> None:
    body = package_of(nodes)
    body["case"].update(change)
    fails(
        Unprocessable,
        422,
        "case.package_mismatch",
        nodes.shanghai.receive,
        "zhuji",
        body,
        nodes.keys,
    )


def test_a_package_s_record_does_not_bring_an_outcome(nodes: Nodes) -> None:
    body = package_of(nodes)
    body["case"].update(
        outcome="approved",
        result="a certificate never issued",
        tracking="SF0",
        corrections=[{"reason": "x"}],
        suspended_at=nodes.clock.now(),
    )
    nodes.shanghai.receive("zhuji", body, nodes.keys)
    there = nodes.shanghai.store.get(body["case"]["id"])
    assert there.state is CaseState.PENDING_ACCEPTANCE
    assert (there.outcome, there.result, there.tracking) == (None, None, None)
    assert (there.corrections, there.suspended_at) == ((), None)


def test_a_package_too_large_to_travel_in_its_envelope_is_refused_at_intake(
    nodes: Nodes,
) -> None:
    zhuji = nodes.zhuji
    zhuji.intake(nodes.window, maternity_application(), idempotency_key=None)
    size = len(nodes.messages(zhuji)[-1].body)
    # the package alone would fit; wrapped in its route for the hops it would not, and every
    # hop would answer 413 to it forever (the owner's queue stuck behind it)
    zhuji.limits = replace(zhuji.limits, max_body_bytes=size + 20)
    route = tuple(NodeId(n) for n in ("zhuji", "shaoxing", "zhejiang", "national", "shanghai"))
    assert len(envelope(route, nodes.messages(zhuji)[-1].body)) > size + 20
    fails(
        TooLarge,
        413,
        "case.too_large",
        zhuji.intake,
        nodes.window,
        maternity_application(),
        idempotency_key=None,
    )
    assert len(nodes.messages(zhuji)) == 1  # nothing written
    # with room for any route, it is received
    zhuji.limits = replace(zhuji.limits, max_body_bytes=size + ENVELOPE_RESERVE)
    zhuji.intake(nodes.window, maternity_application(), idempotency_key=None)


def test_a_package_naming_another_applicant_than_its_receipt_is_refused(nodes: Nodes) -> None:
    body = package_of(nodes)
    body["case"]["applicant"]["id"] = "330681199001010015"  # another person, same digest
    body["case"]["applicant"]["name"] = "赵立新"
    fails(
        Unprocessable,
        422,
        "case.package_mismatch",
        nodes.shanghai.receive,
        "zhuji",
        body,
        nodes.keys,
    )


def test_delivery_by_post_needs_the_address_which_the_receipt_seals(nodes: Nodes) -> None:
    refused = fails(
        SchemaViolation,
        422,
        "input.schema",
        nodes.zhuji.intake,
        nodes.window,
        maternity_application(delivery="post"),
        idempotency_key=None,
    )
    assert refused.pointers == ("/address",)
    address = "上海市徐汇区漕溪北路88号 200030"
    case, _ = nodes.zhuji.intake(
        nodes.window, maternity_application(delivery="post", address=address), idempotency_key=None
    )
    assert case.address == address
    claims = orjson.loads(b64url_decode(case.receipt.split(".")[1]))
    assert claims["address"] == address
    nodes.deliver(nodes.zhuji, nodes.shanghai)
    assert nodes.shanghai.store.get(case.id).address == address
    # the address changed on the way no longer matches the receipt
    body = package_of(nodes)
    body["case"]["address"] = "somewhere else"
    fails(
        Unprocessable,
        422,
        "case.package_mismatch",
        nodes.shanghai.receive,
        "zhuji",
        body,
        nodes.keys,
    )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.test/hook",
        "https://user:secret@example.test/hook",
        "https://example.test/hook#fragment",
        "https://example.test/a b",
        "https://" + "a" * 600,
    ],
)
def test_a_webhook_url_is_plain_http_or_https(nodes: Nodes, url: str) -> None:
    fails(InputError, 400, "webhook.bad_url", nodes.zhuji.subscribe, nodes.window, url)
