"""PostgreSQL from the event loop, on a real server: reads that never block the loop
(:class:`~gateway._internal.postgres.LoopReads`), write transactions driven from it
(:class:`~gateway._internal.postgres.LoopTransaction`), binary array parameters, and the
same rows as psycopg gives (and as SQLite's ``fetch`` gives)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from gateway._internal.postgres import (
    LOOP_READ_CONNECTIONS,
    LoopReads,
    PgArray,
    PgConnections,
    _numbered,
    lock_key,
)
from gateway._internal.secret import Secret
from gateway._internal.sqlite import Connections
from gateway.errors import StorageError

V1 = (
    "CREATE TABLE things (id BIGINT PRIMARY KEY, small INTEGER, name TEXT, ratio DOUBLE"
    " PRECISION, approx REAL, blob BYTEA, flag BOOLEAN)",
)
ROWS = [
    (1, 7, "证照 one", 0.1, 0.5, b"\x00\xffbytes", True),
    (2, -3, "two", -1e300, -2.25, b"", False),
    (3, None, None, None, None, None, None),
    (2**62, 2**31 - 1, "'; DROP TABLE things; --", 3.0, 1.0, b"\\x41", True),
]
ALL = "SELECT id, small, name, ratio, approx, blob, flag FROM things ORDER BY id"


@pytest.fixture
def db(pg_dsn: Secret) -> Iterator[PgConnections]:
    with_db = PgConnections(pg_dsn, schema="things", prefix="things", store="thing store")
    with_db.migrate(V1, 1)
    with with_db.write() as conn:
        conn.executemany("INSERT INTO things VALUES (?, ?, ?, ?, ?, ?, ?)", ROWS)
    yield with_db
    with_db.close()


@pytest.fixture
async def watcher(pg_dsn: Secret) -> AsyncIterator[psycopg.Connection[tuple[object, ...]]]:
    conn = psycopg.connect(pg_dsn.reveal(), autocommit=True)
    yield conn
    conn.close()


async def until(condition: str, conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Until the server shows ``condition`` (a count above zero): the loop runs meanwhile."""
    for _ in range(3000):
        row = conn.execute(condition).fetchone()
        if row is not None and row[0]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {condition}")


WAITING = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"


# --- reads -----------------------------------------------------------------------------------


async def test_a_read_gives_the_rows_psycopg_gives(db: PgConnections) -> None:
    with db.read() as conn:
        expected = conn.execute(ALL).fetchall()
    assert await db.fetch(ALL) == expected
    # REAL is single precision: what comes back is the float PostgreSQL kept
    assert [row[4] for row in expected] == [0.5, -2.25, None, 1.0]
    assert expected[0][2] == "证照 one"
    assert expected[0][5] == b"\x00\xffbytes"


@pytest.mark.parametrize(
    ("where", "params", "ids"),
    [
        ("id = ?", (2,), [2]),
        ("name = ?", ("'; DROP TABLE things; --",), [2**62]),
        ("blob = ?", (b"\x00\xffbytes",), [1]),
        ("ratio < ?", (0.0,), [2]),
        ("flag = ?", (False,), [2]),
        ("id > ? AND small < ?", (1, 0), [2]),
        ("name IS NOT DISTINCT FROM ?", (None,), [3]),
    ],
)
async def test_parameters_of_every_kind(
    db: PgConnections, where: str, params: tuple[object, ...], ids: list[int]
) -> None:
    rows = await db.fetch(f"SELECT id FROM things WHERE {where} ORDER BY id", params)
    assert [row[0] for row in rows] == ids


