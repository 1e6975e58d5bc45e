from __future__ import annotations

import os
import re
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres import PostgresServer

from gateway.certificates.catalog import MAX_LOOKUP_RESULTS, MAX_LOOKUP_TYPES, CatalogEntry
from gateway.certificates.holders import holder_digest
from gateway.certificates.schemas import CertificateTypeInfo, SchemaSet, default_schema_dir
from gateway.certificates.status import CertStatus
from gateway.clock import FixedClock
from gateway.errors import (
    ConfigError,
    ConflictError,
    Forbidden,
    GatewayError,
    InputError,
    InvalidIdentifier,
    NotFoundError,
    StorageError,
    UnknownCertificateType,
)
from gateway.identifiers import build_certificate_id
from gateway.ids import CertificateId, NodeId
from gateway.services.catalog import CatalogService
from gateway.storage.catalog import _LOOKUP, PostgresCatalog, SqlCatalog, SqliteCatalog

SECRET = b"tongban-test-holder-secret-0001"
CHEN_ID = "31010419950312123X"  # demo citizens of the default federation
LI_ID = "341221199607082464"
FIRM_ID = "11330681MB1F862098"  # a credit code, the holder of a business licence
CHEN = holder_digest(SECRET, "111", CHEN_ID)
LI = holder_digest(SECRET, "111", LI_ID)
FIRM = holder_digest(SECRET, "001", FIRM_ID)
ZHUJI = NodeId("zhuji")
SHANGHAI = NodeId("shanghai")
ZHUJI_CIVIL = "11330681002521002U"
SHANGHAI_POLICE = "11310000002451120G"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def types() -> dict[str, CertificateTypeInfo]:
    catalog = SchemaSet.load(default_schema_dir())
    return {info.name: info for info in catalog.certificate_types()}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "catalog.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, path: Path) -> Iterator[SqlCatalog]:
    """The contract tests run on both backends (SQLite, and a real PostgreSQL)."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("pg_server")
        with server.database() as dsn, PostgresCatalog(dsn) as catalog:
            yield catalog
        return
    with SqliteCatalog(path) as catalog:
        yield catalog


@pytest.fixture
def sqlite_store(path: Path) -> Iterator[SqliteCatalog]:
    """For what only the SQLite backend has (its file, its query plans)."""
    with SqliteCatalog(path) as catalog:
        yield catalog


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def service(
    store: SqliteCatalog, clock: FixedClock, types: dict[str, CertificateTypeInfo]
) -> CatalogService:
    return CatalogService(store, clock=clock, types=types.values())


def cert_id(
    types: dict[str, CertificateTypeInfo], type_name: str, serial: int, issuer: str = ZHUJI_CIVIL
) -> CertificateId:
    return build_certificate_id(
        types[type_name].type_code, issuer, f"2026{serial:010d}"
    ).certificate_id


def entry(
    n: int,
    *,
    node: NodeId = ZHUJI,
    holder: str = CHEN,
    type: str = "marriage",
    at: float | None = None,
    status: CertStatus = CertStatus.VALID,
    event: int = 0,
) -> CatalogEntry:
    return CatalogEntry(
        certificate_id=CertificateId(f"1.2.156.3005.2.test.{n:08d}"),
        type=type,
        node=node,
        holder_digest=holder,
        registered_at=NOW + n if at is None else at,
        status=status,
        status_event=event,
    )


def register_body(
    types: dict[str, CertificateTypeInfo], *, serial: int = 1, **overrides: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "certificate_id": cert_id(types, "marriage", serial),
        "type": "marriage",
        "node": "zhuji",
        "holder_digest": CHEN,
    }
    body.update(overrides)
    return body


class _Raises:
    """Asserts that the block raises exactly ``error`` (not a subclass) with ``code``."""

    def __init__(self, error: type[GatewayError], code: str) -> None:
        self.error = error
        self.code = code
        self.value: GatewayError | None = None

    def __enter__(self) -> _Raises:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        assert exc is not None, f"expected {self.error.__name__} {self.code}, nothing raised"
        assert type(exc) is self.error, f"expected {self.error.__name__}, got {exc!r}"
        assert isinstance(exc, GatewayError)
        assert exc.code == self.code, exc
        self.value = exc
        return True


def raises(error: type[GatewayError], code: str) -> _Raises:
    return _Raises(error, code)


# --- the entry -------------------------------------------------------------------------------


def test_entry_json() -> None:
    assert entry(0, status=CertStatus.SUSPENDED).to_json() == {
        "certificate_id": "1.2.156.3005.2.test.00000000",
        "type": "marriage",
        "node": "zhuji",
        "holder_digest": CHEN,
        "registered_at": "2027-01-15T08:00:00Z",
        "status": "suspended",
    }


# --- the file --------------------------------------------------------------------------------


def test_journal_mode_is_wal_and_schema_versioned(sqlite_store: SqliteCatalog, path: Path) -> None:
    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        other.close()


def test_files_are_owner_only(sqlite_store: SqliteCatalog, path: Path) -> None:
    sqlite_store.register(entry(1))
    for name in ("catalog.db", "catalog.db-wal", "catalog.db-shm"):
        assert stat.S_IMODE(os.stat(path.parent / name).st_mode) == 0o600, name


def test_reopen_keeps_entries(path: Path) -> None:
    with SqliteCatalog(path) as first:
        first.register(entry(1))
    with SqliteCatalog(path) as second:
        assert second.get(entry(1).certificate_id) == entry(1)
        assert second.count() == 1


def test_unknown_schema_version_is_refused(path: Path) -> None:
    SqliteCatalog(path).close()
    other = sqlite3.connect(path)
    other.execute("PRAGMA user_version = 99")
    other.close()
    with raises(ConfigError, "catalog.schema"):
        SqliteCatalog(path)


def test_unopenable_path_is_refused(tmp_path: Path) -> None:
    with raises(ConfigError, "catalog.open"):
        SqliteCatalog(tmp_path / "missing" / "catalog.db")


def test_closed_store_refuses_calls(path: Path) -> None:
    catalog = SqliteCatalog(path)
    catalog.close()
    catalog.close()  # idempotent
    with raises(StorageError, "catalog.closed"):
        catalog.register(entry(1))
    with raises(StorageError, "catalog.closed"):
        catalog.count()


def test_busy_store_is_a_storage_error(path: Path) -> None:
    with SqliteCatalog(path, busy_timeout=0) as catalog:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with raises(StorageError, "catalog.busy"):
                catalog.register(entry(1))
            other.execute("ROLLBACK")
        finally:
            other.close()
        catalog.register(entry(1))  # usable again once the other writer is gone
        assert catalog.count() == 1


def test_broken_store_is_a_storage_error(sqlite_store: SqliteCatalog, path: Path) -> None:
    other = sqlite3.connect(path)
    other.execute("DROP TABLE entries")
    other.commit()
    other.close()
    with raises(StorageError, "catalog.storage"):
        sqlite_store.lookup(CHEN, ["marriage"])
    with raises(StorageError, "catalog.storage"):
        sqlite_store.register(entry(1))


def test_table_itself_refuses_anything_but_a_digest(
    sqlite_store: SqliteCatalog, path: Path
) -> None:
    other = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            other.execute(
                "INSERT INTO entries (certificate_id, type, node, holder_digest, registered_at,"
                " status) VALUES ('x', 'marriage', 'zhuji', ?, 0, 'valid')",
                (CHEN_ID,),
            )
    finally:
        other.close()


# --- registration ----------------------------------------------------------------------------


def test_register_then_get(store: SqliteCatalog) -> None:
    stored = store.register(entry(1))
    assert stored == entry(1)
    assert store.get(entry(1).certificate_id) == entry(1)
    assert store.count() == 1


def test_get_unknown_is_not_found(store: SqliteCatalog) -> None:
    with raises(NotFoundError, "catalog.not_found"):
        store.get(CertificateId("1.2.156.3005.2.nope"))


def test_register_is_idempotent_for_the_same_node(store: SqliteCatalog) -> None:
    first = store.register(entry(1))
    retry = store.register(entry(1, at=NOW + 500, status=CertStatus.SUSPENDED))
    assert retry == first  # the first registration's time and status are kept
    assert store.count() == 1


def test_another_node_cannot_claim_a_certificate(store: SqliteCatalog) -> None:
    store.register(entry(1))
    with raises(ConflictError, "catalog.conflict"):
        store.register(entry(1, node=SHANGHAI))
    assert store.get(entry(1).certificate_id).node == ZHUJI


@pytest.mark.parametrize("changed", [{"holder": LI}, {"type": "divorce"}], ids=["holder", "type"])
def test_same_node_with_other_facts_is_a_mismatch(
    store: SqliteCatalog, changed: dict[str, Any]
) -> None:
    store.register(entry(1))
    with raises(ConflictError, "catalog.mismatch"):
        store.register(entry(1, **changed))
    assert store.get(entry(1).certificate_id) == entry(1)


@pytest.mark.parametrize(
    ("holder", "code"),
    [
        (CHEN_ID, "catalog.clear_holder_id"),
        (FIRM_ID, "catalog.clear_holder_id"),
        (CHEN.upper(), "catalog.bad_holder_digest"),
        (CHEN[:63], "catalog.bad_holder_digest"),
        ("", "catalog.bad_holder_digest"),
    ],
)
def test_store_refuses_anything_but_a_digest(store: SqliteCatalog, holder: str, code: str) -> None:
    with raises(InputError, code):
        store.register(entry(1, holder=holder))
    assert store.count() == 0


def test_concurrent_claims_have_one_winner(store: SqliteCatalog) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def claim(node: NodeId) -> None:
        barrier.wait()
        try:
            store.register(entry(1, node=node))
            outcomes.append("ok")
        except ConflictError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=claim, args=(n,)) for n in (ZHUJI, SHANGHAI)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["catalog.conflict", "ok"]
    assert store.count() == 1


def test_register_many(store: SqliteCatalog) -> None:
    assert store.register_many((entry(n) for n in range(25)), batch=10) == 25
    assert store.count() == 25
    assert store.register_many([entry(3), entry(25)]) == 2  # retries are fine
    assert store.count() == 26


def test_register_many_rolls_back_the_failing_batch(store: SqliteCatalog) -> None:
    store.register(entry(100, node=SHANGHAI))
    batch = [entry(n) for n in range(10)] + [entry(10), entry(100), entry(11)]
    with raises(ConflictError, "catalog.conflict") as caught:
        store.register_many(batch, batch=10)
    assert caught.value is not None
    assert "10 entries were registered before this batch" in caught.value.detail
    assert store.count() == 11  # the first batch and the other node's entry
    with raises(NotFoundError, "catalog.not_found"):
        store.get(entry(10).certificate_id)


def test_register_many_needs_a_positive_batch(store: SqliteCatalog) -> None:
    with raises(InputError, "input.invalid"):
        store.register_many([entry(1)], batch=0)


# --- status ----------------------------------------------------------------------------------


def test_a_later_status_event_changes_the_status(store: SqliteCatalog) -> None:
    store.register(entry(1))
    suspended = store.register(entry(1, at=NOW + 9, status=CertStatus.SUSPENDED, event=4))
    assert suspended == entry(1, status=CertStatus.SUSPENDED, event=4)  # time kept
    assert store.get(entry(1).certificate_id) == suspended
    valid = store.register(entry(1, status=CertStatus.VALID, event=5))
    assert valid == entry(1, event=5)


def test_an_older_or_repeated_status_event_changes_nothing(store: SqliteCatalog) -> None:
    # two worker processes deliver their own outbox rows: a suspension (event 7) can
    # arrive before the issuance (event 0) and before the reinstatement before it (event 3)
    store.register(entry(1, status=CertStatus.SUSPENDED, event=7))
    for late in (entry(1), entry(1, status=CertStatus.VALID, event=3)):
        assert store.register(late) == entry(1, status=CertStatus.SUSPENDED, event=7)
    again = store.register(entry(1, status=CertStatus.VALID, event=7))  # same number
    assert again.status is CertStatus.SUSPENDED
    assert store.get(entry(1).certificate_id).status is CertStatus.SUSPENDED


def test_a_status_is_changed_by_the_registering_node_only(store: SqliteCatalog) -> None:
    store.register(entry(1))
    with raises(ConflictError, "catalog.conflict"):
        store.register(entry(1, node=SHANGHAI, status=CertStatus.REVOKED, event=9))
    assert store.get(entry(1).certificate_id).status is CertStatus.VALID


def test_revocation_is_final(store: SqliteCatalog) -> None:
    store.register(entry(1))
    store.register(entry(1, status=CertStatus.REVOKED, event=2))
    # the same status again, from a later event: still revoked, the later number kept
    again = store.register(entry(1, status=CertStatus.REVOKED, event=3))
    assert again == entry(1, status=CertStatus.REVOKED, event=3)
    for target in (CertStatus.VALID, CertStatus.SUSPENDED):
        with raises(ConflictError, "catalog.status_transition"):
            store.register(entry(1, status=target, event=4))
    assert store.get(entry(1).certificate_id).status is CertStatus.REVOKED


@pytest.mark.parametrize("event", [-1, 2**53])
def test_a_status_event_out_of_range_is_refused(store: SqliteCatalog, event: int) -> None:
    with raises(InputError, "catalog.bad_status_event"):
        store.register(entry(1, event=event))
    assert store.count() == 0


def test_a_version_1_file_is_upgraded_in_place(path: Path) -> None:
    # version 1 had no status_event: its entries count as their issuance (event 0)
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE entries (
            seq INTEGER PRIMARY KEY,
            certificate_id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            node TEXT NOT NULL,
            holder_digest TEXT NOT NULL,
            registered_at REAL NOT NULL,
            status TEXT NOT NULL
        ) STRICT;
        PRAGMA user_version = 1;
        """
    )
    old.execute(
        "INSERT INTO entries (certificate_id, type, node, holder_digest, registered_at, status)"
        " VALUES (?, 'marriage', 'zhuji', ?, ?, 'suspended')",
        (entry(1).certificate_id, CHEN, NOW + 1),
    )
    old.commit()
    old.close()
    with SqliteCatalog(path) as store:
        assert store.get(entry(1).certificate_id) == entry(1, status=CertStatus.SUSPENDED)
        store.register(entry(1, status=CertStatus.VALID, event=1))
        assert store.get(entry(1).certificate_id).status is CertStatus.VALID
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        check.close()


