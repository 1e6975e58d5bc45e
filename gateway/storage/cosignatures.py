"""Witness cosignatures of tree heads, in one store of the node: :class:`SqliteCosignatures`
(a file under its data directory) or :class:`PostgresCosignatures` (the schema
``cosignatures`` of its PostgreSQL database, shared by every replica), both
:class:`SqlCosignatures`.

One table serves both ends of witnessing (:mod:`gateway.audit.cosignatures`):

- as a **witness**, the node keeps every cosignature it made of a partner's head (``witness``
  is this node), with that head: the last one of each partner is where its consistency
  checks resume after a restart (never a rollback), and they are what it publishes;
- as an **origin**, it keeps the partners' cosignatures of its own heads (``origin`` is this
  node), gathered from them: what its issuance proofs carry.

A row is written once (the first cosignature of a head by a witness is kept: the oldest is
the one that proves the most) and never changed (a trigger refuses an update on either
backend). SQLite: WAL mode, ``synchronous = FULL``: a cosignature the node has published or
will rely on survives a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from gateway._internal.postgres import PgConnections
from gateway._internal.secret import Secret
from gateway._internal.sql import POSTGRESQL, SQLITE, Database, Store
from gateway._internal.sqlite import Connections
from gateway.audit.cosignatures import Cosignature
from gateway.audit.heads import SignedTreeHead
from gateway.errors import ConfigError
from gateway.ids import NodeId

SCHEMA_VERSION: Final = 1
_SQLITE_SCHEMA: Final = (
    """
    CREATE TABLE cosignatures (
        origin TEXT NOT NULL,
        witness TEXT NOT NULL,
        tree_size INTEGER NOT NULL,
        root_hash BLOB NOT NULL,
        head_issued_at REAL NOT NULL,
        cosigned_at REAL NOT NULL,
        head TEXT NOT NULL,
        token TEXT NOT NULL,
        PRIMARY KEY (origin, witness, tree_size)
    ) STRICT, WITHOUT ROWID
    """,
    "CREATE INDEX cosignatures_by_head ON cosignatures (origin, tree_size, cosigned_at)",
    """
    CREATE TRIGGER cosignatures_no_update BEFORE UPDATE ON cosignatures
    BEGIN SELECT RAISE(ABORT, 'cosignatures are never changed'); END
    """,
)
_POSTGRESQL_SCHEMA: Final = (
    """
    CREATE TABLE cosignatures (
        origin TEXT NOT NULL,
        witness TEXT NOT NULL,
        tree_size BIGINT NOT NULL,
        root_hash BYTEA NOT NULL,
        head_issued_at DOUBLE PRECISION NOT NULL,
        cosigned_at DOUBLE PRECISION NOT NULL,
        head TEXT NOT NULL,
        token TEXT NOT NULL,
        PRIMARY KEY (origin, witness, tree_size)
    )
    """,
    "CREATE INDEX cosignatures_by_head ON cosignatures (origin, tree_size, cosigned_at)",
    """
    CREATE FUNCTION never_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'cosignatures are never changed'; END $$
    """,
    """
    CREATE TRIGGER cosignatures_no_update BEFORE UPDATE ON cosignatures
    FOR EACH ROW EXECUTE FUNCTION never_changed()
    """,
)
SCHEMAS: Final = {SQLITE: _SQLITE_SCHEMA, POSTGRESQL: _POSTGRESQL_SCHEMA}
"""Version 1 of the store's tables, per dialect."""


def _cosignature(row: Sequence[Any]) -> Cosignature:
    witness, origin, tree_size, root_hash, head_issued_at, cosigned_at, token = row
    return Cosignature(
        NodeId(str(witness)),
        NodeId(str(origin)),
        int(tree_size),
        bytes(root_hash),
        float(head_issued_at),
        float(cosigned_at),
        str(token),
    )


