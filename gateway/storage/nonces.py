"""Hop-proof nonces a node has seen, in one store every process and replica of the node shares.

A hop proof's nonce may be used once by the whole node, however many worker processes or
replicas serve it: a proof captured on the wire and replayed to another worker or replica
within its lifetime is refused as surely as one replayed to the same one. The table's primary
key makes the first use win (writers are serialised: SQLite's ``BEGIN IMMEDIATE`` across the
processes of one machine, the store's advisory lock across the replicas of a PostgreSQL
node); a row lives until its proof would be stale anyway (``issued_at + ttl``) and is purged
on later writes.

:class:`Nonces` is the one interface; :class:`SqliteNonces` (a file under the node's data
directory) and :class:`PostgresNonces` (the schema ``nonces`` of the node's database) open it
on either backend.

The store is bounded: about ``max_entries`` live nonces (counted every :data:`PURGE_EVERY`
writes, and on every write while full). When it is full of unexpired nonces a new proof is
refused as a possible replay: a full store fails closed, never open. SQLite: WAL mode with
``synchronous = NORMAL``: a use survives a crash of the process that recorded it; no commit
flushes the disk, and the WAL is checkpointed off the event loop (:meth:`checkpoint`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Final

from gateway._internal.postgres import PgConnections
from gateway._internal.secret import Secret
from gateway._internal.sql import POSTGRESQL, SQLITE, Database, Store
from gateway._internal.sqlite import Connections
from gateway.errors import AuthError, ConfigError

SCHEMA_VERSION: Final = 1
SCHEMAS: Final = {
    SQLITE: (
        """
        CREATE TABLE nonces (
            nonce TEXT PRIMARY KEY,
            expires REAL NOT NULL
        ) STRICT, WITHOUT ROWID
        """,
        "CREATE INDEX nonces_by_expiry ON nonces (expires)",
    ),
    POSTGRESQL: (
        """
        CREATE TABLE nonces (
            nonce TEXT PRIMARY KEY,
            expires DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX nonces_by_expiry ON nonces (expires)",
    ),
}
"""Version 1 of the store's tables, per dialect (upgrades would follow, keyed by version)."""
_AUTOCHECKPOINT_PAGES: Final = 65_536
PURGE_EVERY: Final = 256
"""Writes between two purges of expired nonces (each purge is one indexed DELETE)."""
MAX_NONCE_LENGTH: Final = 256


def _replay(detail: str = "the hop request was already used (replay)") -> AuthError:
    return AuthError(detail, code="hop.replay")


def _check_bounds(max_entries: int, ttl: float) -> None:
    if max_entries < 1:
        raise ConfigError("a nonce store needs room for at least one entry", code="hop.cache")
    if not (math.isfinite(ttl) and ttl > 0):
        raise ConfigError("a nonce store's ttl must be positive", code="hop.cache")


class Nonces(Store):
    """The node's used hop-proof nonces (see :class:`gateway.federation.hops.NonceStore`),
    over an open :class:`~gateway._internal.sql.Database` (migrated here; closed by
    :meth:`close`)."""

    def __init__(self, db: Database, *, max_entries: int, ttl: float) -> None:
        _check_bounds(max_entries, ttl)
        self.max_entries = max_entries
        self.ttl = ttl
        self._db = db
        try:
            db.migrate(SCHEMAS[db.dialect], SCHEMA_VERSION)
        except BaseException:
            db.close()
            raise
        self._writes = 0
        self._full = False
        """Set when the last count found the store full: every write counts until it is not."""

    def remember(self, nonce: str, *, issued_at: float, now: float) -> None:
        """Record ``nonce`` as used; raise :class:`AuthError` ``hop.replay`` if any process of
        this node recorded it before (or the store is full of live nonces)."""
        if not nonce or len(nonce) > MAX_NONCE_LENGTH:
            raise AuthError("the hop proof's nonce is malformed", code="hop.invalid")
        expires = issued_at + self.ttl
        if expires < now:
            raise _replay("the hop request is older than the nonces kept for it")
        try:
            with self._db.write() as conn:
                self._writes += 1
                if self._full or self._writes % PURGE_EVERY == 1:
                    # expired nonces out, then the store's bound (counted on every write
                    # while it is full, every PURGE_EVERY writes otherwise)
                    conn.execute("DELETE FROM nonces WHERE expires < ?", (now,))
                    live = conn.execute("SELECT count(*) FROM nonces").fetchone()[0]
                    self._full = int(live) >= self.max_entries
                inserted = 0
                if not self._full:  # a full store keeps its purge, and records nothing more
                    inserted = conn.execute(
                        "INSERT INTO nonces (nonce, expires) VALUES (?, ?) ON CONFLICT DO NOTHING",
                        (nonce, expires),
                    ).rowcount
        except self._db.Error as exc:
            raise self._db.translate(exc) from exc
        if self._full:
            raise _replay("the hop request cannot be told from a replay (nonce store full)")
        if inserted != 1:
            raise _replay()

    def checkpoint(self) -> None:
        """The WAL into the file, off the event loop (a serving node calls it every few
        seconds on its writer thread; see :meth:`Connections.checkpoint`)."""
        self._db.checkpoint()

    def __len__(self) -> int:
        with self._db.read() as conn:
            return int(conn.execute("SELECT count(*) FROM nonces").fetchone()[0])


class SqliteNonces(Nonces):
    """The nonces in one SQLite file (``nonces.sqlite3``) every process of the node shares."""

    _db: Connections

    def __init__(self, path: Path, *, max_entries: int, ttl: float) -> None:
        _check_bounds(max_entries, ttl)
        db = Connections(
            path, busy_timeout=5.0, synchronous="NORMAL", prefix="hop", store="nonce store"
        )
        try:  # checkpointed by checkpoint(), off the event loop; a commit does it only as a
            # safety net, should nobody call checkpoint() (256 MiB of WAL at 4 KiB pages)
            db.writer.execute(f"PRAGMA wal_autocheckpoint = {_AUTOCHECKPOINT_PAGES}")
        except db.Error as exc:
            db.close()
            raise db.translate(exc) from exc
        super().__init__(db, max_entries=max_entries, ttl=ttl)


class PostgresNonces(Nonces):
    """The nonces in the schema ``nonces`` of the node's PostgreSQL database, shared by every
    replica of the node."""

    def __init__(self, dsn: Secret, *, max_entries: int, ttl: float) -> None:
        _check_bounds(max_entries, ttl)
        db = PgConnections(dsn, schema="nonces", prefix="hop", store="nonce store")
        super().__init__(db, max_entries=max_entries, ttl=ttl)