# --- lookup ----------------------------------------------------------------------------------


def test_lookup_orders_by_registration_time(store: SqliteCatalog) -> None:
    # inserted in one order, registered (by the clock) in another
    times = {1: NOW + 30, 2: NOW + 10, 3: NOW + 20, 4: NOW + 10}
    for n, at in times.items():
        store.register(entry(n, at=at))
    found = store.lookup(CHEN, ["marriage"])
    # equal times keep insertion order
    assert [e.certificate_id for e in found] == [entry(n).certificate_id for n in (2, 4, 3, 1)]


def test_lookup_filters_by_holder_and_type(store: SqliteCatalog) -> None:
    store.register(entry(1, type="marriage"))
    store.register(entry(2, type="household_register", node=SHANGHAI))
    store.register(entry(3, type="resident_id"))
    store.register(entry(4, type="marriage", holder=LI))
    found = store.lookup(CHEN, ["household_register", "marriage"])
    assert [(e.type, e.node) for e in found] == [
        ("marriage", ZHUJI),
        ("household_register", SHANGHAI),
    ]
    assert [e.holder_digest for e in store.lookup(LI, ["marriage"])] == [LI]
    assert store.lookup(FIRM, ["marriage"]) == []
    assert store.lookup(CHEN, []) == []


def test_lookup_limit(store: SqliteCatalog) -> None:
    store.register_many(entry(n) for n in range(10))
    found = store.lookup(CHEN, ["marriage"], limit=3)
    assert [e.certificate_id for e in found] == [entry(n).certificate_id for n in range(3)]


