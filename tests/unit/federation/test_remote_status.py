"""Remote status lists: prefetched over HTTP, judged by the trust list, never fetched off-list."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.certificates.status import CertStatus
from gateway.certificates.status_list import (
    STATUS_LIST_MEDIA_TYPE,
    STATUS_LIST_TYP,
    pack,
    status_list_claims,
)
from gateway.clock import FixedClock
from gateway.config import Federation, load_federation
from gateway.crypto.jwks import KeyState, VerificationKey, public_jwk
from gateway.crypto.seals import PrivateKeySigner, sign_compact
from gateway.errors import SealIndeterminate
from gateway.federation.remote_status import FAILURE_TTL, RemoteStatuses
from gateway.ids import NodeId
from gateway.trust.trust_list import KeyHistory, TrustedKey, TrustListResolver, build_trust_list

NOW = 1_795_507_200.0  # 2026-11-24T08:00:00Z
T = int(NOW)
ZHUJI, SHANGHAI = NodeId("zhuji"), NodeId("shanghai")
FED: Federation = load_federation(env={})


def signer(seed: int) -> PrivateKeySigner:
    return PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


ZHUJI_KEY, SHANGHAI_KEY, STRANGER_KEY = signer(50), signer(51), signer(52)


def trusted(key: PrivateKeySigner, node: NodeId) -> TrustedKey:
    jwk = public_jwk(
        VerificationKey(
            node=node,
            kid=key.kid,
            alg=key.alg,
            public_key=key.public_key,
            state=KeyState.ACTIVE,
            not_before=NOW - 1000,
            not_after=NOW + 86_400,
            revoked_at=None,
            verify_allowed=True,
        )
    )
    return TrustedKey(jwk=jwk, history=(KeyHistory(KeyState.ACTIVE, T - 1000),))


class Peer:
    """A node serving status list tokens; counts every request, whatever its path."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.hits = 0

    def app(self) -> web.Application:
        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            self.hits += 1
            response: web.StreamResponse = await handler(request)
            return response

        async def handler(request: web.Request) -> web.Response:
            token = self.tokens.get(request.match_info["list"])
            if token is None:
                return web.Response(status=404)
            return web.Response(text=token, content_type=STATUS_LIST_MEDIA_TYPE)

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound("/v1/status-lists/0")

        app = web.Application(middlewares=[count])
        app.router.add_get("/v1/status-lists/{list}", handler)
        app.router.add_get("/admin", redirect)
        return app


class World:
    def __init__(self, peer: Peer, federation: Federation) -> None:
        self.peer = peer
        self.federation = federation
        self.base = federation.url(ZHUJI)
        self.trust = TrustListResolver(
            build_trust_list(
                federation,
                {ZHUJI: [trusted(ZHUJI_KEY, ZHUJI)], SHANGHAI: [trusted(SHANGHAI_KEY, SHANGHAI)]},
                seq=1,
                now=NOW,
            )
        )

    def uri(self, list_id: int = 0) -> str:
        return f"{self.base}/v1/status-lists/{list_id}"

    def serve(
        self,
        list_id: int = 0,
        *,
        key: PrivateKeySigner = ZHUJI_KEY,
        exp: int = T + 3600,
        sub: str | None = None,
        **changes: Any,
    ) -> str:
        claims = status_list_claims(
            uri=sub or self.uri(list_id),
            bits_bytes=pack([CertStatus.VALID, CertStatus.REVOKED, CertStatus.SUSPENDED]),
            iat=T,
            exp=exp,
            ttl=changes.pop("ttl", 3600),
        )
        token = sign_compact(key, orjson.dumps(claims), typ=STATUS_LIST_TYP, signed_at=NOW)
        self.peer.tokens[str(list_id)] = token
        return token


@pytest.fixture
async def world() -> AsyncIterator[World]:
    peer = Peer()
    server = TestServer(peer.app())
    await server.start_server()
    assert server.port is not None
    yield World(peer, FED.with_ports({ZHUJI: server.port}))
    await server.close()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
async def statuses(world: World, clock: FixedClock) -> AsyncIterator[RemoteStatuses]:
    async with aiohttp.ClientSession() as session:
        yield RemoteStatuses(session, lambda now: world.trust, clock=clock, ttl=60)


def refused(statuses: RemoteStatuses, uri: str, index: int = 0) -> SealIndeterminate:
    with pytest.raises(SealIndeterminate) as caught:
        statuses.status_of(uri, index)
    return caught.value


async def test_a_prefetched_list_answers_statuses(world: World, statuses: RemoteStatuses) -> None:
    world.serve()
    await statuses.prefetch(world.uri())
    assert statuses.status_of(world.uri(), 0) is CertStatus.VALID
    assert statuses.status_of(world.uri(), 1) is CertStatus.REVOKED
    assert statuses.status_of(world.uri(), 2) is CertStatus.SUSPENDED
    assert refused(statuses, world.uri(), 10_000).code == "status.unknown_index"
    assert world.peer.hits == 1


async def test_a_uri_not_prefetched_is_unavailable(world: World, statuses: RemoteStatuses) -> None:
    assert refused(statuses, world.uri()).code == "status.unavailable"
    assert world.peer.hits == 0


