"""The national catalog: which node holds which certificates of a holder.

When a node issues a certificate it registers it with ``national``: the certificate id, its
type, the holding node, the holder's keyed digest (see :mod:`gateway.certificates.holders`) and its
status. A lookup by holder and types (``POST /v1/lookups``) asks the catalog which nodes to
route to. The catalog never sees a holder id in clear: it accepts only 64-character
lower-case hex digests, refuses anything that looks like an ID number, and its table
re-checks the digest's shape (a ``CHECK`` constraint), so no code path can store one.

A node may only register and change its own certificates: the node named in a request must
be the node its hop proof authenticated (:class:`~gateway.federation.hops.HopVerifier`), and once a
certificate id is registered by one node, no other node can claim or change it.

:class:`Catalog` is the small interface the rest of the gateway uses; :class:`SqliteCatalog`
implements it on an embedded SQLite file in WAL mode (owner-only permissions, versioned
schema), so a server database can follow. :class:`CatalogService` validates request bodies
strictly and stamps registrations with the injected clock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Final, Protocol

from gateway._internal.postgres import PgConnections
from gateway._internal.secret import Secret
from gateway._internal.sql import POSTGRESQL, SQLITE, Database, SqlConnection, Store
from gateway._internal.sqlite import Connections
from gateway.certificates.catalog import (
    MAX_LOOKUP_RESULTS,
    MAX_STATUS_EVENT,
    CatalogEntry,
    require_holder_digest,
)
from gateway.certificates.status import CertStatus
from gateway.errors import (
    ConfigError,
    ConflictError,
    GatewayError,
    InputError,
    NotFoundError,
)
from gateway.ids import CertificateId, NodeId

# NORMAL in WAL mode: a commit survives a process crash (kill -9).
_SYNCHRONOUS = "NORMAL"
SCHEMA_VERSION: Final = 2
MAX_STORE_LIMIT: Final = 1_000
MAX_STORE_TYPES: Final = 64
MIN_SQLITE: Final = (3, 38, 0)  # STRICT tables, built-in json_each


class Catalog(Protocol):
    """What the gateway needs from a catalog store."""

    def register(self, entry: CatalogEntry) -> CatalogEntry: ...

    def register_many(self, entries: Iterable[CatalogEntry], *, batch: int = 5000) -> int: ...

    def get(self, certificate_id: CertificateId) -> CatalogEntry: ...

    def lookup(
        self, holder_digest: str, types: Collection[str], *, limit: int = MAX_LOOKUP_RESULTS
    ) -> list[CatalogEntry]: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


# --- SQLite ----------------------------------------------------------------------------------

_SCHEMA: Final = (
    """
    CREATE TABLE entries (
        seq INTEGER PRIMARY KEY,
        certificate_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL CHECK (length(type) BETWEEN 1 AND 64),
        node TEXT NOT NULL CHECK (length(node) BETWEEN 1 AND 64),
        holder_digest TEXT NOT NULL
            CHECK (length(holder_digest) = 64 AND holder_digest NOT GLOB '*[^0-9a-f]*'),
        registered_at REAL NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('valid', 'suspended', 'revoked')),
        status_event INTEGER NOT NULL DEFAULT 0 CHECK (status_event >= 0)
    ) STRICT
    """,
    # Lookups are by holder and a few types, oldest first.
    "CREATE INDEX entries_by_holder ON entries (holder_digest, type, registered_at)",
)
_UPGRADES: Final = {
    1: (
        "ALTER TABLE entries ADD COLUMN"
        " status_event INTEGER NOT NULL DEFAULT 0 CHECK (status_event >= 0)",
    ),
}
"""From schema version 1 (no status event numbers: every entry counts as issued) to 2."""

_POSTGRESQL_SCHEMA: Final = (
    """
    CREATE TABLE entries (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        certificate_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL CHECK (length(type) BETWEEN 1 AND 64),
        node TEXT NOT NULL CHECK (length(node) BETWEEN 1 AND 64),
        holder_digest TEXT NOT NULL CHECK (holder_digest ~ '^[0-9a-f]{64}$'),
        registered_at DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('valid', 'suspended', 'revoked')),
        status_event BIGINT NOT NULL DEFAULT 0 CHECK (status_event >= 0)
    )
    """,
    "CREATE INDEX entries_by_holder ON entries (holder_digest, type, registered_at)",
)
SCHEMAS: Final = {SQLITE: _SCHEMA, POSTGRESQL: _POSTGRESQL_SCHEMA}
"""The store's tables at :data:`SCHEMA_VERSION`, per dialect."""
UPGRADES: Final = {SQLITE: _UPGRADES, POSTGRESQL: {}}
"""Upgrades from older versions, per dialect (PostgreSQL starts at version 2)."""

