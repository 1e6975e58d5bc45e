"""Partners check each other's audit logs over HTTP: growth, forks, rewrites, failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.cosignatures import Cosignature, cosign_head
from gateway.audit.heads import SignedTreeHead, sign_tree_head
from gateway.audit.records import AuditKind
from gateway.clock import FixedClock
from gateway.config import Federation, load_federation
from gateway.crypto.jwks import KeyResolver, KeyState, StaticKeyResolver, VerificationKey
from gateway.crypto.seals import PrivateKeySigner
from gateway.errors import CosignatureError, SealIndeterminate
from gateway.federation.partner_watch import (
    CONSISTENCY_PATH,
    COSIGNATURES_PATH,
    HEAD_PATH,
    PartnerWatch,
    neighbours,
)
from gateway.federation.routing import Topology
from gateway.http.appkeys import NODE
from gateway.http.handlers import audit_consistency, audit_cosignatures, audit_head
from gateway.ids import NodeId
from gateway.metrics import Metrics
from gateway.services.node import NodeService
from gateway.storage.audit_log import SqliteAuditLog

NOW = 1_795_507_200.0
ZHUJI = NodeId("zhuji")
SHAOXING = NodeId("shaoxing")  # zhuji's parent
LINQUAN = NodeId("linquan")  # linked to zhuji by a point-to-point agreement
SHAOXING_KEY = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
LINQUAN_KEY = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
STRANGER_KEY = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34))))


def vkey(signer: PrivateKeySigner, node: NodeId) -> VerificationKey:
    return VerificationKey(
        node=node,
        kid=signer.kid,
        alg=signer.alg,
        public_key=signer.public_key,
        state=KeyState.ACTIVE,
        not_before=None,
        not_after=None,
        revoked_at=None,
        verify_allowed=True,
    )


KEYS = StaticKeyResolver(
    {SHAOXING_KEY.kid: vkey(SHAOXING_KEY, SHAOXING), LINQUAN_KEY.kid: vkey(LINQUAN_KEY, LINQUAN)}
)


def fill(log: SqliteAuditLog, clock: FixedClock, n: int, actor: str = "shaoxing-civil") -> None:
    for _ in range(n):
        log.append(AuditKind.ISSUANCE, actor, f"cert-{log.size()}")
        clock.advance(1)


class Served:
    """The part of a node's service the audit handlers use, over a swappable real log."""

    def __init__(self, audit: SqliteAuditLog) -> None:
        self.audit = audit
        self.federation = load_federation(env={})
        self.node = SimpleNamespace(id=audit.node)
        self.published: list[Cosignature] = []
        """The cosignatures this partner publishes (as a witness of zhuji's heads)."""

    def cosignatures_made(self, origin: NodeId, *, after_size: int) -> list[Cosignature]:
        return [c for c in self.published if c.origin == origin and c.tree_size > after_size]

    def audit_head(self) -> SignedTreeHead:
        return self.audit.tree_head()

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        return self.audit.consistency_proof(first, second)


class Partner:
    """A partner node's audit endpoints (the real handlers) over a swappable real log."""

    def __init__(self, node: NodeId, signer: PrivateKeySigner, tmp: Path, clock: FixedClock):
        self.node = node
        self.signer = signer
        self.tmp = tmp
        self.clock = clock
        self.logs: list[SqliteAuditLog] = []
        self.log = self.open_log()
        self.served = Served(self.log)
        self.requests: list[str] = []
        self.broken: set[str] = set()
        """Paths answered with a 503, as a partner failing half-way would."""
        app = web.Application(middlewares=[self._record])
        app[NODE] = cast(NodeService, self.served)  # the handlers use only these two
        app.router.add_get(HEAD_PATH, audit_head)
        app.router.add_get(CONSISTENCY_PATH, audit_consistency)
        app.router.add_get(COSIGNATURES_PATH, audit_cosignatures)
        self.server = TestServer(app)

    def open_log(self, signer: PrivateKeySigner | None = None) -> SqliteAuditLog:
        path = self.tmp / f"{self.node}-{len(self.logs)}.sqlite3"
        log = SqliteAuditLog(path, node=self.node, signer=signer or self.signer, clock=self.clock)
        self.logs.append(log)
        return log

    def serve(self, log: SqliteAuditLog) -> None:
        self.served.audit = log

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        if request.path in self.broken:
            return web.Response(status=503)
        return await handler(request)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def close(self) -> None:
        for log in self.logs:
            log.close()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
