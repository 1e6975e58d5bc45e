"""Cases between nodes over real HTTP and hop proofs: Zhuji's window receives a marriage
registration for Linquan (their point-to-point agreement), the outbox sender carries the
package and the events, the relay checks every hop.

(Named ``test_case_exchange``: ``test_cases`` is the integration test's base name.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import HANG_GUARD, Tokens
from processes import free_ports

from gateway._internal.wire import b64url_encode
from gateway.cases.case import Case
from gateway.cases.lifecycle import CaseState
from gateway.certificates.schemas import SchemaSet
from gateway.clock import FixedClock
from gateway.config import Federation
from gateway.crypto.jwks import StaticKeyResolver
from gateway.crypto.keystore import KeyStore
from gateway.errors import AuthError, GatewayError, InputError, NetworkError
from gateway.federation.cases import CASES_PATH, MAX_ROUTE, CaseExchange, envelope
from gateway.federation.hops import HOP_HEADER, HopGate, NonceCache, sign_hop
from gateway.federation.peers import PeerClient
from gateway.federation.routing import Topology
from gateway.identifiers import build_certificate_id
from gateway.ids import DepartmentId, NodeId
from gateway.server.node import open_node_service
from gateway.services.cases import ENVELOPE_RESERVE, CaseService
from gateway.services.node import NodeService
from gateway.sso.auth import Principal
from gateway.storage.cases import Message, SqliteCaseStore

ZHUJI, LINQUAN = NodeId("zhuji"), NodeId("linquan")
BRIDE = {"id_type": "111", "id": "341221199607082464", "name": "王晓燕"}


def marriage() -> dict[str, Any]:
    resident = build_certificate_id("11100000000013338W001", "113306810025211840", "R1")
    household = build_certificate_id("11100000000013338W002", "113306810025211840", "H1")
    return {
        "matter": "marriage-registration",
        "owner": {"node": "linquan"},
        "channel": "window",
        "applicant": dict(BRIDE),
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


def department(dept: str, node: str, scopes: tuple[str, ...]) -> Principal:
    return Principal(
        subject=dept,
        client_id=dept,
        scopes=frozenset(scopes),
        department=DepartmentId(dept),
        node=NodeId(node),
    )


WINDOW = department("zhuji-service-center", "zhuji", ("case:intake",))
OWNER = department("linquan-civil-affairs", "linquan", ("case:decide", "cert:issue"))


async def no_sleep(seconds: float) -> None:
    return None


class Peer:
    """One node: its case service and exchange, behind a real HTTP server."""

    def __init__(self) -> None:
        self.exchange: CaseExchange | None = None
        app = web.Application()
        app.router.add_post(CASES_PATH, self.handle)
        self.server = TestServer(app)
        self.node: NodeService | None = None
        self.received: list[bytes] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(body)
        assert self.exchange is not None
        try:
            answer = await self.exchange.relay(request.headers.get(HOP_HEADER), body)
        except GatewayError as exc:
            problem = {"code": exc.code, "detail": exc.detail, "status": exc.status}
            return web.json_response(
                problem, status=exc.status, content_type="application/problem+json"
            )
        return web.json_response(answer)

    @property
    def cases(self) -> CaseService:
        assert self.exchange is not None
        return self.exchange.service


class Pair:
    def __init__(self, zhuji: Peer, linquan: Peer, keys: StaticKeyResolver) -> None:
        self.zhuji, self.linquan, self.keys = zhuji, linquan, keys


@pytest.fixture
async def pair(
    federation: Federation, clock: FixedClock, schemas: SchemaSet, tokens: Tokens, tmp_path: Path
) -> AsyncIterator[Pair]:
    zhuji, linquan = Peer(), Peer()
    await zhuji.server.start_server()
    await linquan.server.start_server()
    # every other node on a port nobody listens on: nothing reaches another federation
    ports = free_ports(len(federation.nodes))
    spare: dict[str, int] = {n.id: port for n, port in zip(federation.nodes, ports, strict=True)}
    assert zhuji.server.port is not None
    assert linquan.server.port is not None
    spare.update({ZHUJI: zhuji.server.port, LINQUAN: linquan.server.port})
    fed = federation.with_ports(spare)
    writer = ThreadPoolExecutor(max_workers=1)
    nodes = {
        peer_id: open_node_service(
            fed,
            peer_id,
            clock=clock,
            schemas=schemas,
            public_url=f"http://{peer_id}.test",
            idp_keys=tokens.resolver,
        )
        for peer_id in (ZHUJI, LINQUAN)
    }
    keys = StaticKeyResolver(
        {**nodes[ZHUJI].keys.verification_keys(), **nodes[LINQUAN].keys.verification_keys()}
    )
    topology = Topology.from_federation(fed)
    session = aiohttp.ClientSession()
    for peer_id, peer in ((ZHUJI, zhuji), (LINQUAN, linquan)):
        node = nodes[peer_id]
        peer.node = node
        peer.exchange = CaseExchange(
            CaseService(node, SqliteCaseStore(tmp_path / f"{peer_id}-cases.sqlite3")),
            topology=topology,
            trust=lambda now: keys,
            peers=PeerClient(
                peer_id, fed, session, signer=node.keys.signer, clock=clock, sleep=no_sleep
            ),
            hops=hop_gate(peer_id, keys, clock),
            writer=writer,
            clock=clock,
        )
    try:
        yield Pair(zhuji, linquan, keys)
    finally:
        await session.close()  # first: the servers then have no connection to wait for
        await zhuji.server.close()
        await linquan.server.close()
        for peer in (zhuji, linquan):
            peer.cases.close()
        for node in nodes.values():
            node.close()
        writer.shutdown(wait=True)


def hop_gate(me: NodeId, keys: StaticKeyResolver, clock: FixedClock) -> HopGate:
    return HopGate(me, trust=lambda now: keys, nonces=NonceCache(), clock=clock)


async def pump(*peers: Peer) -> int:
    """What the peers' outboxes hold, sent as :meth:`CaseExchange.run` sends it (over the
    first route that works, acknowledged, then removed), until nothing is owed."""
    sent = 0
    while True:
        progress = 0
        for peer in peers:
            exchange, store = peer.exchange, peer.cases.store
            assert exchange is not None
            for message in store.due_messages(peer.cases.node.clock.now()):
                deadline = exchange._peers.deadline()
                await exchange._send(NodeId(message.target), message.body, deadline)
                store.sent(message.seq)
                progress += 1
        if not progress:
            return sent
        sent += progress


class Stop(Exception):
    """Ends a sender's loop from inside (instead of cancelling it)."""