_COLUMNS: Final = "certificate_id, type, node, holder_digest, registered_at, status, status_event"
_GET: Final = f"SELECT {_COLUMNS} FROM entries WHERE certificate_id = ?"  # noqa: S608
# The wanted types travel as one JSON array parameter: no SQL text built from input.
_LOOKUP: Final = {
    SQLITE: f"SELECT {_COLUMNS} FROM entries WHERE holder_digest = ?"  # noqa: S608
    " AND type IN (SELECT value FROM json_each(?)) ORDER BY registered_at, seq LIMIT ?",
    POSTGRESQL: f"SELECT {_COLUMNS} FROM entries WHERE holder_digest = ?"  # noqa: S608
    " AND type IN (SELECT jsonb_array_elements_text(?::jsonb))"
    " ORDER BY registered_at, seq LIMIT ?",
}
_INSERT: Final = f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608

_Row = tuple[str, str, str, str, float, str, int]


def _entry(row: _Row) -> CatalogEntry:
    return CatalogEntry(
        certificate_id=CertificateId(row[0]),
        type=row[1],
        node=NodeId(row[2]),
        holder_digest=row[3],
        registered_at=row[4],
        status=CertStatus(row[5]),
        status_event=row[6],
    )


def _same_certificate(stored: CatalogEntry, new: CatalogEntry) -> bool:
    return stored.type == new.type and stored.holder_digest == new.holder_digest


