"""The trust authority's state and its author's lease, on both backends (SQLite, and a real
PostgreSQL): one author at a time, a fenced save, a sequence that never goes back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from postgres import PostgresServer

from gateway.errors import ConflictError
from gateway.storage.authority_state import (
    AuthorityStore,
    PostgresAuthorityStore,
    SqliteAuthorityStore,
)

NOW = 1_795_507_200.0
TTL = 10.0

Opener = Callable[[], AuthorityStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens national's one store; each call stands for another replica."""
    if request.param == "sqlite":
        yield lambda: SqliteAuthorityStore(tmp_path / "authority.sqlite3")
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    with server.database() as dsn:
        yield lambda: PostgresAuthorityStore(dsn)


def not_author(call: Callable[[], None]) -> str:
    with pytest.raises(ConflictError) as caught:
        call()
    return caught.value.code


def test_one_holder_at_a_time_until_the_lease_runs_out(open_store: Opener) -> None:
    with open_store() as a, open_store() as b:
        assert a.acquire("a", now=NOW, ttl=TTL)
        assert not b.acquire("b", now=NOW + 1, ttl=TTL)
        assert a.acquire("a", now=NOW + 5, ttl=TTL)  # renewed: until NOW + 15
        assert not b.acquire("b", now=NOW + 14, ttl=TTL)
        assert b.holder(now=NOW + 14) == "a"
        assert b.acquire("b", now=NOW + 15, ttl=TTL)  # a stopped renewing: b takes over
        assert not a.acquire("a", now=NOW + 16, ttl=TTL)
        assert a.holder(now=NOW + 16) == "b"


def test_a_released_lease_is_taken_at_once(open_store: Opener) -> None:
    with open_store() as a, open_store() as b:
        assert a.acquire("a", now=NOW, ttl=TTL)
        b.release("b")  # not its lease: nothing happens
        assert not b.acquire("b", now=NOW, ttl=TTL)
        a.release("a")
        assert b.acquire("b", now=NOW, ttl=TTL)


def test_only_the_holder_saves_and_the_sequence_never_goes_back(open_store: Opener) -> None:
    with open_store() as a, open_store() as b:
        assert a.load() is None
        assert not_author(lambda: a.save(b"s1", seq=1, holder="a", now=NOW)) == "trust.not_author"
        assert a.acquire("a", now=NOW, ttl=TTL)
        a.save(b"s1", seq=1, holder="a", now=NOW)
        a.save(b"s1'", seq=1, holder="a", now=NOW + 1)  # a key change between two lists
        assert b.load() == (1, b"s1'")
        # b is not the author; nor is a once its lease ran out (paused, then replaced)
        assert not_author(lambda: b.save(b"x", seq=2, holder="b", now=NOW + 2)) == (
            "trust.not_author"
        )
        assert b.acquire("b", now=NOW + 11, ttl=TTL)
        b.save(b"s2", seq=2, holder="b", now=NOW + 11)
        assert not_author(lambda: a.save(b"s2a", seq=2, holder="a", now=NOW + 12)) == (
            "trust.not_author"
        )
        assert not_author(lambda: b.save(b"s1b", seq=1, holder="b", now=NOW + 12)) == (
            "trust.not_author"
        )
        assert a.load() == (2, b"s2")


def test_a_lease_lasts_a_positive_time(open_store: Opener) -> None:
    with open_store() as store, pytest.raises(ValueError, match="positive"):
        store.acquire("a", now=NOW, ttl=0)
