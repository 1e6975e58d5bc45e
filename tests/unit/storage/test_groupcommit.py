"""Group commit: concurrent requests' audit records share transactions, each caller resumes
once its own records are durable, and a failure reaches exactly the callers it concerns."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway._internal.postgres import lock_key
from gateway._internal.secret import Secret
from gateway.audit.records import AuditItem, AuditKind, AuditRecord, CheckedItem
from gateway.clock import FixedClock
from gateway.crypto.seals import PrivateKeySigner
from gateway.errors import InputError, StorageError
from gateway.ids import NodeId
from gateway.storage.audit_log import PostgresAuditLog, SqliteAuditLog, StagedAppend
from gateway.storage.groupcommit import GroupCommit

NOW = 1_795_507_200.0
SIGNER = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
DIGEST = "ab" * 32


def fetch(n: int) -> list[AuditItem]:
    """One request's records: a fetch and the consent it used."""
    return [
        (AuditKind.FETCH, f"client-{n}", f"cert-{n}", {"holder": DIGEST}),
        (AuditKind.CONSENT_USE, f"client-{n}", f"cert-{n}", {"consent": f"grant-{n}"}),
    ]


@pytest.fixture
def log(tmp_path: Path) -> SqliteAuditLog:
    return SqliteAuditLog(
        tmp_path / "audit.sqlite", node=NodeId("zhuji"), signer=SIGNER, clock=FixedClock(NOW)
    )


@pytest.fixture
async def journal(log: SqliteAuditLog) -> AsyncIterator[GroupCommit]:
    commits = GroupCommit(log)
    yield commits
    await commits.aclose()
    log.close()


async def test_concurrent_requests_share_one_commit(
    journal: GroupCommit, log: SqliteAuditLog
) -> None:
    results = await asyncio.gather(*(journal.append(fetch(n)) for n in range(50)))
    assert journal.commits == 1
    assert log.size() == 100
    for n, records in enumerate(results):
        # each caller's records, in its order, side by side
        assert [r.actor for r in records] == [f"client-{n}"] * 2
        assert [r.kind for r in records] == [AuditKind.FETCH, AuditKind.CONSENT_USE]
        assert records[1].seq == records[0].seq + 1
    stored = log.entries(0, 100)
    assert [(r.seq, r.actor, r.kind) for r in stored] == [
        (r.seq, r.actor, r.kind) for records in results for r in records
    ]


async def test_each_caller_resumes_after_its_records_are_durable(
    journal: GroupCommit, log: SqliteAuditLog
) -> None:
    records = await journal.append(fetch(1))
    assert log.size() == 2
    assert [r.seq for r in records] == [0, 1]
    # read back by another connection: committed, not only in this process's cache
    again = SqliteAuditLog(log.path, node=NodeId("zhuji"), signer=SIGNER, clock=FixedClock(NOW))
    try:
        assert [r.subject for r in again.entries(0, 2)] == ["cert-1", "cert-1"]
    finally:
        again.close()


async def test_a_bad_record_fails_only_its_own_request(
    journal: GroupCommit, log: SqliteAuditLog
) -> None:
    bad: list[AuditItem] = [(AuditKind.FETCH, "", "cert-x", None)]  # empty actor
    outcomes = await asyncio.gather(
        journal.append(fetch(1)),
        journal.append(bad),
        journal.append(fetch(2)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], InputError)
    assert outcomes[1].code == "audit.bad_record"
    assert not isinstance(outcomes[0], BaseException)
    assert not isinstance(outcomes[2], BaseException)
    assert log.size() == 4


async def test_a_failed_commit_fails_every_request_it_carried(
    journal: GroupCommit, log: SqliteAuditLog
) -> None:
    log.close()  # the store goes away under the writer
    outcomes = await asyncio.gather(
        journal.append(fetch(1)), journal.append(fetch(2)), return_exceptions=True
    )
    assert [getattr(o, "code", None) for o in outcomes] == ["audit.closed", "audit.closed"]
    assert all(isinstance(o, StorageError) for o in outcomes)
    assert journal.commits == 0


async def test_a_group_is_bounded_and_never_splits_a_request(log: SqliteAuditLog) -> None:
    journal = GroupCommit(log, max_batch=5)
    try:
        results = await asyncio.gather(*(journal.append(fetch(n)) for n in range(5)))
    finally:
        await journal.aclose()
    # 2 + 2 records a commit (a third request would make 6 > 5), the last one alone
    assert journal.commits == 3
    assert [r.seq for records in results for r in records] == list(range(10))