async def shaoxing(tmp_path: Path, clock: FixedClock) -> AsyncIterator[Partner]:
    partner = Partner(SHAOXING, SHAOXING_KEY, tmp_path, clock)
    async with partner.server:
        yield partner
    partner.close()


@pytest.fixture
async def linquan(tmp_path: Path, clock: FixedClock) -> AsyncIterator[Partner]:
    partner = Partner(LINQUAN, LINQUAN_KEY, tmp_path, clock)
    async with partner.server:
        yield partner
    partner.close()


def federation_at(urls: dict[str, str]) -> Federation:
    federation = load_federation(env={})
    nodes = tuple(
        replace(node, url=urls[node.id]) if node.id in urls else node for node in federation.nodes
    )
    return federation.with_overrides(nodes=nodes)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(ZHUJI)


Watch = Callable[..., PartnerWatch]


@pytest.fixture
def make_watch(
    shaoxing: Partner,
    linquan: Partner,
    session: aiohttp.ClientSession,
    clock: FixedClock,
    metrics: Metrics,
) -> Watch:
    def make(
        trust: Callable[[float], KeyResolver] = lambda now: KEYS,
        ledger: Ledger | None = None,
        **urls: str,
    ) -> PartnerWatch:
        federation = federation_at({SHAOXING: shaoxing.url, LINQUAN: linquan.url, **urls})
        return PartnerWatch(
            ZHUJI,
            Topology.from_federation(federation),
            session,
            trust=trust,
            clock=clock,
            metrics=metrics,
            federation=federation,
            fetch_timeout=5.0,
            ledger=ledger,
        )

    return make


def forked(metrics: Metrics, partner: str) -> float | None:
    return metrics.registry.get_sample_value("tongban_audit_partner_forks", {"partner": partner})


def checks(metrics: Metrics, partner: str, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "tongban_audit_partner_checks_total", {"partner": partner, "result": result}
    )
    return value or 0.0


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="gateway.federation.partner_watch")
    return caplog


# --- who is a partner -----------------------------------------------------------------------


def test_neighbours_are_parent_children_and_agreement_peers() -> None:
    topology = Topology.from_federation(load_federation(env={}))
    assert neighbours(topology, ZHUJI) == (SHAOXING, LINQUAN)
    assert neighbours(topology, SHAOXING) == ("zhejiang", ZHUJI)
    assert neighbours(topology, NodeId("national")) == ("zhejiang", "shanghai", "anhui")
    assert neighbours(topology, LINQUAN) == ("zhuji", "anhui")


def test_every_partner_starts_unforked(make_watch: Watch, metrics: Metrics) -> None:
    watch = make_watch()
    assert watch.partners == (SHAOXING, LINQUAN)
    assert forked(metrics, SHAOXING) == 0
    assert forked(metrics, LINQUAN) == 0


# --- a log that grows -----------------------------------------------------------------------


async def test_a_growing_log_is_proven_consistent(
    make_watch: Watch, shaoxing: Partner, linquan: Partner, clock: FixedClock, metrics: Metrics
) -> None:
    watch = make_watch()
    fill(shaoxing.log, clock, 3)
    assert await watch.check_once() == {SHAOXING: "ok", LINQUAN: "ok"}
    fill(shaoxing.log, clock, 5)
    fill(linquan.log, clock, 2, actor="linquan-civil")
    assert await watch.check_once() == {SHAOXING: "ok", LINQUAN: "ok"}
    # the growth was proven with the partners' consistency proofs, not taken on trust
    assert f"{CONSISTENCY_PATH}?first=3&second=8" in shaoxing.requests
    assert f"{CONSISTENCY_PATH}?first=0&second=2" in linquan.requests
    # an unchanged head needs no proof
    assert await watch.check_once() == {SHAOXING: "ok", LINQUAN: "ok"}
    assert sum(CONSISTENCY_PATH in path for path in shaoxing.requests) == 1
    last = watch.watcher.last(SHAOXING)
    assert last is not None
    assert last.tree_size == 8
    assert checks(metrics, SHAOXING, "ok") == 3
    assert forked(metrics, SHAOXING) == 0