@pytest.mark.parametrize(
    "make_uri",
    [
        lambda base: f"{base}/admin",
        lambda base: f"{base}/v1/status-lists/0?x=1",
        lambda base: f"{base}/v1/status-lists/0#frag",
        lambda base: f"{base}/v1/status-lists/../admin",
        lambda base: f"{base}/v1/status-lists/",
        lambda base: base.replace("http://", "http://user@") + "/v1/status-lists/0",
        lambda base: base.replace("http://", "ftp://") + "/v1/status-lists/0",
        lambda base: base.replace("127.0.0.1", "localhost") + "/v1/status-lists/0",
        lambda base: "http://127.0.0.1:1/v1/status-lists/0",
        lambda base: "http://169.254.169.254/v1/status-lists/0",
    ],
)
async def test_only_trusted_status_list_uris_are_ever_fetched(
    world: World, statuses: RemoteStatuses, make_uri: Any
) -> None:
    world.serve()
    uri = make_uri(world.base)
    await statuses.prefetch(uri)
    error = refused(statuses, uri)
    assert error.code == "status.unavailable"
    assert world.peer.hits == 0


async def test_a_bad_signature_is_refused(world: World, statuses: RemoteStatuses) -> None:
    head, payload, signature = world.serve().split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    world.peer.tokens["0"] = f"{head}.{payload}.{flipped}"
    await statuses.prefetch(world.uri())
    assert refused(statuses, world.uri()).code == "status.bad_signature"


async def test_a_key_of_another_node_is_refused(world: World, statuses: RemoteStatuses) -> None:
    world.serve(key=SHANGHAI_KEY)  # trusted, but shanghai's: it cannot speak for zhuji
    await statuses.prefetch(world.uri())
    assert refused(statuses, world.uri()).code == "status.wrong_node"


async def test_an_unknown_key_is_refused(world: World, statuses: RemoteStatuses) -> None:
    world.serve(key=STRANGER_KEY)
    await statuses.prefetch(world.uri())
    assert refused(statuses, world.uri()).code == "status.unknown_kid"


async def test_a_token_for_another_list_is_refused(world: World, statuses: RemoteStatuses) -> None:
    world.serve(sub=world.uri(7))
    await statuses.prefetch(world.uri())
    assert refused(statuses, world.uri()).code == "status.invalid"


async def test_an_expired_token_is_refused(
    world: World, statuses: RemoteStatuses, clock: FixedClock
) -> None:
    world.serve(exp=T + 10)
    clock.advance(10)
    await statuses.prefetch(world.uri())
    assert refused(statuses, world.uri()).code == "status.expired"


async def test_a_missing_list_is_unavailable(world: World, statuses: RemoteStatuses) -> None:
    await statuses.prefetch(world.uri(3))
    assert refused(statuses, world.uri(3)).code == "status.unavailable"
    assert world.peer.hits == 1


async def test_without_a_trust_list_nothing_is_fetched(world: World, clock: FixedClock) -> None:
    def no_trust(now: float) -> TrustListResolver:
        raise SealIndeterminate("no trust list is available", code="trust.unavailable")

    world.serve()
    async with aiohttp.ClientSession() as session:
        statuses = RemoteStatuses(session, no_trust, clock=clock)
        await statuses.prefetch(world.uri())
        assert refused(statuses, world.uri()).code == "trust.unavailable"
    assert world.peer.hits == 0


async def test_a_list_is_cached_for_ttl(
    world: World, statuses: RemoteStatuses, clock: FixedClock
) -> None:
    world.serve()
    await statuses.prefetch(world.uri())
    clock.advance(59)
    await statuses.prefetch(world.uri())
    assert world.peer.hits == 1
    assert statuses.status_of(world.uri(), 1) is CertStatus.REVOKED
    clock.advance(1)
    assert refused(statuses, world.uri()).code == "status.unavailable"
    await statuses.prefetch(world.uri())
    assert world.peer.hits == 2
    assert statuses.status_of(world.uri(), 1) is CertStatus.REVOKED


async def test_a_list_is_cached_no_longer_than_its_exp(
    world: World, statuses: RemoteStatuses, clock: FixedClock
) -> None:
    world.serve(exp=T + 30)
    await statuses.prefetch(world.uri())
    clock.advance(29)
    assert statuses.status_of(world.uri(), 0) is CertStatus.VALID
    clock.advance(1)
    assert refused(statuses, world.uri()).code == "status.unavailable"


async def test_a_failure_is_remembered_briefly(
    world: World, statuses: RemoteStatuses, clock: FixedClock
) -> None:
    await statuses.prefetch(world.uri())  # 404
    await statuses.prefetch(world.uri())
    assert world.peer.hits == 1
    world.serve()
    clock.advance(FAILURE_TTL)
    await statuses.prefetch(world.uri())
    assert world.peer.hits == 2
    assert statuses.status_of(world.uri(), 0) is CertStatus.VALID


async def test_concurrent_prefetches_share_one_fetch(
    world: World, statuses: RemoteStatuses
) -> None:
    world.serve()
    await asyncio.gather(*(statuses.prefetch(world.uri()) for _ in range(5)))
    assert world.peer.hits == 1
    assert statuses.status_of(world.uri(), 0) is CertStatus.VALID
