"""Cases between nodes: packages and events over the federation's routes, under hop proofs.

A case received for another node's department travels to the owning node as a **package**
(the case, its sealed receipt and events, the materials' bytes by SHA-256), along the
existing routes (the point-to-point link when one exists, else up the hierarchy and down),
each hop authenticating the previous one by its hop proof and forwarding the same bytes. The
owner checks the package against the receipt's seal (``case.package_mismatch``), writes it
once, and answers. Events travel the same way.

Delivery is durable: what a node owes its peers sits in its case store's outbox, written in
the same transaction as the change (:mod:`gateway.storage.cases`). :class:`CaseExchange`
sends it in order per peer, retried with backoff while a peer is down, removed only once the
peer has acknowledged it; the peer applies each message once (a package by case number, an
event by id and number). So a crash of either node, or a dead peer, loses and duplicates
nothing: the case waits ``in_transit`` and arrives once the owner is back.

An action taken at a case's window node (a supplement, a withdrawal) is pushed to the owner
at once (the owner writes every event of a case), and written at the window only once the
owner took it: a failure answers 502/504 naming the hop, and nothing is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, Final, TypeVar

import orjson

from gateway._internal.wire import loads
from gateway.cases.case import Case
from gateway.cases.materials import case_json_limits
from gateway.clock import Clock
from gateway.crypto.jwks import KeyResolver
from gateway.errors import AuthError, GatewayError, InputError, NetworkError
from gateway.federation.hops import HopGate
from gateway.federation.peers import PeerClient, UpstreamProblem
from gateway.federation.resilience import Deadline, backoff
from gateway.federation.routing import Route, Topology
from gateway.ids import NodeId
from gateway.services.cases import CaseService
from gateway.sso.auth import Principal
from gateway.storage.cases import Message

log = logging.getLogger("gateway.federation.cases")

CASES_PATH: Final = "/v1/exchange/cases"
MAX_ROUTE: Final = 16
POLL_SECONDS: Final = 1.0
"""How often the outbox is looked at when nothing wakes the sender (retries that came due)."""
CLOCK_SECONDS: Final = 60.0
REFUSED_FOR_GOOD: Final = frozenset({400, 403, 404, 413, 415, 422})
"""A peer's answers about the message itself (malformed, not its case, not matching its
receipt): it would be refused again, so it is set aside (``dead_letters``) and the peer's
later messages go on. 401 (the peer does not trust this node's key yet), 408, 409 (an earlier
event is missing) and 429 are about the moment: retried."""
"""How often the deemed-acceptance clock is looked at."""

_T = TypeVar("_T")


def envelope(route: Route, message: bytes) -> bytes:
    """The bytes each hop signs and forwards: the route, then the message untouched."""
    return b'{"route":' + orjson.dumps(list(route)) + b',"message":' + message + b"}"


class CaseExchange:
    """A node's case traffic: intake and actions that involve peers, the relay and receipt
    of peers' messages, and the outbox sender."""

    def __init__(
        self,
        service: CaseService,
        *,
        topology: Topology,
        trust: Callable[[float], KeyResolver],
        peers: PeerClient,
        hops: HopGate,
        writer: Executor,
        clock: Clock,
        notify: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self._notify = notify
        self.me = service.me
        self._topology = topology
        self._trust = trust
        self._peers = peers
        self._hops = hops
        self._writer = writer
        self._clock = clock
        self._rng = rng or random.Random()
        self._due = asyncio.Event()
        self._limits = case_json_limits(service.limits)
        network = service.node.federation.network
        self._retry = (network.outbox_retry_base_seconds, network.outbox_retry_max_seconds)

    async def _in_writer(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    def due(self) -> None:
        """Something was written to the outbox: send it now (and its notifications)."""
        self._due.set()
        if self._notify is not None:
            self._notify()

    # -- this node's departments and applicants ------------------------------------------------

    async def intake(
        self, principal: Principal, body: Mapping[str, Any], idempotency_key: str | None
    ) -> tuple[Case, bool]:
        case, created = await self._in_writer(
            lambda: self.service.intake(principal, body, idempotency_key=idempotency_key)
        )
        self.due()
        return case, created

    async def act(self, principal: Principal, case_id: str, body: Mapping[str, Any]) -> Case:
        prepared = await self._in_writer(self.service.prepare, principal, case_id, body)
        owner = self.service.needs_owner(prepared)
        if owner is not None:
            # the owner writes every event of a case: it takes this one first, or nothing is
            await self._send(NodeId(owner), prepared.message(), self._peers.deadline())
        case = await self._in_writer(self.service.commit, prepared)
        self.due()
        return case

    # -- peers ---------------------------------------------------------------------------------

    async def relay(self, proof: str | None, body: bytes) -> dict[str, Any]:
        """``POST /v1/exchange/cases``: authenticate the hop; apply the message here, or
        forward the same bytes to the next hop of its route."""
        caller = self._hops.authenticate(proof, path=CASES_PATH, body=body)
        raw = loads(body, self._limits)
        route = raw.get("route") if isinstance(raw, dict) else None
        message = raw.get("message") if isinstance(raw, dict) else None
        if (
            not isinstance(route, list)
            or not 2 <= len(route) <= MAX_ROUTE
            or not all(isinstance(n, str) for n in route)
            or len(set(route)) != len(route)
            or not isinstance(message, dict)
        ):
            raise InputError("malformed case message", code="case.bad_message")
        hops = tuple(NodeId(n) for n in route)
        if self.me not in hops[1:] or hops[hops.index(self.me) - 1] != caller:
            raise AuthError("this hop is not on the message's route", code="hop.route")
        if not self._topology.adjacent(caller, self.me):
            raise AuthError("the previous hop is not a neighbour", code="hop.route")
        if hops[-1] == self.me:
            keys = self._trust(self._clock.now())
            answer: dict[str, Any] = await self._in_writer(
                self.service.receive, hops[0], message, keys
            )
            self.due()  # an arrival owes the window its event
            return answer
        nxt = hops[hops.index(self.me) + 1]
        return await self._peers.post(nxt, CASES_PATH, body, deadline=self._peers.deadline())

    async def _send(self, target: NodeId, message: bytes, deadline: Deadline) -> dict[str, Any]:
        """``message`` to ``target`` over the first route that works (the point-to-point
        link, then the hierarchy)."""
        failure: NetworkError | None = None
        for route in self._topology.routes(self.me, target):
            try:
                return await self._peers.post(
                    route[1], CASES_PATH, envelope(route, message), deadline=deadline
                )
            except NetworkError as exc:
                failure = exc
        assert failure is not None  # routes() always yields at least one route
        raise failure

    # -- the outbox ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Send what the outbox holds, in order per peer, until cancelled."""
        store = self.service.store
        while True:
            now = self._clock.now()
            messages = await asyncio.to_thread(store.due_messages, now)
            stuck: set[str] = set()
            for message in messages:
                if message.target in stuck:
                    continue  # a peer's messages go in order: not past one that failed
                try:
                    await self._send(NodeId(message.target), message.body, self._peers.deadline())
                except UpstreamProblem as exc:
                    if exc.status not in REFUSED_FOR_GOOD:
                        await self._later(message, exc)
                        stuck.add(message.target)
                        continue
                    # refused for what it is, it would be refused again: set aside, loudly
                    log.error(
                        "a peer refused a case message for good; set aside",
                        extra={"case": message.case_id, "to": message.target, "code": exc.code},
                    )
                    await asyncio.to_thread(
                        store.dead, message.seq, code=exc.code, at=self._clock.now()
                    )
                    continue
                except NetworkError as exc:
                    await self._later(message, exc)
                    stuck.add(message.target)
                    continue
                await asyncio.to_thread(store.sent, message.seq)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
            # cancellation that comes as due() wakes it, and the node's shutdown then waits
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await self._due.wait()
            self._due.clear()

    async def _later(self, message: Message, exc: GatewayError) -> None:
        """Try ``message`` again after a pause (doubling with each attempt, with jitter)."""
        base, most = self._retry
        delay = backoff(message.attempts, self._rng, base=base, most=most)
        if message.attempts == 0 or isinstance(exc, UpstreamProblem):
            log.warning(
                "a case message is not delivered yet; retrying",
                extra={"case": message.case_id, "to": message.target, "code": exc.code},
            )
        await asyncio.to_thread(
            self.service.store.retry_message, message.seq, next_at=self._clock.now() + delay
        )

    async def run_clock(self) -> None:
        """行政许可法 §32 at this node: unanswered applications deemed accepted."""
        while True:
            try:
                if await self._in_writer(self.service.deem_accepted):
                    self.due()
            except GatewayError as exc:
                log.warning("could not apply the acceptance clock", extra={"code": exc.code})
            await asyncio.sleep(CLOCK_SECONDS)
