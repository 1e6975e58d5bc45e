"""The service layer of one regional node: issue, fetch, change status, verify, publish.

Handlers call this; this calls the domain core (certificates, seals, verification) and the
store (registry). It is synchronous and knows nothing about HTTP; the HTTP layer runs the
writes on a one-thread executor so the event loop never waits on SQLite's fsync.
"""

from __future__ import annotations

import hmac
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway._internal.wire import b64url_decode
from gateway.audit.cosignatures import Cosignature, cosign_head, verify_cosignature
from gateway.audit.heads import SignedTreeHead
from gateway.audit.records import (
    AuditItem,
    AuditKind,
    AuditRecord,
    CheckedItem,
    check_items,
    decode_item,
    encode_item,
)
from gateway.certificates.documents import IssueContext, build_document, check_identifiers
from gateway.certificates.holders import holder_digest
from gateway.certificates.matters import Matter, MatterSet
from gateway.certificates.revocation import IssuanceProof
from gateway.certificates.schemas import SchemaSet
from gateway.certificates.status import CertStatus, StatusAction, StatusSlot
from gateway.certificates.status_list import STATUS_LIST_TYP, status_list_claims
from gateway.certificates.verification import (
    CertificateVerifier,
    StatusRef,
    statuses_one_by_one,
)
from gateway.clock import Clock
from gateway.config import Department, Federation, NodeConfig
from gateway.crypto.jwks import KeyResolver
from gateway.crypto.keystore import KeyStore
from gateway.crypto.reports import VerificationReport
from gateway.crypto.seals import SealMemo, seal, sign_compact
from gateway.errors import (
    CosignatureError,
    Forbidden,
    InputError,
    NotFoundError,
    SealIndeterminate,
    VerificationError,
)
from gateway.identifiers import parse_certificate_id
from gateway.ids import NATIONAL, CertificateId, DepartmentId, NodeId
from gateway.metrics import Metrics
from gateway.services.catalog import catalog_entry
from gateway.sso.auth import Principal, Scope
from gateway.sso.consent import ConsentGrant, ConsentVerifier
from gateway.storage.audit_log import AuditLog
from gateway.storage.cosignatures import SqlCosignatures
from gateway.storage.registry import NewCertificate, Outbox, SqlRegistry, StoredCertificate
from gateway.trust.trust_list import require_active_key

STATUS_LIST_TTL = 300
STORED_SEAL_MEMO = 65_536
"""Own seals a node remembers having verified; at most :data:`~gateway.crypto.seals.SEAL_MEMO_BYTES`
of them in all (a seal is a few kilobytes)."""
_LIST_ID = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True, slots=True)
class Fetched:
    certificate: StoredCertificate
    document: Mapping[str, Any]
    report: VerificationReport
    route: tuple[NodeId, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "certificate_id": self.certificate.id,
            "type": self.certificate.type,
            "node": self.route[-1],
            "status": self.certificate.status.value,
            "seal": self.certificate.seal,
            "certificate": dict(self.document),
            "report": self.report.to_json(),
            "route": list(self.route),
        }


class _LocalStatuses:
    """Status of this node's own certificates, straight from the registry."""

    def __init__(self, node: NodeService) -> None:
        self._node = node

    def status_of(self, uri: str, index: int) -> CertStatus:
        try:
            return self._node.registry.slot_status(self._list_id(uri), index)
        except NotFoundError as exc:
            raise _no_such_list() from exc

    def statuses_of(self, refs: Sequence[StatusRef]) -> list[CertStatus | VerificationError]:
        """Every entry of a batch from one registry read (one snapshot)."""
        slots: list[tuple[int, int]] = []
        unreadable: dict[int, VerificationError] = {}
        for at, (uri, index) in enumerate(refs):
            try:
                slots.append((self._list_id(uri), index))
            except SealIndeterminate as exc:
                unreadable[at] = exc
        found = iter(self._node.registry.slot_statuses(slots))
        results: list[CertStatus | VerificationError] = []
        for at in range(len(refs)):
            result = unreadable.get(at) or next(found)
            results.append(_no_such_list() if isinstance(result, NotFoundError) else result)
        return results

    def _list_id(self, uri: str) -> int:
        prefix = self._node.status_list_prefix
        if not uri.startswith(prefix):
            raise SealIndeterminate(
                "the status list of that certificate is not available here",
                code="status.unavailable",
            )
        suffix = uri[len(prefix) :]
        if not _LIST_ID.fullmatch(suffix):
            raise SealIndeterminate("malformed status list uri", code="status.unavailable")
        return int(suffix)


