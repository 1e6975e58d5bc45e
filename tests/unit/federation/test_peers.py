"""The one outbound peer client: signed POSTs, bounded answers, named hops, config numbers.

A real aiohttp server on a free loopback port plays shaoxing; the client is zhuji's, built
from the default federation file with shaoxing's port moved there. Its hop proofs are
checked by the real :class:`HopGate` a node puts at its door.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.clock import FixedClock
from gateway.config import DEFAULT_FEDERATION_FILE, Federation, Network, load_federation
from gateway.crypto.jwks import KeyState, StaticKeyResolver, VerificationKey
from gateway.crypto.seals import PrivateKeySigner
from gateway.errors import AuthError, NetworkError, UpstreamTimeout
from gateway.federation.hops import HOP_HEADER, HopGate, NonceCache, sign_hop
from gateway.federation.peers import PeerClient, UpstreamProblem
from gateway.federation.resilience import BreakerState, Deadline
from gateway.ids import NodeId
from gateway.sso.consent import CONSENT_HEADER

NOW = 1_795_507_200.0
ZHUJI = NodeId("zhuji")
SHAOXING = NodeId("shaoxing")
PATH = "/v1/exchange/fetch"
ZHUJI_KEY = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
KEYS = StaticKeyResolver(
    {
        ZHUJI_KEY.kid: VerificationKey(
            node=ZHUJI,
            kid=ZHUJI_KEY.kid,
            alg=ZHUJI_KEY.alg,
            public_key=ZHUJI_KEY.public_key,
            state=KeyState.ACTIVE,
            not_before=NOW - 86_400,
            not_after=NOW + 86_400,
            revoked_at=None,
            verify_allowed=True,
        )
    }
)

Reply = Callable[[web.Request, bytes], web.StreamResponse]


class Shaoxing:
    """A peer whose answer each test chooses; it checks hop proofs with a real HopGate."""

    def __init__(self, clock: FixedClock) -> None:
        self.gate = HopGate(
            SHAOXING,
            trust=lambda now: KEYS,
            nonces=NonceCache(max_entries=100, ttl=60),
            clock=clock,
        )
        self.reply: Reply = lambda request, body: web.json_response({"ok": True})
        self.seen: list[tuple[NodeId, dict[str, str]]] = []
        self.hits = 0

    def app(self) -> web.Application:
        async def post(request: web.Request) -> web.StreamResponse:
            self.hits += 1
            body = await request.read()
            caller = self.gate.authenticate(
                request.headers.get(HOP_HEADER), path=request.path, body=body
            )
            self.seen.append((caller, dict(request.headers)))
            return self.reply(request, body)

        async def document(request: web.Request) -> web.StreamResponse:
            self.hits += 1
            return self.reply(request, b"")

        app = web.Application()
        app.router.add_post(PATH, post)
        app.router.add_get("/doc", document)
        return app


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
async def shaoxing(clock: FixedClock) -> AsyncIterator[tuple[Shaoxing, int]]:
    peer = Shaoxing(clock)
    server = TestServer(peer.app())
    await server.start_server()
    assert server.port is not None
    yield peer, server.port
    await server.close()


def federation(port: int, **network: float) -> Federation:
    base = load_federation(DEFAULT_FEDERATION_FILE, env={}).with_ports({SHAOXING: port})
    return base.with_overrides(network=Network(**network))  # type: ignore[arg-type]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def no_sleep(seconds: float) -> None:
    return None


def client(
    port: int, session: aiohttp.ClientSession, clock: FixedClock, **network: float
) -> PeerClient:
    return PeerClient(
        ZHUJI,
        federation(port, **network),
        session,
        signer=lambda: ZHUJI_KEY,
        clock=clock,
        sleep=no_sleep,
    )


async def test_a_post_carries_a_hop_proof_the_peer_checks_and_the_callers_credentials(
    shaoxing: tuple[Shaoxing, int], session: aiohttp.ClientSession, clock: FixedClock
) -> None:
    peer, port = shaoxing
    answer = await client(port, session, clock).post(
        SHAOXING, PATH, b'{"x":1}', bearer="token", consent="grant"
    )
    assert answer == {"ok": True}
    [(caller, headers)] = peer.seen
    assert caller == ZHUJI
    assert headers["Authorization"] == "Bearer token"
    assert headers[CONSENT_HEADER] == "grant"


async def test_a_replayed_proof_is_refused_at_the_gate(clock: FixedClock) -> None:
    gate = HopGate(
        SHAOXING, trust=lambda now: KEYS, nonces=NonceCache(max_entries=10, ttl=60), clock=clock
    )
    with pytest.raises(AuthError) as missing:
        gate.authenticate(None, path=PATH, body=b"{}")
    assert missing.value.code == "hop.missing"
    proof = sign_hop(
        ZHUJI_KEY, node=ZHUJI, audience=SHAOXING, method="POST", path=PATH, body=b"{}", now=NOW
    )
    assert gate.authenticate(proof, path=PATH, body=b"{}") == ZHUJI
    with pytest.raises(AuthError) as replay:
        gate.authenticate(proof, path=PATH, body=b"{}")
    assert replay.value.code == "hop.replay"


async def test_an_answer_over_the_cap_is_refused_naming_the_hop(
    shaoxing: tuple[Shaoxing, int], session: aiohttp.ClientSession, clock: FixedClock
) -> None:
    peer, port = shaoxing
    peer.reply = lambda request, body: web.json_response({"pad": "x" * 2000})
    with pytest.raises(NetworkError) as caught:
        await client(port, session, clock, max_answer_bytes=1000, retry_attempts=1).post(
            SHAOXING, PATH, b"{}"
        )
    assert caught.value.code == "network.answer_too_large"
    assert caught.value.detail.startswith("hop zhuji→shaoxing: ")


async def test_a_peer_refusal_comes_back_with_its_status_and_code(
    shaoxing: tuple[Shaoxing, int], session: aiohttp.ClientSession, clock: FixedClock
) -> None:
    peer, port = shaoxing
    problem = {"code": "consent.required", "detail": "no grant"}
    peer.reply = lambda request, body: web.json_response(problem, status=403)
    peers = client(port, session, clock)
    with pytest.raises(UpstreamProblem) as caught:
        await peers.post(SHAOXING, PATH, b"{}")
    assert (caught.value.status, caught.value.code, caught.value.detail) == (
        403,
        "consent.required",
        "no grant",
    )
    assert peer.hits == 1  # the peer answered: not retried
    assert peers.breakers.for_peer(SHAOXING).state is BreakerState.CLOSED


async def test_a_failing_peer_is_retried_then_cut_off_by_the_configured_numbers(
    shaoxing: tuple[Shaoxing, int], session: aiohttp.ClientSession, clock: FixedClock
) -> None:
    peer, port = shaoxing
    peer.reply = lambda request, body: web.Response(status=503, text="down")
    peers = client(port, session, clock, retry_attempts=2, breaker_failures=4)
    for _ in range(2):
        with pytest.raises(NetworkError) as caught:
            await peers.post(SHAOXING, PATH, b"{}")
        assert caught.value.code == "network.bad_gateway"
    assert peer.hits == 4  # two calls, two attempts each
    with pytest.raises(NetworkError) as cut:
        await peers.post(SHAOXING, PATH, b"{}")
    assert cut.value.code == "network.circuit_open"
    assert peer.hits == 4


async def test_an_answer_without_json_is_a_bad_gateway(
    shaoxing: tuple[Shaoxing, int], session: aiohttp.ClientSession, clock: FixedClock
) -> None:
    peer, port = shaoxing
    peer.reply = lambda request, body: web.Response(status=200, text="<html>")
    with pytest.raises(NetworkError) as caught:
        await client(port, session, clock, retry_attempts=1).post(SHAOXING, PATH, b"{}")
    assert caught.value.detail == "hop zhuji→shaoxing: answered 200 without JSON"


async def test_a_redirect_is_not_followed(
    shaoxing: tuple[Shaoxing, int], session: aiohttp.ClientSession, clock: FixedClock
) -> None:
    peer, port = shaoxing

    def redirect(request: web.Request, body: bytes) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect("http://127.0.0.1:9/elsewhere")

    peer.reply = redirect
    with pytest.raises(NetworkError) as caught:
        await client(port, session, clock, retry_attempts=1).post(SHAOXING, PATH, b"{}")
    assert caught.value.code == "network.bad_gateway"
    assert peer.hits == 1


async def test_a_spent_deadline_sends_nothing(
    shaoxing: tuple[Shaoxing, int], session: aiohttp.ClientSession, clock: FixedClock
) -> None:
    peer, port = shaoxing
    with pytest.raises(UpstreamTimeout) as caught:
        await client(port, session, clock).post(
            SHAOXING, PATH, b"{}", deadline=Deadline(0.0, clock)
        )
    assert caught.value.code == "network.deadline"
    assert peer.hits == 0


async def test_a_get_is_bounded_by_the_answer_cap(
    shaoxing: tuple[Shaoxing, int], session: aiohttp.ClientSession, clock: FixedClock
) -> None:
    peer, port = shaoxing
    peer.reply = lambda request, body: web.Response(
        body=orjson.dumps({"pad": "x" * 5000}), content_type="application/json"
    )
    peers = client(port, session, clock, max_answer_bytes=1000)
    with pytest.raises(NetworkError) as caught:
        await peers.get(SHAOXING, "/doc", max_bytes=10_000_000, code_prefix="trust")
    assert caught.value.code == "trust.fetch_failed"
    small = client(port, session, clock)
    assert orjson.loads(await small.get(SHAOXING, "/doc")) == {"pad": "x" * 5000}
