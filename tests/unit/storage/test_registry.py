from __future__ import annotations

import os
import random
import sqlite3
import stat
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres import PostgresServer

from gateway.certificates.holders import holder_digest
from gateway.certificates.status import CertStatus, StatusAction, StatusSlot
from gateway.certificates.status_list import pack, parse_status_list, status_list_claims
from gateway.errors import (
    ConfigError,
    ConflictError,
    GatewayError,
    InputError,
    NotFoundError,
    SealIndeterminate,
)
from gateway.ids import CertificateId, KeyId, RegionCode
from gateway.storage.registry import (
    SCHEMA_VERSION,
    NewCertificate,
    Outbox,
    PostgresRegistry,
    Registry,
    SlotBlock,
    SqliteRegistry,
    SqlRegistry,
    StoredCertificate,
    _slot_statuses_sql,
)

SECRET = b"tongban-test-holder-secret-0001"
ALICE = holder_digest(SECRET, "111", "11010519491231002X")
BOB = holder_digest(SECRET, "111", "110105194912310029")
NOW = 1_800_000_000.0
SMALL = 16  # a small list size, so tests cross list boundaries quickly


@pytest.fixture
def sqlite_registry(tmp_path: Path) -> Iterator[SqliteRegistry]:
    """For what only the SQLite backend has (its file, its pragmas)."""
    with SqliteRegistry(tmp_path / "registry.db", list_size=SMALL) as reg:
        yield reg