class Commits:
    """The log's staged transactions, watched: how many were staged, the thread each commits
    on; a commit can be held until the test releases it, or made to fail once."""

    def __init__(self, log: SqliteAuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
        self._stage = log.stage
        monkeypatch.setattr(log, "stage", self.stage)
        self.staged = 0
        self.first_staged = asyncio.Event()
        self.threads: list[str] = []
        self.released: threading.Event | None = None
        self.fail_next = False

    def hold(self) -> threading.Event:
        """Commits wait until the returned event is set."""
        self.released = threading.Event()
        return self.released

    def stage(self, checked: Sequence[CheckedItem]) -> StagedAppend:
        staged = self._stage(checked)
        self.staged += 1
        self.first_staged.set()  # staged on the loop, as the group commit does
        real_commit, released, fail = staged.commit, self.released, self.fail_next
        self.fail_next = False

        def commit() -> list[AuditRecord]:
            self.threads.append(threading.current_thread().name)
            if released is not None:
                assert released.wait(timeout=30), "the test never released the commit"
            if fail:
                staged.rollback()
                raise StorageError("the disk went away", code="audit.storage")
            return real_commit()

        staged.commit = commit  # type: ignore[method-assign]
        return staged


async def test_the_loop_serves_while_a_group_is_being_committed(
    journal: GroupCommit, log: SqliteAuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Commits(log, monkeypatch)
    released = held.hold()
    # two requests queue in one round: a group of two, committed on the commit thread
    first = asyncio.ensure_future(journal.append(fetch(1)))
    second = asyncio.ensure_future(journal.append(fetch(2)))
    await held.first_staged.wait()  # the first group is staged; its commit is held
    # the event loop is free: other requests run and queue for the next group
    third = asyncio.ensure_future(journal.append(fetch(3)))
    fourth = asyncio.ensure_future(journal.append(fetch(4)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not any(request.done() for request in (first, second, third, fourth))
    assert held.staged == 1  # one writer: the next group waits for the commit in flight
    assert log.size() == 0
    released.set()
    assert [r.seq for r in await first] == [0, 1]
    assert [r.seq for r in await second] == [2, 3]
    assert [r.seq for r in await third] == [4, 5]
    assert [r.seq for r in await fourth] == [6, 7]
    assert journal.commits == 2  # the two that waited shared the next commit
    assert held.staged == 2


async def test_every_commit_runs_on_the_commit_thread_never_on_the_loop(
    journal: GroupCommit, log: SqliteAuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Commits(log, monkeypatch)
    await journal.append(fetch(1))  # alone
    await asyncio.gather(journal.append(fetch(2)), journal.append(fetch(3)))  # together
    loop_thread = threading.current_thread().name
    assert len(seen.threads) == 2
    assert loop_thread not in seen.threads
    assert all(name.startswith("audit-commit") for name in seen.threads)
    assert [r.subject for r in log.entries(0, 6)] == ["cert-1"] * 2 + ["cert-2"] * 2 + [
        "cert-3"
    ] * 2


async def test_a_commit_that_fails_on_the_thread_fails_its_group_only(
    journal: GroupCommit, log: SqliteAuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    Commits(log, monkeypatch).fail_next = True
    # two requests: a group committed on the thread, where the commit fails
    lost = await asyncio.gather(
        journal.append(fetch(1)), journal.append(fetch(2)), return_exceptions=True
    )
    assert [getattr(o, "code", None) for o in lost] == ["audit.storage"] * 2
    assert [r.seq for r in await journal.append(fetch(3))] == [0, 1]
    assert [r.subject for r in log.entries(0, 2)] == ["cert-3", "cert-3"]


async def test_a_lone_request_s_failed_commit_fails_it_only(
    journal: GroupCommit, log: SqliteAuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    Commits(log, monkeypatch).fail_next = True
    with pytest.raises(StorageError) as caught:  # committed alone, raised to its caller
        await journal.append(fetch(1))
    assert caught.value.code == "audit.storage"
    assert [r.seq for r in await journal.append(fetch(2))] == [0, 1]
    assert [r.subject for r in log.entries(0, 2)] == ["cert-2", "cert-2"]


async def test_a_caller_that_goes_away_still_has_its_records_committed(
    journal: GroupCommit, log: SqliteAuditLog
) -> None:
    gone = asyncio.ensure_future(journal.append(fetch(1)))
    await asyncio.sleep(0)  # queued
    gone.cancel()
    await journal.append(fetch(2))
    assert gone.cancelled()
    assert [r.subject for r in log.entries(0, 4)] == ["cert-1", "cert-1", "cert-2", "cert-2"]


async def test_close_commits_what_waits_then_refuses(log: SqliteAuditLog) -> None:
    journal = GroupCommit(log)
    waiting = asyncio.ensure_future(journal.append(fetch(1)))
    await asyncio.sleep(0)
    await journal.aclose()
    assert [r.seq for r in await waiting] == [0, 1]
    with pytest.raises(StorageError) as info:
        await journal.append(fetch(2))
    assert info.value.code == "audit.closed"
    log.close()


async def test_nothing_to_append_touches_nothing(journal: GroupCommit, log: SqliteAuditLog) -> None:
    assert await journal.append([]) == []
    assert journal.commits == 0
    assert log.size() == 0


def test_a_group_holds_a_record() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        GroupCommit(object(), max_batch=0)  # type: ignore[arg-type]


async def test_on_postgresql_the_loop_awaits_the_round_trips_and_is_never_blocked(
    pg_dsn: Secret, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each statement is a round trip the event loop awaits: while the server keeps a group
    waiting (another writer holds the log's lock), the loop goes on serving, and no thread
    stages anything."""
    log = PostgresAuditLog(pg_dsn, node=NodeId("zhuji"), signer=SIGNER, clock=FixedClock(NOW))
    journal = GroupCommit(log)

    def no_thread(checked: Sequence[CheckedItem]) -> StagedAppend:
        raise AssertionError("a PostgreSQL group is not staged on a thread")

    monkeypatch.setattr(log, "stage", no_thread)
    holder = psycopg.connect(pg_dsn.reveal(), autocommit=True)
    watcher = psycopg.connect(pg_dsn.reveal(), autocommit=True)
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("audit"),))
        appending = asyncio.gather(*(journal.append(fetch(n)) for n in range(20)))

        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        for _ in range(3000):  # the loop runs this while the group waits at the server
            if watcher.execute(waiting).fetchone()[0]:  # type: ignore[index]
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the group never reached the server")
        assert not appending.done()
        holder.execute("COMMIT")
        results = await asyncio.wait_for(appending, 30)
        assert sorted(r.seq for records in results for r in records) == list(range(40))
        assert journal.commits < 20  # grouped
        assert log.size() == 40
    finally:
        holder.close()
        watcher.close()
        await journal.aclose()
        log.close()
