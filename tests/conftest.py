"""Shared fixtures: a federation in a temporary directory, a node service, an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.clock import FixedClock
from gateway.config import Federation, load_federation
from gateway.http.app import create_app
from gateway.node import NodeService
from gateway.schemas import SchemaCatalog, default_schema_dir

# 2026-11-24T08:00:00Z: fixed, so validity dates and signing times are reproducible.
NOW = 1_795_507_200.0
GROOM = {"name": "赵立新", "id": "330681199001010015", "id_type": "111"}
BRIDE = {"name": "王晓燕", "id": "341221199607082464", "id_type": "111"}


@pytest.fixture(scope="session")
def schemas() -> SchemaCatalog:
    return SchemaCatalog.load(default_schema_dir())


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def federation(tmp_path: Path) -> Federation:
    return load_federation(env={}).with_overrides(
        data_dir=tmp_path / "var", keys_dir=tmp_path / "keys"
    )


@pytest.fixture
def dev_token(federation: Federation) -> str:
    return federation.development.token.reveal()


@pytest.fixture
def service(
    federation: Federation, clock: FixedClock, schemas: SchemaCatalog
) -> Iterator[NodeService]:
    node = NodeService.open(
        federation, "zhuji", clock=clock, schemas=schemas, public_url="http://zhuji.test"
    )
    yield node
    node.close()


@pytest.fixture
async def client(
    federation: Federation, clock: FixedClock, schemas: SchemaCatalog
) -> AsyncIterator[TestClient[Any, Any]]:
    node = NodeService.open(
        federation, "zhuji", clock=clock, schemas=schemas, public_url="http://zhuji.test"
    )
    async with TestClient(TestServer(create_app(node))) as test_client:
        yield test_client


def marriage_request(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "type": "marriage",
        "holder": dict(GROOM),
        "valid_from": "2026-11-24",
        "valid_until": None,
        "data": {
            "registration_date": "2026-11-24",
            "spouse": dict(BRIDE),
            "registration_office": "诸暨市民政局婚姻登记处",
        },
    }
    request.update(changes)
    return request


def household_request(holder: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "type": "household_register",
        "holder": dict(holder or GROOM),
        "valid_from": "2008-05-12",
        "valid_until": None,
        "data": {
            "household_number": "330681081",
            "household_type": "家庭户",
            "relation_to_head": "户主",
            "address": "浙江省诸暨市暨阳街道人民路1号",
            "registration_office": "诸暨市公安局暨阳派出所",
        },
    }