@pytest.mark.parametrize("limit", [0, 1001])
def test_lookup_limit_is_bounded(store: SqliteCatalog, limit: int) -> None:
    with raises(InputError, "catalog.bad_limit"):
        store.lookup(CHEN, ["marriage"], limit=limit)


def test_lookup_type_count_is_bounded(store: SqliteCatalog) -> None:
    with raises(InputError, "catalog.bad_types"):
        store.lookup(CHEN, [f"t{i}" for i in range(65)])


@pytest.mark.parametrize(
    ("holder", "code"),
    [(CHEN_ID, "catalog.clear_holder_id"), ("zz", "catalog.bad_holder_digest")],
)
def test_lookup_needs_a_digest(store: SqliteCatalog, holder: str, code: str) -> None:
    with raises(InputError, code):
        store.lookup(holder, ["marriage"])


def test_lookup_uses_the_holder_index_at_scale(sqlite_store: SqliteCatalog, path: Path) -> None:
    holders = [holder_digest(SECRET, "111", f"h{i}") for i in range(100)]
    kinds = ["marriage", "household_register", "resident_id", "social_insurance_record"]
    stored = sqlite_store.register_many(
        entry(n, holder=holders[n % 100], type=kinds[n % 4]) for n in range(10_000)
    )
    assert stored == 10_000
    assert sqlite_store.count() == 10_000
    # holder 7 has the 100 entries n ≡ 7 (mod 100), all of type kinds[3]
    found = sqlite_store.lookup(holders[7], ["social_insurance_record", "marriage"])
    assert [e.certificate_id for e in found] == [
        entry(n).certificate_id for n in range(7, 10_000, 100)
    ]
    assert sqlite_store.lookup(holders[7], ["marriage"]) == []
    other = sqlite3.connect(path)
    try:
        plan = other.execute(
            f"EXPLAIN QUERY PLAN {_LOOKUP['sqlite']}", (holders[7], '["marriage"]', 100)
        ).fetchall()
    finally:
        other.close()
    details = " | ".join(row[3] for row in plan)
    assert "USING INDEX entries_by_holder" in details, details
    assert "SCAN entries" not in details, details