def state_at(peer: Peer, case_id: str) -> CaseState | None:
    try:
        return peer.cases.store.get(case_id).state
    except GatewayError:
        return None


def test_the_envelope_is_the_route_then_the_message_untouched() -> None:
    message = b'{"kind": "event", "b":  1}'
    wrapped = envelope((ZHUJI, LINQUAN), message)
    assert wrapped == b'{"route":["zhuji","linquan"],"message":{"kind": "event", "b":  1}}'
    assert orjson.loads(wrapped) == {
        "route": ["zhuji", "linquan"],
        "message": orjson.loads(message),
    }


async def test_a_case_travels_to_its_owner_and_its_events_back(pair: Pair) -> None:
    zhuji, linquan = pair.zhuji, pair.linquan
    assert zhuji.exchange is not None
    assert linquan.exchange is not None
    case, created = await zhuji.exchange.intake(WINDOW, marriage(), None)
    assert created
    assert case.state is CaseState.IN_TRANSIT
    assert await pump(zhuji, linquan) == 2  # the package, then the arrival
    assert state_at(zhuji, case.id) is CaseState.PENDING_ACCEPTANCE
    assert state_at(linquan, case.id) is CaseState.PENDING_ACCEPTANCE
    # the package went over the direct link, and only once
    assert len(linquan.received) == 1
    assert orjson.loads(linquan.received[0])["route"] == ["zhuji", "linquan"]
    # the owner accepts: the event reaches the window through the outbox
    accepted = await linquan.exchange.act(OWNER, case.id, {"action": "accept"})
    assert accepted.state is CaseState.ACCEPTED
    assert state_at(zhuji, case.id) is CaseState.PENDING_ACCEPTANCE
    assert await pump(zhuji, linquan) == 1
    assert state_at(zhuji, case.id) is CaseState.ACCEPTED
    # the window withdraws for the applicant: taken at the owner first, at once
    withdrawn: Case = await zhuji.exchange.act(WINDOW, case.id, {"action": "withdraw"})
    assert withdrawn.state is CaseState.CLOSED
    assert state_at(linquan, case.id) is CaseState.CLOSED
    # the owner's echo of the window's event: the window already wrote it, applied once
    assert await pump(zhuji, linquan) == 1
    here = [e.token for e in zhuji.cases.store.events(case.id)]
    there = [e.token for e in linquan.cases.store.events(case.id)]
    assert here == there
    assert len(here) == 4  # forward, arrive, accept, withdraw