@pytest.fixture(params=["sqlite", "postgresql"])
def open_registry(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], SqlRegistry]]:
    """Opens the node's registry on one backend (SQLite, or a real PostgreSQL); each call
    stands for another process or replica."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("pg_server")
        with server.database() as dsn:
            yield lambda: PostgresRegistry(dsn, list_size=SMALL)
        return
    yield lambda: SqliteRegistry(tmp_path / "registry.db", list_size=SMALL)


@pytest.fixture
def registry(open_registry: Callable[[], SqlRegistry]) -> Iterator[SqlRegistry]:
    """The contract tests run on both backends."""
    with open_registry() as reg:
        yield reg


def new_cert(
    slot: StatusSlot,
    *,
    n: int,
    holder: str = ALICE,
    type: str = "household-register",
    seal_size: int = 40,
) -> NewCertificate:
    return NewCertificate(
        id=CertificateId(f"1.2.156.3005.2.11100000000000001X.{n:08d}.001.A"),
        type=type,
        holder_digest=holder,
        jurisdiction=RegionCode("330681"),
        slot=slot,
        kid=KeyId("kid-1"),
        issued_at=NOW + n,
        seal=f"eyJhbGciOiJFZERTQSJ9.{n:08d}.".ljust(seal_size, "s"),
    )


def issue(
    reg: SqliteRegistry, n: int, *, holder: str = ALICE, type: str = "household-register"
) -> NewCertificate:
    cert = new_cert(reg.reserve_slot(), n=n, holder=holder, type=type)
    reg.add(cert)
    return cert


# --- opening ---------------------------------------------------------------------------------


def test_is_a_registry(registry: SqliteRegistry) -> None:
    store: Registry = registry
    assert store.list_size == SMALL


def test_journal_mode_is_wal(sqlite_registry: SqliteRegistry, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "registry.db") as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    other.close()


def test_connection_pragmas(sqlite_registry: SqliteRegistry) -> None:
    for conn in (sqlite_registry._db.writer, sqlite_registry._db.reader):
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0


def test_files_are_private(sqlite_registry: SqliteRegistry, tmp_path: Path) -> None:
    issue(sqlite_registry, 1)
    for name in ("registry.db", "registry.db-wal", "registry.db-shm"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name


@pytest.mark.parametrize("size", [0, -4, 6])
def test_bad_list_size_is_refused(tmp_path: Path, size: int) -> None:
    with pytest.raises(ConfigError) as info:
        SqliteRegistry(tmp_path / "r.db", list_size=size)
    assert info.value.code == "registry.list_size"


def test_reopening_with_another_list_size_is_refused(tmp_path: Path) -> None:
    SqliteRegistry(tmp_path / "r.db", list_size=SMALL).close()
    with pytest.raises(ConfigError) as info:
        SqliteRegistry(tmp_path / "r.db", list_size=SMALL * 2)
    assert info.value.code == "registry.list_size"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    SqliteRegistry(tmp_path / "r.db").close()
    conn = sqlite3.connect(tmp_path / "r.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError) as info:
        SqliteRegistry(tmp_path / "r.db")
    assert info.value.code == "registry.schema"


def test_a_version_1_file_is_upgraded_and_keeps_its_certificates(tmp_path: Path) -> None:
    with SqliteRegistry(tmp_path / "r.db", list_size=SMALL) as old:
        kept = issue(old, 1)
    conn = sqlite3.connect(tmp_path / "r.db")  # as version 1 made it: no audit outbox
    conn.execute("DROP TABLE outbox")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with SqliteRegistry(tmp_path / "r.db", list_size=SMALL) as upgraded:
        assert upgraded.get(kept.id).seal == kept.seal
        upgraded.add(new_cert(upgraded.reserve_slot(), n=2), owed={Outbox.AUDIT: b"record"})
        assert [record for _, record in upgraded.pending(Outbox.AUDIT)] == [b"record"]
    conn = sqlite3.connect(tmp_path / "r.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


# --- the audit outbox -----------------------------------------------------------------------


def test_an_issuance_keeps_what_it_owes_in_the_same_transaction(
    registry: SqliteRegistry,
) -> None:
    cert = new_cert(registry.reserve_slot(), n=1)
    registry.add(cert, owed={Outbox.AUDIT: b"issued 1", Outbox.CATALOG: b"entry 1"})
    with pytest.raises(ConflictError):  # refused: neither the row nor what it owes is kept
        registry.add(cert, owed={Outbox.AUDIT: b"issued again", Outbox.CATALOG: b"again"})
    assert [record for _, record in registry.pending(Outbox.AUDIT)] == [b"issued 1"]
    assert [record for _, record in registry.pending(Outbox.CATALOG)] == [b"entry 1"]


def test_a_status_change_keeps_its_audit_record_made_from_the_changed_row(
    registry: SqliteRegistry,
) -> None:
    cert = issue(registry, 1)
    seen: list[tuple[CertStatus, int]] = []

    def record(updated: StoredCertificate, event: int) -> dict[Outbox, bytes]:
        seen.append((updated.status, event))
        return {
            Outbox.AUDIT: f"{updated.status.value} {event}".encode(),
            Outbox.CATALOG: f"entry {event}".encode(),
        }

    registry.apply(cert.id, StatusAction.SUSPEND, reason="check", at=NOW + 1, owed=record)
    registry.apply(cert.id, StatusAction.REINSTATE, reason="ok", at=NOW + 2, owed=record)
    with pytest.raises(ConflictError):  # reinstating a valid certificate: nothing kept
        registry.apply(cert.id, StatusAction.REINSTATE, reason="x", at=NOW + 3, owed=record)
    assert seen == [(CertStatus.SUSPENDED, 1), (CertStatus.VALID, 2)]
    assert [r for _, r in registry.pending(Outbox.AUDIT)] == [b"suspended 1", b"valid 2"]
    assert [r for _, r in registry.pending(Outbox.CATALOG)] == [b"entry 1", b"entry 2"]


def test_outbox_counts_are_the_files_whoever_wrote_them(
    registry: SqlRegistry, open_registry: Callable[[], SqlRegistry]
) -> None:
    assert registry.outbox_counts() == {Outbox.AUDIT: 0, Outbox.CATALOG: 0}
    with open_registry() as other_process:
        other_process.add(
            new_cert(other_process.reserve_slot(), n=1),
            owed={Outbox.AUDIT: b"theirs", Outbox.CATALOG: b"entry 1"},
        )
        registry.add(new_cert(registry.reserve_slot(), n=2), owed={Outbox.AUDIT: b"mine"})
        assert registry.outbox_counts() == {Outbox.AUDIT: 2, Outbox.CATALOG: 1}
        registry.delivered([seq for seq, _ in registry.pending(Outbox.AUDIT)])
        assert other_process.outbox_counts() == {Outbox.AUDIT: 1, Outbox.CATALOG: 1}


def test_each_registry_object_moves_its_own_records_and_recovery_sees_all(
    registry: SqlRegistry, open_registry: Callable[[], SqlRegistry]
) -> None:
    with open_registry() as other_process:
        other_process.add(
            new_cert(other_process.reserve_slot(), n=1), owed={Outbox.AUDIT: b"theirs"}
        )
        registry.add(new_cert(registry.reserve_slot(), n=2), owed={Outbox.AUDIT: b"mine"})
        assert [r for _, r in registry.pending(Outbox.AUDIT)] == [b"mine"]
        assert [r for _, r in other_process.pending(Outbox.AUDIT)] == [b"theirs"]
        everything = registry.pending(Outbox.AUDIT, every_owner=True)
        assert [r for _, r in everything] == [b"theirs", b"mine"]
        registry.delivered([seq for seq, _ in everything])
        assert registry.pending(Outbox.AUDIT, every_owner=True) == []
        assert registry.outbox_counts() == {Outbox.AUDIT: 0, Outbox.CATALOG: 0}
        registry.delivered([seq for seq, _ in everything])  # already dropped: no error
        registry.delivered([])  # nothing to drop: no write


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        SqliteRegistry(tmp_path / "absent" / "r.db")
    assert info.value.code == "registry.open"


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "r.db").write_bytes(b"this is not an SQLite database file at all" * 100)
    with pytest.raises(ConfigError) as info:
        SqliteRegistry(tmp_path / "r.db")
    assert info.value.code == "registry.open"


def test_closed_registry_refuses_work(tmp_path: Path) -> None:
    reg = SqliteRegistry(tmp_path / "r.db")
    reg.close()
    reg.close()  # idempotent
    for call in (reg.count, reg.reserve_slot):
        with pytest.raises(GatewayError) as info:
            call()
        assert info.value.code == "registry.closed"


def test_context_manager_closes(tmp_path: Path) -> None:
    with SqliteRegistry(tmp_path / "r.db") as reg:
        assert reg.count() == 0
    with pytest.raises(GatewayError) as info:
        reg.count()
    assert info.value.code == "registry.closed"


# --- slots -----------------------------------------------------------------------------------


def test_slots_fill_one_list_then_the_next(registry: SqliteRegistry) -> None:
    assert registry.list_ids() == []
    slots = [registry.reserve_slot() for _ in range(SMALL + 2)]
    assert slots[0] == StatusSlot(0, 0)
    assert slots[SMALL - 1] == StatusSlot(0, SMALL - 1)
    assert slots[SMALL] == StatusSlot(1, 0)
    assert slots[SMALL + 1] == StatusSlot(1, 1)
    assert registry.list_ids() == [0, 1]


def test_reserve_slots_is_one_contiguous_block(registry: SqliteRegistry) -> None:
    registry.reserve_slot()
    block = registry.reserve_slots(20)
    assert isinstance(block, SlotBlock)
    assert len(block) == 20
    assert list(block) == [StatusSlot(*divmod(n, SMALL)) for n in range(1, 21)]
    assert block[0] == StatusSlot(0, 1)
    assert block[-1] == StatusSlot(1, 4)
    assert list(block[2:5]) == [StatusSlot(0, 3), StatusSlot(0, 4), StatusSlot(0, 5)]
    assert list(block[::7]) == [block[0], block[7], block[14]]
    with pytest.raises(IndexError):
        block[20]
    assert registry.reserve_slot() == StatusSlot(1, 5)


def test_reserving_nothing_or_less(registry: SqliteRegistry) -> None:
    assert len(registry.reserve_slots(0)) == 0
    with pytest.raises(InputError):
        registry.reserve_slots(-1)


def test_slots_are_unique_under_concurrent_reservation(registry: SqliteRegistry) -> None:
    threads, each = 8, 150
    barrier = threading.Barrier(threads)
    results: list[list[StatusSlot]] = [[] for _ in range(threads)]

    def worker(k: int) -> None:
        barrier.wait()
        for i in range(each):
            if i % 10 == 0:
                results[k].extend(registry.reserve_slots(3))
            else:
                results[k].append(registry.reserve_slot())

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    slots = [slot for result in results for slot in result]
    assert len(slots) == threads * (each + 2 * (each // 10))
    assert len(set(slots)) == len(slots)
    # No gaps either: the counter only moved by what was handed out.
    assert sorted(s.list_id * SMALL + s.index for s in slots) == list(range(len(slots)))


# --- add and get -----------------------------------------------------------------------------


def test_add_then_get(registry: SqliteRegistry) -> None:
    cert = issue(registry, 1)
    stored = registry.get(cert.id)
    assert stored == StoredCertificate(
        id=cert.id,
        type=cert.type,
        holder_digest=cert.holder_digest,
        jurisdiction=cert.jurisdiction,
        status=CertStatus.VALID,
        slot=cert.slot,
        kid=cert.kid,
        issued_at=cert.issued_at,
        updated_at=cert.issued_at,
        seal=cert.seal,
    )
    assert registry.count() == 1


def test_get_unknown_is_not_found(registry: SqliteRegistry) -> None:
    with pytest.raises(NotFoundError) as info:
        registry.get(CertificateId("1.2.156.3005.2.nothing"))
    assert info.value.code == "cert.not_found"


async def test_the_event_loops_read_is_get(registry: SqliteRegistry) -> None:
    # every column comes back as get gives it (on PostgreSQL: libpq's binary format, decoded
    # here, against psycopg's own adaptation)
    certs = [issue(registry, n) for n in range(3)]
    registry.apply(certs[1].id, StatusAction.SUSPEND, reason="test", at=NOW + 5)
    for cert in certs:
        assert await registry.read(cert.id) == registry.get(cert.id)
    with pytest.raises(NotFoundError) as info:
        await registry.read(CertificateId("1.2.156.3005.2.nothing"))
    assert info.value.code == "cert.not_found"


def test_duplicate_id_is_a_conflict(registry: SqliteRegistry) -> None:
    cert = issue(registry, 1)
    again = new_cert(registry.reserve_slot(), n=1)
    with pytest.raises(ConflictError) as info:
        registry.add(again)
    assert info.value.code == "cert.exists"
    assert registry.get(cert.id).slot == cert.slot
    assert registry.count() == 1


def test_reused_slot_is_a_conflict(registry: SqliteRegistry) -> None:
    cert = issue(registry, 1)
    with pytest.raises(ConflictError) as info:
        registry.add(new_cert(cert.slot, n=2))
    assert info.value.code == "cert.slot_taken"


@pytest.mark.parametrize("slot", [StatusSlot(0, 1), StatusSlot(5, 0), StatusSlot(0, SMALL)])
def test_unreserved_slot_is_a_conflict(registry: SqliteRegistry, slot: StatusSlot) -> None:
    registry.reserve_slot()  # only (0, 0) exists
    with pytest.raises(ConflictError) as info:
        registry.add(new_cert(slot, n=1))
    assert info.value.code == "cert.slot_unreserved"


@pytest.mark.parametrize("holder", ["11010519491231002X", ALICE.upper(), ALICE[:-1], ""])
def test_holder_in_clear_is_refused(registry: SqliteRegistry, holder: str) -> None:
    with pytest.raises(InputError) as info:
        registry.add(new_cert(registry.reserve_slot(), n=1, holder=holder))
    assert info.value.code == "input.holder_digest"
    with pytest.raises(InputError) as info:
        registry.list_by_holder(holder)
    assert info.value.code == "input.holder_digest"


def test_the_schema_itself_refuses_a_clear_holder_id(sqlite_registry: SqliteRegistry) -> None:
    slot = sqlite_registry.reserve_slot()
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        sqlite_registry._db.writer.execute(
            "INSERT INTO certificates (id, type, holder_digest, jurisdiction, status, list_id,"
            " idx, kid, issued_at, updated_at, seal)"
            " VALUES ('x', 't', '11010519491231002X', '330681', 'valid', ?, ?, 'k', 0, 0, 's')",
            (slot.list_id, slot.index),
        )


# --- add_many --------------------------------------------------------------------------------


def test_add_many_stores_everything(registry: SqliteRegistry) -> None:
    block = registry.reserve_slots(23)
    certs = [new_cert(slot, n=n) for n, slot in enumerate(block)]
    assert registry.add_many(iter(certs), batch=5) == 23
    assert registry.count() == 23
    assert registry.get(certs[22].id).slot == block[22]


def test_add_many_consumes_lazily(registry: SqliteRegistry) -> None:
    block = registry.reserve_slots(12)
    produced: list[int] = []
    counts_seen: list[int] = []

    def generate() -> Iterator[NewCertificate]:
        for n, slot in enumerate(block):
            if n % 4 == 0:
                counts_seen.append(registry.count())
            produced.append(n)
            yield new_cert(slot, n=n)

    assert registry.add_many(generate(), batch=4) == 12
    # Each batch was committed before the next was drawn from the iterable.
    assert counts_seen == [0, 4, 8]


def test_add_many_conflict_keeps_earlier_batches(registry: SqliteRegistry) -> None:
    block = registry.reserve_slots(10)
    certs = [new_cert(slot, n=n) for n, slot in enumerate(block)]
    certs[7] = new_cert(block[7], n=1)  # same id as certs[1]
    with pytest.raises(ConflictError) as info:
        registry.add_many(certs, batch=5)
    assert info.value.code == "cert.exists"
    assert "5 certificates were stored" in info.value.detail
    assert registry.count() == 5


def test_add_many_refuses_a_bad_row_with_its_code(registry: SqliteRegistry) -> None:
    block = registry.reserve_slots(3)
    certs = [new_cert(slot, n=n) for n, slot in enumerate(block)]
    certs[2] = new_cert(StatusSlot(3, 0), n=2)
    with pytest.raises(ConflictError) as info:
        registry.add_many(certs)
    assert info.value.code == "cert.slot_unreserved"
    assert registry.count() == 0


def test_add_many_refuses_a_bad_batch_size(registry: SqliteRegistry) -> None:
    with pytest.raises(InputError):
        registry.add_many([], batch=0)
    assert registry.add_many([]) == 0


@pytest.mark.slow
def test_add_many_memory_stays_flat(tmp_path: Path) -> None:
    rows, seal_size = 200_000, 250
    # Materialised, these rows would take over 100 MB of Python objects (measured: 115 MB).
    with SqliteRegistry(tmp_path / "bulk.db") as reg:
        block = reg.reserve_slots(rows)
        certs = (
            new_cert(slot, n=n, seal_size=seal_size, holder=ALICE if n % 2 else BOB)
            for n, slot in enumerate(block)
        )
        tracemalloc.start()
        try:
            stored = reg.add_many(certs)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert stored == rows
        assert reg.count() == rows
        assert peak < 50 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
        assert reg.list_ids() == [0, 1]


# --- lookups by holder -----------------------------------------------------------------------


def test_list_by_holder(registry: SqliteRegistry) -> None:
    a1 = issue(registry, 1, type="household-register")
    issue(registry, 2, holder=BOB, type="household-register")
    a3 = issue(registry, 3, type="id-card-record")
    a4 = issue(registry, 4, type="marriage-certificate")

    def ids(found: list[StoredCertificate]) -> list[str]:
        return [cert.id for cert in found]

    assert ids(registry.list_by_holder(ALICE)) == [a1.id, a3.id, a4.id]
    assert ids(registry.list_by_holder(ALICE, types={"id-card-record", "household-register"})) == [
        a1.id,
        a3.id,
    ]
    assert ids(registry.list_by_holder(ALICE, types=["unknown-type"])) == []
    assert registry.list_by_holder(ALICE, types=()) == []
    assert ids(registry.list_by_holder(ALICE, limit=2)) == [a1.id, a3.id]
    assert registry.list_by_holder(holder_digest(SECRET, "111", "nobody")) == []


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_list_by_holder_limit_is_bounded(registry: SqliteRegistry, limit: int) -> None:
    with pytest.raises(InputError):
        registry.list_by_holder(ALICE, limit=limit)


def test_list_by_holder_type_filter_is_bounded(registry: SqliteRegistry) -> None:
    with pytest.raises(InputError):
        registry.list_by_holder(ALICE, types=[f"type-{n}" for n in range(65)])


def test_type_filter_is_data_not_sql(registry: SqliteRegistry) -> None:
    issue(registry, 1)
    evil = ["x') OR 1=1 --", '"]', "household-register"]
    assert len(registry.list_by_holder(ALICE, types=evil)) == 1
    assert registry.list_by_holder(ALICE, types=evil[:2]) == []


# --- status transitions ----------------------------------------------------------------------

S, R, V = StatusAction.SUSPEND, StatusAction.REINSTATE, StatusAction.REVOKE


@pytest.mark.parametrize(
    ("history", "action", "expected"),
    [
        ((), S, CertStatus.SUSPENDED),
        ((S,), R, CertStatus.VALID),
        ((), V, CertStatus.REVOKED),
        ((S,), V, CertStatus.REVOKED),
        ((S, R), S, CertStatus.SUSPENDED),
    ],
)
def test_allowed_transitions(
    registry: SqliteRegistry,
    history: tuple[StatusAction, ...],
    action: StatusAction,
    expected: CertStatus,
) -> None:
    cert = issue(registry, 1)
    for step, earlier in enumerate(history):
        registry.apply(cert.id, earlier, reason="setup", at=NOW + 10 + step)
    updated = registry.apply(cert.id, action, reason="court order", at=NOW + 100)
    assert updated.status is expected
    assert updated.updated_at == NOW + 100
    assert registry.get(cert.id) == updated


@pytest.mark.parametrize(
    ("history", "action", "now"),
    [
        ((), R, "valid"),
        ((S,), S, "suspended"),
        ((V,), S, "revoked"),
        ((V,), R, "revoked"),
        ((V,), V, "revoked"),
        ((S, V), R, "revoked"),
    ],
)
def test_refused_transitions(
    registry: SqliteRegistry, history: tuple[StatusAction, ...], action: StatusAction, now: str
) -> None:
    cert = issue(registry, 1)
    for step, earlier in enumerate(history):
        registry.apply(cert.id, earlier, reason="setup", at=NOW + 10 + step)
    before = registry.get(cert.id)
    revision = registry.revision(cert.slot.list_id)
    with pytest.raises(ConflictError) as info:
        registry.apply(cert.id, action, reason="again", at=NOW + 100)
    assert info.value.code == "cert.status_transition"
    assert action.value in info.value.detail
    assert now in info.value.detail
    # Nothing changed: status, event log, revision.
    assert registry.get(cert.id) == before
    assert len(registry.history(cert.id)) == len(history)
    assert registry.revision(cert.slot.list_id) == revision


def test_apply_to_unknown_is_not_found(registry: SqliteRegistry) -> None:
    with pytest.raises(NotFoundError) as info:
        registry.apply(CertificateId("1.2.156.nothing"), S, reason="x", at=NOW)
    assert info.value.code == "cert.not_found"
    with pytest.raises(NotFoundError) as info:
        registry.history(CertificateId("1.2.156.nothing"))
    assert info.value.code == "cert.not_found"


def test_every_change_is_an_event(registry: SqliteRegistry) -> None:
    cert = issue(registry, 1)
    assert registry.history(cert.id) == []
    registry.apply(cert.id, S, reason="lost", at=NOW + 1)
    registry.apply(cert.id, R, reason="found", at=NOW + 2)
    registry.apply(cert.id, V, reason="superseded", at=NOW + 3)
    events = [(e.from_status, e.to_status, e.reason, e.at) for e in registry.history(cert.id)]
    assert events == [
        (CertStatus.VALID, CertStatus.SUSPENDED, "lost", NOW + 1),
        (CertStatus.SUSPENDED, CertStatus.VALID, "found", NOW + 2),
        (CertStatus.VALID, CertStatus.REVOKED, "superseded", NOW + 3),
    ]
    assert {e.certificate_id for e in registry.history(cert.id)} == {cert.id}


def test_revision_moves_only_for_the_changed_list(registry: SqliteRegistry) -> None:
    first = issue(registry, 1)
    registry.reserve_slots(SMALL)
    second = issue(registry, 2)
    assert (first.slot.list_id, second.slot.list_id) == (0, 1)
    assert registry.revision(0) == registry.revision(1) == 0
    registry.apply(first.id, S, reason="x", at=NOW)
    assert (registry.revision(0), registry.revision(1)) == (1, 0)
    registry.apply(first.id, R, reason="x", at=NOW)
    issue(registry, 3)  # a new VALID certificate does not change any published bit
    assert (registry.revision(0), registry.revision(1)) == (2, 0)
    registry.apply(second.id, V, reason="x", at=NOW)
    assert (registry.revision(0), registry.revision(1)) == (2, 1)


# --- status bits -----------------------------------------------------------------------------


def naive_bits(expected: dict[int, CertStatus], list_size: int) -> bytes:
    return pack([expected.get(i, CertStatus.VALID) for i in range(list_size)])


def test_status_bits_match_a_naive_reference(registry: SqliteRegistry) -> None:
    rng = random.Random(20261124)
    registry.reserve_slots(3)  # reserved and never used: stay VALID
    certs = [issue(registry, n) for n in range(3 * SMALL - 3)]
    expected: dict[tuple[int, int], CertStatus] = {}
    for cert in certs:
        for action in rng.choice([(), (S,), (V,), (S, V), (S, R), (S, R, S)]):
            registry.apply(cert.id, action, reason="random", at=NOW)
        expected[(cert.slot.list_id, cert.slot.index)] = registry.get(cert.id).status
    assert {*expected.values()} == set(CertStatus)
    assert registry.list_ids() == [0, 1, 2]
    for list_id in registry.list_ids():
        in_list = {idx: st for (lid, idx), st in expected.items() if lid == list_id}
        bits = registry.status_bits(list_id)
        assert len(bits) == SMALL // 4
        assert bits == naive_bits(in_list, SMALL)
        # The published form decodes to the registry's statuses (registry and status_list
        # agree on the draft's values).
        claims = status_list_claims(uri="u", bits_bytes=bits, iat=0, exp=10, ttl=5)
        parsed = parse_status_list(claims, uri="u", now=1)
        assert {i: parsed.status(i) for i in in_list} == in_list
        # one entry at a time, as a node's own fetch reads it, agrees with the whole list
        assert [registry.slot_status(list_id, i) for i in range(SMALL)] == [
            in_list.get(i, CertStatus.VALID) for i in range(SMALL)
        ]


@pytest.mark.parametrize("index", [-1, SMALL, True])
def test_slot_status_outside_the_list(registry: SqliteRegistry, index: int) -> None:
    issue(registry, 1)
    with pytest.raises(SealIndeterminate) as info:
        registry.slot_status(0, index)
    assert info.value.code == "status.unknown_index"


@pytest.mark.parametrize("list_id", [-1, 1, 99])
def test_slot_status_of_an_unknown_list(registry: SqliteRegistry, list_id: int) -> None:
    issue(registry, 1)
    with pytest.raises(NotFoundError) as info:
        registry.slot_status(list_id, 0)
    assert info.value.code == "status_list.not_found"


def _outcome(
    reg: SqliteRegistry, list_id: Any, index: Any
) -> CertStatus | tuple[type[Exception], str]:
    try:
        return reg.slot_status(list_id, index)
    except (NotFoundError, SealIndeterminate) as exc:
        return type(exc), exc.code


def test_slot_statuses_agree_with_slot_status_entry_by_entry(tmp_path: Path) -> None:
    """A batch read, over more entries than one statement takes, answers each entry as
    slot_status does: its status, valid for a slot no certificate uses, or the same error."""
    rng = random.Random(20261125)
    with SqliteRegistry(tmp_path / "r.db", list_size=64) as reg:
        certs = [issue(reg, n) for n in range(500)]
        reg.reserve_slots(5)
        for cert in rng.sample(certs, 120):
            for action in rng.choice([(S,), (V,), (S, R)]):
                reg.apply(cert.id, action, reason="random", at=NOW)
        slots: list[tuple[Any, Any]] = [
            (rng.randrange(-1, 10), rng.randrange(-2, 66)) for _ in range(900)
        ]
        slots += [(0, True), (True, 0), (0, 1.0), ("0", 0)]
        got = reg.slot_statuses(slots)
        assert len(got) == len(slots)
        for (list_id, index), result in zip(slots, got, strict=True):
            expected = _outcome(reg, list_id, index)
            answer = result if isinstance(result, CertStatus) else (type(result), result.code)
            assert answer == expected, (list_id, index)
        assert {r for r in got if isinstance(r, CertStatus)} == set(CertStatus)
        assert reg.slot_statuses([]) == []


def test_slot_statuses_look_entries_up_by_index(
    sqlite_registry: SqliteRegistry, tmp_path: Path
) -> None:
    """The batch statement uses the (list_id, idx) index: no scan of the whole table."""
    conn = sqlite3.connect(tmp_path / "registry.db")
    try:
        plan = conn.execute(f"EXPLAIN QUERY PLAN {_slot_statuses_sql(3)}", [0] * 6).fetchall()
    finally:
        conn.close()
    details = [row[3] for row in plan]
    assert not any(d.startswith("SCAN c") or d == "SCAN certificates" for d in details), details
    assert any("USING INDEX" in d and "list_id=? AND idx=?" in d for d in details), details


def test_status_bits_of_a_fresh_default_list(tmp_path: Path) -> None:
    with SqliteRegistry(tmp_path / "r.db") as reg:
        cert = new_cert(reg.reserve_slot(), n=1)
        reg.add(cert)
        assert reg.status_bits(0) == bytes(131_072 // 4)
        reg.apply(cert.id, V, reason="x", at=NOW)
        assert reg.status_bits(0) == b"\x01" + bytes(131_072 // 4 - 1)


@pytest.mark.parametrize("list_id", [-1, 1, 99])
def test_status_bits_of_an_unknown_list(registry: SqliteRegistry, list_id: int) -> None:
    issue(registry, 1)
    with pytest.raises(NotFoundError) as info:
        registry.status_bits(list_id)
    assert info.value.code == "status_list.not_found"


# --- export and persistence ------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3, 7, 10_000])
def test_iter_seals_in_insertion_order(registry: SqliteRegistry, batch: int) -> None:
    block = registry.reserve_slots(7)
    slots = list(block)
    rng = random.Random(7)
    rng.shuffle(slots)  # insertion order, not slot order, is what counts
    certs = [new_cert(slot, n=100 - n) for n, slot in enumerate(slots)]
    for cert in certs:
        registry.add(cert)
    assert list(registry.iter_seals(batch=batch)) == [cert.seal for cert in certs]


def test_iter_seals_streams(registry: SqliteRegistry) -> None:
    first = issue(registry, 1)
    seals = registry.iter_seals(batch=1)
    assert next(seals) == first.seal
    later = issue(registry, 2)  # a write while the export is half way
    assert list(seals) == [later.seal]


def test_iter_seals_refuses_a_bad_batch(registry: SqliteRegistry) -> None:
    with pytest.raises(InputError):
        next(registry.iter_seals(batch=0))


def test_state_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with SqliteRegistry(path, list_size=SMALL) as reg:
        cert = issue(reg, 1)
        reg.apply(cert.id, S, reason="lost", at=NOW + 5)
        stored = reg.get(cert.id)
        bits = reg.status_bits(0)
    with SqliteRegistry(path, list_size=SMALL) as reg:
        assert reg.get(cert.id) == stored
        assert reg.count() == 1
        assert reg.revision(0) == 1
        assert reg.status_bits(0) == bits
        assert [e.reason for e in reg.history(cert.id)] == ["lost"]
        assert list(reg.iter_seals()) == [cert.seal]
        assert reg.reserve_slot() == StatusSlot(0, 1)  # never reused


# --- concurrency and failures ----------------------------------------------------------------


def test_reads_proceed_during_a_write(sqlite_registry: SqliteRegistry, tmp_path: Path) -> None:
    cert = issue(sqlite_registry, 1)
    writer = sqlite3.connect(tmp_path / "registry.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE certificates SET status = 'revoked'")
        # Another writer holds the lock mid-transaction; readers see the committed state.
        assert sqlite_registry.get(cert.id).status is CertStatus.VALID
        assert sqlite_registry.count() == 1
        writer.execute("ROLLBACK")
    finally:
        writer.close()


def test_busy_store_is_translated(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with SqliteRegistry(path, busy_timeout=0.0) as reg:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(GatewayError) as info:
                reg.reserve_slot()
            assert info.value.code == "registry.busy"
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert reg.reserve_slot() == StatusSlot(0, 0)