async def test_reads_beyond_the_pool_wait_their_turn_while_the_loop_serves(
    db: PgConnections, pg_dsn: Secret, watcher: psycopg.Connection[tuple[object, ...]]
) -> None:
    key = lock_key("loop-read-test")
    holder = psycopg.connect(pg_dsn.reveal(), autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        blocked = (
            "SELECT ?::bigint FROM (SELECT pg_advisory_lock_shared(?),"
            " pg_advisory_unlock_shared(?)) AS waited"
        )
        reads = [
            asyncio.ensure_future(db.fetch(blocked, (n, key, key)))
            for n in range(LOOP_READ_CONNECTIONS + 3)
        ]
        # every connection of the pool waits at the server; the loop goes on meanwhile
        await until(f"SELECT ({WAITING}) >= {LOOP_READ_CONNECTIONS}", watcher)
        assert not any(read.done() for read in reads)
        opened = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_advisory_lock_shared%'"
            " AND pid <> pg_backend_pid()"
        ).fetchone()
        assert opened == (LOOP_READ_CONNECTIONS,)  # never more than the pool
        holder.execute("SELECT pg_advisory_unlock(%s)", (key,))
        answers = await asyncio.wait_for(asyncio.gather(*reads), 30)
        assert sorted(rows[0][0] for rows in answers) == list(range(LOOP_READ_CONNECTIONS + 3))
    finally:
        holder.close()


async def test_a_connection_the_server_drops_is_replaced(
    db: PgConnections, watcher: psycopg.Connection[tuple[object, ...]]
) -> None:
    ((pid,),) = await db.fetch("SELECT pg_backend_pid()")
    watcher.execute("SELECT pg_terminate_backend(%s)", (pid,))
    idle = db._loop_reads._idle
    for _ in range(3000):  # the loop watches its idle connections: it sees this one go
        if not all(conn.clean for conn in idle):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the dropped connection went unnoticed")
    assert await db.fetch("SELECT id FROM things WHERE id = ?", (1,)) == [(1,)]
    ((other,),) = await db.fetch("SELECT pg_backend_pid()")
    assert other != pid


async def test_a_read_that_takes_too_long_fails_busy_and_the_next_is_served(
    pg_dsn: Secret, db: PgConnections
) -> None:
    reads = LoopReads(
        lambda: psycopg.connect(pg_dsn.reveal(), autocommit=True), db.translate, timeout=0.2
    )
    try:
        with pytest.raises(StorageError) as info:
            await reads.fetch("SELECT pg_sleep(30)", ())
        assert info.value.code == "things.busy"
        assert await reads.fetch("SELECT 1 + ?", (1,)) == [(2,)]
    finally:
        reads.close()


async def test_a_bad_statement_fails_and_leaves_the_connection_usable(db: PgConnections) -> None:
    with pytest.raises(StorageError) as info:
        await db.fetch("SELECT no_such_column FROM things")
    assert info.value.code == "things.storage"
    for _ in range(LOOP_READ_CONNECTIONS + 1):
        assert await db.fetch("SELECT count(*) FROM things") == [(len(ROWS),)]


async def test_a_closed_store_refuses_reads(pg_dsn: Secret) -> None:
    store = PgConnections(pg_dsn, schema="things", prefix="things", store="thing store")
    store.close()
    with pytest.raises(StorageError) as info:
        await store.fetch("SELECT 1")
    assert info.value.code == "things.closed"


async def test_sqlite_reads_from_the_loop_give_the_same_rows(tmp_path: Path) -> None:
    db = Connections(
        tmp_path / "t.sqlite3", busy_timeout=5.0, synchronous="FULL", prefix="t", store="t store"
    )
    try:
        db.migrate(("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, blob BLOB)",), 1)
        with db.write() as conn:
            conn.execute("INSERT INTO t VALUES (?, ?, ?)", (1, "one", b"\x00"))
        assert await db.fetch("SELECT id, name, blob FROM t WHERE id = ?", (1,)) == [
            (1, "one", b"\x00")
        ]
    finally:
        db.close()


def test_placeholders_are_numbered() -> None:
    assert _numbered("SELECT ? WHERE a = ? AND b = ?") == "SELECT $1 WHERE a = $2 AND b = $3"
    assert _numbered("SELECT 1") == "SELECT 1"


# --- write transactions from the loop ---------------------------------------------------------


async def test_a_transaction_reads_under_the_lock_and_commits_with_its_last_statement(
    db: PgConnections,
) -> None:
    transaction = await db.begin_on_loop(
        "SELECT max(id) FROM things", "SELECT name, blob, flag FROM things WHERE id = 1"
    )
    assert transaction.results == [[(2**62,)], [("证照 one", b"\x00\xffbytes", True)]]
    assert await transaction.fetch("SELECT count(*) FROM things WHERE id < ?", (3,)) == [(2,)]
    await transaction.commit(
        (
            "INSERT INTO things (id, blob) SELECT * FROM unnest(?::bigint[], ?::bytea[])",
            (PgArray.int8([10, 11]), PgArray.bytea([b"ten", b""])),
        )
    )
    rows = await db.fetch("SELECT id, blob FROM things WHERE id >= ? ORDER BY id", (10,))
    assert rows[:2] == [(10, b"ten"), (11, b"")]


