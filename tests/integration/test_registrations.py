"""The exchange's delivery of catalog entries to national, on a real federation (``up``:
every node in this process, each on its own loopback port, real HTTP between them)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiohttp
import orjson
import pytest
from conftest import HANG_GUARD, Tokens, Up, catalogued, household_request, outbox_entries

from gateway.clock import FixedClock
from gateway.config import Federation
from gateway.storage.registry import SqliteRegistry

pytestmark = pytest.mark.slow  # real processes or a whole federation

REFUSED_FOR_GOOD = {
    # not a certificate id: national answers 400, and would again on every retry
    "certificate_id": "not-a-certificate-id",
    "type": "household_register",
    "node": "zhuji",
    "holder_digest": "0" * 64,
    "status": "valid",
    "status_event": 0,
}


def owe_catalog(registry_file: Path, record: bytes, *, owner: str) -> None:
    """An entry an earlier process of the node left in its registry's outbox."""
    SqliteRegistry(registry_file).close()  # the file, at the current schema
    conn = sqlite3.connect(registry_file)
    try:
        with conn:
            conn.execute(
                "INSERT INTO outbox (topic, owner, record) VALUES ('catalog', ?, ?)",
                (owner, record),
            )
    finally:
        conn.close()


async def test_a_refused_entry_is_dropped_and_counted_and_the_next_ones_still_arrive(
    moved: Federation, clock: FixedClock
) -> None:
    registry = moved.data_dir / "zhuji" / "registry.sqlite3"
    catalog = moved.data_dir / "national" / "catalog.sqlite3"
    registry.parent.mkdir(parents=True)
    owe_catalog(registry, orjson.dumps(REFUSED_FOR_GOOD), owner="an earlier process")
    tokens = Tokens(moved, clock)
    up = Up(moved, clock)
    urls = await up.ready()
    try:
        async with aiohttp.ClientSession() as session:
            bearer = {"Authorization": f"Bearer {tokens.client('zhuji-public-security')}"}
            async with session.post(
                f"{urls['zhuji']}/v1/certificates", json=household_request(), headers=bearer
            ) as response:
                assert response.status == 201, await response.text()
                cert_id = (await response.json())["certificate_id"]
            async with session.post(
                f"{urls['zhuji']}/v1/certificates/{cert_id}/status",
                json={"action": "revoke", "reason": "court order"},
                headers=bearer,
            ) as response:
                assert response.status == 200, await response.text()
            # whatever national answered before it trusted zhuji's key (401) was retried
            loop = asyncio.get_running_loop()
            deadline = loop.time() + HANG_GUARD
            while outbox_entries(registry) or catalogued(catalog, cert_id, "status") != "revoked":
                assert loop.time() < deadline, "the catalog entries were never all delivered"
                await asyncio.sleep(0.05)
            async with session.get(f"{urls['zhuji']}/metrics") as response:
                metrics = await response.text()
    finally:
        await up.stopped()
    assert "tongban_catalog_entries_refused_total 1.0" in metrics.splitlines()
    assert 'tongban_outbox_records{topic="catalog"} 0.0' in metrics.splitlines()
