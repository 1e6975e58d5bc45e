"""The certificate registry: every certificate a node issued, as a sealed document.

A row holds the compact JWS (``seal``) and the few fields the node queries by: the
certificate id, its type, the holder's keyed digest (never the holder id in clear, see
:mod:`gateway.certificates.holders`), its status and its entry (``slot``) in the node's status
lists.

:class:`Registry` is the small interface the rest of the gateway uses; :class:`SqlRegistry`
implements it over either backend: :class:`SqliteRegistry` (an embedded SQLite file in WAL
mode) or :class:`PostgresRegistry` (the schema ``registry`` of the node's PostgreSQL
database, shared by every replica of the node).

Status changes::

    valid --suspend--> suspended --reinstate--> valid
    valid | suspended --revoke--> revoked   (final)

Every change is kept in ``status_events``; each status list has a ``revision`` that moves
whenever a status in it changes, so a publisher can cache its signed token.

Status list slots are handed out by :meth:`Registry.reserve_slot` *before* a certificate is
sealed (the seal payload carries its ``status`` reference), from one counter that only goes
up: a slot is never reused, even if the certificate it was reserved for is never stored.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Final, Protocol, overload

from gateway._internal.postgres import PgConnections
from gateway._internal.secret import Secret
from gateway._internal.sql import POSTGRESQL, SQLITE, Database, SqlConnection, Store
from gateway._internal.sqlite import Connections
from gateway.certificates.status import CertStatus, StatusAction, StatusSlot, transition
from gateway.certificates.status_list import BITS, status_code
from gateway.errors import (
    ConfigError,
    ConflictError,
    GatewayError,
    InputError,
    NotFoundError,
    SealIndeterminate,
)
from gateway.identifiers import HOLDER_DIGEST
from gateway.ids import CertificateId, KeyId, RegionCode

# NORMAL in WAL mode: a commit survives a process crash (kill -9).
_SYNCHRONOUS = "NORMAL"
SCHEMA_VERSION = 2
DEFAULT_LIST_SIZE = 131_072
MAX_LIST_BY_HOLDER = 1_000
MAX_TYPES_FILTER = 64
MIN_SQLITE = (3, 38, 0)  # STRICT tables, RETURNING, built-in json_each


# The two-bit Status Type values a status list publishes (VALID is 0, the zeroed default).
_LIST_CODE: Final = {status.value: int(status_code(status)) for status in CertStatus}


@dataclass(frozen=True, slots=True)
class StoredCertificate:
    id: CertificateId
    type: str
    holder_digest: str
    jurisdiction: RegionCode
    status: CertStatus
    slot: StatusSlot
    kid: KeyId
    issued_at: float
    updated_at: float
    seal: str
    """The compact JWS: protected header, certificate JSON payload, signature."""


@dataclass(frozen=True, slots=True)
class NewCertificate:
    """A sealed certificate to store. It starts VALID; ``slot`` must have been reserved."""

    id: CertificateId
    type: str
    holder_digest: str
    jurisdiction: RegionCode
    slot: StatusSlot
    kid: KeyId
    issued_at: float
    seal: str


@dataclass(frozen=True, slots=True)
class StatusEvent:
    certificate_id: CertificateId
    from_status: CertStatus
    to_status: CertStatus
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class SlotBlock(Sequence[StatusSlot]):
    """A run of consecutive reserved slots, computed on demand (no list of a million slots).

    Slot ``n`` of the node's counter is entry ``n % list_size`` of list ``n // list_size``.
    """

    start: int
    length: int
    list_size: int

    def __len__(self) -> int:
        return self.length

    @overload
    def __getitem__(self, position: int) -> StatusSlot: ...

    @overload
    def __getitem__(self, position: slice) -> Sequence[StatusSlot]: ...

    def __getitem__(self, position: int | slice) -> StatusSlot | Sequence[StatusSlot]:
        if isinstance(position, slice):
            first, stop, step = position.indices(self.length)
            if step != 1:
                return [self[i] for i in range(first, stop, step)]
            return SlotBlock(self.start + first, max(0, stop - first), self.list_size)
        if position < 0:
            position += self.length
        if not 0 <= position < self.length:
            raise IndexError("slot block index out of range")
        list_id, index = divmod(self.start + position, self.list_size)
        return StatusSlot(list_id, index)

    def __iter__(self) -> Iterator[StatusSlot]:
        for n in range(self.start, self.start + self.length):
            list_id, index = divmod(n, self.list_size)
            yield StatusSlot(list_id, index)


class Registry(Protocol):
    """What the gateway needs from a certificate store."""

    @property
    def list_size(self) -> int: ...

    def reserve_slot(self) -> StatusSlot: ...

    def reserve_slots(self, n: int) -> SlotBlock: ...

    def add(self, cert: NewCertificate, *, owed: Mapping[Outbox, bytes] | None = None) -> None: ...

    def pending(self, topic: Outbox, *, every_owner: bool = False) -> list[tuple[int, bytes]]: ...

    def delivered(self, seqs: Collection[int]) -> None: ...

    def outbox_counts(self) -> dict[Outbox, int]: ...

    def add_many(self, certs: Iterable[NewCertificate], *, batch: int = 5000) -> int: ...

    def get(self, id: CertificateId) -> StoredCertificate: ...

    async def read(self, id: CertificateId) -> StoredCertificate: ...

    def list_by_holder(
        self, holder_digest: str, *, types: Collection[str] | None = None, limit: int = 100
    ) -> list[StoredCertificate]: ...

    def apply(
        self,
        id: CertificateId,
        action: StatusAction,
        *,
        reason: str,
        at: float,
        owed: Callable[[StoredCertificate, int], Mapping[Outbox, bytes]] | None = None,
    ) -> StoredCertificate: ...

    def history(self, id: CertificateId) -> list[StatusEvent]: ...

    def status_bits(self, list_id: int) -> bytes: ...

    def list_ids(self) -> list[int]: ...

    def count(self) -> int: ...

    def iter_seals(self, *, batch: int = 10_000) -> Iterator[str]: ...

    def revision(self, list_id: int) -> int: ...

    def close(self) -> None: ...


# --- SQLite ----------------------------------------------------------------------------------

_SLOTS_PER_STATEMENT = 400
"""Entries per batch status read: 800 parameters, far below SQLite's limit."""


