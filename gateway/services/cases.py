"""The service layer of cases (办件) at one node: intake, actions, arrival, reading.

Handlers and the peer exchange call this; this calls the cases domain (lifecycle, materials,
receipts, events), the node's keys, matters and issuance, and the case store. Synchronous:
the HTTP layer runs it on the node's writer thread.

Who writes a case's events: **the owning node**, once the case has arrived there. An action
taken at the owning node is appended there and sent to the window's node through the
store's outbox (durable, retried, applied once by event id and number). An action taken at
the window's node (a supplement, a withdrawal) is sealed there, pushed to the owning node at
once (:mod:`gateway.federation.cases`), and written at the window when the owner has taken
it (the owner also echoes it back through its outbox, for a window that crashed before
writing it): so the two copies always go through the same sequence of events. A case whose owner is
a department of the same node (全城办 / 县域通办) runs the same lifecycle with nothing sent.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.audit.records import AuditItem, AuditKind, check_items, decode_item, encode_item
from gateway.cases.calendar import WorkingCalendar
from gateway.cases.case import Applicant, Case, Channel, Party, case_number, check_case_number
from gateway.cases.documents import (
    CaseEvent,
    seal_event,
    seal_receipt,
    stored_claims,
    verify_event,
    verify_receipt,
)
from gateway.cases.lifecycle import TRANSITIONS, Action, CaseState, Role, allowed, transition
from gateway.cases.materials import Level, Material, receive_materials, sha256_hex
from gateway.certificates.documents import check_party
from gateway.certificates.holders import holder_digest
from gateway.certificates.matters import Delivery, Matter
from gateway.clock import to_rfc3339
from gateway.config import Department
from gateway.crypto.jwks import KeyResolver
from gateway.errors import (
    ConflictError,
    Forbidden,
    InputError,
    NotFoundError,
    SchemaViolation,
    TooLarge,
    Unprocessable,
)
from gateway.identifiers import parse_certificate_id
from gateway.ids import CertificateId
from gateway.services.node import NodeService
from gateway.sso.auth import Principal, Scope
from gateway.storage.cases import CaseWrite, SqlCaseStore, StoredEvent, Subscription

PACKAGE: Final = "package"
EVENT: Final = "event"
WINDOW_KIND: Final = "window"
MAX_RESULTS_SCANNED: Final = 1000
"""A holder's certificates of a result type looked through for an earlier approval's."""
ENVELOPE_RESERVE: Final = 1024
"""Bytes kept free in a package for the envelope each hop forwards it in (its route of at
most 16 node ids: :func:`gateway.federation.cases.envelope`), within ``max_body_bytes``."""
_REASONED = frozenset({Action.NOT_ACCEPT, Action.SUSPEND, Action.REFUSE})
_OUTCOMES: Final = {
    Action.NOT_ACCEPT: "not_accepted",
    Action.APPROVE: "approved",
    Action.REFUSE: "refused",
    Action.WITHDRAW: "withdrawn",
    Action.RETURN: "returned",
}


@dataclass(slots=True)
class Prepared:
    """An action sealed at this node and not yet written: written here at once when this
    node owns the case, else once the owning node has taken it."""

    case: Case
    event: CaseEvent
    blobs: dict[str, bytes] = field(default_factory=dict)

    def message(self) -> bytes:
        """What the owning node is sent: the event, and the supplemented bytes it names."""
        return _event_message(self.event, self.blobs)


def _event_message(event: CaseEvent, blobs: Mapping[str, bytes]) -> bytes:
    return orjson.dumps(
        {
            "kind": EVENT,
            "case": event.case,
            "event": event.token,
            "blobs": {sha: b64url_encode(data) for sha, data in blobs.items()},
        }
    )


class CaseService:
    """One node's cases. ``store`` is the node's :class:`SqlCaseStore` (either backend)."""

    def __init__(self, node: NodeService, store: SqlCaseStore) -> None:
        self.node = node
        self.store = store
        self.me = node.node.id
        self.calendar = WorkingCalendar(node.federation.calendar)
        self.limits = node.federation.limits

    def close(self) -> None:
        self.store.close()

    # -- who is who -------------------------------------------------------------------------

    def window_department(self, principal: Principal) -> Department:
        """A window (``kind = "window"``) department of this node with ``case:intake``."""
        principal.require(Scope.CASE_INTAKE)
        dept = self.node.node.department(principal.department or "")
        if dept is None or principal.node != self.me:
            raise Forbidden(
                "only a window of this node receives applications here", code="case.not_window"
            )
        if dept.kind != WINDOW_KIND:
            raise Forbidden(
                f"department {dept.id!r} is not a service window", code="case.not_window"
            )
        return dept

    def roles(self, principal: Principal, case: Case) -> frozenset[Role]:
        """What ``principal`` is to ``case``: its owner, its window, its applicant, or
        nothing (then the case does not exist for them: 404)."""
        found: set[Role] = set()
        if principal.holder:
            if hmac.compare_digest(principal.subject.encode(), case.applicant.digest.encode()):
                found.add(Role.APPLICANT)
            return frozenset(found)
        if principal.department is None:
            return frozenset()
        if (
            principal.department == case.owner.department
            and principal.node == case.owner.node == self.me
            and Scope.CASE_DECIDE.value in principal.scopes
        ):
            found.add(Role.OWNER)
        if (
            principal.department == case.window.department
            and principal.node == case.window.node == self.me
            and Scope.CASE_INTAKE.value in principal.scopes
        ):
            found.add(Role.WINDOW)
        return frozenset(found)

    def visible(self, principal: Principal, case_id: str) -> tuple[Case, frozenset[Role]]:
        """The case, for its window, owner or applicant; 404 for anyone else (its
        existence does not leak)."""
        check_case_number(case_id)
        try:
            case = self.store.get(case_id)
        except NotFoundError:
            raise _no_case() from None
        roles = self.roles(principal, case)
        if not roles:
            raise _no_case()
        return case, roles

    # -- intake -----------------------------------------------------------------------------

    def intake(
        self, principal: Principal, body: Mapping[str, Any], *, idempotency_key: str | None
    ) -> tuple[Case, bool]:
        """``POST /v1/cases``: check an application, number it, seal its receipt, and write
        it with what it owes (its package for the owner, its audit records) in one
        transaction. Returns the case and whether it was created now (``False``: the same
        ``Idempotency-Key`` was answered before; nothing is written twice)."""
        node = self.node
        node.schemas.validate("exchange:case-request", body)
        channel = Channel(body["channel"])
        matter = node.matters.get(body["matter"])
        window = self._receiver(principal, channel, matter, body)
        owner = self._owner(matter, body["owner"])
        self._may_receive(matter, owner, channel)
        applicant = self._applicant(principal, channel, body["applicant"])
        delivery = Delivery(body["delivery"])
        if delivery not in matter.delivery:
            raise Unprocessable(
                f"matter {matter.id!r} is delivered by "
                + ", ".join(d.value for d in matter.delivery),
                code="case.bad_delivery",
            )
        address = body.get("address")
        if delivery is Delivery.POST and address is None:
            raise SchemaViolation(
                "a result delivered by post needs the applicant's postal address",
                pointers=("/address",),
                errors=("required for delivery by post",),
            )
        staff = body.get("identity_checked_by")
        if channel is Channel.WINDOW and staff is None:
            raise SchemaViolation(
                "a window names the staff member who checked the applicant's identity",
                pointers=("/identity_checked_by",),
                errors=("required at a window",),
            )
        received = receive_materials(
            matter, body["materials"], limits=self.limits, in_person=channel is Channel.WINDOW
        )
        for material in received.materials:
            self._check_certificate_material(matter, material)
        now = node.clock.now()
        day = self.calendar.local_date(now)
        due = self.calendar.add(now, matter.limit_days)
        region = node.node.region or "000000"
        actor = principal.client_id if not principal.holder else "applicant"

        def build(seq: int) -> CaseWrite:
            case_id = case_number(region, day, seq)
            receipt = seal_receipt(
                node.keys.signer(),
                {
                    "case": case_id,
                    "matter": {"id": matter.id, "name": matter.name},
                    "channel": channel.value,
                    "window": window.to_json(),
                    "owner": owner.to_json(),
                    "applicant": applicant.digest,
                    "materials": [m.to_json() for m in received.materials],
                    "received_at": to_rfc3339(now),
                    "limit_days": matter.limit_days,
                    "promised_by": to_rfc3339(due),
                    "identity_checked_by": staff,
                    "on_site": matter.on_site,
                    "delivery": delivery.value,
                    "address": address,
                },
                at=now,
            )
            case = Case(
                id=case_id,
                matter=matter.id,
                channel=channel,
                state=CaseState.RECEIVED,
                window=window,
                owner=owner,
                applicant=applicant,
                delivery=delivery,
                received_at=now,
                due_at=due,
                receipt=receipt,
                materials=received.materials,
                updated_at=now,
                address=address,
            )
            write = CaseWrite(case, blobs=received.blobs)
            intake: AuditItem = (
                AuditKind.CASE_EVENT,
                actor,
                case_id,
                {
                    "action": "receive",
                    "matter": matter.id,
                    "owner": owner.node,
                    "holder": applicant.digest,
                    "receipt": sha256_hex(receipt.encode()),
                },
            )
            write.audit.append(encode_item(intake))
            if owner.node == self.me:
                return self._advance(write, Action.ARRIVE, Role.SYSTEM, "system", now)
            write = self._advance(write, Action.FORWARD, Role.SYSTEM, "system", now)
            package = self._package(write.case, write.events, received.blobs)
            write.messages.append((owner.node, PACKAGE, package))
            return write

        key = None
        if idempotency_key is not None:
            who = principal.department or principal.subject
            fingerprint = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
            key = (f"{who}\x00{idempotency_key}", fingerprint.hexdigest())
        case, created = self.store.create(day.strftime("%Y%m%d"), build, idempotency=key)
        self.flush_audit()
        return case, created

    def _receiver(
        self, principal: Principal, channel: Channel, matter: Matter, body: Mapping[str, Any]
    ) -> Party:
        if channel is Channel.WINDOW:
            if principal.holder:
                raise Forbidden(
                    "an applicant files online (channel: online)", code="case.not_window"
                )
            return Party(self.me, self.window_department(principal).id)
        if not principal.holder:
            raise Forbidden(
                "only the applicant files online, with their own token", code="case.not_applicant"
            )
        if not matter.online:
            raise Unprocessable(
                f"matter {matter.id!r} cannot be filed online (全程网办)", code="case.not_online"
            )
        if matter.on_site:
            raise Unprocessable(
                f"matter {matter.id!r} needs the applicant in person: {matter.on_site}",
                code="case.on_site_required",
            )
        return Party(self.me, None)

    def _owner(self, matter: Matter, raw: Mapping[str, Any]) -> Party:
        federation = self.node.federation
        node_id = str(raw["node"])
        owner = next((n for n in federation.nodes if n.id == node_id), None)
        if owner is None or owner.kind != "region":
            raise Unprocessable(
                f"no region node {node_id[:32]!r} in the federation", code="case.no_owner"
            )
        dept = next((d for d in owner.departments if d.kind == matter.owner), None)
        if dept is None:
            raise Unprocessable(
                f"node {owner.id!r} has no department that handles {matter.name}",
                code="case.no_owner",
            )
        named = raw.get("department")
        if named is not None and named != dept.id:
            raise Unprocessable(
                f"matter {matter.id!r} is handled at {owner.id!r} by {dept.id!r}",
                code="case.no_owner",
            )
        return Party(owner.id, dept.id)

    def _may_receive(self, matter: Matter, owner: Party, channel: Channel) -> None:
        """受办分离: a window receives for another node only where the matter's 代收代办
        areas include its region or an agreement between the two nodes names the matter."""
        if owner.node == self.me or channel is Channel.ONLINE:
            return
        region = self.node.node.region or ""
        if matter.received_in(region):
            return
        if any(a.covers(self.me, owner.node, matter.id) for a in self.node.federation.agreements):
            return
        raise Unprocessable(
            f"windows of {self.me!r} may not receive {matter.name} for {owner.node!r}",
            code="case.not_delegable",
        )

    def _applicant(
        self, principal: Principal, channel: Channel, raw: Mapping[str, Any]
    ) -> Applicant:
        check_party(raw, "/applicant")  # input.identifier.check on a wrong check character
        digest = holder_digest(self.node.keys.holder_secret, raw["id_type"], raw["id"])
        if channel is Channel.ONLINE and not hmac.compare_digest(
            digest.encode(), principal.subject.encode()
        ):
            raise Forbidden("an applicant files only for themself", code="case.not_applicant")
        return Applicant(raw["id_type"], raw["id"], raw["name"], digest)

    def _check_certificate_material(self, matter: Matter, material: Material) -> None:
        if material.certificate_id is None:
            return
        spec = matter.material(material.id)
        cert_type = self.node.schemas.certificate_type_of(
            parse_certificate_id(material.certificate_id)
        )
        if spec is None or spec.certificate_type != cert_type.name:
            raise SchemaViolation(
                f"{material.name} is a {spec.certificate_type if spec else '?'} certificate, "
                f"not a {cert_type.name}",
                pointers=(f"/materials/{material.id}",),
                errors=("certificate of the wrong type",),
                code="case.wrong_certificate",
            )

    def _package(
        self, case: Case, events: Sequence[StoredEvent], blobs: Mapping[str, bytes]
    ) -> bytes:
        package = orjson.dumps(
            {
                "kind": PACKAGE,
                "case": case.to_record(),
                "events": [e.token for e in events],
                "blobs": {sha: b64url_encode(data) for sha, data in blobs.items()},
            }
        )
        if len(package) + ENVELOPE_RESERVE > self.limits.max_body_bytes:
            raise TooLarge(
                f"the application with its materials exceeds {self.limits.max_body_bytes} "
                "bytes, the most one package between nodes may carry",
                code="case.too_large",
            )
        return package

    # -- events -----------------------------------------------------------------------------

    def _event(
        self,
        case: Case,
        action: Action,
        role: Role,
        actor: str,
        at: float,
        *,
        department: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> CaseEvent:
        target = TRANSITIONS[action].target
        event = CaseEvent(
            id=secrets.token_hex(16),
            case=case.id,
            seq=case.seq + 1,
            action=action,
            source=case.state,
            target=target,
            node=self.me,
            department=department,
            actor=actor,
            role=role,
            at=at,
            reason=reason,
            details=dict(details or {}),
        )
        return seal_event(self.node.keys.signer(), event)

    def _advance(
        self,
        write: CaseWrite,
        action: Action,
        role: Role,
        actor: str,
        at: float,
        **event_fields: Any,
    ) -> CaseWrite:
        """Seal the next event of ``write.case`` and apply it to the write."""
        transition(write.case.state, action, frozenset({role}))
        event = self._event(write.case, action, role, actor, at, **event_fields)
        return self._record(write, event)

    def _record(self, write: CaseWrite, event: CaseEvent) -> CaseWrite:
        """``event`` applied to ``write``: the case moved on, the event stored, its audit
        record (where this node took it) and its notifications owed."""
        write.case = self.advanced(write.case, event)
        write.events.append(StoredEvent(event.id, event.seq, event.token))
        if event.node == self.me:
            item: AuditItem = (
                AuditKind.CASE_EVENT,
                event.actor,
                event.case,
                {
                    "event": event.id,
                    "seq": event.seq,
                    "action": event.action.value,
                    "to": event.target.value,
                    "digest": sha256_hex(event.token.encode()),
                },
            )
            write.audit.append(encode_item(item))
        write.notices.extend(self._notices(write.case, event))
        return write

    def advanced(self, case: Case, event: CaseEvent) -> Case:
        """The case after ``event`` (which the lifecycle allows from its state)."""
        changes: dict[str, Any] = {
            "state": event.target,
            "seq": event.seq,
            "updated_at": event.at,
        }
        action = event.action
        details = event.details
        if action in _OUTCOMES:
            changes["outcome"] = _OUTCOMES[action]
        if action is Action.ARRIVE:
            changes["arrived_at"] = event.at
        elif action is Action.ACCEPT and details.get("deemed"):
            changes["outcome"] = "deemed_accepted"  # 行政许可法 §32, shown to all three
        elif action is Action.REQUEST_CORRECTION:
            changes["corrections"] = tuple(dict(i) for i in details.get("items", ()))
        elif action is Action.SUPPLEMENT:
            added = {m["id"]: Material.from_json(m) for m in details.get("materials", ())}
            kept = tuple(m for m in case.materials if m.id not in added)
            changes["materials"] = kept + tuple(added.values())
            changes["corrections"] = ()
        elif action is Action.SUSPEND:
            changes["suspended_at"] = event.at
        elif action is Action.RESUME and case.suspended_at is not None:
            # 特别程序: the working days spent suspended do not count against the limit
            stopped = self.calendar.between(case.suspended_at, event.at)
            changes["due_at"] = self.calendar.add(case.due_at - 1, stopped)
            changes["suspended_at"] = None
        elif action is Action.APPROVE:
            changes["result"] = details.get("certificate_id")
        elif action is Action.DELIVER:
            changes["tracking"] = details.get("tracking")
        return case.evolve(**changes)

    # -- actions ----------------------------------------------------------------------------

    def prepare(self, principal: Principal, case_id: str, body: Mapping[str, Any]) -> Prepared:
        """Check and seal an action on a case (``POST /v1/cases/{id}/actions``)."""
        node = self.node
        node.schemas.validate("exchange:case-action", body)
        case, roles = self.visible(principal, case_id)
        action = Action(body["action"])
        transition(case.state, action, roles)  # 403 case.wrong_owner / 409 case.bad_transition
        role = next(
            r
            for r in (Role.OWNER, Role.WINDOW, Role.APPLICANT)
            if r in roles and r in TRANSITIONS[action].roles
        )
        reason = body.get("reason")
        if action in _REASONED and not reason:
            raise SchemaViolation(
                f"{action.value!r} needs a reason", pointers=("/reason",), errors=("required",)
            )
        if reason is not None and len(reason) > self.limits.max_reason_length:
            raise InputError(
                f"a reason is at most {self.limits.max_reason_length} characters",
                code="case.reason_too_long",
            )
        now = node.clock.now()
        details: dict[str, Any] = {}
        blobs: dict[str, bytes] = {}
        matter = node.matters.get(case.matter)
        if action is Action.REQUEST_CORRECTION:
            details["items"] = self._correction_items(matter, body)
        elif action is Action.SUPPLEMENT:
            given = body.get("materials")
            if not given:
                raise SchemaViolation(
                    "a supplement brings materials", pointers=("/materials",), errors=("required",)
                )
            received = receive_materials(
                matter, given, limits=self.limits, in_person=role is Role.WINDOW, complete=False
            )
            for material in received.materials:
                self._check_certificate_material(matter, material)
            details["materials"] = [m.to_json() for m in received.materials]
            blobs = dict(received.blobs)
        elif action is Action.APPROVE:
            details.update(self._issue_result(principal, case, matter, body.get("result")))
        elif action is Action.DELIVER:
            details.update(self._delivery(matter, body.get("delivery")))
        actor = "applicant" if role is Role.APPLICANT else principal.client_id
        department = principal.department if role is not Role.APPLICANT else None
        event = self._event(
            case, action, role, actor, now, department=department, reason=reason, details=details
        )
        return Prepared(case, event, blobs)

    def _correction_items(self, matter: Matter, body: Mapping[str, Any]) -> list[dict[str, str]]:
        items = body.get("items")
        if not items:
            raise SchemaViolation(
                "一次性补正: list every item to correct, at once",
                pointers=("/items",),
                errors=("a non-empty list is required",),
                code="case.no_corrections",
            )
        if len(items) > self.limits.max_correction_items:
            raise InputError(
                f"at most {self.limits.max_correction_items} items to correct",
                code="case.too_many_corrections",
            )
        unknown = [
            f"/items/{i}/material"
            for i, item in enumerate(items)
            if "material" in item and matter.material(item["material"]) is None
        ]
        if unknown:
            raise SchemaViolation(
                "not a material of this matter",
                pointers=tuple(unknown),
                errors=tuple("not a material of this matter" for _ in unknown),
                code="case.unknown_material",
            )
        limit = self.limits.max_reason_length
        if any(len(item["reason"]) > limit for item in items):
            raise InputError(f"a reason is at most {limit} characters", code="case.reason_too_long")
        return [dict(item) for item in items]

    def _issue_result(
        self, principal: Principal, case: Case, matter: Matter, result: Any
    ) -> dict[str, Any]:
        """Approval issues the matter's result certificate through the ordinary issuance
        path, sealed by this node for the owning department, registered in the catalog."""
        if matter.result_type is None:
            return {}
        if not isinstance(result, Mapping):
            raise SchemaViolation(
                f"approving {matter.name} issues a {matter.result_type}: give its result",
                pointers=("/result",),
                errors=("required",),
            )
        applicant = case.applicant
        earlier = self._result_of(case, matter.result_type)
        if earlier is not None:  # issued by an approval whose case write did not happen
            return {"certificate_id": earlier, "type": matter.result_type}
        request = {
            "type": matter.result_type,
            "holder": {"id_type": applicant.id_type, "id": applicant.id, "name": applicant.name},
            "number": case.id,  # the decision's number is the case's: found again after a crash
            "valid_from": result["valid_from"],
            "valid_until": result["valid_until"],
            "data": result["data"],
        }
        try:
            issued = self.node.issue(principal, request)
        except SchemaViolation as exc:  # the result's fields, where the caller wrote them
            raise SchemaViolation(
                f"the result does not make a valid {matter.result_type}: {exc.detail}",
                pointers=tuple(f"/result{p}" for p in exc.pointers if not p.startswith("/holder")),
                errors=exc.errors,
                code=exc.code,
            ) from exc
        return {"certificate_id": issued.certificate.id, "type": matter.result_type}

    def _result_of(self, case: Case, result_type: str) -> str | None:
        """The certificate an earlier approval of ``case`` issued (its number is the case's),
        if any: approving again after a crash between the issuance and the case's own write
        finds it instead of issuing a second one."""
        held = self.node.registry.list_by_holder(
            case.applicant.digest, types=[result_type], limit=MAX_RESULTS_SCANNED
        )
        for stored in held:
            claims = orjson.loads(b64url_decode(stored.seal.split(".")[1]))
            if claims.get("number") == case.id:
                return str(stored.id)
        return None

    @staticmethod
    def _delivery(matter: Matter, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            raise SchemaViolation(
                "say how the result was delivered", pointers=("/delivery",), errors=("required",)
            )
        method = Delivery(raw["method"])
        if method not in matter.delivery:
            raise Unprocessable(
                f"matter {matter.id!r} is not delivered by {method.value}", code="case.bad_delivery"
            )
        tracking = raw.get("tracking")
        if method is Delivery.POST and not tracking:
            raise SchemaViolation(
                "a delivery by post names its tracking number",
                pointers=("/delivery/tracking",),
                errors=("required",),
            )
        return {"method": method.value, "tracking": tracking}

    def needs_owner(self, prepared: Prepared) -> str | None:
        """The owning node, when the action must be taken there first (this node is only the
        case's window); ``None`` when it is written here."""
        owner = prepared.case.owner.node
        return None if owner == self.me else owner

    def commit(self, prepared: Prepared) -> Case:
        """Write an action prepared here: at the owner, appended and sent to the window; at
        the window, once the owner has taken it."""
        case, event = prepared.case, prepared.event
        if case.owner.node == self.me:
            write = self._record(CaseWrite(case, blobs=prepared.blobs), event)
            window = case.window.node
            if window != self.me:
                write.messages.append((window, EVENT, _event_message(event, prepared.blobs)))
            self.store.update(write, expected_seq=case.seq)
            self.flush_audit()
            return write.case

        def change(current: Case) -> CaseWrite | None:
            if self.store.has_event(event.id):
                return None  # the owner's echo of it arrived first: written already
            if current.seq != case.seq:
                raise ConflictError(
                    "the case changed here while its owner took this action",
                    code="case.conflict",
                )
            return self._record(CaseWrite(current, blobs=prepared.blobs), event)

        written = self.store.update_with(case.id, change)
        self.flush_audit()
        return written

    # -- what peers send --------------------------------------------------------------------

    def receive(self, caller: str, body: Mapping[str, Any], keys: KeyResolver) -> dict[str, Any]:
        """A package or an event from another node (its hop proof already checked): checked
        against its seals, applied once. Returns the acknowledgement."""
        kind = body.get("kind")
        if kind == PACKAGE:
            return self._arrive(body, keys)
        if kind == EVENT:
            return self._apply_remote(body, keys)
        raise InputError("a case message is a package or an event", code="case.bad_message")

    def _arrive(self, body: Mapping[str, Any], keys: KeyResolver) -> dict[str, Any]:
        now = self.node.clock.now()
        try:
            case = Case.from_record(body["case"])
            tokens = list(body["events"])
            blobs = {sha: b64url_decode(str(data)) for sha, data in dict(body["blobs"]).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed case package: {exc}", code="case.bad_message") from exc
        if case.owner.node != self.me:
            raise Forbidden("this case is owned by another node", code="case.wrong_owner")
        receipt = verify_receipt(case.receipt, keys, now=now)
        self._match_package(case, receipt.payload, blobs)
        events = [verify_event(t, keys, now=now) for t in tokens]
        if [e.seq for e in events] != list(range(1, len(events) + 1)) or any(
            e.node != case.window.node or e.case != case.id for e in events
        ):
            raise Unprocessable(
                "the package's events do not belong to it", code="case.package_mismatch"
            )
        # the case as the window sent it, rebuilt from its receipt and events (nothing the
        # receipt does not seal is taken from the record: the events set the rest)
        start = case.evolve(
            state=CaseState.RECEIVED,
            seq=0,
            updated_at=case.received_at,
            outcome=None,
            result=None,
            suspended_at=None,
            corrections=(),
            tracking=None,
            arrived_at=None,
        )
        write = CaseWrite(start, blobs=blobs)
        for event in events:
            transition(write.case.state, event.action, frozenset({event.role}))
            write = self._record(write, event)
        write = self._advance(write, Action.ARRIVE, Role.SYSTEM, "system", now)
        arrival = write.events[-1]
        write.messages.append(
            (
                case.window.node,
                EVENT,
                orjson.dumps({"kind": EVENT, "case": case.id, "event": arrival.token, "blobs": {}}),
            )
        )
        created = self.store.arrive(write)
        self.flush_audit()
        return {"case": case.id, "arrived": created}

    def _match_package(
        self, case: Case, receipt: Mapping[str, Any], blobs: Mapping[str, bytes]
    ) -> None:
        """The package is what the window's receipt says: the same case, matter, channel,
        parties, applicant, delivery and dates, and every material's bytes hash to the
        digest the receipt sealed."""
        mismatch = Unprocessable(
            "the package does not match its receipt", code="case.package_mismatch"
        )
        sealed = receipt.get("materials")
        matter = receipt.get("matter")
        if (
            receipt.get("case") != case.id
            or not isinstance(matter, Mapping)
            or matter.get("id") != case.matter
            or receipt.get("channel") != case.channel.value
            or receipt.get("delivery") != case.delivery.value
            or receipt.get("received_at") != to_rfc3339(case.received_at)
            or receipt.get("promised_by") != to_rfc3339(case.due_at)
            or receipt.get("owner") != case.owner.to_json()
            or receipt.get("window") != case.window.to_json()
            or receipt.get("applicant") != case.applicant.digest
            or receipt.get("address") != case.address
            or sealed != [m.to_json() for m in case.materials]
        ):
            raise mismatch
        applicant = case.applicant  # the person sent is the one whose digest was sealed
        try:
            digest = holder_digest(self.node.keys.holder_secret, applicant.id_type, applicant.id)
        except InputError as exc:
            raise mismatch from exc
        if not hmac.compare_digest(digest.encode(), applicant.digest.encode()):
            raise mismatch
        wanted = {m.sha256 for m in case.materials if m.sha256 is not None}
        if set(blobs) != wanted or any(sha256_hex(data) != sha for sha, data in blobs.items()):
            raise mismatch

    def _apply_remote(self, body: Mapping[str, Any], keys: KeyResolver) -> dict[str, Any]:
        token = body.get("event")
        raw_blobs = body.get("blobs", {})
        if not isinstance(token, str) or not isinstance(raw_blobs, Mapping):
            raise InputError("malformed case event", code="case.bad_message")
        event = verify_event(token, keys, now=self.node.clock.now())
        if body.get("case") != event.case:
            raise InputError("malformed case event", code="case.bad_message")
        blobs = {str(sha): b64url_decode(str(data)) for sha, data in raw_blobs.items()}
        if any(sha256_hex(data) != sha for sha, data in blobs.items()):
            raise Unprocessable(
                "a material does not match its digest", code="case.package_mismatch"
            )
        applied = True

        def change(case: Case) -> CaseWrite | None:
            nonlocal applied
            self._check_remote(case, event)
            if event.seq <= case.seq:
                if not self.store.has_event(event.id):
                    if case.owner.node == self.me:  # a window acted on a stale copy
                        raise ConflictError(
                            "the case changed at its owner since; read it again",
                            code="case.conflict",
                        )
                    raise ConflictError(  # the owner wrote another event at that number
                        "the case has another event at that number", code="case.diverged"
                    )
                applied = False
                return None
            if event.seq > case.seq + 1:
                raise ConflictError(
                    "an earlier event of this case has not arrived yet", code="case.out_of_order"
                )
            transition(case.state, event.action, frozenset({event.role}))
            if event.source is not case.state:
                raise ConflictError("the event was taken from another state", code="case.diverged")
            wanted = {m.get("sha256") for m in event.details.get("materials", ())} - {None}
            if set(blobs) != wanted:
                raise Unprocessable(
                    "the event's materials are not all here", code="case.package_mismatch"
                )
            write = self._record(CaseWrite(case, blobs=blobs), event)
            if case.owner.node == self.me and event.node != self.me:
                # the window wrote nothing yet (it does once this answer reaches it): echoed
                # back in order, so a window that crashed before writing still gets it
                write.messages.append((event.node, EVENT, _event_message(event, blobs)))
            return write

        check_case_number(event.case)
        case = self.store.update_with(event.case, change)
        self.flush_audit()
        return {"case": case.id, "seq": case.seq, "applied": applied}

    def _check_remote(self, case: Case, event: CaseEvent) -> None:
        """An event from elsewhere is the other end's to take: an owner's from the owning
        node, a window's from the window's node; the applicant acts at either. A window
        also takes its own events back from the owner (the echo of what it pushed)."""
        other = case.window.node if case.owner.node == self.me else case.owner.node
        echo = event.node == self.me == case.window.node != case.owner.node
        if event.node != other and not echo:
            raise Forbidden("that node is not the other end of this case", code="case.wrong_owner")
        entitled = {
            Role.OWNER: case.owner.node,
            Role.WINDOW: case.window.node,
            Role.SYSTEM: case.owner.node,
        }
        if event.role in entitled and entitled[event.role] != event.node:
            raise Forbidden(
                "that node does not hold this role in the case", code="case.wrong_owner"
            )

    # -- the clock --------------------------------------------------------------------------

    def deem_accepted(self) -> list[str]:
        """行政许可法 §32: applications this node owns left unanswered for the acceptance
        days are accepted, reason ``deemed``. Returns the cases changed."""
        now = self.node.clock.now()
        days = self.calendar.acceptance_days
        changed: list[str] = []
        for case in self.store.pending_since(self.me, CaseState.PENDING_ACCEPTANCE.value):
            if now < self.calendar.add(case.updated_at, days):
                continue
            event = self._event(
                case,
                Action.ACCEPT,
                Role.SYSTEM,
                "system",
                now,
                reason="deemed",
                details={"deemed": True, "acceptance_days": days},
            )
            try:
                self.commit(Prepared(case, event))
            except ConflictError:
                continue  # someone acted on it meanwhile: nothing is deemed
            changed.append(case.id)
        return changed

    # -- reading ----------------------------------------------------------------------------

    def read(self, principal: Principal, case_id: str) -> dict[str, Any]:
        case, roles = self.visible(principal, case_id)
        answer = case.to_json(now=self.node.clock.now())
        answer["allowed_actions"] = [a.value for a in allowed(case.state, roles)]
        return answer

    def result(self, principal: Principal, case_id: str) -> dict[str, Any]:
        """The result certificate of a decided case, for its applicant (their own token) or
        its owner. At the owning node, which holds it: the sealed certificate with its
        verification report. Elsewhere: where it is held (``location``; the handler answers
        303). The window's department fetches it like any certificate, with the applicant's
        consent."""
        case, roles = self.visible(principal, case_id)
        if case.result is None:
            raise NotFoundError("the case has no result certificate", code="case.no_result")
        if not roles & {Role.APPLICANT, Role.OWNER}:
            raise Forbidden(
                "the window fetches the result with the applicant's consent: "
                f"GET /v1/certificates/{case.result}?matter={case.matter}",
                code="consent.required",
            )
        if case.owner.node != self.me:
            owner = self.node.federation.url(case.owner.node)
            return {
                "certificate_id": case.result,
                "held_by": case.owner.node,
                "location": f"{owner}/v1/cases/{case.id}/result",
            }
        seal = self.node.registry.get(CertificateId(case.result)).seal
        report, verified = self.node.verifier.report(seal)
        return {
            "certificate_id": case.result,
            "seal": seal,
            "certificate": dict(verified.document) if verified is not None else None,
            "report": report.to_json(),
        }

    def events(self, principal: Principal, case_id: str) -> list[dict[str, Any]]:
        """The case's sealed events in order (each verifiable offline)."""
        case, _ = self.visible(principal, case_id)
        return [
            {"id": stored.id, "seq": stored.seq, "event": stored.token, **_claims_of(stored.token)}
            for stored in self.store.events(case.id)
        ]

    def listing(
        self,
        principal: Principal,
        *,
        box: str,
        state: str | None,
        after: str | None,
        limit: int | None,
    ) -> dict[str, Any]:
        """A department's inbox (the cases it owns) or outbox (the cases its window
        received), or an applicant's own cases; by case number, one page at a time."""
        page = self.limits.max_case_page if limit is None else min(limit, self.limits.max_case_page)
        if page < 1:
            raise InputError("limit is a positive number", code="input.query")
        if state is not None and state not in CaseState.__members__.values():
            raise InputError(f"unknown state {state[:32]!r}", code="input.query")
        if after is not None:
            check_case_number(after)
        if principal.holder:
            cases = self.store.by_applicant(principal.subject, state=state, after=after, limit=page)
        else:
            if box not in ("inbox", "outbox"):
                raise InputError("box is inbox or outbox", code="input.query")
            scope = Scope.CASE_DECIDE if box == "inbox" else Scope.CASE_INTAKE
            principal.require(scope)
            if principal.department is None or principal.node != self.me:
                raise Forbidden(
                    "only this node's departments list its cases", code="auth.department"
                )
            role = "owner" if box == "inbox" else "window"
            cases = self.store.listing(
                department=principal.department, role=role, state=state, after=after, limit=page
            )
        now = self.node.clock.now()
        items = [c.to_json(now=now) for c in cases]
        for item in items:
            item.pop("receipt", None)
            item.pop("materials", None)
        cursor = cases[-1].id if len(cases) == page else None
        return {"cases": items, "next": cursor}

    # -- notifications ----------------------------------------------------------------------

    def subscribe(self, principal: Principal, url: str) -> Subscription:
        """A departmental system of this node subscribes to its cases' transitions."""
        department = self._subscriber(principal)
        check_webhook_url(url)
        subscription = Subscription(secrets.token_hex(8), department, url, self.node.clock.now())
        return self.store.subscribe(
            subscription, max_per_department=self.limits.max_webhooks_per_department
        )

    def subscriptions_of(self, principal: Principal) -> list[Subscription]:
        department = self._subscriber(principal)
        return self.store.subscriptions([department])

    def unsubscribe(self, principal: Principal, subscription_id: str) -> None:
        self.store.unsubscribe(self._subscriber(principal), subscription_id[:64])

    def _subscriber(self, principal: Principal) -> str:
        if not (
            Scope.CASE_DECIDE.value in principal.scopes
            or Scope.CASE_INTAKE.value in principal.scopes
        ):
            raise Forbidden("subscriptions are for case departments", code="auth.scope")
        if principal.department is None or principal.node != self.me:
            raise Forbidden("only this node's departments subscribe here", code="auth.department")
        return principal.department

    def _notices(self, case: Case, event: CaseEvent) -> list[tuple[str, str, bytes]]:
        """The CloudEvents 1.0 notifications of ``event`` for this node's subscribers."""
        departments = [
            p.department
            for p in (case.owner, case.window)
            if p.node == self.me and p.department is not None
        ]
        if not departments:
            return []
        body = cloud_event(self.node.public_url, case, event)
        return [(s.id, event.id, body) for s in self.store.subscriptions(departments)]

    # -- the audit records owed -------------------------------------------------------------

    def flush_audit(self) -> None:
        """Move this process's owed audit records into the node's audit log."""
        self._move(every_owner=False, append=self.node.audit.append_checked)

    def recover_audit(self) -> int:
        """After a crash: the records every process still owed, each appended once."""
        return self._move(every_owner=True, append=self.node.audit.append_missing)

    def _move(self, *, every_owner: bool, append: Callable[..., list[Any]]) -> int:
        moved = 0
        while pending := self.store.pending_audit(every_owner=every_owner):
            moved += len(append(check_items([decode_item(r) for _, r in pending])))
            self.store.audit_moved([seq for seq, _ in pending])
        return moved


def cloud_event(base_url: str, case: Case, event: CaseEvent) -> bytes:
    """A transition as a CloudEvents 1.0 JSON event (structured mode); its ``id`` is the
    event's, so a subscriber de-duplicates by it."""
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": event.id,
            "source": f"{base_url}/v1/cases/{case.id}",
            "type": f"cn.gov.tongban.case.{event.action.value}",
            "subject": case.id,
            "time": to_rfc3339(event.at),
            "datacontenttype": "application/json",
            "data": {
                "case": case.id,
                "matter": case.matter,
                "seq": event.seq,
                "action": event.action.value,
                "from": event.source.value,
                "to": event.target.value,
                "node": event.node,
                "reason": event.reason,
                "event": event.token,
            },
        }
    )


def check_webhook_url(url: str) -> None:
    """An absolute http(s) URL without credentials or fragment (the signed delivery names
    it as its audience). Where it may point is the federation operators' network policy."""
    if (
        not isinstance(url, str)
        or len(url) > 512
        or not url.startswith(("http://", "https://"))
        or "@" in url.split("/", 3)[2]
        or "#" in url
        or any(c.isspace() or ord(c) < 0x21 for c in url)
    ):
        raise InputError(
            "a webhook url is http(s)://… of at most 512 characters", code="webhook.bad_url"
        )


def _claims_of(token: str) -> dict[str, Any]:
    claims = stored_claims(token)
    return {
        k: claims[k]
        for k in (
            "action",
            "from",
            "to",
            "iss",
            "actor",
            "role",
            "at",
            "reason",
            "details",
            "department",
        )
        if k in claims
    }


def _no_case() -> NotFoundError:
    return NotFoundError("no such case", code="case.not_found")


__all__ = ["CaseService", "Level", "Prepared", "cloud_event"]