# --- forks ----------------------------------------------------------------------------------


async def test_a_rewritten_log_is_reported_as_a_fork(
    make_watch: Watch,
    shaoxing: Partner,
    clock: FixedClock,
    metrics: Metrics,
    logs: pytest.LogCaptureFixture,
) -> None:
    watch = make_watch()
    fill(shaoxing.log, clock, 4)
    assert (await watch.check_once())[SHAOXING] == "ok"
    honest = watch.watcher.last(SHAOXING)
    # the partner opens another log, as long as the first, with other entries, and serves it
    rewritten = shaoxing.open_log()
    fill(rewritten, clock, 4, actor="someone-else")
    shaoxing.serve(rewritten)
    assert (await watch.check_once())[SHAOXING] == "fork"
    assert forked(metrics, SHAOXING) == 1
    assert checks(metrics, SHAOXING, "fork") == 1
    [error] = [r for r in logs.records if r.levelno == logging.ERROR]
    assert error.partner == SHAOXING  # type: ignore[attr-defined]
    assert error.code == "audit.fork"  # type: ignore[attr-defined]
    assert honest is not None
    assert error.previous_head == honest.token  # type: ignore[attr-defined]
    # the rewritten log growing on does not make it consistent, and the fork stays reported
    fill(rewritten, clock, 3, actor="someone-else")
    assert (await watch.check_once())[SHAOXING] == "fork"
    assert f"{CONSISTENCY_PATH}?first=4&second=7" in shaoxing.requests
    assert checks(metrics, SHAOXING, "fork") == 2
    assert watch.watcher.last(SHAOXING) == honest  # the last good head is kept
    # the other partner is unaffected
    assert forked(metrics, LINQUAN) == 0


async def test_a_shrinking_log_is_a_fork(
    make_watch: Watch, shaoxing: Partner, clock: FixedClock, metrics: Metrics
) -> None:
    watch = make_watch()
    fill(shaoxing.log, clock, 5)
    assert (await watch.check_once())[SHAOXING] == "ok"
    truncated = shaoxing.open_log()
    fill(truncated, clock, 2)
    shaoxing.serve(truncated)
    assert (await watch.check_once())[SHAOXING] == "fork"
    assert forked(metrics, SHAOXING) == 1
    assert checks(metrics, SHAOXING, "fork") == 1


# --- failures that prove nothing ------------------------------------------------------------


async def test_an_unreachable_partner_is_not_a_fork(
    make_watch: Watch,
    linquan: Partner,
    metrics: Metrics,
    logs: pytest.LogCaptureFixture,
    tmp_path: Path,
    clock: FixedClock,
) -> None:
    gone = Partner(NodeId("gone"), LINQUAN_KEY, tmp_path, clock)
    async with gone.server:
        url = gone.url
    gone.close()
    watch = make_watch(linquan=url)  # nothing listens there any more
    assert (await watch.check_once())[LINQUAN] == "unreachable"
    assert forked(metrics, LINQUAN) == 0
    assert checks(metrics, LINQUAN, "unreachable") == 1
    assert LINQUAN not in watch.watcher.forks
    [warning] = [r for r in logs.records if getattr(r, "partner", None) == LINQUAN]
    assert warning.levelno == logging.WARNING
    assert warning.code == "audit.partner.fetch_failed"  # type: ignore[attr-defined]


