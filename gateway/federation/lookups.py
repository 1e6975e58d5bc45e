"""``POST /v1/lookups``: a holder's certificates of the named types, wherever they were issued.

The node asks national's catalog (by the holder's keyed digest, never the id in clear) which
nodes hold which certificates, then fetches each over its route
(:class:`~gateway.federation.fetch.RoutedFetch`). One certificate that cannot be fetched is
listed among the failures and does not fail the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

import orjson

from gateway.errors import GatewayError, NetworkError
from gateway.federation.fetch import RoutedFetch
from gateway.federation.peers import PeerClient
from gateway.ids import NATIONAL
from gateway.services.node import NodeService
from gateway.sso.auth import Principal

CATALOG_LOOKUPS_PATH: Final = "/v1/catalog/lookups"


class Lookups:
    """Lookups by holder at the node a department asks."""

    def __init__(self, node: NodeService, *, peers: PeerClient, fetches: RoutedFetch) -> None:
        self._node = node
        self._peers = peers
        self._fetches = fetches

    async def lookup(
        self,
        principal: Principal,
        bearer: str,
        request: Mapping[str, Any],
        consent: str | None,
        holder_digest: str,
    ) -> dict[str, Any]:
        """Find the holder's certificates of the wanted types anywhere, and fetch each.

        Nothing is asked of national's catalog before this node has judged all it can: the
        caller, purpose limitation, and the holder's grant for every personal type
        (:meth:`~gateway.services.node.NodeService.admit_lookup`)."""
        matter = str(request["matter"])
        types = [str(t) for t in request["types"]]
        self._node.admit_lookup(principal, matter, types, consent, holder_digest)
        body = orjson.dumps({"holder_digest": holder_digest, "types": types})
        listed = await self._peers.post(NATIONAL, CATALOG_LOOKUPS_PATH, body, bearer=bearer)
        entries = listed.get("entries", [])
        if not isinstance(entries, list):
            raise NetworkError("national's catalog answered badly", code="exchange.bad_answer")

        async def one(entry: Mapping[str, Any]) -> dict[str, Any]:
            cert_id = str(entry.get("certificate_id"))
            try:
                answer = await self._fetches.fetch(principal, bearer, cert_id, matter, consent)
            except GatewayError as exc:
                return {
                    "certificate_id": cert_id,
                    "type": entry.get("type"),
                    "node": entry.get("node"),
                    "status": exc.status,
                    "code": exc.code,
                    "detail": exc.detail[:512],
                }
            return {
                "certificate_id": cert_id,
                "type": entry.get("type"),
                "node": answer["node"],
                "seal": answer["seal"],
                "report": answer["report"],
                "route": answer["route"],
            }

        outcomes = await asyncio.gather(*(one(e) for e in entries if isinstance(e, dict)))
        return {
            "results": [o for o in outcomes if "seal" in o],
            "failures": [o for o in outcomes if "seal" not in o],
        }