async def test_the_sender_retries_a_peer_that_is_down(pair: Pair, clock: FixedClock) -> None:
    zhuji, linquan = pair.zhuji, pair.linquan
    assert zhuji.exchange is not None
    await linquan.server.close()  # Linquan is down
    case, _ = await zhuji.exchange.intake(WINDOW, marriage(), None)
    store = zhuji.cases.store
    retry = store.retry_message

    def retried(seq: int, *, next_at: float) -> None:
        retry(seq, next_at=next_at)
        raise Stop

    store.retry_message = retried  # type: ignore[method-assign]
    assert zhuji.exchange is not None
    with pytest.raises(Stop):
        await asyncio.wait_for(zhuji.exchange.run(), HANG_GUARD)
    (message,) = store.due_messages(clock.now() + 10**6)
    assert (message.case_id, message.kind, message.target) == (case.id, "package", "linquan")
    assert store.due_messages(clock.now()) == []  # waiting for its next attempt
    assert state_at(zhuji, case.id) is CaseState.IN_TRANSIT


async def test_an_action_at_the_window_fails_whole_when_the_owner_is_down(
    pair: Pair,
) -> None:
    zhuji, linquan = pair.zhuji, pair.linquan
    assert zhuji.exchange is not None
    case, _ = await zhuji.exchange.intake(WINDOW, marriage(), None)
    await pump(zhuji, linquan)
    assert state_at(zhuji, case.id) is CaseState.PENDING_ACCEPTANCE
    await linquan.server.close()
    with pytest.raises(NetworkError):
        await zhuji.exchange.act(WINDOW, case.id, {"action": "withdraw"})
    assert state_at(zhuji, case.id) is CaseState.PENDING_ACCEPTANCE  # nothing written
    assert state_at(linquan, case.id) is CaseState.PENDING_ACCEPTANCE


# --- the relay's checks ----------------------------------------------------------------------


def proof(signer_store: Any, node: str, body: bytes, clock: FixedClock) -> str:
    return sign_hop(
        signer_store.signer(),
        node=NodeId(node),
        audience=LINQUAN,
        method="POST",
        path=CASES_PATH,
        body=body,
        now=clock.now(),
    )


async def relay_fails(
    pair: Pair, body: bytes, hop: str | None, error: type[GatewayError], status: int, code: str
) -> None:
    assert pair.linquan.exchange is not None
    with pytest.raises(error) as caught:
        await pair.linquan.exchange.relay(hop, body)
    assert (caught.value.status, caught.value.code) == (status, code)


async def test_the_relay_checks_every_hop(
    pair: Pair, clock: FixedClock, federation: Federation
) -> None:
    zhuji_keys = pair.zhuji.node.keys if pair.zhuji.node else None
    assert zhuji_keys is not None
    message = b'{"kind": "event"}'

    def body(route: list[str], msg: bytes = message) -> bytes:
        return b'{"route":' + orjson.dumps(route) + b',"message":' + msg + b"}"

    good = body(["zhuji", "linquan"])
    await relay_fails(pair, good, None, AuthError, 401, "hop.missing")
    # a proof over other bytes
    await relay_fails(
        pair, good, proof(zhuji_keys, "zhuji", b"{}", clock), AuthError, 401, "hop.mismatch"
    )
    # Linquan is not on the route
    wrong = body(["zhuji", "anhui"])
    await relay_fails(
        pair, wrong, proof(zhuji_keys, "zhuji", wrong, clock), AuthError, 401, "hop.route"
    )
    # the hop before Linquan is not the caller
    wrong = body(["anhui", "linquan"])
    await relay_fails(
        pair, wrong, proof(zhuji_keys, "zhuji", wrong, clock), AuthError, 401, "hop.route"
    )
    # malformed envelopes
    for bad in (
        body(["linquan"]),
        body(["zhuji", "linquan", "zhuji"]),
        body(["zhuji", "linquan"], b"[1]"),
        body([f"n{i}" for i in range(17)]),
        b'{"route": "zhuji", "message": {}}',
    ):
        await relay_fails(
            pair, bad, proof(zhuji_keys, "zhuji", bad, clock), InputError, 400, "case.bad_message"
        )
    # a message for Linquan that is not a case message at all
    answer_code = "case.bad_message"
    await relay_fails(
        pair, good, proof(zhuji_keys, "zhuji", good, clock), InputError, 400, answer_code
    )