async def test_arrays_are_one_parameter_for_psycopg_too(db: PgConnections) -> None:
    with db.write() as conn:
        conn.execute(
            "INSERT INTO things (id, name) SELECT i, 'n' || i FROM unnest(?::bigint[]) AS i",
            (PgArray.int8([-5, 20, 2**40]),),
        )
    rows = await db.fetch("SELECT id, name FROM things WHERE name LIKE 'n%' ORDER BY id")
    assert rows == [(-5, "n-5"), (20, "n20"), (2**40, f"n{2**40}")]


async def test_a_rolled_back_or_aborted_transaction_leaves_nothing(db: PgConnections) -> None:
    transaction = await db.begin_on_loop()
    await transaction.fetch("INSERT INTO things (id) VALUES (?)", (100,))
    await transaction.rollback()
    transaction = await db.begin_on_loop()
    await transaction.fetch("INSERT INTO things (id) VALUES (?)", (101,))
    transaction.abort()  # the connection is dropped: the server rolls back
    transaction.abort()  # and once ended, nothing more
    await transaction.rollback()
    assert await db.fetch("SELECT count(*) FROM things WHERE id IN (100, 101)") == [(0,)]
    again = await db.begin_on_loop("SELECT count(*) FROM things")
    assert again.results == [[(len(ROWS),)]]
    await again.commit()


async def test_a_failed_statement_ends_the_transaction_and_the_next_begins(
    db: PgConnections,
) -> None:
    transaction = await db.begin_on_loop()
    with pytest.raises(StorageError) as info:
        await transaction.commit(("INSERT INTO things (id) VALUES (?)", (1,)))  # taken
    assert info.value.code == "things.storage"
    with pytest.raises(RuntimeError, match="ended"):
        await transaction.fetch("SELECT 1")
    fresh = await db.begin_on_loop()
    await fresh.commit(("INSERT INTO things (id) VALUES (?)", (200,)))
    assert await db.fetch("SELECT id FROM things WHERE id = ?", (200,)) == [(200,)]


async def test_loop_transactions_take_turns_with_every_other_writer(
    db: PgConnections, watcher: psycopg.Connection[tuple[object, ...]]
) -> None:
    """A writer on a thread (or in another replica) holds the store's lock: the loop's
    transaction waits for it at the server, and the loop goes on meanwhile."""
    first = db.begin()
    first.conn.execute("INSERT INTO things (id) VALUES (300)")
    second = asyncio.ensure_future(db.begin_on_loop("SELECT max(id) FROM things"))
    await until(WAITING, watcher)
    assert not second.done()
    first.commit(("INSERT INTO things (id) VALUES (?)", (2**62 + 1,)))
    transaction = await asyncio.wait_for(second, 30)
    assert transaction.results == [[(2**62 + 1,)]]  # it saw the first writer's commit
    # and one loop transaction at a time: the next waits for this one's end
    third = asyncio.ensure_future(db.begin_on_loop())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not third.done()
    await transaction.commit()
    await (await asyncio.wait_for(third, 30)).commit()


async def test_a_writer_connection_the_server_drops_is_replaced(
    db: PgConnections, watcher: psycopg.Connection[tuple[object, ...]]
) -> None:
    transaction = await db.begin_on_loop("SELECT pg_backend_pid()")
    ((pid,),) = transaction.results[0]
    await transaction.commit()
    watcher.execute("SELECT pg_terminate_backend(%s)", (pid,))
    writer = db._loop_writer._conn
    assert writer is not None
    for _ in range(3000):  # the loop watches the idle connection: it sees it go
        if not writer.clean:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the dropped connection went unnoticed")
    again = await db.begin_on_loop("SELECT pg_backend_pid()")
    assert again.results[0][0][0] != pid
    await again.commit(("INSERT INTO things (id) VALUES (?)", (400,)))
    assert await db.fetch("SELECT id FROM things WHERE id = ?", (400,)) == [(400,)]