class SqlCatalog(Store):
    """:class:`Catalog` over an open database of either backend (migrated here).

    Threads: like :class:`~gateway.storage.registry.SqliteRegistry`, a writer and a read-only reader
    connection (``check_same_thread=False``), each behind its own lock; writes also take
    ``BEGIN IMMEDIATE`` against other processes, and reads see the last committed state
    without waiting for a write in progress.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        try:
            db.migrate(SCHEMAS[db.dialect], SCHEMA_VERSION, upgrades=UPGRADES[db.dialect])
        except BaseException:
            self._db.close()
            raise

    # --- registration ------------------------------------------------------------------------

    @staticmethod
    def _register_one(conn: SqlConnection, entry: CatalogEntry) -> CatalogEntry:
        # 1. The digest's shape, before anything reaches the file (the table checks it too).
        require_holder_digest(entry.holder_digest)
        status = CertStatus(entry.status)
        if not 0 <= entry.status_event <= MAX_STATUS_EVENT:
            raise InputError("status_event out of range", code="catalog.bad_status_event")
        # 2. Already registered? Another node claiming it, or different facts for it, is a
        #    conflict; the same node re-sending it is a retry or a later status.
        row = conn.execute(_GET, (entry.certificate_id,)).fetchone()
        if row is not None:
            return SqliteCatalog._update(conn, _entry(row), entry)
        # 3. New: store it as given.
        conn.execute(
            _INSERT,
            (
                entry.certificate_id,
                entry.type,
                entry.node,
                entry.holder_digest,
                entry.registered_at,
                status.value,
                entry.status_event,
            ),
        )
        return replace(entry, status=status)

    @staticmethod
    def _update(conn: SqlConnection, stored: CatalogEntry, entry: CatalogEntry) -> CatalogEntry:
        if stored.node != entry.node:
            raise ConflictError(
                "this certificate is registered by another node", code="catalog.conflict"
            )
        if not _same_certificate(stored, entry):
            raise ConflictError(
                "this certificate is already registered with another type or holder",
                code="catalog.mismatch",
            )
        if entry.status_event <= stored.status_event:
            return stored  # a retry, or a status the catalog already holds a later one of
        if stored.status is CertStatus.REVOKED and entry.status is not CertStatus.REVOKED:
            raise ConflictError(
                f"cannot make a revoked certificate {entry.status.value}: revocation is final",
                code="catalog.status_transition",
            )
        conn.execute(
            "UPDATE entries SET status = ?, status_event = ? WHERE certificate_id = ?",
            (entry.status.value, entry.status_event, stored.certificate_id),
        )
        return replace(stored, status=entry.status, status_event=entry.status_event)

    def register(self, entry: CatalogEntry) -> CatalogEntry:
        """Register a certificate, or a later status of it; returns the stored entry.

        Idempotent for the same certificate id and node: the first registration's time is
        kept, and its status changes only for a larger ``status_event`` (so a retry, or a
        change that arrives after a later one, changes nothing). ``catalog.conflict`` when
        another node holds the id; ``catalog.mismatch`` when the same node re-registers it
        with another type or holder digest; ``catalog.status_transition`` for a later status
        of a revoked certificate that is not ``revoked`` (revocation is final).
        """
        with self._db.write() as conn:
            return self._register_one(conn, entry)

    def register_many(self, entries: Iterable[CatalogEntry], *, batch: int = 5000) -> int:
        """Register many entries, ``batch`` per transaction; returns how many were processed.

        Same rules as :meth:`register`, entry by entry. If a batch fails it is rolled back;
        earlier batches stay, and the error's detail says how many entries they held.
        """
        if batch <= 0:
            raise InputError(f"batch size must be positive, not {batch}")
        iterator = iter(entries)
        done = 0
        while chunk := list(islice(iterator, batch)):
            try:
                with self._db.write() as conn:
                    for entry in chunk:
                        self._register_one(conn, entry)
            except GatewayError as exc:
                raise type(exc)(
                    f"{exc.detail} ({done} entries were registered before this batch)",
                    code=exc.code,
                    log_detail=exc.log_detail,
                    pointers=exc.pointers,
                ) from exc
            done += len(chunk)
        return done

    # --- reads -------------------------------------------------------------------------------

    def get(self, certificate_id: CertificateId) -> CatalogEntry:
        """The entry of one certificate, or ``catalog.not_found``."""
        with self._db.read() as conn:
            row = conn.execute(_GET, (certificate_id,)).fetchone()
        if row is None:
            raise NotFoundError("no such certificate in the catalog", code="catalog.not_found")
        return _entry(row)

    def lookup(
        self, holder_digest: str, types: Collection[str], *, limit: int = MAX_LOOKUP_RESULTS
    ) -> list[CatalogEntry]:
        """A holder's certificates of the given types, oldest registration first."""
        require_holder_digest(holder_digest)
        if not 1 <= limit <= MAX_STORE_LIMIT:
            raise InputError(
                f"limit must be between 1 and {MAX_STORE_LIMIT}", code="catalog.bad_limit"
            )
        wanted = sorted(set(types))
        if not wanted:
            return []
        if len(wanted) > MAX_STORE_TYPES:
            raise InputError(
                f"at most {MAX_STORE_TYPES} certificate types per lookup", code="catalog.bad_types"
            )
        with self._db.read() as conn:
            rows = conn.execute(
                _LOOKUP[self._db.dialect], (holder_digest, json.dumps(wanted), limit)
            ).fetchall()
        return [_entry(row) for row in rows]

    def count(self) -> int:
        with self._db.read() as conn:
            return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])


class SqliteCatalog(SqlCatalog):
    """The catalog in one SQLite file in WAL mode (``catalog.sqlite3``)."""

    _db: Connections

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigError(
                f"SQLite {sqlite3.sqlite_version} is too old; the catalog needs 3.38 or later",
                code="catalog.open",
            )
        self._path = path
        super().__init__(
            Connections(
                path,
                busy_timeout=busy_timeout,
                synchronous=_SYNCHRONOUS,
                prefix="catalog",
                store="catalog",
            )
        )


class PostgresCatalog(SqlCatalog):
    """The catalog in the schema ``catalog`` of national's PostgreSQL database."""

    def __init__(self, dsn: Secret) -> None:
        super().__init__(PgConnections(dsn, schema="catalog", prefix="catalog", store="catalog"))