def _slot_statuses_sql(n: int) -> str:
    """The statuses of ``n`` entries (only ``n`` pairs of placeholders are formatted in)."""
    pairs = ",".join("(?,?)" for _ in range(n))
    return (
        f"SELECT c.list_id, c.idx, c.status FROM (VALUES {pairs}) AS w"  # noqa: S608
        " CROSS JOIN certificates AS c ON c.list_id = w.column1 AND c.idx = w.column2"
    )


class Outbox(StrEnum):
    """What a committed change still owes to another store (see ``_OUTBOX``)."""

    AUDIT = "audit"
    """A record for the node's audit log."""
    CATALOG = "catalog"
    """An entry for national's catalog (on issuance, and again on every status change)."""


# What committed changes still owe to stores in other files or other nodes: SQLite cannot
# commit two WAL files (let alone a file and a remote node) as one. Each change writes what it
# owes here in its own transaction; the node delivers it, then deletes it here. ``owner`` is
# the registry object (one per process) that wrote it: each process delivers its own, so two
# worker processes never append the same audit record.
_OUTBOX = """
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY,
        topic TEXT NOT NULL CHECK (topic IN ('audit', 'catalog')),
        owner TEXT NOT NULL,
        record BLOB NOT NULL
    ) STRICT
"""
_SCHEMA = (
    """
    CREATE TABLE meta (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) STRICT
    """,
    """
    CREATE TABLE certificates (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        holder_digest TEXT NOT NULL
            CHECK (length(holder_digest) = 64 AND holder_digest NOT GLOB '*[^0-9a-f]*'),
        jurisdiction TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('valid', 'suspended', 'revoked')),
        list_id INTEGER NOT NULL CHECK (list_id >= 0),
        idx INTEGER NOT NULL CHECK (idx >= 0),
        kid TEXT NOT NULL,
        issued_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        seal TEXT NOT NULL,
        UNIQUE (list_id, idx)
    ) STRICT
    """,
    "CREATE INDEX certificates_by_holder ON certificates (holder_digest, type)",
    # Only the few non-valid rows: status_bits reads this index and never the table.
    """
    CREATE INDEX certificates_not_valid ON certificates (list_id, idx, status)
        WHERE status != 'valid'
    """,
    """
    CREATE TABLE status_events (
        seq INTEGER PRIMARY KEY,
        certificate_id TEXT NOT NULL REFERENCES certificates (id),
        from_status TEXT NOT NULL,
        to_status TEXT NOT NULL,
        reason TEXT NOT NULL,
        at REAL NOT NULL
    ) STRICT
    """,
    "CREATE INDEX status_events_by_certificate ON status_events (certificate_id, seq)",
    """
    CREATE TABLE list_revisions (
        list_id INTEGER PRIMARY KEY,
        revision INTEGER NOT NULL
    ) STRICT
    """,
    _OUTBOX,
)