# --- holder ids never in clear ---------------------------------------------------------------


def test_store_never_holds_an_id_number(
    service: CatalogService, store: SqliteCatalog, path: Path, types: dict[str, CertificateTypeInfo]
) -> None:
    # register by digest, and try (and fail) to register and look up ids in clear
    for serial, holder in enumerate((CHEN, LI), start=1):
        service.register(ZHUJI, register_body(types, serial=serial, holder_digest=holder))
    licence = cert_id(types, "business_licence", 3)
    service.register(
        ZHUJI,
        register_body(types, certificate_id=licence, type="business_licence", holder_digest=FIRM),
    )
    for serial, clear in enumerate((CHEN_ID, LI_ID, FIRM_ID), start=10):
        with raises(InputError, "catalog.clear_holder_id"):
            service.register(ZHUJI, register_body(types, serial=serial, holder_digest=clear))
        with raises(InputError, "catalog.clear_holder_id"):
            service.lookup({"holder_digest": clear, "types": ["marriage"]})
    assert store.count() == 3
    if not isinstance(store, SqliteCatalog):
        return  # what follows reads the SQLite file's bytes

    def scan() -> None:
        files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
        assert path in files
        for file in files:
            data = file.read_bytes()
            for clear in (CHEN_ID, LI_ID, FIRM_ID):
                assert clear.encode() not in data, (file.name, clear)
            # nothing shaped like a resident ID number, standing on its own
            assert not re.search(rb"(?<![0-9a-f])[0-9]{17}[0-9X](?![0-9a-f])", data), file.name

    scan()  # the WAL as written
    store.close()
    scan()  # the checkpointed file


