"""The trust-list authority: key histories, publishing, its state file, and collecting JWKS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.clock import FixedClock
from gateway.config import Federation, load_federation
from gateway.crypto.jwks import KeyState, VerificationKey, public_jwk
from gateway.crypto.seals import PrivateKeySigner
from gateway.errors import ConfigError, NotFoundError, SealError
from gateway.federation.enrolment import collect
from gateway.federation.peers import PeerClient
from gateway.ids import NodeId
from gateway.services.authority import TrustAuthority
from gateway.trust.rootkey import RootKey
from gateway.trust.trust_list import KeyHistory, TrustList, verify_trust_list

NOW = 1_795_507_200.0  # 2026-11-24T08:00:00Z
T = int(NOW)
ZHUJI, SHANGHAI, NATIONAL = NodeId("zhuji"), NodeId("shanghai"), NodeId("national")
FED: Federation = load_federation(env={})


def signer(seed: int) -> PrivateKeySigner:
    return PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


def jwk(
    key: PrivateKeySigner,
    node: NodeId,
    state: KeyState = KeyState.ACTIVE,
    *,
    nbf: float | None = NOW - 1000,
    revoked_at: float | None = None,
) -> dict[str, Any]:
    return public_jwk(
        VerificationKey(
            node=node,
            kid=key.kid,
            alg=key.alg,
            public_key=key.public_key,
            state=state,
            not_before=nbf,
            not_after=NOW + 365 * 86_400,
            revoked_at=revoked_at,
            verify_allowed=True,
        )
    )


def jwks(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(keys)}


A, B = signer(20), signer(21)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def root(tmp_path: Path, clock: FixedClock) -> RootKey:
    return RootKey.open_or_create(tmp_path / "keys", clock=clock)


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "authority.json"


@pytest.fixture
def open_authority(
    clock: FixedClock, root: RootKey, state_path: Path
) -> Callable[[], TrustAuthority]:
    return lambda: TrustAuthority.open(FED, clock=clock, root=root, state_path=state_path)


def history(authority: TrustAuthority, node: NodeId) -> list[tuple[KeyHistory, ...]]:
    return [key.history for key in authority.keys(node)]


def verified(token: str | None, root: RootKey, now: float = NOW) -> TrustList:
    assert token is not None
    return verify_trust_list(token, root.verification_key, now=now)


# --- observing keys ---------------------------------------------------------------------------


def test_a_new_key_enters_with_its_status_since_its_nbf(
    open_authority: Callable[[], TrustAuthority],
) -> None:
    authority = open_authority()
    assert authority.observe(ZHUJI, jwks(jwk(A, ZHUJI, KeyState.NEXT, nbf=NOW - 50)))
    assert history(authority, ZHUJI) == [(KeyHistory(KeyState.NEXT, T - 50),)]


def test_a_new_key_without_nbf_enters_since_now(
    open_authority: Callable[[], TrustAuthority],
) -> None:
    authority = open_authority()
    authority.observe(ZHUJI, jwks(jwk(A, ZHUJI, nbf=None)))
    assert history(authority, ZHUJI) == [(KeyHistory(KeyState.ACTIVE, T),)]


def test_a_key_first_seen_revoked_enters_at_its_revocation_time(
    open_authority: Callable[[], TrustAuthority],
) -> None:
    authority = open_authority()
    authority.observe(ZHUJI, jwks(jwk(A, ZHUJI, KeyState.REVOKED, revoked_at=NOW - 7)))
    assert history(authority, ZHUJI) == [(KeyHistory(KeyState.REVOKED, T - 7),)]


def test_status_changes_append_to_the_history(
    open_authority: Callable[[], TrustAuthority], clock: FixedClock
) -> None:
    authority = open_authority()
    authority.unsafe_follow_jwks = True  # this test follows JWKS states
    authority.observe(ZHUJI, jwks(jwk(A, ZHUJI, KeyState.NEXT)))
    clock.advance(100)
    assert authority.observe(ZHUJI, jwks(jwk(A, ZHUJI, KeyState.ACTIVE)))
    clock.advance(100)
    assert authority.observe(ZHUJI, jwks(jwk(A, ZHUJI, KeyState.REVOKED, revoked_at=NOW + 150)))
    assert history(authority, ZHUJI) == [
        (
            KeyHistory(KeyState.NEXT, T - 1000),
            KeyHistory(KeyState.ACTIVE, T + 100),
            KeyHistory(KeyState.REVOKED, T + 150),
        )
    ]


def test_the_same_jwks_again_changes_nothing(
    open_authority: Callable[[], TrustAuthority], clock: FixedClock
) -> None:
    authority = open_authority()
    authority.observe(ZHUJI, jwks(jwk(A, ZHUJI)))
    clock.advance(60)
    assert not authority.observe(ZHUJI, jwks(jwk(A, ZHUJI)))
    assert history(authority, ZHUJI) == [(KeyHistory(KeyState.ACTIVE, T - 1000),)]


def test_a_key_missing_from_a_later_jwks_is_kept(
    open_authority: Callable[[], TrustAuthority],
) -> None:
    authority = open_authority()
    authority.observe(ZHUJI, jwks(jwk(A, ZHUJI), jwk(B, ZHUJI, KeyState.NEXT)))
    assert not authority.observe(ZHUJI, jwks(jwk(B, ZHUJI, KeyState.NEXT)))
    assert {key.kid for key in authority.keys(ZHUJI)} == {A.kid, B.kid}


def test_nothing_follows_a_revocation(open_authority: Callable[[], TrustAuthority]) -> None:
    authority = open_authority()
    authority.observe(ZHUJI, jwks(jwk(A, ZHUJI, KeyState.REVOKED, revoked_at=NOW - 7)))
    assert not authority.observe(ZHUJI, jwks(jwk(A, ZHUJI, KeyState.ACTIVE)))
    assert history(authority, ZHUJI) == [(KeyHistory(KeyState.REVOKED, T - 7),)]


def test_history_never_goes_back_in_time(
    open_authority: Callable[[], TrustAuthority],
) -> None:
    authority = open_authority()
    authority.unsafe_follow_jwks = True  # this test follows JWKS states
    authority.observe(ZHUJI, jwks(jwk(A, ZHUJI, KeyState.ACTIVE, nbf=NOW)))
    # revoked "before" it became active: the entry is placed no earlier than the last one
    authority.observe(ZHUJI, jwks(jwk(A, ZHUJI, KeyState.REVOKED, nbf=NOW, revoked_at=NOW - 9)))
    assert history(authority, ZHUJI)[0][-1] == KeyHistory(KeyState.REVOKED, T)


def test_a_malformed_jwks_is_refused(open_authority: Callable[[], TrustAuthority]) -> None:
    authority = open_authority()
    with pytest.raises(SealError) as caught:
        authority.observe(ZHUJI, {"keys": "nope"})
    assert caught.value.code == "jwk.invalid"
    assert authority.keys(ZHUJI) == ()


def test_a_key_naming_another_node_is_refused(
    open_authority: Callable[[], TrustAuthority],
) -> None:
    authority = open_authority()
    with pytest.raises(SealError) as caught:
        authority.observe(ZHUJI, jwks(jwk(A, SHANGHAI)))
    assert caught.value.code == "jwk.bad_member"


def test_an_unknown_node_is_refused(open_authority: Callable[[], TrustAuthority]) -> None:
    authority = open_authority()
    with pytest.raises(NotFoundError) as caught:
        authority.observe(NodeId("atlantis"), jwks(jwk(A, NodeId("atlantis"))))
    assert caught.value.code == "trust.unknown_node"


# --- publishing -------------------------------------------------------------------------------


def test_published_lists_verify_with_the_root_key_and_count_up(
    open_authority: Callable[[], TrustAuthority], root: RootKey, clock: FixedClock
) -> None:
    authority = open_authority()
    assert authority.token is None
    authority.observe(ZHUJI, jwks(jwk(A, ZHUJI)))
    first = verified(authority.publish(), root)
    assert first.seq == 1
    zhuji = next(n for n in first.nodes if n.id == ZHUJI)
    assert [(k.kid, k.history) for k in zhuji.keys] == [
        (A.kid, (KeyHistory(KeyState.ACTIVE, T - 1000),))
    ]
    clock.advance(10)
    token = authority.publish()
    assert authority.token == token
    assert authority.seq == 2
    assert verified(token, root, NOW + 10).seq == 2


def test_needs_publish(open_authority: Callable[[], TrustAuthority], root: RootKey) -> None:
    authority = open_authority()
    assert authority.needs_publish(NOW)  # no list yet
    authority.publish()
    assert not authority.needs_publish(NOW)
    authority.observe(ZHUJI, jwks(jwk(A, ZHUJI)))
    assert authority.needs_publish(NOW)  # keys changed
    authority.publish()
    assert not authority.needs_publish(NOW)
    refresh_at = verified(authority.token, root).refresh_at()
    assert not authority.needs_publish(refresh_at - 1)
    assert authority.needs_publish(refresh_at)


# --- the state file ---------------------------------------------------------------------------


def test_state_survives_a_restart(
    open_authority: Callable[[], TrustAuthority], state_path: Path, clock: FixedClock
) -> None:
    authority = open_authority()
    authority.observe(ZHUJI, jwks(jwk(A, ZHUJI, KeyState.NEXT)))
    clock.advance(5)
    authority.observe(ZHUJI, jwks(jwk(A, ZHUJI)))
    token = authority.publish()
    assert state_path.stat().st_mode & 0o777 == 0o600

    again = open_authority()
    assert again.seq == 1
    assert again.token == token
    assert history(again, ZHUJI) == history(authority, ZHUJI)
    assert not again.needs_publish(NOW + 5)
    again.publish()
    assert again.seq == 2


def test_unpublished_changes_survive_a_restart(
    open_authority: Callable[[], TrustAuthority],
) -> None:
    authority = open_authority()
    authority.publish()
    authority.observe(SHANGHAI, jwks(jwk(B, SHANGHAI)))
    again = open_authority()
    assert again.needs_publish(NOW)
    assert [k.kid for k in again.keys(SHANGHAI)] == [B.kid]


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"format": 99}',
        b'{"format": 1, "federation": "other", "seq": 0, "token": null, "iat": null,'
        b' "exp": null, "changed": false, "nodes": {}}',
        b'{"format": 1, "federation": "tongban-demo", "seq": -1, "token": null, "iat": null,'
        b' "exp": null, "changed": false, "nodes": {}}',
        b'{"format": 1, "federation": "tongban-demo", "seq": 0, "token": null, "iat": null,'
        b' "exp": null, "changed": false, "nodes": {"atlantis": []}}',
        b'{"format": 1, "federation": "tongban-demo", "seq": 0, "token": null, "iat": null,'
        b' "exp": null, "changed": false, "nodes": {"zhuji": [{"jwk": {}, "history": []}]}}',
        b'{"format": 1, "federation": "tongban-demo", "seq": 0}',
    ],
)
def test_a_bad_state_file_fails_at_start(
    open_authority: Callable[[], TrustAuthority], state_path: Path, content: bytes
) -> None:
    assert FED.name == "tongban-demo"
    state_path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        open_authority()
    assert caught.value.code == "trust.state"


def test_a_bad_validity_fails_at_start(clock: FixedClock, root: RootKey, state_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        TrustAuthority.open(FED, clock=clock, root=root, state_path=state_path, validity=0)
    assert caught.value.code == "trust.state"


# --- collecting over HTTP ---------------------------------------------------------------------


class Nodes:
    """One JWKS server per node; each counts its requests and can be told to fail."""

    def __init__(self) -> None:
        self.bodies: dict[str, Any] = {}
        self.hits: dict[str, int] = {}
        self.servers: dict[str, TestServer] = {}

    def app(self, node: str) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            self.hits[node] = self.hits.get(node, 0) + 1
            body = self.bodies.get(node)
            if body is None:
                return web.Response(status=503, text="down")
            return web.Response(body=orjson.dumps(body), content_type="application/json")

        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", handler)
        return app


def peers(federation: Federation, session: aiohttp.ClientSession, clock: FixedClock) -> PeerClient:
    """National's outbound client (its GETs of public documents carry no hop proof)."""
    return PeerClient(NATIONAL, federation, session, signer=lambda: signer(30), clock=clock)


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    fake = Nodes()
    for node in FED.nodes:
        if node.id != NATIONAL:
            server = TestServer(fake.app(node.id))
            await server.start_server()
            fake.servers[node.id] = server
    yield fake
    for server in fake.servers.values():
        await server.close()


