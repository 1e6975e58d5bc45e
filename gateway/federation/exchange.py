"""Routed mutual-recognition fetches between nodes (跨省通办's heart).

A department asks its own node for a certificate issued anywhere. The node finds the
holding node from the certificate's issuer (the trust list maps credit codes to nodes) and
forwards along a route: the point-to-point link when one exists, else up the hierarchy to
the lowest common ancestor and down, the hierarchy also being the fallback when a link is
dead. Every hop:

1. authenticates the previous hop by its node-signed proof (method, path, body digest, time,
   nonce; replays and stale proofs refused) and checks it is that hop's neighbour on the route;
2. re-validates the caller's access token (the auth middleware does, at every node);
3. writes an audit record;
4. forwards within the request's deadline budget (retries with jitter for this idempotent
   read, a circuit breaker per peer), or, at the holding node, applies purpose limitation
   and the holder's consent and answers with the sealed certificate.

The requesting node verifies the seal against the trust list (and the holder node's status
list) itself and answers with the certificate, its report and the route taken. A failure
answers 502/504 problem+json naming the hop.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson

from gateway._internal.wire import JsonLimits, loads
from gateway.audit.heads import SignedTreeHead
from gateway.audit.records import AuditItem, AuditKind
from gateway.certificates.revocation import (
    PROOF_PATH,
    IssuanceProof,
    ProvenIssuances,
    RevocationSetAside,
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
from gateway.errors import (
    AuthError,
    GatewayError,
    InputError,
    NetworkError,
    VerificationError,
)
from gateway.federation.hops import HopVerifier, NonceCache, sign_hop
from gateway.federation.resilience import (
    Breakers,
    Deadline,
    RetryPolicy,
    call_with_retries,
    hop_label,
)
from gateway.federation.routing import Route, Topology
from gateway.identifiers import parse_certificate_id
from gateway.ids import NATIONAL, KeyId, NodeId
from gateway.services.node import NodeService
from gateway.sso.auth import Principal
from gateway.sso.consent import CONSENT_HEADER
from gateway.storage.groupcommit import GroupCommit
from gateway.storage.registry import Outbox
from gateway.trust.trust_list import TrustListResolver

log = logging.getLogger("gateway.federation.exchange")

EXCHANGE_PATH = "/v1/exchange/fetch"
CATALOG_ENTRIES_PATH = "/v1/catalog/entries"
CATALOG_LOOKUPS_PATH = "/v1/catalog/lookups"
REGISTRATION_RETRY_SECONDS = 2.0
REGISTRATION_REFUSALS_TO_RETRY: Final = frozenset({401, 408, 429})
"""National's refusals of a catalog entry that are about this node or national's load, not
about the entry (a hop proof it cannot check yet, e.g. before the trust list it holds has
this node's key; too many requests): retried, not dropped. 403 is about the entry (another
node's certificate) and is not retried."""
FETCHED_SEAL_MEMO = 65_536
"""Foreign seals a node remembers having verified; at most
:data:`~gateway.crypto.seals.SEAL_MEMO_BYTES` of them in all (a seal is a few kilobytes)."""
HOP_HEADER = "Tongban-Hop"
MAX_ROUTE = 16
_BODY_LIMITS = JsonLimits(max_depth=4, max_string=4096, max_members=64)


class UpstreamProblem(GatewayError):
    """A peer's own refusal (4xx problem+json), relayed with its status and code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail, code=code)
        self.status = status
        self.title = "Refused by the holding region"


@dataclass(frozen=True, slots=True)
class RelayRequest:
    """What travels between hops (signed by each hop's proof over its exact bytes)."""

    certificate_id: str
    matter: str
    route: Route
    deadline: float

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "certificate_id": self.certificate_id,
                "matter": self.matter,
                "route": list(self.route),
                "deadline": self.deadline,
            }
        )

    @classmethod
    def parse(cls, body: bytes) -> RelayRequest:
        raw = loads(body, _BODY_LIMITS)
        if not isinstance(raw, dict) or set(raw) != {
            "certificate_id",
            "matter",
            "route",
            "deadline",
        }:
            raise InputError("malformed relay request", code="exchange.bad_request")
        route = raw["route"]
        deadline = raw["deadline"]
        if (
            not isinstance(raw["certificate_id"], str)
            or not isinstance(raw["matter"], str)
            or not isinstance(route, list)
            or not 2 <= len(route) <= MAX_ROUTE
            or not all(isinstance(n, str) for n in route)
            or len(set(route)) != len(route)
            or not isinstance(deadline, int | float)
            or isinstance(deadline, bool)
        ):
            raise InputError("malformed relay request", code="exchange.bad_request")
        return cls(raw["certificate_id"], raw["matter"], tuple(NodeId(n) for n in route), deadline)


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


