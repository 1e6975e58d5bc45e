"""National enrols the nodes' seal keys and publishes the trust list (its authoring loop).

Every :data:`AUTHOR_INTERVAL` seconds national fetches each regional node's JWKS (one bounded
GET a node, through :class:`~gateway.federation.peers.PeerClient`), hands what it sees to
:class:`~gateway.services.authority.TrustAuthority` (which enrols new keys and records
state changes), republishes the trust list when it changed or before it expires, and trusts
its own list (:meth:`~gateway.trust.sync.TrustSync.offer_local`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Final

from gateway._internal.wire import loads
from gateway.clock import Clock
from gateway.config import Federation
from gateway.errors import GatewayError, SealError
from gateway.federation.peers import PeerClient, Sleep
from gateway.ids import NodeId
from gateway.services.authority import (
    JWKS_MEDIA_TYPES,
    JWKS_PATH,
    MAX_JWKS_BYTES,
    TrustAuthority,
)
from gateway.services.node import NodeService
from gateway.trust.sync import TrustSync

log = logging.getLogger("gateway.federation.enrolment")

AUTHOR_INTERVAL: Final = 2.0
"""How often ``national`` collects the nodes' keys (cheap: one JWKS GET per node)."""


async def collect(
    authority: TrustAuthority,
    federation: Federation,
    peers: PeerClient,
    *,
    own: Mapping[str, Any] | None,
    node_id: NodeId,
) -> bool:
    """Fetch every other region node's JWKS and record it; True if anything changed.

    ``own`` is this node's (national's) own JWKS, passed in directly. A node that cannot be
    reached, or whose JWKS is refused, is logged and skipped: it is tried again next round.
    """
    targets = [n.id for n in federation.nodes if n.kind == "region" and n.id != node_id]

    async def fetch(node: NodeId) -> tuple[NodeId, Any]:
        body = await peers.get(
            node,
            JWKS_PATH,
            content_types=JWKS_MEDIA_TYPES,
            max_bytes=MAX_JWKS_BYTES,
            code_prefix="trust",
        )
        return node, loads(body)

    results = await asyncio.gather(*(fetch(n) for n in targets), return_exceptions=True)
    changed = False
    observations: list[tuple[NodeId, Any]] = []
    if own is not None:
        observations.append((node_id, own))
    for node, result in zip(targets, results, strict=True):
        if isinstance(result, GatewayError):
            log.warning(
                "could not fetch a node's keys; retrying next round",
                extra={"node": node, "code": result.code, "cause": result.log_detail},
            )
        elif isinstance(result, BaseException):
            raise result
        else:
            observations.append(result)
    for node, jwks in observations:
        try:
            changed |= authority.observe(node, jwks)
        except SealError as exc:
            log.warning(
                "a node's key set was refused",
                extra={"node": node, "code": exc.code, "cause": exc.detail},
            )
    return changed


async def run_enrolment(
    authority: TrustAuthority,
    trust: TrustSync,
    node: NodeService,
    peers: PeerClient,
    *,
    clock: Clock,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """``national``: enrol key changes, republish when needed, trust its own list.

    When ``national`` runs as replicas only the holder of the author's lease
    (:meth:`TrustAuthority.lead`) collects and publishes; the others follow the stored state
    and trust the author's list. A killed author's lease runs out and another replica takes
    over from the stored ``seq``.
    """
    try:
        await _author(authority, trust, node, peers, clock=clock, sleep=sleep)
    finally:
        try:
            authority.resign()  # a clean stop: another replica authors at once
        except GatewayError as exc:
            log.warning("could not give the author's lease up", extra={"code": exc.code})


async def _author(
    authority: TrustAuthority,
    trust: TrustSync,
    node: NodeService,
    peers: PeerClient,
    *,
    clock: Clock,
    sleep: Sleep,
) -> None:
    while True:
        try:
            if not authority.lead(clock.now()):
                authority.reload()  # another replica authors: follow its list
            else:
                await collect(
                    authority, node.federation, peers, own=node.jwks(), node_id=node.node.id
                )
                if authority.needs_publish(clock.now()):
                    await trust.offer_local(authority.publish())
            if authority.token is not None and trust.token != authority.token:
                await trust.offer_local(authority.token)
        except GatewayError as exc:
            log.warning("trust list authoring failed", extra={"code": exc.code})
        except Exception:  # a bug must not silently stop the federation's trust list
            log.exception("trust list authoring crashed; retrying")
        await sleep(AUTHOR_INTERVAL)