# --- the service: registration ---------------------------------------------------------------


def test_service_register(
    service: CatalogService, clock: FixedClock, types: dict[str, CertificateTypeInfo]
) -> None:
    clock.set(NOW + 42)
    stored = service.register(ZHUJI, register_body(types))
    assert stored == CatalogEntry(
        certificate_id=cert_id(types, "marriage", 1),
        type="marriage",
        node=ZHUJI,
        holder_digest=CHEN,
        registered_at=NOW + 42,
        status=CertStatus.VALID,
    )
    clock.advance(60)
    assert service.register(ZHUJI, register_body(types)) == stored  # a retry


def test_service_register_with_status(
    service: CatalogService, types: dict[str, CertificateTypeInfo]
) -> None:
    stored = service.register(ZHUJI, register_body(types, status="suspended"))
    assert stored.status is CertStatus.SUSPENDED
    assert stored.status_event == 0


def test_service_register_a_later_status(
    service: CatalogService, types: dict[str, CertificateTypeInfo]
) -> None:
    service.register(ZHUJI, register_body(types))
    revoked = service.register(ZHUJI, register_body(types, status="revoked", status_event=3))
    assert (revoked.status, revoked.status_event) == (CertStatus.REVOKED, 3)
    late = service.register(ZHUJI, register_body(types, status="suspended", status_event=2))
    assert late == revoked


