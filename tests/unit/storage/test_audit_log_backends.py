"""The audit log's contract on both backends: SQLite and a real PostgreSQL.

Two open logs on one file (or one database) stand for two processes (or replicas) of a
node. SQLite-only behaviour (the file's mode, tampering with the file) is in
``tests/unit/audit/test_audit_log.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from postgres import PostgresServer

from gateway._internal.postgres import lock_key
from gateway._internal.secret import Secret
from gateway.audit.heads import verify_tree_head
from gateway.audit.records import AuditKind, check_items
from gateway.clock import FixedClock
from gateway.crypto.jwks import KeyState, StaticKeyResolver, VerificationKey
from gateway.crypto.merkle import verify_consistency, verify_inclusion
from gateway.crypto.seals import PrivateKeySigner
from gateway.errors import ConfigError, InputError, StorageError, VerificationError
from gateway.ids import NodeId
from gateway.storage import audit_verify
from gateway.storage.audit_log import AuditLog, PostgresAuditLog, SqliteAuditLog
from gateway.storage.audit_verify import verify_log

NOW = 1_795_507_200.0
ZHUJI = NodeId("zhuji")
SIGNER = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
KEYS = StaticKeyResolver(
    {
        SIGNER.kid: VerificationKey(
            node=ZHUJI,
            kid=SIGNER.kid,
            alg=SIGNER.alg,
            public_key=SIGNER.public_key,
            state=KeyState.ACTIVE,
            not_before=None,
            not_after=None,
            revoked_at=None,
            verify_allowed=True,
        )
    }
)
DIGEST = "ab" * 32

Opener = Callable[..., AuditLog]


class Backend:
    """Opens the one audit log of a node (each call: another process or replica)."""

    def __init__(self, name: str, tmp_path: Path, dsn: Secret | None) -> None:
        self.name = name
        self.path = tmp_path / "audit.sqlite3"
        self.dsn = dsn

    def open(self, clock: FixedClock) -> AuditLog:
        if self.dsn is None:
            return SqliteAuditLog(self.path, node=ZHUJI, signer=SIGNER, clock=clock)
        return PostgresAuditLog(self.dsn, node=ZHUJI, signer=SIGNER, clock=clock)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", tmp_path, None)
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    with server.database() as dsn:
        yield Backend("postgresql", tmp_path, dsn)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def log(backend: Backend, clock: FixedClock) -> Iterator[AuditLog]:
    with backend.open(clock) as opened:
        yield opened


def fill(log: AuditLog, clock: FixedClock, n: int) -> None:
    for _ in range(n):
        seq = log.size()
        log.append(AuditKind.ISSUANCE, "zhuji-civil-affairs", f"cert-{seq}", {"holder": DIGEST})
        clock.advance(1)


def test_append_read_and_reopen(backend: Backend, clock: FixedClock) -> None:
    with backend.open(clock) as log:
        first = log.append(AuditKind.LOOKUP_HOP, "client-1", None, {"route": ["a", "b"]})
        clock.advance(5)
        second, third = log.append_many(
            [(AuditKind.FETCH, "yiwu", "cert-1", None), (AuditKind.KEY_EVENT, "ops", "k", None)]
        )
        assert (first.seq, second.seq, third.seq) == (0, 1, 2)
        assert log.entries(0, 10) == [first, second, third]
        head = log.tree_head()
    with backend.open(clock) as again:
        assert again.size() == 3
        assert again.append(AuditKind.STATUS, "ops").seq == 3
        assert again.tree_head(3).root_hash == head.root_hash


def test_a_second_writer_is_seen(backend: Backend, clock: FixedClock) -> None:
    with backend.open(clock) as a, backend.open(clock) as b:
        a.append(AuditKind.FETCH, "x")
        assert b.append(AuditKind.FETCH, "y").seq == 1
        assert a.tree_head().tree_size == 2
        assert a.leaf_hashes(2) == b.leaf_hashes(2)


def test_concurrent_writers_make_one_log(backend: Backend, clock: FixedClock) -> None:
    """Replicas appending at once: one sequence, one tree, every head consistent."""
    logs = [backend.open(clock) for _ in range(3)]
    start = threading.Barrier(len(logs))
    heads: list[tuple[int, bytes]] = []

    def append(log: AuditLog, who: int) -> list[int]:
        start.wait()
        seqs = []
        for n in range(20):
            (record,) = log.append_many([(AuditKind.FETCH, f"replica-{who}", f"c-{n}", None)])
            seqs.append(record.seq)
            if n % 5 == 0:
                head = log.tree_head()
                heads.append((head.tree_size, head.root_hash))
        return seqs

    try:
        with ThreadPoolExecutor(max_workers=len(logs)) as pool:
            done = [pool.submit(append, log, i) for i, log in enumerate(logs)]
            seqs = sorted(s for future in done for s in future.result())
        assert seqs == list(range(60))
        final = logs[0].tree_head()
        assert final.tree_size == 60
        for size, root_hash in heads:  # every head any replica signed is a prefix of one tree
            verify_consistency(
                size, 60, root_hash, final.root_hash, logs[1].consistency_proof(size, 60)
            )
        summary = verify_log(logs[2], KEYS, node=ZHUJI, now=NOW + 60)
        assert summary.size == 60
        assert summary.root_hash == final.root_hash
    finally:
        for log in logs:
            log.close()


def test_staged_records_are_invisible_until_committed_from_another_thread(
    backend: Backend, log: AuditLog, clock: FixedClock
) -> None:
    with backend.open(clock) as other:  # another process or replica
        staged = log.stage(check_items([(AuditKind.FETCH, "client", "cert-1", None)]))
        assert log.size() == 0  # written, not committed
        assert other.size() == 0
        with ThreadPoolExecutor(max_workers=1) as thread:  # as the group commit does
            records = thread.submit(staged.commit).result()
        assert [r.seq for r in records] == [0]
        assert [r.subject for r in other.entries(0, 1)] == ["cert-1"]
        assert other.append(AuditKind.FETCH, "client", "cert-2").seq == 1
    assert log.append(AuditKind.FETCH, "client", "cert-3").seq == 2


def test_a_rolled_back_stage_leaves_nothing(log: AuditLog) -> None:
    staged = log.stage(check_items([(AuditKind.FETCH, "client", "cert-1", None)]))
    staged.rollback()
    assert log.size() == 0
    assert log.append(AuditKind.FETCH, "client", "cert-2").seq == 0


def test_a_failed_batch_writes_nothing(log: AuditLog) -> None:
    with pytest.raises(InputError):
        log.append_many([(AuditKind.FETCH, "x", None, None), (AuditKind.FETCH, "", None, None)])
    assert log.size() == 0


def test_a_closed_log_is_refused(log: AuditLog) -> None:
    log.close()
    with pytest.raises(StorageError) as err:
        log.stage(check_items([(AuditKind.FETCH, "client", "cert-1", None)]))
    assert err.value.code == "audit.closed"


def test_append_missing_appends_only_what_the_recent_log_lacks(log: AuditLog) -> None:
    done = (AuditKind.ISSUANCE, "client", "cert-1", {"type": "x"})
    log.append(*done)
    lost = (AuditKind.STATUS, "client", "cert-1", {"event": 1})
    appended = log.append_missing(check_items([done, lost]))
    assert [(r.seq, r.kind) for r in appended] == [(1, AuditKind.STATUS)]
    assert log.append_missing(check_items([done, lost])) == []


def test_proofs_and_heads(log: AuditLog, clock: FixedClock) -> None:
    fill(log, clock, 7)
    small = log.tree_head()
    fill(log, clock, 6)
    head = verify_tree_head(log.tree_head().token, KEYS, node=ZHUJI, now=clock.now())
    assert head.tree_size == 13
    leaves = log.leaf_hashes(13)
    for seq in range(13):
        verify_inclusion(leaves[seq], seq, 13, log.inclusion_proof(seq, 13), head.root_hash)
    verify_consistency(7, 13, small.root_hash, head.root_hash, log.consistency_proof(7, 13))
    clock.advance(60)
    assert log.tree_head(7) == small  # a head for a size is signed once
    with pytest.raises(InputError) as err:
        log.tree_head(14)
    assert err.value.code == "audit.bad_range"


def test_issuance_proof(log: AuditLog, clock: FixedClock) -> None:
    fill(log, clock, 4)
    log.tree_head()
    clock.advance(10)
    proof = log.issuance_proof("cert-2", revoked_at=clock.now())
    assert proof.seq == 2
    assert log.find_issuance("cert-9") is None


def test_the_log_is_append_only_in_the_database(backend: Backend, log: AuditLog) -> None:
    log.append(AuditKind.FETCH, "x")
    if backend.dsn is None:
        return  # SQLite's triggers: tests/unit/audit/test_audit_log.py
    with psycopg.connect(backend.dsn.reveal()) as conn:
        for statement in (
            "UPDATE audit.entries SET entry = '\\x7b7d'",
            "DELETE FROM audit.entries",
            "TRUNCATE audit.heads",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
            conn.rollback()


def test_a_removed_entry_is_found(backend: Backend, clock: FixedClock) -> None:
    with backend.open(clock) as log:
        fill(log, clock, 5)
        log.tree_head()
    if backend.dsn is None:
        return  # SQLite's tampering: tests/unit/audit/test_audit_log.py
    with psycopg.connect(backend.dsn.reveal()) as conn:  # someone with the database's keys
        conn.execute("ALTER TABLE audit.entries DISABLE TRIGGER USER")
        conn.execute("DELETE FROM audit.entries WHERE seq = 4")
    with backend.open(clock) as log, pytest.raises(VerificationError) as err:
        verify_log(log, KEYS, node=ZHUJI, now=NOW + 60)
    assert err.value.code == "audit.removed"


def test_a_newer_schema_is_refused(backend: Backend, clock: FixedClock) -> None:
    with backend.open(clock) as log, log._db.write() as conn:
        if backend.dsn is None:
            conn.execute("PRAGMA user_version = 7")
        else:
            conn.execute("UPDATE schema_version SET version = 7")
    with pytest.raises(ConfigError) as err:
        backend.open(clock)
    assert err.value.code == "audit.schema"


def test_a_long_log_is_verified_page_by_page(
    log: AuditLog, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_verify, "VERIFY_PAGE", 3)  # 11 entries: four pages
    fill(log, clock, 6)
    log.tree_head()
    fill(log, clock, 5)
    head = log.tree_head()
    summary = verify_log(log, KEYS, node=ZHUJI, now=clock.now())
    assert (summary.size, summary.heads_checked, summary.root_hash) == (11, 2, head.root_hash)


async def test_replicas_appending_from_their_event_loops_make_one_log(
    backend: Backend, clock: FixedClock
) -> None:
    """PostgreSQL's appends from the loop (and a writer on a thread among them): one
    sequence, one tree; each replica catches up with the others' entries as it appends."""
    if backend.name != "postgresql":
        with backend.open(clock) as log, pytest.raises(TypeError, match="PostgreSQL"):
            await log.append_on_loop(check_items([(AuditKind.FETCH, "x", None, None)]))
        return
    logs = [backend.open(clock) for _ in range(3)]
    try:

        async def replica(log: AuditLog, who: int) -> list[int]:
            seqs = []
            for n in range(15):
                item = (AuditKind.FETCH, f"replica-{who}", f"c-{n}", {"n": n})
                records = await log.append_on_loop(check_items([item, item]))
                seqs += [r.seq for r in records]
                clock.advance(1)
            return seqs

        on_thread = asyncio.to_thread(
            lambda: [logs[0].append(AuditKind.STATUS, "ops").seq for _ in range(10)]
        )
        *looped, threaded = await asyncio.gather(
            *(replica(log, who) for who, log in enumerate(logs)), on_thread
        )
        assert sorted([s for seqs in looped for s in seqs] + threaded) == list(range(100))
        for seqs in looped:  # a replica's group is contiguous, in order
            assert all(b == a + 1 for a, b in zip(seqs[::2], seqs[1::2], strict=True))
        heads = {log.tree_head().root_hash for log in logs}
        assert len(heads) == 1  # every replica's cache holds the same tree
        summary = verify_log(logs[1], KEYS, node=ZHUJI, now=NOW + 600)
        assert summary.size == 100
        assert summary.root_hash in heads
    finally:
        for log in logs:
            log.close()


async def test_a_log_that_lost_entries_refuses_an_append_from_the_loop(
    backend: Backend, clock: FixedClock
) -> None:
    if backend.name != "postgresql":
        return
    with backend.open(clock) as log:
        fill(log, clock, 3)
        assert backend.dsn is not None
        with psycopg.connect(backend.dsn.reveal(), autocommit=True) as conn:
            conn.execute("ALTER TABLE audit.entries DISABLE TRIGGER USER")
            conn.execute("DELETE FROM audit.entries WHERE seq = 2")
            with pytest.raises(VerificationError) as info:
                await log.append_on_loop(check_items([(AuditKind.FETCH, "x", None, None)]))
            assert info.value.code == "audit.removed"
            # nothing was written over the hole, and the log's lock was given back
            assert conn.execute("SELECT count(*) FROM audit.entries").fetchone() == (2,)
            taken = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key("audit"),))
            assert taken.fetchone() == (True,)
