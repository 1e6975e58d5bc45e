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
4. forwards within the request's deadline budget (:class:`~gateway.federation.peers.PeerClient`:
   retries with jitter for this idempotent read, a circuit breaker per peer), or, at the
   holding node, applies purpose limitation and the holder's consent and answers with the
   sealed certificate.

The requesting node verifies the seal against the trust list (and the holder node's status
list) itself and answers with the certificate, its report and the route taken: the same
shape whether the certificate was held here or elsewhere. A failure answers 502/504
problem+json naming the hop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

import orjson

from gateway._internal.wire import JsonLimits, is_int, loads
from gateway.audit.records import AuditItem, AuditKind
from gateway.clock import Clock
from gateway.errors import AuthError, GatewayError, InputError, NetworkError
from gateway.federation.hops import HopGate
from gateway.federation.peers import PeerClient
from gateway.federation.resilience import Deadline
from gateway.federation.routing import Route, Topology
from gateway.federation.verifier import FederatedVerifier
from gateway.identifiers import parse_certificate_id
from gateway.ids import NodeId
from gateway.services.node import Fetched, NodeService
from gateway.sso.auth import Principal, Scope
from gateway.storage.groupcommit import GroupCommit
from gateway.trust.trust_list import TrustListResolver

log = logging.getLogger("gateway.federation.fetch")

EXCHANGE_PATH: Final = "/v1/exchange/fetch"
MAX_ROUTE: Final = 16
_BODY_LIMITS: Final = JsonLimits(max_depth=4, max_string=4096, max_members=64)


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
            or not (is_int(deadline) or isinstance(deadline, float))
        ):
            raise InputError("malformed relay request", code="exchange.bad_request")
        return cls(raw["certificate_id"], raw["matter"], tuple(NodeId(n) for n in route), deadline)


class RoutedFetch:
    """``GET /v1/certificates/{id}`` at the node a department asks, and every hop after it."""

    def __init__(
        self,
        node: NodeService,
        *,
        topology: Topology,
        trust: Callable[[float], TrustListResolver],
        peers: PeerClient,
        hops: HopGate,
        verifier: FederatedVerifier,
        journal: GroupCommit,
        clock: Clock,
    ) -> None:
        self._node = node
        self.me = node.node.id
        self.topology = topology
        self._trust = trust
        self._peers = peers
        self._hops = hops
        self._verifier = verifier
        self._journal = journal
        self._clock = clock
        self._margin = node.federation.network.hop_margin_seconds

    def holder_of(self, cert_id: str) -> NodeId:
        """The node whose department issued ``cert_id`` (from the trust list)."""
        ident = parse_certificate_id(cert_id)
        if self._node.node.department_by_code(ident.issuer_code) is not None:
            return self.me
        found = self._trust(self._clock.now()).department_by_credit_code(ident.issuer_code)
        if found is not None:
            return found[0].id
        # An authority the trust list does not name: the node whose region is the longest
        # match of the authority's registered region (GB 32100 characters 3-8).
        return self.topology.target_for(ident.issuer_code[2:8])

    async def _release(
        self, principal: Principal, cert_id: str, matter: str, consent: str | None
    ) -> tuple[Fetched, list[AuditItem]]:
        """This node's certificate for a matter (:meth:`NodeService.release`), its registry
        read on the loop without blocking it."""
        node = self._node
        stored = await node.registry.read(node.releasable(principal, cert_id))
        return node.release_stored(principal, stored, matter, consent=consent)

    # -- the requesting node ---------------------------------------------------------------

    async def fetch(
        self, principal: Principal, bearer: str, cert_id: str, matter: str, consent: str | None
    ) -> dict[str, Any]:
        """Fetch ``cert_id`` for ``matter`` from wherever it lives, verified here.

        Everything this node can judge is judged before anything is routed or recorded
        (:meth:`~gateway.services.node.NodeService.admit_fetch`): a refusal costs no other
        node a request."""
        self._node.admit_fetch(principal, cert_id, matter, consent)
        target = self.holder_of(cert_id)
        if target == self.me:
            fetched, records = await self._release(principal, cert_id, matter, consent)
            await self._journal.append(records)  # audited before it is answered
            return fetched.to_json()
        deadline = self._peers.deadline()
        answer: dict[str, Any] | None = None
        failure: NetworkError | None = None
        for route in self.topology.routes(self.me, target):
            # the next hop must give up a margin before this one does (see relay)
            request = RelayRequest(cert_id, matter, route, deadline.expires_at - self._margin)
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
        report, verified = await self._verifier.verify_fetched(seal)
        answer_route = answer["route"]
        await self._journal.append(
            [_routed_record(AuditKind.FETCH, principal, cert_id, matter, answer_route, None)]
        )
        document = dict(verified.document) if verified is not None else None
        status = verified.status if verified is not None else None
        return {
            "certificate_id": cert_id,
            "type": document.get("type") if document is not None else None,
            "node": target,
            "status": status.value if status is not None else None,
            "seal": seal,
            "certificate": document,
            "report": report.to_json(),
            "route": answer_route,
        }

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
        # 1. the previous hop, by its node-signed proof over this exact request, and the
        #    caller's token (validated by the middleware) allows reading certificates
        caller = self._hops.authenticate(proof, path=EXCHANGE_PATH, body=body)
        principal.require(Scope.CERT_READ)
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
                fetched, records = await self._release(
                    principal, request.certificate_id, request.matter, consent
                )
            except GatewayError:
                await self._journal.append([hop])
                raise
            await self._journal.append([hop, *records])
            return {"seal": fetched.certificate.seal, "route": list(route)}
        # 4. a relay re-checks what it can see of the grant before it records or forwards
        self._node.check_consent_in_transit(principal, request.matter, consent)
        # The hop's record is committed while the request travels on, and is durable before
        # this hop answers, whatever the answer (a failed commit fails the answer).
        committed = asyncio.ensure_future(self._journal.append([hop]))
        try:
            # 5. this hop waits until the deadline it was given; the next hop gets one a
            #    margin shorter, so the hop next to a failure gives up first and its answer
            #    (naming that hop) travels back before anyone upstream gives up
            remaining = max(0.0, min(self._peers.deadline().remaining(), request.deadline - now))
            onward = replace(request, deadline=request.deadline - self._margin)
            return await self._forward(onward, bearer, consent, Deadline(remaining, self._clock))
        finally:
            await committed

    async def _forward(
        self, request: RelayRequest, bearer: str, consent: str | None, deadline: Deadline
    ) -> dict[str, Any]:
        route = request.route
        nxt = route[route.index(self.me) + 1]
        return await self._peers.post(
            nxt,
            EXCHANGE_PATH,
            request.to_bytes(),
            deadline=deadline,
            bearer=bearer,
            consent=consent,
        )


def _routed_record(  # noqa: PLR0917 - one audit record, one flat call
    kind: AuditKind,
    principal: Principal,
    cert_id: str,
    matter: str,
    route: list[str] | list[NodeId],
    caller: NodeId | None,
) -> AuditItem:
    """The audit record of one routed fetch (``caller``: the previous hop, at a relay)."""
    details: dict[str, Any] = {
        "matter": matter,
        "route": list(route),
        "department": principal.department,
        "routed": True,
    }
    if caller is not None:
        details["from"] = caller
    return (kind, principal.client_id, cert_id, details)