@pytest.fixture
def federation(nodes: Nodes) -> Federation:
    ports = {node: server.port for node, server in nodes.servers.items()}
    assert all(port is not None for port in ports.values())
    return FED.with_ports({node: port for node, port in ports.items() if port is not None})


async def test_collect_records_every_region_node_and_skips_one_down(
    nodes: Nodes, federation: Federation, clock: FixedClock, root: RootKey, state_path: Path
) -> None:
    authority = TrustAuthority.open(federation, clock=clock, root=root, state_path=state_path)
    regions = [n.id for n in federation.nodes if n.kind == "region" and n.id != NATIONAL]
    signers = {node: signer(40 + i) for i, node in enumerate(regions)}
    for node in regions:
        nodes.bodies[node] = jwks(jwk(signers[node], node))
    nodes.bodies["idp"] = jwks(jwk(signer(99), NodeId("idp")))
    nodes.bodies.pop("anhui")  # anhui is down
    own = jwks(jwk(signer(30), NATIONAL))
    async with aiohttp.ClientSession() as session:
        assert await collect(
            authority, federation, peers(federation, session, clock), own=own, node_id=NATIONAL
        )
        assert [k.kid for k in authority.keys(NATIONAL)] == [signer(30).kid]
        for node in regions:
            expected = [] if node == "anhui" else [signers[node].kid]
            assert [k.kid for k in authority.keys(node)] == expected
        assert nodes.hits.get("idp", 0) == 0  # not a region: its keys sign tokens, not seals
        assert nodes.hits["anhui"] == 1

        # anhui comes back: the next round picks it up; nothing else changed
        nodes.bodies["anhui"] = jwks(jwk(signers[NodeId("anhui")], NodeId("anhui")))
        assert await collect(
            authority, federation, peers(federation, session, clock), own=own, node_id=NATIONAL
        )
        assert [k.kid for k in authority.keys(NodeId("anhui"))] == [signers[NodeId("anhui")].kid]
        assert not await collect(
            authority, federation, peers(federation, session, clock), own=own, node_id=NATIONAL
        )
    assert verified(authority.publish(), root).seq == 1


async def test_collect_skips_a_refused_jwks(
    nodes: Nodes, federation: Federation, clock: FixedClock, root: RootKey, state_path: Path
) -> None:
    authority = TrustAuthority.open(federation, clock=clock, root=root, state_path=state_path)
    nodes.bodies[ZHUJI] = jwks(jwk(A, SHANGHAI))  # a key claiming another node
    nodes.bodies[SHANGHAI] = jwks(jwk(B, SHANGHAI))
    async with aiohttp.ClientSession() as session:
        assert await collect(
            authority, federation, peers(federation, session, clock), own=None, node_id=NATIONAL
        )
    assert authority.keys(ZHUJI) == ()
    assert [k.kid for k in authority.keys(SHANGHAI)] == [B.kid]