@pytest.mark.parametrize("event", [-1, 2**53, 1.0, "1", True, None])
def test_service_refuses_a_bad_status_event(
    service: CatalogService, types: dict[str, CertificateTypeInfo], event: object
) -> None:
    with raises(InputError, "catalog.bad_status_event") as caught:
        service.register(ZHUJI, register_body(types, status="valid", status_event=event))
    assert caught.value is not None
    assert caught.value.pointers == ("/status_event",)


def test_service_register_conflict(
    service: CatalogService, types: dict[str, CertificateTypeInfo]
) -> None:
    service.register(ZHUJI, register_body(types))
    with raises(ConflictError, "catalog.conflict"):
        service.register(SHANGHAI, register_body(types, node="shanghai"))


def test_service_register_for_another_node_is_forbidden(
    service: CatalogService, store: SqliteCatalog, types: dict[str, CertificateTypeInfo]
) -> None:
    with raises(Forbidden, "catalog.not_owner") as caught:
        service.register(SHANGHAI, register_body(types))  # body says zhuji
    assert caught.value is not None
    assert caught.value.status == 403
    assert store.count() == 0


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ([], ""),
        ("certificate", ""),
        ({"certificate_id": "x", "type": "marriage", "node": "zhuji"}, "/holder_digest"),
        ({1: "x"}, "/?"),
    ],
    ids=["list", "string", "missing", "non-string-key"],
)
def test_service_register_bad_body(service: CatalogService, body: Any, pointer: str) -> None:
    with raises(InputError, "catalog.bad_body") as caught:
        service.register(ZHUJI, body)
    assert caught.value is not None
    assert caught.value.pointers == (pointer,)


def test_service_register_unknown_member(
    service: CatalogService, types: dict[str, CertificateTypeInfo]
) -> None:
    with raises(InputError, "catalog.bad_body") as caught:
        service.register(ZHUJI, register_body(types, holder_id=CHEN_ID))
    assert caught.value is not None
    assert caught.value.pointers == ("/holder_id",)


@pytest.mark.parametrize("clear", [CHEN_ID, LI_ID, FIRM_ID, "110105194912310029"])
def test_service_refuses_a_clear_holder_id(
    service: CatalogService, types: dict[str, CertificateTypeInfo], clear: str
) -> None:
    with raises(InputError, "catalog.clear_holder_id") as caught:
        service.register(ZHUJI, register_body(types, holder_digest=clear))
    assert caught.value is not None
    assert caught.value.pointers == ("/holder_digest",)
    assert clear not in caught.value.detail
    assert clear not in (caught.value.log_detail or "")


@pytest.mark.parametrize("digest", [CHEN.upper(), CHEN + "0", "digest", 42, None])
def test_service_refuses_a_malformed_digest(
    service: CatalogService, types: dict[str, CertificateTypeInfo], digest: object
) -> None:
    with raises(InputError, "catalog.bad_holder_digest"):
        service.register(ZHUJI, register_body(types, holder_digest=digest))


def test_service_refuses_a_malformed_certificate_id(
    service: CatalogService, types: dict[str, CertificateTypeInfo]
) -> None:
    good = cert_id(types, "marriage", 1)
    wrong_check = good[:-1] + ("0" if good[-1] != "0" else "1")
    cases: list[tuple[object, str]] = [
        (42, "input.identifier.format"),
        ("1.2.156.3005.2.x", "input.identifier.format"),
        (good + "." * 200, "input.identifier.format"),
        (wrong_check, "input.identifier.check"),
    ]
    for value, code in cases:
        with raises(InvalidIdentifier, code) as caught:
            service.register(ZHUJI, register_body(types, certificate_id=value))
        assert caught.value is not None
        assert caught.value.pointers == ("/certificate_id",)


@pytest.mark.parametrize("value", [7, "", "m" * 65, None])
def test_service_refuses_a_malformed_type(
    service: CatalogService, types: dict[str, CertificateTypeInfo], value: object
) -> None:
    with raises(InputError, "catalog.bad_type"):
        service.register(ZHUJI, register_body(types, type=value))


def test_service_refuses_an_unknown_type(
    service: CatalogService, types: dict[str, CertificateTypeInfo]
) -> None:
    with raises(UnknownCertificateType, "input.certificate_type") as caught:
        service.register(ZHUJI, register_body(types, type="fishing_licence"))
    assert caught.value is not None
    assert caught.value.pointers == ("/type",)


