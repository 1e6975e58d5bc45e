"""The trust authority's state and its author's lease, for ``national`` run as replicas.

``national`` keeps the trust list's ``seq``, its current token and every key's history
(:class:`gateway.services.authority.TrustAuthority`'s state). One process can keep them in a
file; replicas keep them here, in the node's database, with a **lease** that makes exactly
one replica the author at a time:

- :meth:`AuthorityStore.acquire` takes the lease when it is free or has expired, or renews it
  for its holder; every replica tries each round, the one holding it authors;
- :meth:`AuthorityStore.save` is fenced: it writes only for the lease's current, unexpired
  holder, and never a ``seq`` lower than the stored one. An author that was paused past its
  lease (and replaced) cannot write over its successor; a killed author is replaced once its
  lease runs out.

Writers are serialised by the database (SQLite's one writer, PostgreSQL's advisory lock of
the store), so the read-check-write of each call is atomic across replicas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from gateway._internal.postgres import PgConnections
from gateway._internal.secret import Secret
from gateway._internal.sql import POSTGRESQL, SQLITE, Database, Store
from gateway._internal.sqlite import Connections
from gateway.errors import ConflictError

SCHEMA_VERSION: Final = 1
SCHEMAS: Final = {
    SQLITE: (
        """
        CREATE TABLE state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL CHECK (seq >= 0),
            document BLOB NOT NULL
        ) STRICT
        """,
        """
        CREATE TABLE lease (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            holder TEXT NOT NULL,
            expires REAL NOT NULL
        ) STRICT
        """,
    ),
    POSTGRESQL: (
        """
        CREATE TABLE state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq BIGINT NOT NULL CHECK (seq >= 0),
            document BYTEA NOT NULL
        )
        """,
        """
        CREATE TABLE lease (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            holder TEXT NOT NULL,
            expires DOUBLE PRECISION NOT NULL
        )
        """,
    ),
}
"""The store's tables at :data:`SCHEMA_VERSION`, per dialect."""


def _not_author(detail: str) -> ConflictError:
    return ConflictError(detail, code="trust.not_author")


class AuthorityStore(Store):
    """The authority's state document and the author's lease (see the module's description)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        try:
            db.migrate(SCHEMAS[db.dialect], SCHEMA_VERSION)
        except BaseException:
            db.close()
            raise

    def acquire(self, holder: str, *, now: float, ttl: float) -> bool:
        """Take or renew the author's lease for ``holder`` until ``now + ttl``; True when
        ``holder`` holds it now, False when another holder's lease has not expired."""
        if not ttl > 0:
            raise ValueError("a lease lasts a positive time")
        with self._db.write() as conn:
            row = conn.execute("SELECT holder, expires FROM lease WHERE id = 1").fetchone()
            if row is not None and row[0] != holder and float(row[1]) > now:
                return False
            conn.execute(
                "INSERT INTO lease (id, holder, expires) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET holder = excluded.holder,"
                " expires = excluded.expires",
                (holder, now + ttl),
            )
        return True

    def release(self, holder: str) -> None:
        """Give the lease up (a clean shutdown): another replica may author at once."""
        with self._db.write() as conn:
            conn.execute("DELETE FROM lease WHERE id = 1 AND holder = ?", (holder,))

    def holder(self, *, now: float) -> str | None:
        """Who holds an unexpired lease, if anyone."""
        with self._db.read() as conn:
            row = conn.execute("SELECT holder, expires FROM lease WHERE id = 1").fetchone()
        return None if row is None or float(row[1]) <= now else str(row[0])

    def load(self) -> tuple[int, bytes] | None:
        """The stored ``(seq, document)``, or None before the first save."""
        with self._db.read() as conn:
            row = conn.execute("SELECT seq, document FROM state WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def save(self, document: bytes, *, seq: int, holder: str, now: float) -> None:
        """Store the state of trust list ``seq``, only for the lease's current holder.

        Raises :class:`ConflictError` ``trust.not_author`` when ``holder`` does not hold an
        unexpired lease, or when a state of a higher ``seq`` is stored (the sequence never
        goes back).
        """
        with self._db.write() as conn:
            lease = conn.execute("SELECT holder, expires FROM lease WHERE id = 1").fetchone()
            if lease is None or lease[0] != holder or float(lease[1]) <= now:
                raise _not_author("this replica is not the trust list's author (no lease)")
            row = conn.execute("SELECT seq FROM state WHERE id = 1").fetchone()
            if row is not None and int(row[0]) > seq:
                raise _not_author(
                    f"the stored trust list is at seq {int(row[0])}, beyond {seq}: "
                    "another author published since"
                )
            conn.execute(
                "INSERT INTO state (id, seq, document) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq,"
                " document = excluded.document",
                (seq, document),
            )


class PostgresAuthorityStore(AuthorityStore):
    """The state and lease in the schema ``authority`` of national's PostgreSQL database."""

    def __init__(self, dsn: Secret) -> None:
        super().__init__(
            PgConnections(dsn, schema="authority", prefix="trust", store="trust authority state")
        )


class SqliteAuthorityStore(AuthorityStore):
    """The state and lease in one SQLite file (the worker processes of one machine)."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            Connections(
                path,
                busy_timeout=5.0,
                synchronous="FULL",
                prefix="trust",
                store="trust authority state",
            )
        )