_UPGRADES = {1: (_OUTBOX,)}
"""From schema version 1 (no outbox) to 2."""

_POSTGRESQL_SCHEMA = (
    """
    CREATE TABLE meta (
        name TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE certificates (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        holder_digest TEXT NOT NULL CHECK (holder_digest ~ '^[0-9a-f]{64}$'),
        jurisdiction TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('valid', 'suspended', 'revoked')),
        list_id BIGINT NOT NULL CHECK (list_id >= 0),
        idx BIGINT NOT NULL CHECK (idx >= 0),
        kid TEXT NOT NULL,
        issued_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        seal TEXT NOT NULL,
        CONSTRAINT certificates_slot UNIQUE (list_id, idx)
    )
    """,
    "CREATE INDEX certificates_by_holder ON certificates (holder_digest, type)",
    """
    CREATE INDEX certificates_not_valid ON certificates (list_id, idx, status)
        WHERE status != 'valid'
    """,
    """
    CREATE TABLE status_events (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        certificate_id TEXT NOT NULL REFERENCES certificates (id),
        from_status TEXT NOT NULL,
        to_status TEXT NOT NULL,
        reason TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    )
    """,
    "CREATE INDEX status_events_by_certificate ON status_events (certificate_id, seq)",
    """
    CREATE TABLE list_revisions (
        list_id BIGINT PRIMARY KEY,
        revision BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE outbox (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        topic TEXT NOT NULL CHECK (topic IN ('audit', 'catalog')),
        owner TEXT NOT NULL,
        record BYTEA NOT NULL
    )
    """,
)
SCHEMAS: Final = {SQLITE: _SCHEMA, POSTGRESQL: _POSTGRESQL_SCHEMA}
"""The store's tables at :data:`SCHEMA_VERSION`, per dialect."""
UPGRADES: Final = {SQLITE: _UPGRADES, POSTGRESQL: {}}
"""Upgrades from older versions, per dialect (PostgreSQL starts at version 2)."""

MAX_PENDING_READ: Final = 1000
"""Outbox records read at once (:meth:`SqliteRegistry.pending`)."""

_GET = (
    "SELECT id, type, holder_digest, jurisdiction, status, list_id, idx, kid, issued_at,"
    " updated_at, seal FROM certificates WHERE id = ?"
)
_BY_HOLDER = (
    "SELECT id, type, holder_digest, jurisdiction, status, list_id, idx, kid, issued_at,"
    " updated_at, seal FROM certificates WHERE holder_digest = ? ORDER BY seq LIMIT ?"
)
# The wanted types travel as one JSON array parameter: no SQL text built from input.
_BY_HOLDER_AND_TYPES = {
    SQLITE: "SELECT id, type, holder_digest, jurisdiction, status, list_id, idx, kid, issued_at,"
    " updated_at, seal FROM certificates WHERE holder_digest = ?"
    " AND type IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?",
    POSTGRESQL: "SELECT id, type, holder_digest, jurisdiction, status, list_id, idx, kid,"
    " issued_at, updated_at, seal FROM certificates WHERE holder_digest = ?"
    " AND type IN (SELECT jsonb_array_elements_text(?::jsonb)) ORDER BY seq LIMIT ?",
}
_INSERT = (
    "INSERT INTO certificates (id, type, holder_digest, jurisdiction, status, list_id, idx, kid,"
    " issued_at, updated_at, seal) VALUES (?, ?, ?, ?, 'valid', ?, ?, ?, ?, ?, ?)"
)

