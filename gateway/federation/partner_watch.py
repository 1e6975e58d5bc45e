"""Partners check each other's audit logs: each node watches its neighbours' signed tree heads.

A node's neighbours are its parent, its children and the nodes a point-to-point agreement
links it to (region nodes only). Every ``interval`` seconds :class:`PartnerWatch` asks each
for ``GET /v1/audit/head``, verifies the signed head against the federation's trust list and
hands it to :class:`gateway.audit.watch.HeadWatcher`, which proves with the partner's consistency
proof (``GET /v1/audit/proofs/consistency``) that the log it sees now extends the one it saw
before.

Each check ends in one result, counted in ``tongban_audit_partner_checks_total``:

- ``ok``: the head verified and extends the last one (or is the first one seen);
- ``fork``: a shrunk, rewritten or unprovable log (``audit.fork``): logged at ERROR with
  both heads as evidence, and ``tongban_audit_partner_forks{partner}`` set to 1 for good;
- ``invalid``: a head that does not verify (bad signature, another node's key, bad claims);
- ``indeterminate``: a head that cannot be judged yet (unknown kid, no trust list);
- ``unreachable``: the partner did not answer, or answered nonsense: it proves nothing, and
  is never a fork.
- ``error``: anything else (a store failure, a bug): logged, and the watch goes on.

**Witnessing** (with a :class:`WitnessLedger`, the node's service): a head that checks ``ok``
and is larger than the last one this node cosigned is cosigned and kept
(:mod:`gateway.audit.cosignatures`); the checks resume after a restart from the last head
cosigned, so a witness never cosigns a rollback. And every check also gathers the partner's
cosignatures of this node's own heads (``GET /v1/audit/cosignatures?origin=<this node>``),
verified against the trust list and this node's own heads, and kept for its issuance proofs.
Each cosignature made, gathered or refused is counted in ``tongban_audit_cosignatures_total``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import urlencode

import aiohttp

from gateway._internal.fetch import fetch_bounded
from gateway._internal.wire import JsonLimits, b64url_decode, loads
from gateway.audit.cosignatures import Cosignature
from gateway.audit.heads import SignedTreeHead, verify_tree_head
from gateway.audit.watch import HeadWatcher
from gateway.clock import Clock
from gateway.config import Federation
from gateway.crypto.jwks import KeyResolver
from gateway.crypto.merkle import HASH_BYTES, MAX_PROOF_LENGTH
from gateway.errors import (
    AuditFork,
    GatewayError,
    Indication,
    InputError,
    NetworkError,
    VerificationError,
)
from gateway.federation.routing import Topology
from gateway.ids import NodeId
from gateway.metrics import Metrics

log = logging.getLogger("gateway.federation.partner_watch")

HEAD_PATH: Final = "/v1/audit/head"
CONSISTENCY_PATH: Final = "/v1/audit/proofs/consistency"
COSIGNATURES_PATH: Final = "/v1/audit/cosignatures"
MAX_ANSWER_BYTES: Final = 16_384
"""A head is a few hundred bytes, a proof at most 64 hashes: anything larger is refused."""
COSIGNATURE_BYTES: Final = 2_048
"""Room for one cosignature and its fields in an answer of :data:`COSIGNATURES_PATH` (a
cosignature is about 500 bytes)."""
CHECK_INTERVAL: Final = 10.0

_ANSWER_LIMITS: Final = JsonLimits(max_depth=3, max_string=8192, max_members=MAX_PROOF_LENGTH + 8)
_JSON_TYPES: Final = frozenset({"application/json"})
_CODE_PREFIX: Final = "audit.partner"

Sleep = Callable[[float], Awaitable[None]]
_T = TypeVar("_T")


class WitnessLedger(Protocol):
    """Where a witness keeps what it cosigned and gathered (the node's service)."""

    def cosigned_heads(self) -> dict[NodeId, SignedTreeHead]: ...

    def cosign(self, head: SignedTreeHead) -> Cosignature: ...

    def gathered_size(self, witness: NodeId) -> int: ...

    def accept_cosignature(self, token: str, keys: KeyResolver, *, witness: NodeId) -> bool: ...


def _bad_answer(detail: str) -> NetworkError:
    return NetworkError(
        "the partner's audit answer is malformed",
        code="audit.partner.bad_answer",
        log_detail=detail,
    )


def neighbours(topology: Topology, node: NodeId) -> tuple[NodeId, ...]:
    """``node``'s parent, children and point-to-point peers, in topology order."""
    parent = topology.parent(node)
    return tuple(
        other
        for other in topology.nodes
        if other != node
        and (other == parent or topology.parent(other) == node or topology.linked(node, other))
    )


def partners_of(topology: Topology, node: NodeId) -> frozenset[NodeId]:
    """The nodes that watch, and so witness, ``node``'s audit log: its neighbours (none for a
    node this federation file does not know as a region)."""
    if node not in topology.nodes:
        return frozenset()
    return frozenset(neighbours(topology, node))


class PartnerWatch:
    """Watches the audit logs of ``node_id``'s neighbours over the node's ``session``.

    ``trust(now)`` is the federation's key resolver at ``now`` (the trust list): a partner's
    head must be signed by a key the list gives to that partner.
    """

    def __init__(
        self,
        node_id: NodeId,
        topology: Topology,
        session: aiohttp.ClientSession,
        *,
        trust: Callable[[float], KeyResolver],
        clock: Clock,
        metrics: Metrics,
        federation: Federation,
        fetch_timeout: float | None = None,
        ledger: WitnessLedger | None = None,
        writer: Executor | None = None,
    ) -> None:
        """``ledger``: cosign partners' heads and gather their cosignatures of this node's
        (without one, heads are only checked); its writes run on ``writer``."""
        self.node_id = node_id
        self.partners = neighbours(topology, node_id)
        self._ledger = ledger
        self._writer = writer
        self._max_cosignatures = federation.witness.max_cosignatures
        self.watcher = HeadWatcher(ledger.cosigned_heads() if ledger is not None else None)
        self.fetch_timeout = (
            federation.limits.request_timeout_seconds if fetch_timeout is None else fetch_timeout
        )
        self._session = session
        self._trust = trust
        self._clock = clock
        self._metrics = metrics
        self._urls = {partner: federation.url(partner).rstrip("/") for partner in self.partners}
        self._lock = asyncio.Lock()
        for partner in self.partners:  # the series exist from the start, at 0
            metrics.audit_partner_forks.labels(partner=partner).set(0)

    # --- the loop ---------------------------------------------------------------------------

    async def run(self, interval: float = CHECK_INTERVAL, sleep: Sleep = asyncio.sleep) -> None:
        """Check every partner every ``interval`` seconds, forever; stops when cancelled.

        The first check waits one interval: partners started with this node get time to come up.
        """
        while True:
            await sleep(interval)
            try:
                await self.check_once()
            except Exception:  # a bug must not silently stop the watch
                log.exception("the partner audit check crashed; retrying")

    async def check_once(self) -> dict[NodeId, str]:
        """Check every partner once, concurrently; the result of each (see the module doc)."""
        async with self._lock:  # one check of a partner at a time: observe needs its last head
            results = await asyncio.gather(*(self._check(p) for p in self.partners))
        return dict(zip(self.partners, results, strict=True))

    async def _check(self, partner: NodeId) -> str:
        previous = self.watcher.last(partner)
        try:
            result = await self._judge(partner)
        except Exception:  # a bug checking one partner must not stop the others
            log.exception("the audit check of a partner crashed", extra={"partner": partner})
            result = "error"
        self._metrics.audit_partner_checks.labels(partner=partner, result=result).inc()
        if partner in self.watcher.forks:
            self._metrics.audit_partner_forks.labels(partner=partner).set(1)
        if self._ledger is not None:
            try:
                checked = self.watcher.last(partner)
                if result == "ok" and checked is not None and checked is not previous:
                    await self._cosign(partner, checked, previous)
                await self._gather(partner)
            except Exception:  # the same: a failure here stops neither the watch nor others
                log.exception("witnessing a partner crashed", extra={"partner": partner})
        return result

    # --- witnessing -------------------------------------------------------------------------

    async def _off_loop(self, work: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, work)

    async def _cosign(
        self, partner: NodeId, head: SignedTreeHead, previous: SignedTreeHead | None
    ) -> None:
        """Cosign ``head``, just proven to extend ``previous`` (a head of a size already
        cosigned is not cosigned again)."""
        assert self._ledger is not None
        if previous is not None and head.tree_size <= previous.tree_size:
            return
        ledger = self._ledger
        try:
            await self._off_loop(lambda: ledger.cosign(head))
        except GatewayError as exc:
            log.warning(
                "could not cosign a partner's tree head",
                extra={"partner": partner, "code": exc.code, "cause": exc.log_detail},
            )
            return
        self._metrics.audit_cosignatures.labels(partner=partner, result="made").inc()

    async def _gather(self, partner: NodeId) -> None:
        """The partner's cosignatures of this node's heads newer than the ones kept."""
        assert self._ledger is not None
        ledger = self._ledger
        try:
            after = await self._off_loop(lambda: ledger.gathered_size(partner))
            tokens = await self._fetch_cosignatures(partner, after)
            if not tokens:
                return
            keys = self._trust(self._clock.now())  # the witness's key, as the list holds it
        except GatewayError as exc:
            log.warning(
                "could not gather a partner's cosignatures",
                extra={"partner": partner, "code": exc.code, "cause": exc.log_detail},
            )
            return
        for token in tokens:
            try:
                await self._off_loop(
                    functools.partial(ledger.accept_cosignature, token, keys, witness=partner)
                )
            except GatewayError as exc:
                log.warning(
                    "a partner's cosignature was refused",
                    extra={"partner": partner, "code": exc.code, "cause": exc.log_detail},
                )
                self._metrics.audit_cosignatures.labels(partner=partner, result="refused").inc()
                continue
            self._metrics.audit_cosignatures.labels(partner=partner, result="gathered").inc()

    async def _fetch_cosignatures(self, partner: NodeId, after: int) -> list[str]:
        params: dict[str, str | int] = {"origin": self.node_id}
        if after >= 0:
            params["after"] = after
        query = urlencode(params)
        answer = await self._get_json(
            partner,
            f"{COSIGNATURES_PATH}?{query}",
            max_bytes=MAX_ANSWER_BYTES + self._max_cosignatures * COSIGNATURE_BYTES,
            limits=JsonLimits(
                max_depth=3, max_string=8192, max_members=8 * self._max_cosignatures + 8
            ),
        )
        items = answer.get("cosignatures")
        if not isinstance(items, list) or len(items) > self._max_cosignatures:
            raise _bad_answer(f"{partner}: the cosignatures are not a bounded list")
        tokens: list[str] = []
        for item in items:
            token = item.get("cosignature") if isinstance(item, dict) else None
            if not isinstance(token, str):
                raise _bad_answer(f"{partner}: a cosignature is not a compact JWS string")
            tokens.append(token)
        return tokens

    async def _judge(self, partner: NodeId) -> str:
        previous = self.watcher.last(partner)
        offered: SignedTreeHead | None = None
        try:
            # 1. the partner's current head, as it sends it
            unverified_token = await self._fetch_head(partner)
            # 2. signed by a key the trust list gives to that partner, with sound claims
            now = self._clock.now()
            offered = verify_tree_head(unverified_token, self._trust(now), node=partner, now=now)
            # 3. for a larger tree, the proof that it extends the last one (observe is sync)
            proof: Sequence[bytes] = ()
            if previous is not None and offered.tree_size > previous.tree_size:
                proof = await self._fetch_proof(partner, previous.tree_size, offered.tree_size)
            # 4. never smaller, same root at the same size, proven to extend the last one
            self.watcher.observe(partner, offered, _prefetched(previous, offered, proof))
        except NetworkError as exc:
            log.warning(
                "a partner's audit log could not be checked",
                extra={"partner": partner, "code": exc.code, "cause": exc.log_detail},
            )
            return "unreachable"
        except VerificationError as exc:
            if isinstance(exc, AuditFork):
                log.error(
                    "a partner's audit log forked or was rewritten",
                    extra={
                        "partner": partner,
                        "code": exc.code,
                        "cause": exc.log_detail,
                        "detail": exc.detail,
                        # both heads are signed and public: the evidence of the fork
                        "previous_head": None if previous is None else previous.token,
                        "offered_head": None if offered is None else offered.token,
                    },
                )
                return "fork"
            indeterminate = exc.indication is Indication.INDETERMINATE
            log.warning(
                "a partner's audit head was refused",
                extra={"partner": partner, "code": exc.code, "cause": exc.log_detail},
            )
            return "indeterminate" if indeterminate else "invalid"
        except GatewayError as exc:
            log.warning(
                "a partner's audit log could not be checked",
                extra={"partner": partner, "code": exc.code, "cause": exc.log_detail},
            )
            return "error"
        return "ok"

    # --- fetching ---------------------------------------------------------------------------

    async def _get_json(
        self,
        partner: NodeId,
        path: str,
        *,
        max_bytes: int = MAX_ANSWER_BYTES,
        limits: JsonLimits = _ANSWER_LIMITS,
    ) -> dict[str, Any]:
        url = self._urls[partner] + path
        body = await fetch_bounded(
            self._session,
            url,
            fetch_timeout=self.fetch_timeout,
            max_bytes=max_bytes,
            content_types=_JSON_TYPES,
            accept="application/json",
            code_prefix=_CODE_PREFIX,
        )
        try:
            value = loads(body, limits)
        except InputError as exc:
            raise _bad_answer(f"{url}: {exc.code}: {exc.log_detail or exc.detail}") from exc
        if not isinstance(value, dict):
            raise _bad_answer(f"{url}: not a JSON object")
        return value

    async def _fetch_head(self, partner: NodeId) -> str:
        """The compact JWS of the partner's current head, not yet verified."""
        answer = await self._get_json(partner, HEAD_PATH)
        unverified_token = answer.get("signed_tree_head")
        if not isinstance(unverified_token, str) or not unverified_token:
            raise _bad_answer(f"{partner}: no signed_tree_head")
        return unverified_token

    async def _fetch_proof(self, partner: NodeId, first: int, second: int) -> list[bytes]:
        query = urlencode({"first": first, "second": second})
        answer = await self._get_json(partner, f"{CONSISTENCY_PATH}?{query}")
        items = answer.get("proof")
        if not isinstance(items, list) or len(items) > MAX_PROOF_LENGTH:
            raise _bad_answer(f"{partner}: the consistency proof is not a bounded list")
        proof: list[bytes] = []
        for item in items:
            if not isinstance(item, str):
                raise _bad_answer(f"{partner}: a proof element is not a string")
            try:
                proof.append(b64url_decode(item, max_length=2 * HASH_BYTES))
            except InputError as exc:
                raise _bad_answer(f"{partner}: a proof element is not base64url") from exc
        # a proof of the wrong hashes is judged by verify_consistency: it is the partner's word
        return proof


def _prefetched(
    previous: SignedTreeHead | None, offered: SignedTreeHead, proof: Sequence[bytes]
) -> Callable[[int, int], Sequence[bytes]]:
    """The fetcher :meth:`HeadWatcher.observe` calls: the one proof fetched beforehand."""

    def fetch(first: int, second: int) -> Sequence[bytes]:
        if previous is None or (first, second) != (previous.tree_size, offered.tree_size):
            raise NetworkError(
                "no consistency proof was fetched for these sizes",
                code="audit.partner.no_proof",
                log_detail=f"asked for {first}..{second}",
            )
        return proof

    return fetch