def _no_such_list() -> SealIndeterminate:
    return SealIndeterminate(
        "the certificate's status list does not exist here", code="status.unavailable"
    )


class _StoredStatus:
    """The status of a certificate just read from the registry, from that same row; any
    other entry (a seal naming another slot than its row's) from the registry."""

    def __init__(self, stored: StoredCertificate, uri: str, fallback: _LocalStatuses) -> None:
        self._stored = stored
        self._uri = uri
        self._fallback = fallback

    def status_of(self, uri: str, index: int) -> CertStatus:
        if uri == self._uri and index == self._stored.slot.index and type(index) is int:
            return self._stored.status
        return self._fallback.status_of(uri, index)

    def statuses_of(self, refs: Sequence[StatusRef]) -> list[CertStatus | VerificationError]:
        return statuses_one_by_one(self, refs)


class NodeService:
    """One node's certificates and seals. Construct with :meth:`open`; close when done."""

    def __init__(
        self,
        federation: Federation,
        node: NodeConfig,
        *,
        clock: Clock,
        keys: KeyStore,
        registry: SqlRegistry,
        schemas: SchemaSet,
        metrics: Metrics,
        public_url: str,
        idp_keys: KeyResolver | None = None,
        audit: AuditLog,
        cosignatures: SqlCosignatures,
    ) -> None:
        self.federation = federation
        self.node = node
        self.clock = clock
        self.keys = keys
        self.registry = registry
        self.schemas = schemas
        self.matters = MatterSet()
        self.metrics = metrics
        self.public_url = public_url.rstrip("/")
        self.status_list_prefix = f"{self.public_url}/v1/status-lists/"
        self._status_tokens: dict[int, tuple[int, float, str]] = {}
        self._consents: ConsentVerifier | None = None
        self.audit = audit
        self.cosignatures = cosignatures
        if idp_keys is not None:
            self.use_idp_keys(idp_keys)
        self._status_lock = threading.Lock()
        self._outbox_lock = threading.Lock()
        self.local_statuses = _LocalStatuses(self)
        self.verifier = CertificateVerifier(
            self.key_resolver(),
            schemas,
            clock=clock,
            statuses=self.local_statuses,
            max_seal_bytes=federation.limits.max_seal_bytes,
        )
        # the node's own stored seals, verified on every fetch: the same bytes again and again
        self._stored_memo = SealMemo(STORED_SEAL_MEMO)
        self.refresh_key_metrics()

    def close(self) -> None:
        self.registry.close()
        self.audit.close()
        self.cosignatures.close()

    def record(
        self,
        kind: AuditKind,
        actor: str,
        subject: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append to this node's audit log; returns once durable (holders as digests only).

        For offline commands (``tongban keys reseal``): a serving node records through its
        :class:`~gateway.storage.groupcommit.GroupCommit`, never on the event loop."""
        self.audit.append(kind, actor, subject, details)

    def audit_head(self) -> SignedTreeHead:
        """``GET /v1/audit/head``: the latest signed tree head (a new one if the log grew;
        it writes, so a serving node calls it on its writer thread)."""
        return self.audit.tree_head()

    def require_auditor(self, principal: Principal) -> None:
        """Who reads this node's audit log: its own node's clients with ``audit:read``, and
        national's clients the federation file names ``audit_everywhere``."""
        principal.require(Scope.AUDIT_READ)
        if principal.node == self.node.id:
            return
        client = self.federation.client(principal.client_id)
        if client is not None and client.audit_everywhere and client.node == principal.node:
            return
        raise Forbidden("only this node's auditors read its audit log", code="audit.not_this_node")

    def audit_entries(self, principal: Principal, start: int, end: int) -> list[AuditRecord]:
        """``GET /v1/audit/entries``: entries ``start`` to ``end`` (bounded by the store)."""
        self.require_auditor(principal)
        return self.audit.entries(start, end)

    def inclusion_proof(self, principal: Principal, seq: int, tree_size: int) -> list[bytes]:
        """``GET /v1/audit/proofs/inclusion``: where an entry stands in a tree."""
        self.require_auditor(principal)
        return self.audit.inclusion_proof(seq, tree_size)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        return self.audit.consistency_proof(first, second)

    def readiness(self, trust: Callable[[float], KeyResolver]) -> int:
        """Raise what keeps this node from serving its federation; else its certificate count.

        Ready means: the registry answers, the node has an active seal key, and the trust
        list it holds is valid, unexpired and lists that key as this node's active key (until
        then no peer could verify this node's hop proofs or seals)."""
        count = self.registry.count()
        active = self.keys.active()
        require_active_key(trust(self.clock.now()), self.node.id, active.kid)  # trust.* too
        return count

    def issuance_proof(self, certificate_id: str, *, revoked_at: float) -> IssuanceProof:
        """``GET /v1/audit/issuance-proof``: this node's proof that it issued
        ``certificate_id`` before ``revoked_at`` (see :mod:`gateway.certificates.revocation`).

        The head is the smallest one that includes the issuance and that the quorum of
        partners cosigned before ``revoked_at``, with those cosignatures; without such a head,
        the oldest head before ``revoked_at`` alone (a verifier finds it unwitnessed)."""
        witness = self.federation.witness
        record = self.audit.find_issuance(certificate_id)
        witnessed = None
        if record is not None:
            witnessed = self.cosignatures.first_witnessed(
                self.node.id, larger_than=record.seq, before=revoked_at, quorum=witness.quorum
            )
        if record is None or witnessed is None:
            return self.audit.issuance_proof(certificate_id, revoked_at=revoked_at)
        head, cosignatures = witnessed
        size = cosignatures[0].tree_size
        return IssuanceProof(
            record.entry(),
            record.seq,
            head,
            tuple(self.audit.inclusion_proof(record.seq, size)),
            tuple(c.token for c in cosignatures[: witness.max_cosignatures]),
        )

    # -- witnessing partners' audit logs (gateway.audit.cosignatures) ----------------------

    def cosign(self, head: SignedTreeHead) -> Cosignature:
        """Cosign a partner's ``head``, verified and proven consistent with the last one this
        node cosigned (:class:`~gateway.audit.watch.HeadWatcher`), and keep it; a head of a
        size already cosigned keeps its first cosignature. It writes: the writer thread's."""
        cosignature = cosign_head(
            self.keys.signer(), witness=self.node.id, head=head, cosigned_at=self.clock.now()
        )
        self.cosignatures.add(cosignature, head.token)
        return cosignature

    def cosigned_heads(self) -> dict[NodeId, SignedTreeHead]:
        """The last head of each partner this node cosigned: where its checks resume."""
        return self.cosignatures.last_cosigned(self.node.id)

    def cosignatures_made(self, origin: str, *, after_size: int) -> list[Cosignature]:
        """``GET /v1/audit/cosignatures``: this node's cosignatures of ``origin``'s heads
        larger than ``after_size``, smallest first, a page of ``[witness]
        max_cosignatures`` (``origin`` must name a node of the federation)."""
        if origin not in {n.id for n in self.federation.nodes}:
            raise InputError("query parameter 'origin' names no node", code="input.query")
        if origin == self.node.id:
            return []
        return self.cosignatures.made_by(
            self.node.id,
            origin=NodeId(origin),
            after_size=after_size,
            limit=self.federation.witness.max_cosignatures,
        )

    def gathered_size(self, witness: NodeId) -> int:
        """The largest of this node's heads kept with ``witness``'s cosignature (-1: none)."""
        found = self.cosignatures.largest_size(origin=self.node.id, witness=witness)
        return -1 if found is None else found

    def accept_cosignature(self, token: str, keys: KeyResolver, *, witness: NodeId) -> bool:
        """Keep a partner's cosignature of one of this node's heads, gathered from
        ``witness``: verified against ``keys`` (the trust list) and against the head this node
        signed for that size. Raises a :class:`VerificationError` for one that does not
        hold; False when it was already kept. It writes: the writer thread's."""
        now = self.clock.now()
        unverified_size = _unverified_tree_size(token)
        head = self.audit.head_at(unverified_size) if unverified_size is not None else None
        if head is None:
            raise CosignatureError(
                "a cosignature of a tree head this node never signed",
                code="audit.cosignature_mismatch",
            )
        cosignature = verify_cosignature(token, keys, head=head, now=now)
        if cosignature.witness != witness:
            raise CosignatureError(
                f"a cosignature by {cosignature.witness} was offered by {witness}"
            )
        return self.cosignatures.add(cosignature, head.token)

    def use_idp_keys(self, keys: KeyResolver) -> None:
        """Verify consent grants with the IdP's keys (the same set the authenticator uses)."""
        self._consents = ConsentVerifier(
            keys, issuer=self.federation.idp_issuer(), skew=self.federation.clock_skew_seconds
        )

    # -- keys ------------------------------------------------------------------------------

    def key_resolver(self) -> KeyResolver:
        return self.keys

    def jwks(self) -> dict[str, Any]:
        return self.keys.jwks()

    def refresh_key_metrics(self) -> None:
        now = self.clock.now()
        for record in self.keys.records():
            self.metrics.key_expiry.labels(kid=record.kid, state=record.state.value).set(
                record.not_after - now
            )

    def render_metrics(self) -> bytes:
        """The Prometheus text, with the outbox counts read now (a scrape is their clock)."""
        for topic, count in self.registry.outbox_counts().items():
            self.metrics.outbox.labels(topic=topic.value).set(count)
        return self.metrics.render()

    # -- issuing ---------------------------------------------------------------------------

    def issuing_department(self, principal: Principal, cert_type: str) -> Department:
        """A department issues only its own certificate types, and only at its own node."""
        principal.require(Scope.CERT_ISSUE)
        dept = self.node.department(principal.department or "")
        if dept is None:
            raise Forbidden(
                f"department {principal.department!r} does not belong to node {self.node.id!r}",
                code="cert.foreign_department",
            )
        if cert_type not in dept.issues:
            raise Forbidden(
                f"department {dept.id!r} does not issue {cert_type!r}",
                code="cert.type_not_issued_here",
            )
        return dept

    def issue(self, principal: Principal, request: Mapping[str, Any]) -> Fetched:
        """Validate, seal and store a new certificate. ``request`` is parsed JSON."""
        principal.require(Scope.CERT_ISSUE)
        # 1. The envelope, then every identifier's check character.
        self.schemas.validate("exchange:issue-request", request)
        check_identifiers(request)
        cert_type = self.schemas.certificate_type(str(request["type"]))
        # 2. Who may issue it here.
        department = self.issuing_department(principal, cert_type.name)
        # 3. Build the document, validate it against its type, seal and store it.
        now = self.clock.now()
        new, document = self.mint(request, department, self.registry.reserve_slot(), now)
        issuance: AuditItem = (
            AuditKind.ISSUANCE,
            principal.client_id,
            new.id,
            {
                "type": new.type,
                "holder": new.holder_digest,
                "kid": new.kid,
                "department": department.id,
            },
        )
        self.registry.add(new, owed=self._owed(issuance, new))
        self.flush_audit()
        self.metrics.issued.inc()
        stored = self.registry.get(new.id)
        report, _ = self.verifier.report(new.seal)
        return Fetched(stored, document, report, (self.node.id,))

    def mint(
        self,
        request: Mapping[str, Any],
        department: Department,
        slot: StatusSlot,
        now: float,
    ) -> tuple[NewCertificate, dict[str, Any]]:
        """Build, schema-check and seal one certificate (shared by ``issue`` and ``seed``)."""
        cert_type = self.schemas.certificate_type(str(request["type"]))
        ctx = IssueContext(
            node=self.node,
            department=department,
            cert_type=cert_type,
            slot=slot,
            status_uri=f"{self.status_list_prefix}{slot.list_id}",
            sealed_at=now,
        )
        document = build_document(request, ctx)
        self.schemas.validate(f"type:{cert_type.name}", document)
        signer = self.keys.signer()
        token = seal(signer, orjson.dumps(document), signed_at=now)
        holder = document["holder"]
        new = NewCertificate(
            id=CertificateId(document["id"]),
            type=cert_type.name,
            holder_digest=holder_digest(self.keys.holder_secret, holder["id_type"], holder["id"]),
            jurisdiction=document["jurisdiction"],
            slot=slot,
            kid=signer.kid,
            issued_at=now,
            seal=token,
        )
        return new, document

    # -- reading ---------------------------------------------------------------------------

    def release(
        self, principal: Principal, cert_id: str, matter_id: str, *, consent: str | None = None
    ) -> tuple[Fetched, list[AuditItem]]:
        """A certificate for a matter: purpose limitation, then the holder's consent (用证授权).

        Returns it with the audit records of its release, which the caller commits before
        it answers (the gateway commits them in groups, off the event loop). Reads the
        registry on the calling thread; the event loop reads it with
        :meth:`~gateway.storage.registry.Registry.read` between :meth:`releasable` and
        :meth:`release_stored`, the two halves of this.
        """
        stored = self.registry.get(self.releasable(principal, cert_id))
        return self.release_stored(principal, stored, matter_id, consent=consent)

    def releasable(self, principal: Principal, cert_id: str) -> CertificateId:
        """What a release checks before it reads the registry: a caller that may read
        certificates, and a well-formed certificate id."""
        principal.require(Scope.CERT_READ)
        parse_certificate_id(cert_id)
        return CertificateId(cert_id)

    def release_stored(
        self,
        principal: Principal,
        stored: StoredCertificate,
        matter_id: str,
        *,
        consent: str | None = None,
    ) -> tuple[Fetched, list[AuditItem]]:
        """:meth:`release` of ``stored``, just read from the registry."""
        principal.require(Scope.CERT_READ)
        matter = self.matters.require_type(matter_id, stored.type)
        grant = self.check_consent(principal, stored, matter, consent)
        slot = stored.slot
        verifier = CertificateVerifier(
            self.keys,
            self.schemas,
            clock=self.clock,
            statuses=_StoredStatus(
                stored, f"{self.status_list_prefix}{slot.list_id}", self.local_statuses
            ),
            memo=self._stored_memo,
        )
        report, verified = verifier.report(stored.seal)
        self._count(report)
        released = {
            "matter": matter.id,
            "department": principal.department,
            "holder": stored.holder_digest,
            "indication": report.indication.value,
        }
        records: list[AuditItem] = [(AuditKind.FETCH, principal.client_id, stored.id, released)]
        if grant is not None:
            records.append(
                (
                    AuditKind.CONSENT_USE,
                    principal.client_id,
                    stored.id,
                    {"consent": grant.jti, "matter": grant.matter, "holder": grant.holder_digest},
                )
            )
        document = verified.document if verified else orjson.loads(_payload_of(stored.seal))
        return Fetched(stored, document, report, (self.node.id,)), records

    def check_consent(
        self, principal: Principal, stored: StoredCertificate, matter: Matter, consent: str | None
    ) -> ConsentGrant | None:
        """Personal certificates leave this node only with the holder's grant for this matter.

        Organisations' certificates (a business licence) and matters marked consent-free need
        none. The grant must be the IdP's, unexpired, for this holder, this department, this
        matter and this certificate type.
        """
        personal = self.schemas.certificate_type(stored.type).holder_kind == "person"
        if not (matter.consent_required and personal):
            return None
        if consent is None:
            raise Forbidden(
                f"matter {matter.id!r} needs the holder's consent grant for {stored.type!r}",
                code="consent.required",
            )
        if self._consents is None or principal.department is None:
            raise Forbidden("consent cannot be checked for this caller", code="consent.invalid")
        return self._consents.verify(
            consent,
            holder_digest=stored.holder_digest,
            department=principal.department,
            matter=matter.id,
            cert_type=stored.type,
            now=self.clock.now(),
        )

    def admit(self, principal: Principal) -> DepartmentId:
        """A department of this node with ``cert:read``: who may ask this node to fetch or
        look up certificates (checked where a request enters, before anything is routed)."""
        principal.require(Scope.CERT_READ)
        department = principal.department
        if department is None or principal.node != self.node.id:
            raise Forbidden(
                "only a department of this node may ask it for certificates",
                code="auth.department",
            )
        return department

    def admit_fetch(
        self, principal: Principal, cert_id: str, matter_id: str, consent: str | None
    ) -> None:
        """Everything the node a fetch enters can judge before it routes or records it.

        1. the caller: ``cert:read``, a department of this node;
        2. the certificate id and the type its type code names;
        3. purpose limitation: the matter uses that type;
        4. the consent grant, where the matter needs one for a person's certificate: the
           IdP's signature, in force, for this department, this matter and this type (the
           holder is checked where the certificate is, which knows it).
        """
        department = self.admit(principal)
        cert_type = self.schemas.certificate_type_of(parse_certificate_id(cert_id))
        matter = self.matters.require_type(matter_id, cert_type.name)
        if not (matter.consent_required and cert_type.holder_kind == "person"):
            return
        grant = self._grant_in_transit(department, matter, consent, cert_type.name)
        if cert_type.name not in grant.types:
            raise Forbidden(
                "the consent grant does not cover this certificate type",
                code="consent.type_not_granted",
            )

    def admit_lookup(
        self,
        principal: Principal,
        matter_id: str,
        types: Sequence[str],
        consent: str | None,
        holder_digest: str,
    ) -> None:
        """Everything the node a lookup enters judges before it asks national's catalog.

        Without a grant that covers this holder and every personal type asked for, nothing
        is asked: the answer is the same whether or not the person holds any certificate.
        """
        department = self.admit(principal)
        matter = self.matters.get(matter_id)
        for name in types:  # purpose limitation before anything leaves this node
            self.matters.require_type(matter.id, name)
        personal = [t for t in types if self.schemas.certificate_type(t).holder_kind == "person"]
        if not (matter.consent_required and personal):
            return
        grant = self._grant_in_transit(department, matter, consent, personal[0])
        if not hmac.compare_digest(grant.holder_digest.encode(), holder_digest.encode()):
            raise Forbidden("the consent grant is for another holder", code="consent.wrong_holder")
        ungranted = [name for name in personal if name not in grant.types]
        if ungranted:
            raise Forbidden(
                "the consent grant does not cover every certificate type asked for",
                code="consent.type_not_granted",
            )

    def _grant_in_transit(
        self, department: DepartmentId, matter: Matter, consent: str | None, cert_type: str
    ) -> ConsentGrant:
        if consent is None:
            raise Forbidden(
                f"matter {matter.id!r} needs the holder's consent grant for {cert_type!r}",
                code="consent.required",
            )
        if self._consents is None:
            raise Forbidden("consent cannot be checked yet", code="consent.invalid")
        return self._consents.verify_in_transit(
            consent, department=department, matter=matter.id, now=self.clock.now()
        )

    def check_consent_in_transit(
        self, principal: Principal, matter_id: str, consent: str | None
    ) -> None:
        """A relaying hop re-checks a grant it carries as far as it can see (the holding node
        checks holder and type): the IdP's signature, in force, this department and matter."""
        if consent is None:
            return  # whether the matter needs one is the holding node's call
        if self._consents is None or principal.department is None:
            raise Forbidden("consent cannot be checked for this caller", code="consent.invalid")
        matter = self.matters.get(matter_id)
        self._consents.verify_in_transit(
            consent, department=principal.department, matter=matter.id, now=self.clock.now()
        )

    def change_status(
        self, principal: Principal, cert_id: str, request: Mapping[str, Any]
    ) -> StoredCertificate:
        principal.require(Scope.CERT_STATUS)
        self.schemas.validate("exchange:status-request", request)
        parse_certificate_id(cert_id)
        stored = self.registry.get(CertificateId(cert_id))
        dept = self.node.department(principal.department or "")
        issuer = parse_certificate_id(cert_id).issuer_code
        if dept is None or stored.type not in dept.issues or issuer != dept.credit_code:
            raise Forbidden(
                "only the issuing department may change a certificate's status",
                code="cert.not_owner",
            )

        def owed(updated: StoredCertificate, event: int) -> dict[Outbox, bytes]:
            # the registry's status event: what makes this change one event in the log, and
            # what orders it at national's catalog
            details = {"action": request["action"], "status": updated.status.value, "event": event}
            item = (AuditKind.STATUS, principal.client_id, updated.id, details)
            return self._owed(item, updated, status=updated.status, status_event=event)

        updated = self.registry.apply(
            CertificateId(cert_id),
            StatusAction(request["action"]),
            reason=str(request.get("reason", "")),
            at=self.clock.now(),
            owed=owed,
        )
        with self._status_lock:
            self._status_tokens.pop(updated.slot.list_id, None)
        self.flush_audit()
        return updated

    def _owed(
        self,
        item: AuditItem,
        cert: NewCertificate | StoredCertificate,
        *,
        status: CertStatus = CertStatus.VALID,
        status_event: int = 0,
    ) -> dict[Outbox, bytes]:
        """What a change of ``cert`` owes other stores, written in the change's own
        transaction: its audit record, and national's catalog entry (except at national,
        whose catalog it is)."""
        owed = {Outbox.AUDIT: encode_item(item)}
        if self.node.id != NATIONAL:
            entry = catalog_entry(cert, self.node.id, status=status, status_event=status_event)
            owed[Outbox.CATALOG] = orjson.dumps(entry)
        return owed

    def flush_audit(self) -> None:
        """Move this process's records in the registry's outbox into the audit log: each
        appended (durably), then dropped from the outbox. A record left behind by a failure
        here is moved by the next change, or by :meth:`recover_audit` when the node starts
        again."""
        self._move_outbox(every_owner=False, append=self.audit.append_checked)

    def recover_audit(self) -> int:
        """After a crash: move what the outbox still holds into the audit log, appending
        only the records not already there (a crash may have come between the append and
        the outbox's delete). Run before the node serves, by one process. Returns how many
        records were appended."""
        return self._move_outbox(every_owner=True, append=self.audit.append_missing)

    def _move_outbox(
        self,
        *,
        every_owner: bool,
        append: Callable[[Sequence[CheckedItem]], list[AuditRecord]],
    ) -> int:
        appended = 0
        with self._outbox_lock:
            while pending := self.registry.pending(Outbox.AUDIT, every_owner=every_owner):
                appended += len(append(check_items([decode_item(r) for _, r in pending])))
                self.registry.delivered([seq for seq, _ in pending])
        return appended

    # -- verifying -------------------------------------------------------------------------

    def verify_request(self, principal: Principal, request: Mapping[str, Any]) -> list[str]:
        """The seals of a valid ``POST /v1/seals/verify`` body, within every limit."""
        principal.require(Scope.SEAL_VERIFY)
        limits = self.federation.limits
        seals = request.get("seals") if isinstance(request, Mapping) else None
        # The configured batch limit first, so the answer does not depend on the schema's cap.
        if isinstance(seals, list) and len(seals) > limits.max_batch:
            raise InputError(
                f"at most {limits.max_batch} seals per request", code="input.batch_too_large"
            )
        self.schemas.validate("exchange:verify-request", request)
        tokens: list[str] = request["seals"]
        return tokens

    def verification_record(self, reports: list[VerificationReport]) -> AuditItem:
        """The audit record of a batch's reports, which the caller commits before it
        answers (:meth:`verify_batch` does; the gateway commits them in groups); the
        metric moves once per (indication, code) of the batch, by how many it saw."""
        outcomes = Counter((report.indication.value, report.code) for report in reports)
        tally: dict[str, int] = {}
        for (indication, code), n in outcomes.items():
            self.metrics.verified(indication, code, n)
            tally[indication] = tally.get(indication, 0) + n
        details = {"seals": len(reports), **tally}
        return (AuditKind.VERIFICATION, "seals/verify", None, details)

    def _count(self, report: VerificationReport) -> None:
        self.metrics.verified(report.indication.value, report.code)

    # -- status lists ----------------------------------------------------------------------

    def status_list_token(self, list_id: int) -> str:
        """The signed status list token for one list, cached until a status in it changes."""
        if list_id not in self.registry.list_ids():
            raise NotFoundError(f"no status list {list_id}", code="status_list.not_found")
        revision = self.registry.revision(list_id)
        now = self.clock.now()
        with self._status_lock:
            cached = self._status_tokens.get(list_id)
            if cached and cached[0] == revision and cached[1] > now + STATUS_LIST_TTL / 2:
                return cached[2]
        claims = status_list_claims(
            uri=f"{self.status_list_prefix}{list_id}",
            bits_bytes=self.registry.status_bits(list_id),
            iat=int(now),
            exp=int(now) + STATUS_LIST_TTL * 2,
            ttl=STATUS_LIST_TTL,
        )
        token = sign_compact(
            self.keys.signer(), orjson.dumps(claims), typ=STATUS_LIST_TYP, signed_at=now
        )
        with self._status_lock:
            self._status_tokens[list_id] = (revision, now + STATUS_LIST_TTL * 2, token)
        return token


def _payload_of(token: str) -> bytes:
    return b64url_decode(token.split(".")[1])


def _unverified_tree_size(token: str) -> int | None:
    """The tree size a cosignature names, read before it is verified: only to find the
    head to verify it against (the verification then checks it is that head's)."""
    try:
        claims = orjson.loads(b64url_decode(token.split(".")[1]))
    except (IndexError, orjson.JSONDecodeError, InputError, ValueError):
        return None
    size = claims.get("tree_size") if isinstance(claims, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None
