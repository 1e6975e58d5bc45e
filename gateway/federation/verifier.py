"""Any region's seals, verified at this node: the trust list, status lists, issuance proofs.

A node verifies its own seals with its own keys and registry, and every other region's with
the federation's trust list and the issuing node's signed status list (fetched and cached by
:class:`~gateway.federation.remote_status.RemoteStatuses`). A seal by a key revoked after the
seal claims to be signed is judged with the issuing node's proof of issuance from its audit
log (:mod:`gateway.certificates.revocation`), fetched from that node: its head must carry
the cosignatures of ``[witness] quorum`` partners made before the revocation.

Nothing is fetched on the word of an unverified seal: every other check of every seal comes
first, then the status lists their verified documents name, then the proofs of issuance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from gateway._internal.wire import loads
from gateway.certificates.revocation import (
    PROOF_PATH,
    IssuanceProof,
    ProvenIssuances,
    RevocationSetAside,
    WitnessedHead,
    check_issuance_proof,
)
from gateway.certificates.status import CertStatus
from gateway.certificates.verification import (
    CertificateVerifier,
    PendingBatch,
    StatusRef,
    StatusResolver,
    VerifiedCertificate,
    statuses_one_by_one,
)
from gateway.clock import Clock
from gateway.crypto.jwks import KeyResolver, VerificationKey
from gateway.crypto.reports import VerificationReport
from gateway.crypto.seals import SealMemo, verify_seal
from gateway.errors import GatewayError, InputError, RevocationUnproven, VerificationError
from gateway.federation.partner_watch import partners_of
from gateway.federation.peers import PeerClient
from gateway.federation.remote_status import RemoteStatuses
from gateway.federation.routing import Topology
from gateway.ids import KeyId, NodeId
from gateway.services.node import NodeService
from gateway.sso.auth import Principal
from gateway.storage.groupcommit import GroupCommit
from gateway.trust.trust_list import TrustListResolver

log = logging.getLogger("gateway.federation.verifier")

FETCHED_SEAL_MEMO: Final = 65_536
"""Foreign seals a node remembers having verified; at most
:data:`~gateway.crypto.seals.SEAL_MEMO_BYTES` of them in all (a seal is a few kilobytes)."""
MAX_PROOF_BYTES: Final = 1_048_576
"""An issuance proof: an entry, a signed head and at most 64 hashes."""


class _Layered:
    """Own keys first (always current), then the trust list's."""

    def __init__(self, first: KeyResolver, second: KeyResolver) -> None:
        self._first, self._second = first, second

    def key_for(self, kid: KeyId) -> VerificationKey:
        try:
            return self._first.key_for(kid)
        except VerificationError:
            return self._second.key_for(kid)


class _Statuses:
    """This node's own registry for its own lists; prefetched remote lists for the others."""

    def __init__(self, prefix: str, local: StatusResolver, remote: StatusResolver) -> None:
        self._prefix, self._local, self._remote = prefix, local, remote

    def status_of(self, uri: str, index: int) -> CertStatus:
        chosen = self._local if uri.startswith(self._prefix) else self._remote
        return chosen.status_of(uri, index)

    def statuses_of(self, refs: Sequence[StatusRef]) -> list[CertStatus | VerificationError]:
        """This node's entries from the registry in one read, the others' (prefetched lists,
        in memory) one by one."""
        own = [ref for ref in refs if ref[0].startswith(self._prefix)]
        others = [ref for ref in refs if not ref[0].startswith(self._prefix)]
        local = iter(self._local.statuses_of(own))
        remote = iter(statuses_one_by_one(self._remote, others))
        return [next(local if uri.startswith(self._prefix) else remote) for uri, _ in refs]