class SqlCosignatures(Store):
    """Cosignatures made by this node and gathered for its heads (see the module doc), over
    an open :class:`~gateway._internal.sql.Database` (migrated here; closed by :meth:`close`).
    ``where`` names the store in a ``witness.open`` error."""

    def __init__(self, db: Database, *, where: str) -> None:
        self._db = db
        try:
            db.migrate(SCHEMAS[db.dialect], SCHEMA_VERSION)
        except BaseException as exc:
            db.close()
            if isinstance(exc, db.Error):
                raise ConfigError(
                    f"cannot open the cosignatures at {where}", code="witness.open"
                ) from exc
            raise

    def add(self, cosignature: Cosignature, head: str) -> bool:
        """Keep ``cosignature`` of ``head`` (its compact JWS); False if this witness's
        cosignature of that origin's head of that size is already kept (the older stays)."""
        with self._db.write() as conn:
            inserted = conn.execute(
                "INSERT INTO cosignatures (witness, origin, tree_size, root_hash, head_issued_at,"
                " cosigned_at, token, head) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (
                    cosignature.witness,
                    cosignature.origin,
                    cosignature.tree_size,
                    cosignature.root_hash,
                    cosignature.head_issued_at,
                    cosignature.cosigned_at,
                    cosignature.token,
                    head,
                ),
            ).rowcount
        return inserted == 1

    def last_cosigned(self, witness: NodeId) -> dict[NodeId, SignedTreeHead]:
        """The largest head of each origin ``witness`` cosigned (for this node as witness:
        where its consistency checks of each partner resume)."""
        with self._db.read(snapshot=True) as conn:
            rows = conn.execute(
                "SELECT origin, tree_size, root_hash, head_issued_at, head FROM cosignatures c"
                " WHERE witness = ? AND tree_size = (SELECT max(tree_size) FROM cosignatures"
                " WHERE witness = c.witness AND origin = c.origin)",
                (witness,),
            ).fetchall()
        return {
            NodeId(origin): SignedTreeHead(
                NodeId(origin), int(size), bytes(root), float(issued_at), str(head)
            )
            for origin, size, root, issued_at, head in rows
        }

    def largest_size(self, *, origin: NodeId, witness: NodeId) -> int | None:
        """The size of the largest head of ``origin`` kept with ``witness``'s cosignature."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT max(tree_size) FROM cosignatures WHERE origin = ? AND witness = ?",
                (origin, witness),
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def made_by(
        self, witness: NodeId, *, origin: NodeId, after_size: int, limit: int
    ) -> list[Cosignature]:
        """``witness``'s cosignatures of ``origin``'s heads larger than ``after_size``,
        smallest first, at most ``limit``."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT witness, origin, tree_size, root_hash, head_issued_at, cosigned_at, token"
                " FROM cosignatures WHERE witness = ? AND origin = ?"
                " AND tree_size > ? ORDER BY tree_size LIMIT ?",
                (witness, origin, after_size, limit),
            ).fetchall()
        return [_cosignature(tuple(row)) for row in rows]

    def first_witnessed(
        self, origin: NodeId, *, larger_than: int, before: float, quorum: int
    ) -> tuple[str, list[Cosignature]] | None:
        """The smallest head of ``origin`` larger than ``larger_than`` entries, signed and
        cosigned by at least ``quorum`` distinct other nodes strictly before ``before``: the
        head (compact JWS) and those cosignatures (one a witness, the oldest). None if none."""
        with self._db.read(snapshot=True) as conn:
            row = conn.execute(
                "SELECT tree_size FROM cosignatures WHERE origin = ? AND witness != origin"
                " AND tree_size > ? AND head_issued_at < ? AND cosigned_at < ?"
                " GROUP BY tree_size HAVING count(DISTINCT witness) >= ?"
                " ORDER BY tree_size LIMIT 1",
                (origin, larger_than, before, before, quorum),
            ).fetchone()
            if row is None:
                return None
            rows = conn.execute(
                "SELECT witness, origin, tree_size, root_hash, head_issued_at, cosigned_at, token,"
                " head FROM cosignatures WHERE origin = ? AND tree_size = ?"
                " AND witness != origin AND cosigned_at < ? ORDER BY cosigned_at",
                (origin, int(row[0]), before),
            ).fetchall()
        cosignatures = [_cosignature(tuple(r[:-1])) for r in rows]
        return str(rows[0][-1]), cosignatures


class SqliteCosignatures(SqlCosignatures):
    """The cosignatures in one SQLite file (``cosignatures.sqlite3``) of the node."""

    def __init__(self, path: Path) -> None:
        db = Connections(
            path, busy_timeout=5.0, synchronous="FULL", prefix="witness", store="cosignatures"
        )
        super().__init__(db, where=str(path))


class PostgresCosignatures(SqlCosignatures):
    """The cosignatures in the schema ``cosignatures`` of the node's PostgreSQL database,
    shared by every replica of the node."""

    def __init__(self, dsn: Secret) -> None:
        db = PgConnections(dsn, schema="cosignatures", prefix="witness", store="cosignatures")
        super().__init__(db, where="the node's PostgreSQL database (schema cosignatures)")