async def test_a_proof_that_cannot_be_fetched_is_not_a_fork(
    make_watch: Watch, shaoxing: Partner, clock: FixedClock, metrics: Metrics
) -> None:
    watch = make_watch()
    fill(shaoxing.log, clock, 2)
    assert (await watch.check_once())[SHAOXING] == "ok"
    fill(shaoxing.log, clock, 3)
    shaoxing.broken.add(CONSISTENCY_PATH)
    assert (await watch.check_once())[SHAOXING] == "unreachable"
    assert forked(metrics, SHAOXING) == 0
    last = watch.watcher.last(SHAOXING)
    assert last is not None
    assert last.tree_size == 2  # nothing learnt: the new head waits for its proof
    shaoxing.broken.clear()
    assert (await watch.check_once())[SHAOXING] == "ok"
    assert f"{CONSISTENCY_PATH}?first=2&second=5" in shaoxing.requests


def _answer(body: bytes, content_type: str = "application/json") -> web.Response:
    return web.Response(body=body, content_type=content_type)


@pytest.mark.parametrize(
    ("head", "proof", "code"),
    [
        (_answer(b"[]"), None, "audit.partner.bad_answer"),
        (_answer(b'{"signed_tree_head": 5}'), None, "audit.partner.bad_answer"),
        (_answer(b'{"a": 1, "a": 2}'), None, "audit.partner.bad_answer"),
        (_answer(b"not json"), None, "audit.partner.bad_answer"),
        (_answer(b"{}", "text/html"), None, "audit.partner.fetch_failed"),
        (_answer(b"{" + b" " * 20_000 + b"}"), None, "audit.partner.fetch_failed"),
        (None, _answer(b'{"proof": "AAAA"}'), "audit.partner.bad_answer"),
        (None, _answer(b'{"proof": [1]}'), "audit.partner.bad_answer"),
        (None, _answer(b'{"proof": ["not base64!"]}'), "audit.partner.bad_answer"),
        (None, _answer(b'{"proof": [' + b'"AA",' * 64 + b'"AA"]}'), "audit.partner.bad_answer"),
    ],
)
async def test_a_malformed_answer_is_unreachable_not_a_fork(
    make_watch: Watch,
    shaoxing: Partner,
    clock: FixedClock,
    metrics: Metrics,
    logs: pytest.LogCaptureFixture,
    head: web.Response | None,
    proof: web.Response | None,
    code: str,
) -> None:
    fill(shaoxing.log, clock, 2)

    async def real_head(request: web.Request) -> web.StreamResponse:
        return head if head is not None else await audit_head(request)

    async def real_proof(request: web.Request) -> web.StreamResponse:
        return proof if proof is not None else await audit_consistency(request)

    app = web.Application()
    app[NODE] = cast(NodeService, shaoxing.served)
    app.router.add_get(HEAD_PATH, real_head)
    app.router.add_get(CONSISTENCY_PATH, real_proof)
    async with TestServer(app) as server:
        watch = make_watch(shaoxing=str(server.make_url("")).rstrip("/"))
        if proof is not None:  # a first head, so the next one needs a proof
            assert (await watch.check_once())[SHAOXING] == "ok"
            fill(shaoxing.log, clock, 2)
        assert (await watch.check_once())[SHAOXING] == "unreachable"
    assert forked(metrics, SHAOXING) == 0
    assert [
        getattr(r, "code", None) for r in logs.records if getattr(r, "partner", None) == SHAOXING
    ] == [code]


# --- heads that do not verify ---------------------------------------------------------------


async def test_a_head_signed_by_another_nodes_key_is_refused(
    make_watch: Watch,
    linquan: Partner,
    clock: FixedClock,
    metrics: Metrics,
    logs: pytest.LogCaptureFixture,
) -> None:
    # linquan's head, signed with shaoxing's key (which the trust list gives to shaoxing)
    impostor = linquan.open_log(signer=SHAOXING_KEY)
    fill(impostor, clock, 3)
    linquan.serve(impostor)
    watch = make_watch()
    assert (await watch.check_once())[LINQUAN] == "invalid"
    assert watch.watcher.last(LINQUAN) is None
    assert forked(metrics, LINQUAN) == 0
    assert checks(metrics, LINQUAN, "invalid") == 1
    [warning] = [r for r in logs.records if getattr(r, "partner", None) == LINQUAN]
    assert warning.code == "audit.bad_head"  # type: ignore[attr-defined]


