"""The composition root: a node's links built once, and stopped whole even when building fails."""

from __future__ import annotations

import asyncio

import pytest

from gateway.clock import FixedClock
from gateway.errors import ConfigError
from gateway.server.node import linked
from gateway.services.node import NodeService


async def test_a_node_links_up_and_stops_every_task_it_started(
    service: NodeService, clock: FixedClock
) -> None:
    before = asyncio.all_tasks()
    async with linked(service, clock=clock) as links:
        assert links.registrations is not None  # zhuji delivers catalog entries
        assert links.authority is None  # only national authors the trust list
        assert links.catalog is None
        assert len(asyncio.all_tasks() - before) >= 5  # IdP keys, trust list, outbox, …
    assert asyncio.all_tasks() == before


async def test_a_part_that_cannot_be_built_stops_what_was_started_before_it(
    service: NodeService, clock: FixedClock
) -> None:
    # the nonce store's file is a directory: it cannot be opened, after the IdP's key
    # refresh and the trust list's copy were already started
    (service.federation.data_dir / "zhuji" / "nonces.sqlite3").mkdir(parents=True)
    before = asyncio.all_tasks()
    with pytest.raises(ConfigError) as caught:
        async with linked(service, clock=clock):
            pytest.fail("a node whose nonce store cannot be opened must not serve")
    assert caught.value.code == "hop.open"
    assert asyncio.all_tasks() == before