async def test_a_caller_that_is_not_a_neighbour_is_refused(
    pair: Pair, clock: FixedClock, federation: Federation, tmp_path: Path
) -> None:
    # Shanghai's key is trusted, but Shanghai and Linquan have no link
    shanghai = KeyStore.open(federation.keys_dir, NodeId("shanghai"), clock=clock)
    keys = StaticKeyResolver({**pair.keys._keys, **shanghai.verification_keys()})
    assert pair.linquan.exchange is not None
    pair.linquan.exchange._hops = hop_gate(LINQUAN, keys, clock)
    body = b'{"route":["shanghai","linquan"],"message":{"kind":"event"}}'
    await relay_fails(
        pair, body, proof(shanghai, "shanghai", body, clock), AuthError, 401, "hop.route"
    )


def test_the_longest_envelope_fits_the_room_a_package_leaves_for_it() -> None:
    route = tuple(NodeId(f"n{i:02d}".ljust(32, "x")) for i in range(MAX_ROUTE))
    assert len(envelope(route, b"{}")) - len(b"{}") <= ENVELOPE_RESERVE


async def test_the_sender_stops_when_cancelled_just_after_being_woken(pair: Pair) -> None:
    # node shutdown cancels the sender; an action a moment before woke it (due()). On
    # Python 3.11, asyncio.wait_for returned the woken wait's result and swallowed the
    # cancellation, so the sender ran on and the shutdown waited for it for ever.
    exchange = pair.zhuji.exchange
    assert exchange is not None
    task = asyncio.create_task(exchange.run())
    await asyncio.sleep(0.05)  # in its wait for something due
    exchange.due()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    if not done:  # the bug: stop it for good before failing
        task.cancel()
        await asyncio.wait({task}, timeout=5)
    assert done
    assert task.cancelled()


async def test_a_message_refused_for_good_is_set_aside_and_the_next_goes_on(
    pair: Pair, clock: FixedClock
) -> None:
    zhuji, linquan = pair.zhuji, pair.linquan
    assert zhuji.exchange is not None
    first, _ = await zhuji.exchange.intake(WINDOW, marriage(), None)
    second, _ = await zhuji.exchange.intake(WINDOW, marriage(), None)
    store = zhuji.cases.store
    due, sent = store.due_messages, store.sent

    def tampered(now: float, **kwargs: Any) -> list[Message]:
        messages = due(now, **kwargs)
        changed = []
        for message in messages:
            body = message.body
            if message.case_id == first.id:
                package = orjson.loads(body)
                sha = next(iter(package["blobs"]))
                package["blobs"][sha] = b64url_encode(b"altered on the way")
                body = orjson.dumps(package)
            changed.append(replace(message, body=body))
        return changed

    def sent_then_stop(seq: int) -> None:
        sent(seq)
        raise Stop

    store.due_messages = tampered  # type: ignore[method-assign]
    store.sent = sent_then_stop  # type: ignore[method-assign]
    with pytest.raises(Stop):
        await asyncio.wait_for(zhuji.exchange.run(), HANG_GUARD)
    (dead,) = store.dead_letters()
    assert dead[:4] == (first.id, "linquan", "package", "case.package_mismatch")
    assert state_at(linquan, first.id) is None
    assert state_at(linquan, second.id) is CaseState.PENDING_ACCEPTANCE
