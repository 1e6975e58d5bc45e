"""The node's hop-proof nonces: one use per nonce across every process and replica of a node.

The contract tests run on both backends: SQLite (a file every process shares) and a real
PostgreSQL (a database every replica shares)."""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from postgres import PostgresServer

from gateway.errors import AuthError, ConfigError
from gateway.storage.nonces import PURGE_EVERY, Nonces, PostgresNonces, SqliteNonces

NOW = 1_795_507_200.0

Opener = Callable[..., Nonces]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "nonces.sqlite3"


@pytest.fixture(params=["sqlite", "postgresql"])
def open_nonces(request: pytest.FixtureRequest, path: Path) -> Iterator[Opener]:
    """Opens the store of one node; each call stands for another process or replica."""
    if request.param == "sqlite":
        yield lambda *, max_entries, ttl: SqliteNonces(path, max_entries=max_entries, ttl=ttl)
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    with server.database() as dsn:
        yield lambda *, max_entries, ttl: PostgresNonces(dsn, max_entries=max_entries, ttl=ttl)


def replayed(store: Nonces, nonce: str, *, issued_at: float = NOW, now: float = NOW) -> str:
    with pytest.raises(AuthError) as caught:
        store.remember(nonce, issued_at=issued_at, now=now)
    return caught.value.code


def test_a_nonce_is_used_once(open_nonces: Opener) -> None:
    with open_nonces(max_entries=10, ttl=60) as store:
        store.remember("zhuji n1", issued_at=NOW, now=NOW)
        assert replayed(store, "zhuji n1", now=NOW + 30) == "hop.replay"
        store.remember("zhuji n2", issued_at=NOW, now=NOW)
        assert len(store) == 2


def test_a_nonce_used_by_one_process_is_refused_to_another(open_nonces: Opener) -> None:
    # two stores on one file (or database) stand for two processes (replicas) of the node
    with (
        open_nonces(max_entries=10, ttl=60) as first,
        open_nonces(max_entries=10, ttl=60) as second,
    ):
        first.remember("zhuji n1", issued_at=NOW, now=NOW)
        assert replayed(second, "zhuji n1") == "hop.replay"
        second.remember("zhuji n2", issued_at=NOW, now=NOW)
        assert replayed(first, "zhuji n2") == "hop.replay"


def test_a_nonce_outlives_the_process(open_nonces: Opener) -> None:
    with open_nonces(max_entries=10, ttl=60) as store:
        store.remember("zhuji n1", issued_at=NOW, now=NOW)
    with open_nonces(max_entries=10, ttl=60) as again:
        assert replayed(again, "zhuji n1") == "hop.replay"


def test_the_file_is_private_and_outlives_the_process(path: Path) -> None:
    with SqliteNonces(path, max_entries=10, ttl=60) as store:
        store.remember("zhuji n1", issued_at=NOW, now=NOW)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with SqliteNonces(path, max_entries=10, ttl=60) as again:
        assert replayed(again, "zhuji n1") == "hop.replay"


def test_a_proof_older_than_the_ttl_is_refused_without_a_record(open_nonces: Opener) -> None:
    with open_nonces(max_entries=10, ttl=60) as store:
        assert replayed(store, "zhuji old", issued_at=NOW - 61) == "hop.replay"
        assert len(store) == 0


def test_a_full_store_fails_closed_and_frees_room_as_nonces_expire(open_nonces: Opener) -> None:
    with open_nonces(max_entries=2, ttl=60) as store:
        for n in range(PURGE_EVERY):  # fill it past its bound between two counts
            store.remember(f"zhuji {n}", issued_at=NOW, now=NOW)
        assert replayed(store, "zhuji fresh") == "hop.replay"  # counted now: full
        assert replayed(store, "zhuji fresher") == "hop.replay"  # still full
        later = NOW + 61  # every nonce above has expired
        store.remember("zhuji late", issued_at=later, now=later)
        assert len(store) == 1


@pytest.mark.parametrize("nonce", ["", "x" * 257])
def test_a_malformed_nonce_is_invalid(open_nonces: Opener, nonce: str) -> None:
    with open_nonces(max_entries=10, ttl=60) as store:
        with pytest.raises(AuthError) as caught:
            store.remember(nonce, issued_at=NOW, now=NOW)
        assert caught.value.code == "hop.invalid"


@pytest.mark.parametrize(("entries", "ttl"), [(0, 60.0), (10, 0.0), (10, float("nan"))])
def test_bad_bounds_fail_at_start(open_nonces: Opener, entries: int, ttl: float) -> None:
    with pytest.raises(ConfigError) as caught:
        open_nonces(max_entries=entries, ttl=ttl)
    assert caught.value.code == "hop.cache"


def test_checkpoint_keeps_every_nonce(open_nonces: Opener) -> None:
    with open_nonces(max_entries=10, ttl=60) as store:
        store.remember("zhuji n1", issued_at=NOW, now=NOW)
        store.checkpoint()
        assert replayed(store, "zhuji n1") == "hop.replay"


def test_a_newer_schema_is_refused(open_nonces: Opener) -> None:
    with open_nonces(max_entries=10, ttl=60) as store, store._db.write() as conn:
        # a later gateway migrated the store
        if store._db.dialect == "sqlite":
            conn.execute("PRAGMA user_version = 99")
        else:
            conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(ConfigError) as caught:
        open_nonces(max_entries=10, ttl=60)
    assert caught.value.code == "hop.schema"


def test_an_unreachable_database_fails_at_start(pg_server: PostgresServer) -> None:
    from gateway._internal.secret import Secret

    dsn = Secret(pg_server.dsn("no_such_database"))
    with pytest.raises(ConfigError) as caught:
        PostgresNonces(dsn, max_entries=10, ttl=60)
    assert caught.value.code == "hop.open"
    assert "no_such_database" in caught.value.detail