async def test_a_head_signed_by_an_unknown_key_is_indeterminate(
    make_watch: Watch, linquan: Partner, clock: FixedClock, metrics: Metrics
) -> None:
    stranger = linquan.open_log(signer=STRANGER_KEY)
    fill(stranger, clock, 1)
    linquan.serve(stranger)
    watch = make_watch()
    assert (await watch.check_once())[LINQUAN] == "indeterminate"
    assert watch.watcher.last(LINQUAN) is None
    assert checks(metrics, LINQUAN, "indeterminate") == 1


async def test_without_a_trust_list_nothing_is_judged(
    make_watch: Watch, metrics: Metrics, logs: pytest.LogCaptureFixture
) -> None:
    def no_trust_list(now: float) -> KeyResolver:
        raise SealIndeterminate("no trust list is available", code="trust.unavailable")

    watch = make_watch(trust=no_trust_list)
    assert await watch.check_once() == {SHAOXING: "indeterminate", LINQUAN: "indeterminate"}
    assert {getattr(r, "code", None) for r in logs.records} == {"trust.unavailable"}
    assert forked(metrics, SHAOXING) == 0


# --- the loop -------------------------------------------------------------------------------


async def test_run_checks_every_interval_until_cancelled(
    make_watch: Watch, shaoxing: Partner, clock: FixedClock, metrics: Metrics
) -> None:
    watch = make_watch()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise asyncio.CancelledError
        fill(shaoxing.log, clock, 1)

    with pytest.raises(asyncio.CancelledError):
        await watch.run(interval=7.0, sleep=sleep)
    assert slept == [7.0, 7.0, 7.0]
    assert checks(metrics, SHAOXING, "ok") == 2
    assert f"{CONSISTENCY_PATH}?first=1&second=2" in shaoxing.requests