_Row = tuple[str, str, str, str, str, int, int, str, float, float, str]
_InsertRow = tuple[str, str, str, str, int, int, str, float, float, str]


class SqlRegistry(Store):
    """:class:`Registry` over an open database of either backend (migrated here).

    Threads: the object may be shared by threads (a thread-pool executor running blocking
    calls for the event loop). It keeps two connections opened with
    ``check_same_thread=False``: a writer and a read-only reader, each behind its own lock.
    Writes are serialised by the write lock (plus ``BEGIN IMMEDIATE`` against other
    processes); reads run on the reader at the same time and, thanks to WAL, see the last
    committed state without waiting for a write in progress. A bulk load
    (:meth:`add_many`) takes the write lock one batch at a time, so issuance and status
    changes interleave with it.
    """

    def __init__(self, db: Database, *, where: str, list_size: int = DEFAULT_LIST_SIZE) -> None:
        self._where = where
        self._owner = secrets.token_hex(8)  # this object's outbox records
        self._db = db
        try:
            self._list_size = self._migrate(list_size)
        except BaseException:
            self._db.close()
            raise

    # --- open and close ------------------------------------------------------------------------

    def _migrate(self, list_size: int) -> int:
        """Create or check the schema; returns the list size the file was created with."""

        def seed(conn: SqlConnection) -> None:
            conn.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?)",
                [("list_size", list_size), ("next_slot", 0)],
            )

        dialect = self._db.dialect
        self._db.migrate(SCHEMAS[dialect], SCHEMA_VERSION, seed=seed, upgrades=UPGRADES[dialect])
        with self._db.read() as conn:
            stored = conn.execute("SELECT value FROM meta WHERE name = 'list_size'").fetchone()[0]
        if stored != list_size:
            raise ConfigError(
                f"certificate store {self._where} uses status lists of {stored} entries, "
                f"not {list_size}",
                code="registry.list_size",
            )
        return int(stored)

    @property
    def list_size(self) -> int:
        return self._list_size

    # --- slots -------------------------------------------------------------------------------

    def reserve_slot(self) -> StatusSlot:
        """The next free status list entry. Never handed out twice."""
        return self.reserve_slots(1)[0]

    def reserve_slots(self, n: int) -> SlotBlock:
        """``n`` consecutive free entries in one transaction (for bulk issuance)."""
        if n < 0:
            raise InputError(f"cannot reserve {n} slots")
        with self._db.write() as conn:
            start = conn.execute(
                "UPDATE meta SET value = value + ? WHERE name = 'next_slot' RETURNING value - ?",
                (n, n),
            ).fetchone()[0]
        return SlotBlock(int(start), n, self._list_size)

    # --- certificates ------------------------------------------------------------------------

    def _insert_row(self, cert: NewCertificate, next_slot: int) -> _InsertRow:
        if not HOLDER_DIGEST.fullmatch(cert.holder_digest):
            raise InputError(
                "holder_digest must be a lower-case hex HMAC-SHA256 (never a holder id)",
                code="input.holder_digest",
            )
        slot = cert.slot
        if not (0 <= slot.index < self._list_size and slot.list_id >= 0):
            raise ConflictError(
                f"status slot {slot.list_id}/{slot.index} does not exist",
                code="cert.slot_unreserved",
            )
        if slot.list_id * self._list_size + slot.index >= next_slot:
            raise ConflictError(
                f"status slot {slot.list_id}/{slot.index} was never reserved",
                code="cert.slot_unreserved",
            )
        return (
            cert.id,
            cert.type,
            cert.holder_digest,
            cert.jurisdiction,
            slot.list_id,
            slot.index,
            cert.kid,
            cert.issued_at,
            cert.issued_at,
            cert.seal,
        )

    @staticmethod
    def _next_slot(conn: SqlConnection) -> int:
        return int(conn.execute("SELECT value FROM meta WHERE name = 'next_slot'").fetchone()[0])

    @staticmethod
    def _conflict(exc: Exception, what: str) -> GatewayError:
        # SQLite: "UNIQUE constraint failed: certificates.<columns>"; PostgreSQL: the
        # constraint's name in the error's diagnostics
        constraint = getattr(getattr(exc, "diag", None), "constraint_name", None)
        message = str(exc)
        if constraint == "certificates_slot" or message.endswith(
            "certificates.list_id, certificates.idx"
        ):
            return ConflictError(f"{what} uses a status slot already taken", code="cert.slot_taken")
        if constraint == "certificates_id_key" or message.endswith("certificates.id"):
            return ConflictError(f"{what} already exists", code="cert.exists")
        return ConflictError(f"{what} was refused by the store", log_detail=message)

    def add(self, cert: NewCertificate, *, owed: Mapping[Outbox, bytes] | None = None) -> None:
        """Store a sealed certificate. ``cert.exists`` if its id is already stored.

        ``owed``: what the issuance owes other stores (its audit record, its catalog entry),
        kept in the outbox in the same transaction (see :meth:`pending`).
        """
        with self._db.write() as conn:
            row = self._insert_row(cert, self._next_slot(conn))
            try:
                conn.execute(_INSERT, row)
            except self._db.IntegrityError as exc:
                raise self._conflict(exc, f"certificate {cert.id}") from exc
            for topic, record in (owed or {}).items():
                self._owe(conn, topic, record)

    def _owe(self, conn: SqlConnection, topic: Outbox, record: bytes) -> None:
        conn.execute(
            "INSERT INTO outbox (topic, owner, record) VALUES (?, ?, ?)",
            (topic.value, self._owner, record),
        )

    def pending(self, topic: Outbox, *, every_owner: bool = False) -> list[tuple[int, bytes]]:
        """What committed changes still owe to ``topic``, oldest first (at most
        :data:`MAX_PENDING_READ`), each with its outbox ``seq`` for :meth:`delivered`.

        Only what this object wrote, unless ``every_owner`` (recovering what a crash left).
        """
        query = "SELECT seq, record FROM outbox WHERE topic = ?"
        params: tuple[str | int, ...] = (topic.value,)
        if not every_owner:
            query += " AND owner = ?"
            params = (*params, self._owner)
        with self._db.read() as conn:
            rows = conn.execute(f"{query} ORDER BY seq LIMIT ?", (*params, MAX_PENDING_READ))
            found = rows.fetchall()
        return [(int(seq), bytes(record)) for seq, record in found]

    def delivered(self, seqs: Collection[int]) -> None:
        """Drop outbox records now delivered (a record already dropped is no error)."""
        if not seqs:
            return
        with self._db.write() as conn:
            conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def outbox_counts(self) -> dict[Outbox, int]:
        """How many records every topic's outbox holds, whoever wrote them (the file's)."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT topic, COUNT(*) FROM outbox GROUP BY topic").fetchall()
        counts = dict.fromkeys(Outbox, 0)
        counts.update((Outbox(topic), int(n)) for topic, n in rows)
        return counts

    def add_many(self, certs: Iterable[NewCertificate], *, batch: int = 5000) -> int:
        """Store many certificates, ``batch`` per transaction; returns how many were stored.

        The iterable is consumed lazily, one batch at a time, and outside the write lock (so
        a generator may sign as it goes). Batches are committed as they go: if one fails
        (``cert.exists``, ``cert.slot_taken``...) that batch is rolled back and the earlier
        ones stay stored; the error's detail says how many.
        """
        if batch <= 0:
            raise InputError(f"batch size must be positive, not {batch}")
        iterator = iter(certs)
        stored = 0
        while chunk := list(islice(iterator, batch)):
            try:
                with self._db.write() as conn:
                    next_slot = self._next_slot(conn)
                    rows = [self._insert_row(cert, next_slot) for cert in chunk]
                    try:
                        conn.executemany(_INSERT, rows)
                    except self._db.IntegrityError as exc:
                        raise self._conflict(exc, "a certificate of the batch") from exc
            except GatewayError as exc:
                raise type(exc)(
                    f"{exc.detail} ({stored} certificates were stored before this batch)",
                    code=exc.code,
                    log_detail=exc.log_detail,
                ) from exc
            stored += len(rows)
        return stored

    @staticmethod
    def _certificate(row: _Row) -> StoredCertificate:
        return StoredCertificate(
            id=CertificateId(row[0]),
            type=row[1],
            holder_digest=row[2],
            jurisdiction=RegionCode(row[3]),
            status=CertStatus(row[4]),
            slot=StatusSlot(row[5], row[6]),
            kid=KeyId(row[7]),
            issued_at=row[8],
            updated_at=row[9],
            seal=row[10],
        )

    def get(self, id: CertificateId) -> StoredCertificate:
        """The stored certificate, or ``cert.not_found``."""
        with self._db.read() as conn:
            row = conn.execute(_GET, (id,)).fetchone()
        if row is None:
            raise NotFoundError("no such certificate", code="cert.not_found")
        return self._certificate(row)

    async def read(self, id: CertificateId) -> StoredCertificate:
        """:meth:`get` on the event loop, which it never blocks on the database (a fetch's
        one read: :meth:`gateway._internal.sql.Database.fetch`)."""
        rows = await self._db.fetch(_GET, (id,))
        if not rows:
            raise NotFoundError("no such certificate", code="cert.not_found")
        return self._certificate(rows[0])

    def list_by_holder(
        self, holder_digest: str, *, types: Collection[str] | None = None, limit: int = 100
    ) -> list[StoredCertificate]:
        """A holder's certificates, oldest first, optionally only of some ``types``."""
        if not HOLDER_DIGEST.fullmatch(holder_digest):
            raise InputError(
                "holder_digest must be a lower-case hex HMAC-SHA256 (never a holder id)",
                code="input.holder_digest",
            )
        if not 1 <= limit <= MAX_LIST_BY_HOLDER:
            raise InputError(f"limit must be between 1 and {MAX_LIST_BY_HOLDER}")
        with self._db.read() as conn:
            if types is None:
                rows = conn.execute(_BY_HOLDER, (holder_digest, limit)).fetchall()
            else:
                wanted = sorted(set(types))
                if not wanted:
                    return []
                if len(wanted) > MAX_TYPES_FILTER:
                    raise InputError(f"at most {MAX_TYPES_FILTER} certificate types per lookup")
                rows = conn.execute(
                    _BY_HOLDER_AND_TYPES[self._db.dialect],
                    (holder_digest, json.dumps(wanted), limit),
                ).fetchall()
        return [self._certificate(row) for row in rows]

    # --- status ------------------------------------------------------------------------------

    def apply(
        self,
        id: CertificateId,
        action: StatusAction,
        *,
        reason: str,
        at: float,
        owed: Callable[[StoredCertificate, int], Mapping[Outbox, bytes]] | None = None,
    ) -> StoredCertificate:
        """Suspend, reinstate or revoke; records the event and bumps the list's revision.

        ``owed``: makes what the change owes to other stores (see :meth:`add`) from the
        changed certificate and the status event's ``seq`` (which grows with every change);
        it is kept in the outbox in the same transaction.
        """
        with self._db.write() as conn:
            # 1. Current status (under the write lock: no concurrent change can interleave).
            row = conn.execute(
                "SELECT status, list_id FROM certificates WHERE id = ?", (id,)
            ).fetchone()
            if row is None:
                raise NotFoundError("no such certificate", code="cert.not_found")
            current, list_id = CertStatus(row[0]), int(row[1])
            # 2. Is the transition allowed?
            target = transition(current, action)
            # 3. Change it, keep the event, move the list's revision.
            conn.execute(
                "UPDATE certificates SET status = ?, updated_at = ? WHERE id = ?",
                (target.value, at, id),
            )
            event = conn.execute(
                "INSERT INTO status_events (certificate_id, from_status, to_status, reason, at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING seq",
                (id, current.value, target.value, reason, at),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO list_revisions (list_id, revision) VALUES (?, 1)"
                " ON CONFLICT (list_id) DO UPDATE SET revision = list_revisions.revision + 1",
                (list_id,),
            )
            updated = self._certificate(conn.execute(_GET, (id,)).fetchone())
            if owed is not None:
                for topic, record in owed(updated, int(event)).items():
                    self._owe(conn, topic, record)
        return updated

    def history(self, id: CertificateId) -> list[StatusEvent]:
        """Every status change of a certificate, oldest first."""
        with self._db.read() as conn:
            exists = conn.execute("SELECT 1 FROM certificates WHERE id = ?", (id,)).fetchone()
            rows = conn.execute(
                "SELECT from_status, to_status, reason, at FROM status_events"
                " WHERE certificate_id = ? ORDER BY seq",
                (id,),
            ).fetchall()
        if exists is None:
            raise NotFoundError("no such certificate", code="cert.not_found")
        return [
            StatusEvent(id, CertStatus(row[0]), CertStatus(row[1]), row[2], row[3]) for row in rows
        ]

    def _list_count(self, conn: SqlConnection) -> int:
        return self._lists_upto(self._next_slot(conn))

    def _lists_upto(self, next_slot: int) -> int:
        """How many lists the slots before ``next_slot`` fill, the last one partly."""
        return -(-next_slot // self._list_size)

    def status_bits(self, list_id: int) -> bytes:
        """The 2-bit status array of one list (draft-ietf-oauth-status-list layout).

        Only non-valid rows are read (from a partial index); valid entries are the zeroes
        of a fresh array, as are slots not (yet) used by a stored certificate.
        """
        per_byte = 8 // BITS
        with self._db.read() as conn:
            # One statement, so one read snapshot: the list count (meta's next slot) and
            # the list's non-valid rows (none: one row of NULLs, from the LEFT JOIN).
            rows = conn.execute(
                "SELECT meta.value, certificates.idx, certificates.status FROM meta"
                " LEFT JOIN certificates"
                " ON certificates.list_id = ? AND certificates.status != 'valid'"
                " WHERE meta.name = 'next_slot'",
                (list_id,),
            ).fetchall()
        if not 0 <= list_id < self._lists_upto(int(rows[0][0])):
            raise NotFoundError("no such status list", code="status_list.not_found")
        if rows[0][1] is None:
            return bytes(self._list_size // per_byte)
        bits = bytearray(self._list_size // per_byte)
        code = _LIST_CODE
        for _, index, status in rows:
            bits[index // per_byte] |= code[status] << ((index % per_byte) * BITS)
        return bytes(bits)

    def slot_status(self, list_id: int, index: int) -> CertStatus:
        """The status at one entry of a status list, as :meth:`status_bits` would show it
        (``valid`` where no certificate holds the entry), read from that one row.

        Raises :class:`NotFoundError` ``status_list.not_found`` for a list that does not
        exist, and :class:`SealIndeterminate` ``status.unknown_index`` for an entry outside it.
        """
        with self._db.read() as conn:
            # One statement (one snapshot, one round into SQLite): the list count and the row.
            next_slot, status = conn.execute(
                "SELECT (SELECT value FROM meta WHERE name = 'next_slot'),"
                " (SELECT status FROM certificates WHERE list_id = ? AND idx = ?)",
                (
                    list_id if type(list_id) is int else -1,
                    index if type(index) is int else -1,
                ),
            ).fetchone()
        error = self._slot_error(list_id, index, self._lists_upto(int(next_slot)))
        if error is not None:
            raise error
        return CertStatus.VALID if status is None else CertStatus(status)

    def slot_statuses(
        self, slots: Sequence[tuple[int, int]]
    ) -> list[CertStatus | NotFoundError | SealIndeterminate]:
        """:meth:`slot_status` of each ``(list_id, index)``, read together in one snapshot:
        the status, or the error :meth:`slot_status` would raise for that entry."""
        if not slots:
            return []
        wanted = [
            (list_id, index)
            for list_id, index in slots
            if type(list_id) is int and type(index) is int and 0 <= index < self._list_size
        ]
        found: dict[tuple[int, int], str] = {}
        with self._db.read(snapshot=True) as conn:
            lists = self._list_count(conn)
            for start in range(0, len(wanted), _SLOTS_PER_STATEMENT):
                chunk = wanted[start : start + _SLOTS_PER_STATEMENT]
                # Each wanted entry looked up through the (list_id, idx) unique index (CROSS
                # JOIN keeps that order; a row-value IN would scan the table instead).
                rows = conn.execute(
                    _slot_statuses_sql(len(chunk)), [n for pair in chunk for n in pair]
                )
                found.update(((list_id, index), status) for list_id, index, status in rows)
        results: list[CertStatus | NotFoundError | SealIndeterminate] = []
        for list_id, index in slots:
            status = found.get((list_id, index))
            results.append(
                self._slot_error(list_id, index, lists)
                or (CertStatus.VALID if status is None else CertStatus(status))
            )
        return results

    def _slot_error(
        self, list_id: int, index: int, lists: int
    ) -> NotFoundError | SealIndeterminate | None:
        """Why there is no entry ``index`` in list ``list_id`` of ``lists``, if there is not."""
        if type(list_id) is not int or not 0 <= list_id < lists:
            return NotFoundError("no such status list", code="status_list.not_found")
        if type(index) is not int or not 0 <= index < self._list_size:
            return SealIndeterminate(
                "the status list has no entry for this certificate",
                code="status.unknown_index",
                log_detail=f"index {index!r} outside a list of {self._list_size} entries",
            )
        return None

    def list_ids(self) -> list[int]:
        """Every status list with at least one reserved slot."""
        with self._db.read() as conn:
            return list(range(self._list_count(conn)))

    def revision(self, list_id: int) -> int:
        """A counter that moves whenever a status in list ``list_id`` changes (0: never)."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT revision FROM list_revisions WHERE list_id = ?", (list_id,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    # --- bulk reads --------------------------------------------------------------------------

    def count(self) -> int:
        with self._db.read() as conn:
            return int(conn.execute("SELECT count(*) FROM certificates").fetchone()[0])

    def sealed_with(self, kid: KeyId, *, limit: int = 1000) -> list[tuple[CertificateId, str]]:
        """Live (not revoked) certificates still sealed with ``kid``: what a reseal has left."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT id, seal FROM certificates WHERE kid = ? AND status != 'revoked'"
                " ORDER BY seq LIMIT ?",
                (kid, limit),
            ).fetchall()
        return [(CertificateId(row[0]), str(row[1])) for row in rows]

    def count_sealed_with(self, kid: KeyId) -> int:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT count(*) FROM certificates WHERE kid = ? AND status != 'revoked'", (kid,)
            ).fetchone()
        return int(row[0])

    def reseal(self, resealed: Iterable[tuple[CertificateId, KeyId, str]], *, at: float) -> int:
        """Replace seals (same certificate, a new key's seal) in one transaction."""
        items = list(resealed)
        with self._db.write() as conn:
            conn.executemany(
                "UPDATE certificates SET kid = ?, seal = ?, updated_at = ? WHERE id = ?",
                [(kid, seal, at, cert_id) for cert_id, kid, seal in items],
            )
        return len(items)

    def iter_seals(self, *, batch: int = 10_000) -> Iterator[str]:
        """Every seal in insertion order, read ``batch`` rows at a time.

        No cursor stays open between batches (each is a keyset query after the last row
        seen), so a slow consumer holds neither a lock nor a read snapshot.
        """
        if batch <= 0:
            raise InputError(f"batch size must be positive, not {batch}")
        last = 0
        while True:
            with self._db.read() as conn:
                rows = conn.execute(
                    "SELECT seq, seal FROM certificates WHERE seq > ? ORDER BY seq LIMIT ?",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            for _, seal in rows:
                yield seal
            last = rows[-1][0]


def _check_list_size(list_size: int) -> None:
    if list_size <= 0 or list_size % 4:
        raise ConfigError(
            f"status list size must be a positive multiple of 4, not {list_size}",
            code="registry.list_size",
        )


class SqliteRegistry(SqlRegistry):
    """The registry in one SQLite file in WAL mode (``registry.sqlite3``)."""

    _db: Connections

    def __init__(
        self, path: Path, *, list_size: int = DEFAULT_LIST_SIZE, busy_timeout: float = 5.0
    ) -> None:
        _check_list_size(list_size)
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigError(
                f"SQLite {sqlite3.sqlite_version} is too old; the registry needs 3.38 or later",
                code="registry.open",
            )
        self._path = path
        db = Connections(
            path,
            busy_timeout=busy_timeout,
            synchronous=_SYNCHRONOUS,
            prefix="registry",
            store="certificate store",
            foreign_keys=True,
        )
        super().__init__(db, where=str(path), list_size=list_size)


class PostgresRegistry(SqlRegistry):
    """The registry in the schema ``registry`` of the node's PostgreSQL database, shared by
    every replica of the node."""

    def __init__(self, dsn: Secret, *, list_size: int = DEFAULT_LIST_SIZE) -> None:
        _check_list_size(list_size)
        db = PgConnections(dsn, schema="registry", prefix="registry", store="certificate store")
        super().__init__(db, where="in PostgreSQL", list_size=list_size)