class FederatedVerifier:
    """Verifies seals of any node of the federation, as this node sees them now."""

    def __init__(
        self,
        node: NodeService,
        *,
        trust: Callable[[float], TrustListResolver],
        statuses: RemoteStatuses,
        peers: PeerClient,
        journal: GroupCommit,
        clock: Clock,
        topology: Topology,
    ) -> None:
        """``topology``: whose cosignatures witness a node's heads (its partners)."""
        self._node = node
        self._topology = topology
        self._trust = trust
        self._statuses = statuses
        self._peers = peers
        self._journal = journal
        self._clock = clock
        # foreign seals fetched for callers: the same certificates again and again (a batch
        # handed in to POST /v1/seals/verify is verified afresh, seal by seal)
        self._fetched = SealMemo(FETCHED_SEAL_MEMO)

    async def verify_fetched(
        self, seal: str
    ) -> tuple[VerificationReport, VerifiedCertificate | None]:
        """A (foreign) seal fetched for a caller, against the trust list and the issuer's
        status list (its signature remembered once it verified)."""
        [outcome] = await self._verify_all([seal], memo=self._fetched)
        return outcome

    async def verify_batch(
        self, principal: Principal, request: Mapping[str, Any]
    ) -> list[VerificationReport]:
        """``POST /v1/seals/verify``: any node's seals, against the trust list; audited
        before it is answered."""
        tokens = self._node.verify_request(principal, request)
        reports = [report for report, _ in await self._verify_all(tokens)]
        await self._journal.append([self._node.verification_record(reports)])
        return reports

    async def _verify_all(
        self, seals: list[str], *, memo: SealMemo | None = None
    ) -> list[tuple[VerificationReport, VerifiedCertificate | None]]:
        """Own keys and registry first, then the trust list's keys and remote status lists,
        then proofs of issuance for the verified seals of keys revoked after they claim to
        be signed."""
        now = self._clock.now()
        try:
            trusted: KeyResolver = _Layered(self._node.key_resolver(), self._trust(now))
        except VerificationError as exc:  # no (valid) trust list yet: own seals still verify
            log.warning("verifying without a trust list", extra={"code": exc.code})
            trusted = self._node.key_resolver()
        verifier = self._verifier(trusted, memo, proven={})
        outcomes = await self._finish(verifier, verifier.begin(seals))
        unproven = [
            at for at, (report, _) in enumerate(outcomes) if report.code == RevocationUnproven.code
        ]
        proven = await self._revocation_proofs([seals[at] for at in unproven], trusted, now)
        if proven:
            verifier = self._verifier(trusted, memo, proven=proven)
            again = await self._finish(verifier, verifier.begin([seals[at] for at in unproven]))
            for at, outcome in zip(unproven, again, strict=True):
                outcomes[at] = outcome
        return outcomes

    def _verifier(
        self, keys: KeyResolver, memo: SealMemo | None, *, proven: ProvenIssuances
    ) -> CertificateVerifier:
        node = self._node
        statuses = _Statuses(node.status_list_prefix, node.local_statuses, self._statuses)
        return CertificateVerifier(
            keys,
            node.schemas,
            clock=self._clock,
            statuses=statuses,
            proven=proven,
            memo=memo,
            max_seal_bytes=node.federation.limits.max_seal_bytes,
        )

    async def _finish(
        self, verifier: CertificateVerifier, batch: PendingBatch
    ) -> list[tuple[VerificationReport, VerifiedCertificate | None]]:
        """Fetch the other nodes' status lists the batch's verified documents name, then
        finish it."""
        own = self._node.status_list_prefix
        uris = {uri for uri, _ in batch.status_refs() if not uri.startswith(own)}
        await asyncio.gather(*(self._statuses.prefetch(uri) for uri in uris))
        return verifier.finish(batch)

    async def _revocation_proofs(
        self, seals: list[str], keys: KeyResolver, now: float
    ) -> ProvenIssuances:
        """For seals by revoked keys that claim to predate the revocation: the issuing node's
        audit-log proof of issuance, checked here. Asked only for a seal that passes every
        other check, with the certificate id it really seals."""
        proven: dict[str, WitnessedHead] = {}
        for seal in seals:
            try:
                verified = verify_seal(seal, RevocationSetAside(keys), now=now)
                key = keys.key_for(KeyId(verified.kid))
                cert_id = str(verified.payload.get("id"))
                if key.revoked_at is None:  # no longer revoked (a newer trust list): no proof
                    continue
                proof = await self._issuance_proof(key.node, cert_id, key.revoked_at)
                proven[cert_id] = check_issuance_proof(
                    proof,
                    keys=keys,
                    node=key.node,
                    certificate_id=cert_id,
                    revoked_at=key.revoked_at,
                    partners=partners_of(self._topology, key.node),
                    quorum=self._node.federation.witness.quorum,
                    now=now,
                )
            except GatewayError as exc:
                log.info(
                    "no proof of issuance before revocation",
                    extra={"code": exc.code, "cause": getattr(exc.__cause__, "code", None)},
                )
        return proven

    async def _issuance_proof(self, node: NodeId, cert_id: str, revoked_at: float) -> IssuanceProof:
        if node == self._node.node.id:
            return self._node.issuance_proof(cert_id, revoked_at=revoked_at)
        raw = await self._peers.get(
            node,
            PROOF_PATH,
            params={"certificate_id": cert_id, "before": str(int(revoked_at))},
            max_bytes=MAX_PROOF_BYTES,
            code_prefix="revocation",
        )
        try:
            return IssuanceProof.from_json(
                loads(raw), max_cosignatures=self._node.federation.witness.max_cosignatures
            )
        except InputError as exc:
            raise RevocationUnproven(f"{node}'s issuance proof is not JSON") from exc
