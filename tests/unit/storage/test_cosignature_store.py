"""The cosignatures store: kept once, never changed, durable, and the witnessed-head query."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from postgres import PostgresServer

from gateway._internal.secret import Secret
from gateway.audit.cosignatures import Cosignature
from gateway.errors import GatewayError
from gateway.ids import NodeId
from gateway.storage.cosignatures import PostgresCosignatures, SqlCosignatures, SqliteCosignatures

NOW = 1_795_507_200.0
ZHUJI, SHAOXING, LINQUAN = NodeId("zhuji"), NodeId("shaoxing"), NodeId("linquan")


def made(witness: NodeId, size: int, *, at: float, origin: NodeId = ZHUJI) -> Cosignature:
    return Cosignature(
        witness, origin, size, bytes([size]) * 32, NOW + size, at, f"cosig.{witness}.{size}.{at}"
    )


def head(size: int) -> str:
    return f"head.{size}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | Secret]:
    """Where the store lives: a SQLite file, or a database of a real PostgreSQL."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("pg_server")
        with server.database() as dsn:
            yield dsn
        return
    yield tmp_path / "cosignatures.sqlite3"


def open_store(database: Path | Secret) -> SqlCosignatures:
    if isinstance(database, Path):
        return SqliteCosignatures(database)
    return PostgresCosignatures(database)


@pytest.fixture
def store(database: Path | Secret) -> Iterator[SqlCosignatures]:
    opened = open_store(database)
    yield opened
    opened.close()


def change_behind_the_store(database: Path | Secret) -> None:
    """An UPDATE of the table from outside the store, which its trigger refuses."""
    if isinstance(database, Path):
        with (
            sqlite3.connect(database) as conn,
            pytest.raises(sqlite3.DatabaseError, match="never changed"),
        ):
            conn.execute("UPDATE cosignatures SET cosigned_at = 0")
        return
    with (
        psycopg.connect(database.reveal()) as conn,
        pytest.raises(psycopg.DatabaseError, match="never changed"),
    ):
        conn.execute("UPDATE cosignatures.cosignatures SET cosigned_at = 0")


def test_a_cosignature_is_kept_once_and_never_changed(
    store: SqlCosignatures, database: Path | Secret
) -> None:
    first = made(SHAOXING, 3, at=NOW + 10)
    assert store.add(first, head(3))
    assert not store.add(made(SHAOXING, 3, at=NOW + 20), head(3))  # the older one stays
    assert store.made_by(SHAOXING, origin=ZHUJI, after_size=-1, limit=10) == [first]
    change_behind_the_store(database)
    store.close()
    with open_store(database) as reopened:
        assert reopened.made_by(SHAOXING, origin=ZHUJI, after_size=-1, limit=10) == [first]


def test_pages_and_the_last_head_of_each_origin(store: SqlCosignatures) -> None:
    for size in (2, 5, 9):
        store.add(made(ZHUJI, size, at=NOW + size, origin=SHAOXING), head(size))
    store.add(made(ZHUJI, 4, at=NOW + 4, origin=LINQUAN), head(4))
    sizes = [c.tree_size for c in store.made_by(ZHUJI, origin=SHAOXING, after_size=2, limit=1)]
    assert sizes == [5]
    last = store.last_cosigned(ZHUJI)
    assert {node: h.tree_size for node, h in last.items()} == {SHAOXING: 9, LINQUAN: 4}
    assert last[SHAOXING].token == head(9)
    assert store.largest_size(origin=SHAOXING, witness=ZHUJI) == 9
    assert store.largest_size(origin=ZHUJI, witness=SHAOXING) is None


def test_the_first_witnessed_head_counts_distinct_other_nodes_in_time(
    store: SqlCosignatures,
) -> None:
    store.add(made(ZHUJI, 3, at=NOW + 1), head(3))  # the origin itself: never a witness
    store.add(made(SHAOXING, 5, at=NOW + 50), head(5))  # too late for NOW + 40
    store.add(made(SHAOXING, 7, at=NOW + 20), head(7))
    store.add(made(LINQUAN, 7, at=NOW + 30), head(7))
    store.add(made(LINQUAN, 9, at=NOW + 25), head(9))
    assert store.first_witnessed(ZHUJI, larger_than=2, before=NOW + 40, quorum=3) is None
    found = store.first_witnessed(ZHUJI, larger_than=2, before=NOW + 40, quorum=1)
    assert found is not None
    token, cosignatures = found
    assert (token, [c.witness for c in cosignatures]) == (head(7), [SHAOXING, LINQUAN])
    found = store.first_witnessed(ZHUJI, larger_than=2, before=NOW + 40, quorum=2)
    assert found is not None
    assert found[0] == head(7)
    found = store.first_witnessed(ZHUJI, larger_than=7, before=NOW + 40, quorum=1)
    assert found is not None
    assert found[0] == head(9)
    # heads signed at or after the time do not count either (head 7 was signed at NOW + 7)
    assert store.first_witnessed(ZHUJI, larger_than=2, before=NOW + 7, quorum=1) is None


def test_an_unopenable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(GatewayError) as info:
        SqliteCosignatures(tmp_path / "missing" / "cosignatures.sqlite3")
    assert info.value.code.startswith("witness.")


def test_an_unreachable_database_is_a_config_error(pg_server: PostgresServer) -> None:
    with pg_server.database() as dsn:
        pass  # dropped: nothing to connect to
    with pytest.raises(GatewayError) as info:
        PostgresCosignatures(dsn)
    assert info.value.code.startswith("witness.")