def test_service_refuses_a_type_the_id_contradicts(
    service: CatalogService, types: dict[str, CertificateTypeInfo]
) -> None:
    # a marriage certificate id, registered as a divorce certificate
    with raises(InputError, "catalog.type_mismatch"):
        service.register(ZHUJI, register_body(types, type="divorce"))


@pytest.mark.parametrize("status", ["VALID", "expired", 1, None])
def test_service_refuses_a_bad_status(
    service: CatalogService, types: dict[str, CertificateTypeInfo], status: object
) -> None:
    with raises(InputError, "catalog.bad_status"):
        service.register(ZHUJI, register_body(types, status=status))


@pytest.mark.parametrize("node", [None, 3, "", "n" * 65])
def test_service_refuses_a_malformed_node(
    service: CatalogService, types: dict[str, CertificateTypeInfo], node: object
) -> None:
    with raises(InputError, "catalog.bad_node"):
        service.register(ZHUJI, register_body(types, node=node))


def test_service_needs_types(store: SqliteCatalog, clock: FixedClock) -> None:
    with raises(ConfigError, "catalog.types"):
        CatalogService(store, clock=clock, types=[])


# --- the service: lookup ---------------------------------------------------------------------


def test_service_lookup(
    service: CatalogService, clock: FixedClock, types: dict[str, CertificateTypeInfo]
) -> None:
    household = cert_id(types, "household_register", 2, issuer=SHANGHAI_POLICE)
    service.register(
        SHANGHAI,
        register_body(types, certificate_id=household, type="household_register", node="shanghai"),
    )
    clock.advance(1)
    service.register(ZHUJI, register_body(types, serial=1))
    clock.advance(1)
    service.register(ZHUJI, register_body(types, serial=3, holder_digest=LI))
    found = service.lookup({"holder_digest": CHEN, "types": ["marriage", "household_register"]})
    assert [(e.certificate_id, e.node) for e in found] == [
        (household, SHANGHAI),
        (cert_id(types, "marriage", 1), ZHUJI),
    ]
    assert service.lookup({"holder_digest": CHEN, "types": ["divorce"]}) == []


def test_service_lookup_returns_at_most_a_page(
    service: CatalogService, store: SqliteCatalog
) -> None:
    store.register_many(entry(n) for n in range(MAX_LOOKUP_RESULTS + 5))
    found = service.lookup({"holder_digest": CHEN, "types": ["marriage"]})
    assert len(found) == MAX_LOOKUP_RESULTS


@pytest.mark.parametrize(
    "value",
    [
        "marriage",
        [],
        ["marriage"] * 2,
        ["marriage", 3],
        [f"type{i}" for i in range(MAX_LOOKUP_TYPES + 1)],
        None,
    ],
    ids=["string", "empty", "duplicate", "non-string", "too-many", "null"],
)
def test_service_lookup_bad_types(service: CatalogService, value: object) -> None:
    with raises(InputError, "catalog.bad_types") as caught:
        service.lookup({"holder_digest": CHEN, "types": value})
    assert caught.value is not None
    assert caught.value.pointers == ("/types",)


def test_service_lookup_every_known_type(
    service: CatalogService, store: SqliteCatalog, types: dict[str, CertificateTypeInfo]
) -> None:
    names = list(types)
    assert len(names) <= MAX_LOOKUP_TYPES
    store.register_many(entry(n, type=name) for n, name in enumerate(names))
    found = service.lookup({"holder_digest": CHEN, "types": names})
    assert [e.type for e in found] == names


def test_service_lookup_unknown_type(service: CatalogService) -> None:
    with raises(UnknownCertificateType, "input.certificate_type") as caught:
        service.lookup({"holder_digest": CHEN, "types": ["marriage", "fishing_licence"]})
    assert caught.value is not None
    assert caught.value.pointers == ("/types/1",)


@pytest.mark.parametrize(
    "body",
    [{"holder_digest": CHEN}, {"holder_digest": CHEN, "types": ["marriage"], "limit": 5}, []],
    ids=["missing", "unknown-member", "not-an-object"],
)
def test_service_lookup_bad_body(service: CatalogService, body: Any) -> None:
    with raises(InputError, "catalog.bad_body"):
        service.lookup(body)


def test_service_lookup_bad_digest(service: CatalogService) -> None:
    with raises(InputError, "catalog.bad_holder_digest"):
        service.lookup({"holder_digest": CHEN[:10], "types": ["marriage"]})
