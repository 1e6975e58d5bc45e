"""PostgreSQL plumbing on a real server: versioned migrations (created, upgraded, a newer one
refused), one writer at a time across connections, snapshot reads, errors translated."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from gateway._internal.postgres import PgConn, PgConnections, lock_key
from gateway._internal.secret import Secret
from gateway.errors import ConfigError, StorageError

V1 = ("CREATE TABLE things (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",)
UPGRADES = {1: ("ALTER TABLE things ADD COLUMN size BIGINT NOT NULL DEFAULT 0",)}


@pytest.fixture
def db(pg_dsn: Secret) -> Iterator[PgConnections]:
    with_db = PgConnections(pg_dsn, schema="things", prefix="things", store="thing store")
    yield with_db
    with_db.close()


def test_a_new_store_is_created_seeded_and_stamped(db: PgConnections) -> None:
    def seed(conn: PgConn) -> None:
        conn.execute("INSERT INTO things VALUES (?, ?)", (1, "a"))

    db.migrate(V1, 1, seed=seed)
    assert db.version() == 1
    with db.read() as conn:
        assert conn.execute("SELECT id, name FROM things").fetchall() == [(1, "a")]
    db.migrate(V1, 1)  # again: nothing to do
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM things").fetchone() == (1,)


def test_an_older_store_is_upgraded_and_a_newer_one_refused(
    db: PgConnections, pg_dsn: Secret
) -> None:
    db.migrate(V1, 1)
    later = PgConnections(pg_dsn, schema="things", prefix="things", store="thing store")
    try:
        later.migrate((), 2, upgrades=UPGRADES)
        assert later.version() == 2
        with later.read() as conn:
            assert conn.execute("SELECT size FROM things").fetchall() == []
    finally:
        later.close()
    with pytest.raises(ConfigError) as caught:  # the older gateway meets the newer schema
        db.migrate(V1, 1)
    assert caught.value.code == "things.schema"
    assert db.version() == 2


def test_a_version_without_its_upgrade_is_refused(db: PgConnections, pg_dsn: Secret) -> None:
    db.migrate(V1, 1)
    with pytest.raises(ConfigError) as caught:
        db.migrate(V1, 3, upgrades=UPGRADES)  # no step from 2 to 3
    assert caught.value.code == "things.schema"
    assert db.version() == 1  # nothing of it stays


def test_writers_take_turns_across_connections(db: PgConnections, pg_dsn: Secret) -> None:
    """Two connections stand for two replicas: the second writer waits for the first."""
    db.migrate(V1, 1)
    other = PgConnections(pg_dsn, schema="things", prefix="things", store="thing store")
    first = db.begin()
    done = threading.Event()

    def second_writer() -> None:
        with other.write() as conn:
            (count,) = conn.execute("SELECT count(*) FROM things").fetchall()[0]
            conn.execute("INSERT INTO things VALUES (?, ?)", (count + 1, "second"))
        done.set()

    try:
        first.conn.execute("INSERT INTO things VALUES (1, 'first')")
        thread = threading.Thread(target=second_writer)
        thread.start()
        waiting_for_the_lock(pg_dsn)  # the first holds the store's lock: the second waits
        assert not done.is_set()
        first.commit()
        thread.join(timeout=30)
        assert done.is_set()
        with db.read() as conn:  # it saw the first's row: numbered after it
            rows = conn.execute("SELECT id, name FROM things ORDER BY id").fetchall()
        assert rows == [(1, "first"), (2, "second")]
    finally:
        other.close()


def waiting_for_the_lock(dsn: Secret) -> None:
    """Until a backend waits for an advisory lock (seen by the server, not a sleep)."""
    with psycopg.connect(dsn.reveal(), autocommit=True) as conn:
        for _ in range(10_000):
            waiting = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            if waiting == (1,):
                return
        raise AssertionError("the second writer never waited for the lock")


def test_a_snapshot_read_sees_one_state(db: PgConnections, pg_dsn: Secret) -> None:
    db.migrate(V1, 1)
    with db.read(snapshot=True) as conn:
        assert conn.execute("SELECT count(*) FROM things").fetchone() == (0,)
        with db.write() as writer:
            writer.execute("INSERT INTO things VALUES (1, '100% sure')")
        assert conn.execute("SELECT count(*) FROM things").fetchone() == (0,)
    with db.read() as conn:
        assert conn.execute("SELECT name FROM things WHERE id = ?", (1,)).fetchone() == (
            "100% sure",
        )


def test_errors_are_translated_and_roll_back(db: PgConnections) -> None:
    db.migrate(V1, 1)

    def half_written() -> None:
        with db.write() as conn:
            conn.execute("INSERT INTO things VALUES (1, 'a')")
            conn.execute("INSERT INTO missing VALUES (1)")

    with pytest.raises(StorageError) as caught:
        half_written()
    assert caught.value.code == "things.storage"
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM things").fetchone() == (0,)
    with db.write() as conn:  # the writer is free again
        conn.execute("INSERT INTO things VALUES (1, 'a')")


def test_a_closed_store_refuses_and_a_bad_schema_name_is_a_bug(
    db: PgConnections, pg_dsn: Secret
) -> None:
    db.close()
    db.close()  # idempotent
    with pytest.raises(StorageError) as caught, db.read():
        pass
    assert caught.value.code == "things.closed"
    with pytest.raises(ValueError, match="schema"):
        PgConnections(pg_dsn, schema='x"; DROP', prefix="x", store="x")


def test_lock_keys_are_stable_and_distinct() -> None:
    keys = {lock_key(name) for name in ("audit", "nonces", "registry", "catalog", "authority")}
    assert len(keys) == 5
    assert lock_key("audit") == lock_key("audit")
