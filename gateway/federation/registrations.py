"""National's catalog learns of this node's certificates: the registry's outbox, delivered.

An issuance or a status change writes its catalog entry in the registry's outbox in the same
transaction (:mod:`gateway.storage.registry`); :class:`Registrations` delivers the entries to
national, in order, retrying while national cannot be reached or refuses this node rather
than the entry. A restart loses none: what a previous process could not deliver goes first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from gateway.errors import NetworkError
from gateway.federation.peers import PeerClient, UpstreamProblem
from gateway.ids import NATIONAL
from gateway.services.node import NodeService
from gateway.storage.registry import Outbox

log = logging.getLogger("gateway.federation.registrations")

CATALOG_ENTRIES_PATH: Final = "/v1/catalog/entries"
REFUSALS_TO_RETRY: Final = frozenset({401, 408, 429})
"""National's refusals of a catalog entry that are about this node or national's load, not
about the entry (a hop proof it cannot check yet, e.g. before the trust list it holds has
this node's key; too many requests): retried, not dropped. 403 is about the entry (another
node's certificate) and is not retried."""

Sleep = Callable[[float], Awaitable[None]]


class Registrations:
    """Delivers the registry's catalog outbox to national, for as long as the node runs."""

    def __init__(
        self, node: NodeService, *, peers: PeerClient, sleep: Sleep = asyncio.sleep
    ) -> None:
        self._node = node
        self._peers = peers
        self._sleep = sleep
        self._retry_seconds = node.federation.network.registration_retry_seconds
        self._due = asyncio.Event()

    def due(self) -> None:
        """A certificate was issued or changed status: deliver its catalog entry now."""
        self._due.set()

    async def run(self) -> None:
        """Deliver the catalog entries the registry's outbox holds to national, in order,
        until cancelled: what earlier processes left first, then this process's issuances and
        status changes as they come (:meth:`due`).

        An entry leaves the outbox once national took it (national's registration is
        idempotent and ordered by the entry's ``status_event``, so delivering one twice, or
        late, is harmless) or refused it for good (a 4xx about the entry itself: logged and
        counted, it would be refused again). While national cannot be reached, or refuses
        this node rather than the entry (:data:`REFUSALS_TO_RETRY`: e.g. it does not trust
        this node's key yet), the entries stay and delivery is retried every
        ``[network] registration_retry_seconds``. Issuance never waits on it.
        """
        every_owner = True  # at start-up: what a crash or a stop left, whoever wrote it
        failing: str | None = None  # the code of the failure being retried, logged once
        while True:
            try:
                await self._deliver(every_owner=every_owner)
            except (NetworkError, UpstreamProblem) as exc:
                if failing != exc.code:
                    log.warning("catalog registration failed; retrying", extra={"code": exc.code})
                failing = exc.code
                await self._sleep(self._retry_seconds)
                continue
            if failing is not None:
                log.info("catalog registration recovered", extra={"code": failing})
                failing = None
            every_owner = False
            await self._due.wait()
            self._due.clear()

    async def _deliver(self, *, every_owner: bool) -> None:
        """One pass over the pending entries; raises what stops it (to be retried)."""
        registry = self._node.registry
        while pending := await asyncio.to_thread(
            registry.pending, Outbox.CATALOG, every_owner=every_owner
        ):
            delivered: list[int] = []
            try:
                for seq, body in pending:
                    try:
                        await self._peers.post(NATIONAL, CATALOG_ENTRIES_PATH, body)
                    except UpstreamProblem as exc:
                        if exc.status in REFUSALS_TO_RETRY:
                            raise
                        log.error("national refused a catalog entry", extra={"code": exc.code})
                        self._node.metrics.catalog_refused.inc()
                    delivered.append(seq)
            finally:
                await asyncio.to_thread(registry.delivered, delivered)
