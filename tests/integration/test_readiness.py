"""Readiness is true: ``up`` announces the federation, and ``/readyz`` answers ready, only
once every node can verify every other (issue 21, item 4), on a real federation in this
process (every node on its own loopback port, real HTTP between them)."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from conftest import Up

from gateway._internal.wire import b64url_decode
from gateway.clock import FixedClock
from gateway.config import Federation

pytestmark = pytest.mark.slow  # a whole federation


async def test_up_announces_the_federation_only_once_every_node_trusts_every_key(
    moved: Federation, clock: FixedClock
) -> None:
    up = Up(moved, clock)
    urls = await up.ready()
    regions = [n.id for n in moved.nodes if n.kind == "region"]
    try:
        async with aiohttp.ClientSession() as session:
            active: dict[str, str] = {}
            for node in regions:
                async with session.get(urls[node] + "/.well-known/jwks.json") as response:
                    keys = (await response.json())["keys"]
                active[node] = next(k["kid"] for k in keys if k["status"] == "active")
            # no waiting here: at the moment up says ready, every list is complete
            for node in regions:
                async with session.get(urls[node] + "/v1/trust-list") as response:
                    assert response.status == 200
                    token = await response.text()
                claims = orjson.loads(b64url_decode(token.split(".")[1]))
                listed = {
                    (entry["id"], key["jwk"]["kid"])
                    for entry in claims["nodes"]
                    for key in entry["keys"]
                    if key["jwk"]["status"] == "active"
                }
                assert {(other, active[other]) for other in regions} <= listed, node
                async with session.get(urls[node] + "/readyz") as response:
                    assert response.status == 200, await response.text()
                    assert (await response.json())["status"] == "ready"
    finally:
        await up.stopped()