class Exchange:
    """Routed fetches for one node. Lives on the node's app; one ``ClientSession``."""

    def __init__(
        self,
        node: NodeService,
        session: aiohttp.ClientSession,
        *,
        trust: Callable[[float], TrustListResolver],
        statuses: Any,
        journal: GroupCommit,
        clock: Clock,
        budget: float,
        policy: RetryPolicy | None = None,
        breakers: Breakers | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node = node
        self.me = node.node.id
        self.topology = Topology.from_federation(node.federation)
        self._session = session
        self._trust = trust
        self._statuses = statuses
        self._journal = journal
        self._clock = clock
        self._budget = budget
        self._policy = policy or RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.5)
        self._breakers = breakers or Breakers(clock=clock, failure_threshold=3, open_seconds=2.0)
        self._rng = rng or random.Random()
        self._nonces = NonceCache(max_entries=100_000, ttl=60.0)
        # foreign seals fetched for callers: the same certificates again and again (a batch
        # handed in to POST /v1/seals/verify is verified afresh, seal by seal)
        self._fetched = SealMemo(FETCHED_SEAL_MEMO)
        self._registrations_due = asyncio.Event()

    def registrations_due(self) -> None:
        """A certificate was issued: deliver its catalog entry (see :meth:`run_registrations`)."""
        self._registrations_due.set()

    # -- routing decisions -----------------------------------------------------------------

    def holder_of(self, cert_id: str) -> NodeId:
        """The node whose department issued ``cert_id`` (from the trust list)."""
        ident = parse_certificate_id(cert_id)
        if self.node.node.department_by_code(ident.issuer_code) is not None:
            return self.me
        found = self._trust(self._clock.now()).department_by_credit_code(ident.issuer_code)
        if found is not None:
            return found[0].id
        # An authority the trust list does not name: the node whose region is the longest
        # match of the authority's registered region (GB 32100 characters 3-8).
        return self.topology.target_for(ident.issuer_code[2:8])

    # -- the requesting node ---------------------------------------------------------------

    async def fetch(
        self, principal: Principal, bearer: str, cert_id: str, matter: str, consent: str | None
    ) -> dict[str, Any]:
        """Fetch ``cert_id`` for ``matter`` from wherever it lives, verified here."""
        target = self.holder_of(cert_id)
        if target == self.me:
            fetched, records = self.node.release(principal, cert_id, matter, consent=consent)
            await self._journal.append(records)  # audited before it is answered
            return fetched.to_json()
        deadline = Deadline(self._budget, self._clock)
        answer: dict[str, Any] | None = None
        failure: NetworkError | None = None
        for route in self.topology.routes(self.me, target):
            request = RelayRequest(cert_id, matter, route, deadline.expires_at)
            try:
                answer = await self._forward(request, bearer, consent, deadline)
                break
            except NetworkError as exc:
                failure = exc  # the link or a hop failed: the next route, if any, is the fallback
                log.warning("route failed", extra={"route": list(route), "code": exc.code})
        if answer is None:
            assert failure is not None  # routes() always yields at least one route
            raise failure
        seal = answer.get("seal")
        if not isinstance(seal, str):
            raise NetworkError(
                "the holding node answered without a seal", code="exchange.bad_answer"
            )
        report, document = await self.verify(seal)
        answer_route = answer["route"]
        await self._journal.append(
            [_routed_record(AuditKind.FETCH, principal, cert_id, matter, answer_route, None)]
        )
        return {
            "certificate_id": cert_id,
            "node": target,
            "seal": seal,
            "certificate": document,
            "report": report.to_json(),
            "route": answer_route,
        }

    async def verify(self, seal: str) -> tuple[VerificationReport, dict[str, Any] | None]:
        """Verify a (foreign) seal fetched for a caller against the trust list and the
        issuer's status list (its signature remembered once it verified)."""
        [(report, verified)] = await self._verify_all([seal], memo=self._fetched)
        return report, (dict(verified.document) if verified else None)

    async def verify_batch(
        self, principal: Principal, request: Mapping[str, Any]
    ) -> list[VerificationReport]:
        """``POST /v1/seals/verify``: any node's seals, against the trust list."""
        tokens = self.node.verify_request(principal, request)
        reports = [report for report, _ in await self._verify_all(tokens)]
        await self._journal.append([self.node.verification_record(reports)])  # audited first
        return reports

    async def _verify_all(
        self, seals: list[str], *, memo: SealMemo | None = None
    ) -> list[tuple[VerificationReport, VerifiedCertificate | None]]:
        """Own keys and registry first, then the trust list's keys and remote status lists.

        Nothing is fetched on the word of an unverified seal: every other check of every
        seal comes first, then the status lists their verified documents name, then proofs
        of issuance for the verified seals of keys revoked after they claim to be signed.
        """
        now = self._clock.now()
        try:
            trusted: KeyResolver = _Layered(self.node.key_resolver(), self._trust(now))
        except VerificationError as exc:  # no (valid) trust list yet: own seals still verify
            log.warning("verifying without a trust list", extra={"code": exc.code})
            trusted = self.node.key_resolver()
        verifier = self._verifier(trusted, memo, proven={})
        outcomes = await self._finish(verifier, verifier.begin(seals))
        unproven = [
            at
            for at, (report, _) in enumerate(outcomes)
            if report.code == "seal.revocation_unproven"
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
        statuses = _Statuses(self.node.status_list_prefix, self.node.local_statuses, self._statuses)
        return CertificateVerifier(
            keys,
            self.node.schemas,
            clock=self._clock,
            statuses=statuses,
            proven=proven,
            memo=memo,
            max_seal_bytes=self.node.federation.limits.max_seal_bytes,
        )

    async def _finish(
        self, verifier: CertificateVerifier, batch: PendingBatch
    ) -> list[tuple[VerificationReport, VerifiedCertificate | None]]:
        """Fetch the other nodes' status lists the batch's verified documents name, then
        finish it."""
        own = self.node.status_list_prefix
        uris = {uri for uri, _ in batch.status_refs() if not uri.startswith(own)}
        await asyncio.gather(*(self._statuses.prefetch(uri) for uri in uris))
        return verifier.finish(batch)

    async def _revocation_proofs(
        self, seals: list[str], keys: KeyResolver, now: float
    ) -> ProvenIssuances:
        """For seals by revoked keys that claim to predate the revocation: the issuing node's
        audit-log proof of issuance, checked here (see :mod:`gateway.certificates.revocation`).
        Asked only
        for a seal that passes every other check, with the certificate id it really seals."""
        proven: dict[str, SignedTreeHead] = {}
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
                    now=now,
                )
            except GatewayError as exc:
                log.info("no proof of issuance before revocation", extra={"code": exc.code})
        return proven

    async def _issuance_proof(self, node: NodeId, cert_id: str, revoked_at: float) -> IssuanceProof:
        if node == self.me:
            return self.node.issuance_proof(cert_id, revoked_at=revoked_at)
        url = self.node.federation.url(node) + PROOF_PATH
        params = {"certificate_id": cert_id, "before": str(int(revoked_at))}
        try:
            async with self._session.get(
                url, params=params, timeout=aiohttp.ClientTimeout(total=2)
            ) as response:
                raw = await response.content.read(1_048_577)
                if response.status != 200:
                    raise NetworkError(f"{node} has no proof ({response.status})")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NetworkError(f"{node} unreachable for an issuance proof") from exc
        return IssuanceProof.from_json(orjson.loads(raw))

    # -- the catalog at national --------------------------------------------------------------

    def authenticate_hop(self, proof: str | None, *, path: str, body: bytes) -> NodeId:
        """The node that signed this node-to-node request (hop proof over its exact bytes)."""
        if proof is None:
            raise AuthError("a node-to-node request needs a hop proof", code="hop.missing")
        now = self._clock.now()
        verifier = HopVerifier(self._trust(now), audience=self.me, nonces=self._nonces)
        return verifier.verify(proof, method="POST", path=path, body=body, now=now)

    async def run_registrations(self) -> None:
        """Deliver the catalog entries the registry's outbox holds to national, in order,
        until cancelled: what earlier processes left first, then this process's issuances and
        status changes as they come (:meth:`registrations_due`).

        An entry leaves the outbox once national took it (national's registration is
        idempotent and ordered by the entry's ``status_event``, so delivering one twice, or
        late, is harmless) or refused it for good (a 4xx about the entry itself: logged and
        counted, it would be refused again). While national cannot be reached, or refuses
        this node rather than the entry (:data:`REGISTRATION_REFUSALS_TO_RETRY`: e.g. it does
        not trust this node's key yet), the entries stay and delivery is retried every
        :data:`REGISTRATION_RETRY_SECONDS`. Issuance never waits on it, and a restart loses
        none.
        """
        every_owner = True  # at start-up: what a crash or a stop left, whoever wrote it
        failing: str | None = None  # the code of the failure being retried, logged once
        while True:
            try:
                await self._deliver_registrations(every_owner=every_owner)
            except (NetworkError, UpstreamProblem) as exc:
                if failing != exc.code:
                    log.warning("catalog registration failed; retrying", extra={"code": exc.code})
                failing = exc.code
                await asyncio.sleep(REGISTRATION_RETRY_SECONDS)
                continue
            if failing is not None:
                log.info("catalog registration recovered", extra={"code": failing})
                failing = None
            every_owner = False
            await self._registrations_due.wait()
            self._registrations_due.clear()

    async def _deliver_registrations(self, *, every_owner: bool) -> None:
        """One pass over the pending entries; raises what stops it (to be retried)."""
        registry = self.node.registry
        while pending := await asyncio.to_thread(
            registry.pending, Outbox.CATALOG, every_owner=every_owner
        ):
            delivered: list[int] = []
            try:
                for seq, body in pending:
                    try:
                        await self.signed_post(NATIONAL, CATALOG_ENTRIES_PATH, body, bearer=None)
                    except UpstreamProblem as exc:
                        if exc.status in REGISTRATION_REFUSALS_TO_RETRY:
                            raise
                        log.error("national refused a catalog entry", extra={"code": exc.code})
                        self.node.metrics.catalog_refused.inc()
                    delivered.append(seq)
            finally:
                await asyncio.to_thread(registry.delivered, delivered)

    async def lookup(
        self,
        principal: Principal,
        bearer: str,
        request: Mapping[str, Any],
        consent: str | None,
        holder_digest: str,
    ) -> dict[str, Any]:
        """Find the holder's certificates of the wanted types anywhere, and fetch each."""
        matter = str(request["matter"])
        types = [str(t) for t in request["types"]]
        for cert_type in types:  # purpose limitation before anything leaves this node
            self.node.matters.require_type(matter, cert_type)
        body = orjson.dumps({"holder_digest": holder_digest, "types": types})
        listed = await self.signed_post(NATIONAL, CATALOG_LOOKUPS_PATH, body, bearer=bearer)
        entries = listed.get("entries", [])
        if not isinstance(entries, list):
            raise NetworkError("national's catalog answered badly", code="exchange.bad_answer")

        async def one(entry: Mapping[str, Any]) -> dict[str, Any]:
            cert_id = str(entry.get("certificate_id"))
            try:
                answer = await self.fetch(principal, bearer, cert_id, matter, consent)
            except GatewayError as exc:
                return {
                    "certificate_id": cert_id,
                    "type": entry.get("type"),
                    "node": entry.get("node"),
                    "status": exc.status,
                    "code": exc.code,
                    "detail": exc.detail[:512],
                }
            return {
                "certificate_id": cert_id,
                "type": entry.get("type"),
                "node": answer["node"],
                "seal": answer["seal"],
                "report": answer["report"],
                "route": answer["route"],
            }

        outcomes = await asyncio.gather(*(one(e) for e in entries if isinstance(e, dict)))
        return {
            "results": [o for o in outcomes if "seal" in o],
            "failures": [o for o in outcomes if "seal" not in o],
        }

    async def signed_post(
        self, peer: NodeId, path: str, body: bytes, *, bearer: str | None
    ) -> dict[str, Any]:
        """POST ``body`` to ``peer`` with this node's hop proof (and the caller's token)."""
        deadline = Deadline(self._budget, self._clock)

        async def attempt(budget: float) -> dict[str, Any]:
            headers = {
                "Content-Type": "application/json",
                HOP_HEADER: sign_hop(
                    self.node.keys.signer(),
                    node=self.me,
                    audience=peer,
                    method="POST",
                    path=path,
                    body=body,
                    now=self._clock.now(),
                ),
            }
            if bearer is not None:
                headers["Authorization"] = f"Bearer {bearer}"
            return await self._post(
                self.node.federation.url(peer) + path, body, headers, budget, peer
            )

        return await call_with_retries(
            attempt,
            deadline=deadline,
            policy=self._policy,
            breaker=self._breakers.for_peer(peer),
            idempotent=True,
            sleep=asyncio.sleep,
            rng=self._rng,
            peer=peer,
            source=self.me,
        )

    # -- every hop -------------------------------------------------------------------------

    async def relay(
        self,
        principal: Principal,
        bearer: str,
        consent: str | None,
        proof: str | None,
        body: bytes,
    ) -> dict[str, Any]:
        """Handle a forwarded fetch: authenticate the hop, then answer or forward on."""
        now = self._clock.now()
        # 1. the previous hop, by its node-signed proof over this exact request
        if proof is None:
            raise AuthError("a forwarded request needs a hop proof", code="hop.missing")
        verifier = HopVerifier(self._trust(now), audience=self.me, nonces=self._nonces)
        caller = verifier.verify(proof, method="POST", path=EXCHANGE_PATH, body=body, now=now)
        request = RelayRequest.parse(body)
        # 2. we are on the route, right after the caller, and they are neighbours
        route = request.route
        if self.me not in route[1:] or route[route.index(self.me) - 1] != caller:
            raise AuthError("this hop is not on the request's route", code="hop.route")
        if not self.topology.adjacent(caller, self.me):
            raise AuthError("the previous hop is not a neighbour", code="hop.route")
        hop = _routed_record(
            AuditKind.LOOKUP_HOP,
            principal,
            request.certificate_id,
            request.matter,
            list(route),
            caller,
        )
        # 3. the holding node answers; any other re-checks the grant it carries, then forwards
        #    within the caller's deadline. The hop is audited, answered or refused.
        if route[-1] == self.me:
            try:
                fetched, records = self.node.release(
                    principal, request.certificate_id, request.matter, consent=consent
                )
            except GatewayError:
                await self._journal.append([hop])
                raise
            await self._journal.append([hop, *records])
            return {"seal": fetched.certificate.seal, "route": list(route)}
        # The hop's record is committed while the request travels on, and is durable before
        # this hop answers, whatever the answer (a failed commit fails the answer).
        committed = asyncio.ensure_future(self._journal.append([hop]))
        try:
            self.node.check_consent_in_transit(principal, request.matter, consent)
            local = Deadline(min(self._budget, request.deadline - now), self._clock)
            return await self._forward(request, bearer, consent, local)
        finally:
            await committed

    async def _forward(
        self, request: RelayRequest, bearer: str, consent: str | None, deadline: Deadline
    ) -> dict[str, Any]:
        route = request.route
        nxt = route[route.index(self.me) + 1]
        url = self.node.federation.url(nxt) + EXCHANGE_PATH
        body = request.to_bytes()

        async def attempt(budget: float) -> dict[str, Any]:
            proof = sign_hop(
                self.node.keys.signer(),
                node=self.me,
                audience=nxt,
                method="POST",
                path=EXCHANGE_PATH,
                body=body,
                now=self._clock.now(),
            )
            headers = {
                "Authorization": f"Bearer {bearer}",
                "Content-Type": "application/json",
                HOP_HEADER: proof,
            }
            if consent is not None:
                headers[CONSENT_HEADER] = consent
            return await self._post(url, body, headers, budget, nxt)

        return await call_with_retries(
            attempt,
            deadline=deadline,
            policy=self._policy,
            breaker=self._breakers.for_peer(nxt),
            idempotent=True,
            sleep=asyncio.sleep,
            rng=self._rng,
            peer=nxt,
            source=self.me,
        )

    async def _post(
        self, url: str, body: bytes, headers: Mapping[str, str], budget: float, peer: NodeId
    ) -> dict[str, Any]:
        label = hop_label(peer, self.me)
        try:
            async with self._session.post(
                url, data=body, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=budget)
            ) as response:
                raw = await response.content.read(1_048_577)
                status = response.status
        except TimeoutError as exc:
            raise NetworkError(f"{label}: timed out", code="network.timeout") from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"{label}: unreachable", code="network.unreachable") from exc
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise NetworkError(f"{label}: answered {status} without JSON") from exc
        if status in (200, 201) and isinstance(answer, dict):
            return answer
        if isinstance(answer, dict) and isinstance(answer.get("code"), str) and status < 500:
            raise UpstreamProblem(status, answer["code"], str(answer.get("detail", "")))
        if isinstance(answer, dict) and str(answer.get("code", "")).startswith("network."):
            # a hop further down failed; relay its verdict (it names the hop) unchanged
            raise UpstreamProblem(status, answer["code"], str(answer.get("detail", "")))
        raise NetworkError(f"{label}: answered {status}", code="network.bad_gateway")


def _routed_record(  # noqa: PLR0917 - one audit record, one flat call
    kind: AuditKind,
    principal: Principal,
    cert_id: str,
    matter: str,
    route: list[str] | list[NodeId],
    caller: NodeId | None,
) -> AuditItem:
    details: dict[str, Any] = {
        "matter": matter,
        "route": list(route),
        "department": principal.department,
        "routed": True,
    }
    if caller is not None:
        details["from"] = caller
    return (kind, principal.client_id, cert_id, details)