async def test_a_crashing_check_is_logged_and_the_loop_goes_on(
    make_watch: Watch, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def crashing_trust(now: float) -> Any:
        nonlocal calls
        calls += 1
        raise RuntimeError("a bug")

    watch = make_watch(trust=crashing_trust)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise asyncio.CancelledError

    caplog.set_level(logging.ERROR, logger="gateway.federation.partner_watch")
    with pytest.raises(asyncio.CancelledError):
        await watch.run(interval=1.0, sleep=sleep)
    assert calls == 4  # two rounds, two partners: the loop went on after the crash
    assert checks(metrics, SHAOXING, "error") == 2
    assert checks(metrics, LINQUAN, "error") == 2
    crashes = [r for r in caplog.records if r.levelno == logging.ERROR]
    # each round checks both partners concurrently: which one logs first is not fixed
    partners = [str(getattr(r, "partner", "")) for r in crashes]
    assert sorted(partners[:2]) == sorted(partners[2:]) == sorted([SHAOXING, LINQUAN])
    assert all(r.exc_info is not None for r in crashes)


# --- witnessing -----------------------------------------------------------------------------

ZHUJI_KEY = STRANGER_KEY  # zhuji's own key (the trust list of these tests does not hold it)


class Ledger:
    """A witness's store, in memory: what it cosigned, what it gathered."""

    def __init__(self, heads: dict[NodeId, SignedTreeHead] | None = None) -> None:
        self.heads = dict(heads or {})
        self.cosigned: list[SignedTreeHead] = []
        self.gathered: list[tuple[str, NodeId]] = []
        self.sizes: dict[NodeId, int] = {}
        self.refuse = False

    def cosigned_heads(self) -> dict[NodeId, SignedTreeHead]:
        return dict(self.heads)

    def cosign(self, head: SignedTreeHead) -> Cosignature:
        self.cosigned.append(head)
        self.heads[head.node] = head
        return cosign_head(ZHUJI_KEY, witness=ZHUJI, head=head, cosigned_at=NOW)

    def gathered_size(self, witness: NodeId) -> int:
        return self.sizes.get(witness, -1)

    def accept_cosignature(self, token: str, keys: KeyResolver, *, witness: NodeId) -> bool:
        if self.refuse:
            raise CosignatureError("refused", code="audit.cosignature_mismatch")
        self.gathered.append((token, witness))
        return True


def cosignatures(metrics: Metrics, partner: str, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "tongban_audit_cosignatures_total", {"partner": partner, "result": result}
    )
    return value or 0.0


async def test_a_witness_cosigns_each_new_consistent_head_once(
    make_watch: Watch, shaoxing: Partner, clock: FixedClock, metrics: Metrics
) -> None:
    ledger = Ledger()
    watch = make_watch(ledger=ledger)
    fill(shaoxing.log, clock, 3)
    await watch.check_once()
    # (the partners are checked concurrently: in no fixed order)
    assert sorted((h.node, h.tree_size) for h in ledger.cosigned) == [(LINQUAN, 0), (SHAOXING, 3)]
    await watch.check_once()  # the same heads: nothing new to cosign
    assert len(ledger.cosigned) == 2
    fill(shaoxing.log, clock, 2)
    await watch.check_once()
    assert [(h.node, h.tree_size) for h in ledger.cosigned[2:]] == [(SHAOXING, 5)]
    assert cosignatures(metrics, SHAOXING, "made") == 2


async def test_a_witness_never_cosigns_a_fork_even_after_a_restart(
    make_watch: Watch, shaoxing: Partner, clock: FixedClock, metrics: Metrics
) -> None:
    fill(shaoxing.log, clock, 5)
    ledger = Ledger()
    await make_watch(ledger=ledger).check_once()
    cosigned = ledger.heads[SHAOXING]
    # the witness restarts: its checks resume from the last head it cosigned...
    kept = Ledger({SHAOXING: cosigned})
    restarted = make_watch(ledger=kept)
    assert restarted.watcher.last(SHAOXING) == cosigned
    # ...so a partner that now serves a rewritten log of the same size is a fork, not a new
    # first head taken on trust, and is not cosigned
    rewritten = shaoxing.open_log()
    fill(rewritten, clock, 5, actor="someone-else")
    shaoxing.serve(rewritten)
    assert (await restarted.check_once())[SHAOXING] == "fork"
    assert SHAOXING not in [h.node for h in kept.cosigned]


async def test_a_node_gathers_its_partners_cosignatures_of_its_own_heads(
    make_watch: Watch, shaoxing: Partner, linquan: Partner, metrics: Metrics
) -> None:
    mine = [
        sign_tree_head(ZHUJI_KEY, node=ZHUJI, tree_size=n, root_hash=bytes(32), issued_at=NOW)
        for n in (4, 6)
    ]
    shaoxing.served.published = [
        cosign_head(SHAOXING_KEY, witness=SHAOXING, head=head, cosigned_at=NOW + 1) for head in mine
    ]
    ledger = Ledger()
    watch = make_watch(ledger=ledger)
    await watch.check_once()
    assert ledger.gathered == [(c.token, SHAOXING) for c in shaoxing.served.published]
    assert f"{COSIGNATURES_PATH}?origin=zhuji" in shaoxing.requests
    assert cosignatures(metrics, SHAOXING, "gathered") == 2
    # next time, only those of heads larger than the ones kept
    ledger.sizes[SHAOXING] = 4
    await watch.check_once()
    assert f"{COSIGNATURES_PATH}?origin=zhuji&after=4" in shaoxing.requests
    assert ledger.gathered[2:] == [(shaoxing.served.published[1].token, SHAOXING)]
    # a cosignature the node refuses is counted, and the watch goes on
    ledger.refuse = True
    await watch.check_once()
    assert cosignatures(metrics, SHAOXING, "refused") == 1  # the one larger than 4
    assert linquan.served.published == []


async def test_a_malformed_cosignatures_answer_gathers_nothing(
    make_watch: Watch, shaoxing: Partner, logs: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger()
    watch = make_watch(ledger=ledger)
    shaoxing.broken.add(COSIGNATURES_PATH)
    assert (await watch.check_once())[SHAOXING] == "ok"  # the head check is not affected
    assert ledger.gathered == []
    assert "could not gather a partner's cosignatures" in logs.text
