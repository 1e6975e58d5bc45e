"""The audit log's store: append-only entries with the Merkle tree's leaf hashes, and heads.

:class:`AuditLog` is the one interface, over either backend: :class:`SqliteAuditLog` (one
file in WAL mode with ``synchronous = FULL``) or :class:`PostgresAuditLog` (the schema
``audit`` of the node's database, which every replica of the node appends to). Either way
:meth:`AuditLog.append` returns after its transaction is durably committed, so an
acknowledged record survives ``kill -9`` (and, with SQLite's FULL or PostgreSQL's default
``synchronous_commit``, a power cut). Appends are serialised by the database (SQLite's one
writer; PostgreSQL's advisory lock of the store), and each numbers its entries after the
table's last one, read inside the same transaction: however many processes or replicas
append, the log has one sequence and one Merkle tree. Writers and readers follow
:mod:`gateway.storage.registry`: a writer and a read-only reader connection, each behind its
own lock. What a record may hold is
:mod:`gateway.audit.records`'s business; the signed heads are :mod:`gateway.audit.heads`'.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Final

from gateway._internal.postgres import PgArray, PgConnections
from gateway._internal.secret import Secret
from gateway._internal.sql import (
    POSTGRESQL,
    SQLITE,
    Database,
    PendingWrite,
    SqlConnection,
    Statement,
    Store,
)
from gateway._internal.sqlite import Connections, storage_error
from gateway.audit.heads import SignedTreeHead, sign_tree_head
from gateway.audit.records import (
    AuditItem,
    AuditKind,
    AuditRecord,
    CheckedItem,
    _canonical,
    check_items,
    parse_entry,
)
from gateway.certificates.revocation import IssuanceProof
from gateway.clock import Clock
from gateway.crypto.merkle import (
    MerkleLog,
    leaf_hash,
)
from gateway.crypto.seals import Signer
from gateway.errors import (
    ConfigError,
    GatewayError,
    InputError,
    NotFoundError,
    VerificationError,
)
from gateway.ids import NodeId

# FULL: a commit is on disk when append returns, so an acknowledged record survives
# kill -9 and power loss (NORMAL in WAL mode may lose the last commits on power loss).
_SYNCHRONOUS = "FULL"
_AUTOCHECKPOINT_PAGES = 65_536
"""256 MiB of WAL at 4 KiB pages: reached only when no node checkpoints the log."""
MAX_PAGE: Final = 1000
RECOVERY_WINDOW: Final = 100_000
"""Entries :meth:`AuditLog.append_missing` looks back over for a record already there."""
SCHEMA_VERSION: Final = 1


# --- the schema, per dialect ------------------------------------------------------------------

_SQLITE_SCHEMA = (
    """
    CREATE TABLE entries (
        seq INTEGER PRIMARY KEY,
        entry BLOB NOT NULL,
        leaf_hash BLOB NOT NULL
    ) STRICT
    """,
    """
    CREATE TABLE heads (
        id INTEGER PRIMARY KEY,
        tree_size INTEGER NOT NULL,
        root_hash BLOB NOT NULL,
        issued_at REAL NOT NULL,
        token TEXT NOT NULL
    ) STRICT
    """,
    "CREATE INDEX heads_by_size ON heads (tree_size)",
    # Append-only by construction: the gateway never updates or deletes an entry or a head.
    # (Someone with the file can drop these; verify_log is what catches that.)
    """
    CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END
    """,
    """
    CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END
    """,
    """
    CREATE TRIGGER heads_no_update BEFORE UPDATE ON heads
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END
    """,
    """
    CREATE TRIGGER heads_no_delete BEFORE DELETE ON heads
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END
    """,
)
_POSTGRESQL_SCHEMA = (
    """
    CREATE TABLE entries (
        seq BIGINT PRIMARY KEY,
        entry BYTEA NOT NULL,
        leaf_hash BYTEA NOT NULL
    )
    """,
    """
    CREATE TABLE heads (
        id BIGSERIAL PRIMARY KEY,
        tree_size BIGINT NOT NULL,
        root_hash BYTEA NOT NULL,
        issued_at DOUBLE PRECISION NOT NULL,
        token TEXT NOT NULL
    )
    """,
    "CREATE INDEX heads_by_size ON heads (tree_size)",
    """
    CREATE FUNCTION append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$
    """,
    """
    CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION append_only()
    """,
    """
    CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION append_only()
    """,
    """
    CREATE TRIGGER heads_append_only BEFORE UPDATE OR DELETE ON heads
    FOR EACH ROW EXECUTE FUNCTION append_only()
    """,
    """
    CREATE TRIGGER heads_no_truncate BEFORE TRUNCATE ON heads
    FOR EACH STATEMENT EXECUTE FUNCTION append_only()
    """,
)
SCHEMAS: Final = {SQLITE: _SQLITE_SCHEMA, POSTGRESQL: _POSTGRESQL_SCHEMA}
"""Version 1 of the store's tables, per dialect."""
_FIND_ISSUANCE: Final = {
    SQLITE: "SELECT entry FROM entries WHERE json_extract(CAST(entry AS TEXT), '$.kind') = ?"
    " AND json_extract(CAST(entry AS TEXT), '$.subject') = ? ORDER BY seq LIMIT 1",
    POSTGRESQL: "SELECT entry FROM entries WHERE convert_from(entry, 'UTF8')::jsonb ->> 'kind' = ?"
    " AND convert_from(entry, 'UTF8')::jsonb ->> 'subject' = ? ORDER BY seq LIMIT 1",
}

_TOP = "SELECT max(seq) FROM entries"
_INSERT = "INSERT INTO entries (seq, entry, leaf_hash) VALUES (?, ?, ?)"
_INSERT_ARRAYS = (
    "INSERT INTO entries (seq, entry, leaf_hash)"
    " SELECT * FROM unnest(?::bigint[], ?::bytea[], ?::bytea[])"
)
"""A group's entries in one statement (PostgreSQL): one round trip, whatever its size."""


def _inserted(records: list[AuditRecord], entries: list[bytes], leaves: list[bytes]) -> Statement:
    """The statement that writes a group's entries on PostgreSQL (:data:`_INSERT_ARRAYS`)."""
    return (
        _INSERT_ARRAYS,
        (PgArray.int8([r.seq for r in records]), PgArray.bytea(entries), PgArray.bytea(leaves)),
    )


def _since(have: int) -> str:
    """What the cache lacks from ``have`` on: each entry's seq and leaf hash, and the last
    one's entry (for its time). A statement without parameters (a simple query may carry
    several statements): ``have`` is the cache's own count, an ``int``."""
    first = int(have)
    select = "SELECT seq, leaf_hash, CASE WHEN seq = (SELECT max(seq) FROM entries) THEN entry"
    return f"{select} END FROM entries WHERE seq >= {first} ORDER BY seq"


def _removed(size: int, have: int) -> VerificationError:
    return VerificationError(
        f"the audit log holds {size} entries but {have} were seen: "
        f"entries from seq {size} were removed",
        code="audit.removed",
    )


def _size_of(top: list[Any]) -> int:
    """The log's size from the rows of :data:`_TOP`."""
    value = top[0][0] if top else None
    return 0 if value is None else int(value) + 1


def audit_storage_error(exc: sqlite3.Error) -> GatewayError:
    return storage_error(exc, prefix="audit", store="audit log")


def _bad_range(detail: str) -> InputError:
    return InputError(detail, code="audit.bad_range")


class StagedAppend:
    """Audit records written in an open transaction (:meth:`AuditLog.stage`)."""

    def __init__(
        self,
        pending: PendingWrite,
        records: list[AuditRecord],
        on_commit: Callable[[], None],
        last: Statement | None = None,
    ) -> None:
        self._pending = pending
        self._records = records
        self._on_commit = on_commit
        self._last = last

    def commit(self) -> list[AuditRecord]:
        """Commit (the durable point: with ``synchronous = FULL``, the disk flush); the records."""
        self._pending.commit(self._last)
        self._on_commit()
        return self._records

    def rollback(self) -> None:
        self._pending.rollback()


class AuditLog(Store):
    """The audit log of ``node`` over an open database; tree heads signed by ``signer``.

    The leaf hashes are cached in memory (32 bytes an entry), loaded at open and extended
    after each commit; before any head or proof, the cache is brought up to the table's size
    (another process or replica may have appended), and a table smaller than the cache is an
    error. The database is migrated here, and closed by :meth:`close`.
    """

    def __init__(self, db: Database, *, node: NodeId, signer: Signer, clock: Clock) -> None:
        self._node = node
        self._signer = signer
        self._clock = clock
        self._cache_lock = threading.Lock()
        self._leaves = MerkleLog()  # every leaf hash, with its subtrees' roots
        self._last_at = 0.0
        self._db = db
        try:
            db.migrate(SCHEMAS[db.dialect], SCHEMA_VERSION)
            with db.read(snapshot=True) as conn:
                self._sync(conn)
        except BaseException:
            db.close()
            raise

    @property
    def node(self) -> NodeId:
        return self._node

    @property
    def dialect(self) -> str:
        return self._db.dialect

    def snapshot(self) -> AbstractContextManager[SqlConnection]:
        """A read transaction over the whole log (for :func:`~.audit_verify.verify_log`)."""
        return self._db.read(snapshot=True)

    # --- plumbing ----------------------------------------------------------------------------

    @staticmethod
    def _table_size(conn: SqlConnection) -> int:
        return _size_of(conn.execute(_TOP).fetchall())

    def _sync(
        self, conn: SqlConnection, *, writing: bool = False, top: list[Any] | None = None
    ) -> int:
        """Bring the leaf cache up to the table (read in ``conn``'s snapshot); its size.
        ``top``: the rows of :data:`_TOP`, already read in that snapshot."""
        size = self._table_size(conn) if top is None else _size_of(top)
        with self._cache_lock:
            have = len(self._leaves)
            if size < have and not writing and self._fresh_size() >= have:
                # A read snapshot taken before this process's latest commit: the cache is
                # ahead, not wrong (a fresh look at the file shows the entries are there).
                return size
            if size < have:
                raise _removed(size, have)
            if size > have:
                self._absorb(have, size, conn.execute(_since(have)).fetchall())
            return size

    def _absorb(self, have: int, size: int, rows: list[Any]) -> None:
        """Extend the cache (its lock held) from ``have`` to ``size`` with the rows of
        :func:`_since` from ``have`` to ``size - 1``; from where it stands, should another
        thread have extended it meanwhile from the same committed rows."""
        if [seq for seq, _, _ in rows] != list(range(have, size)):
            raise VerificationError("the audit log has a gap in its sequence", code="audit.removed")
        now = len(self._leaves)
        if now < have:
            raise VerificationError("the audit log's cache went back", code="audit.removed")
        self._leaves.extend([bytes(leaf) for _, leaf, _ in rows[now - have :]])
        if rows:
            self._last_at = max(self._last_at, parse_entry(bytes(rows[-1][2])).at)

    def _fresh_size(self) -> int:
        """The table's size on a new connection: no snapshot, no lock of ours (rare path)."""
        with self._db.fresh() as conn:
            return self._table_size(conn)

    def _checked_size(self, upto: int) -> int:
        """The log's size, having checked that ``upto`` is within it."""
        with self._db.read(snapshot=True) as conn:
            size = self._sync(conn)
        if not 0 <= upto <= size:
            raise _bad_range(f"the audit log has {size} entries, not {upto}")
        return size

    # --- writing -----------------------------------------------------------------------------

    def append(
        self,
        kind: AuditKind,
        actor: str,
        subject: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Append one record; returns it once durably committed."""
        return self.append_many([(kind, actor, subject, details)])[0]

    def append_many(self, items: Iterable[AuditItem]) -> list[AuditRecord]:
        """Append records in one transaction, in order; returns them once committed."""
        return self.append_checked(check_items(items))

    def append_checked(self, checked: Sequence[CheckedItem]) -> list[AuditRecord]:
        """Append records :meth:`check` returned, in one transaction; once committed."""
        if not checked:
            return []
        return self.stage(checked).commit()

    def stage(self, checked: Sequence[CheckedItem]) -> StagedAppend:
        """Records :meth:`check` returned, written in a transaction not yet committed.

        The log's writer is taken until the returned :class:`StagedAppend` is committed or
        rolled back (exactly once, from any thread); nothing is visible before the commit.
        """
        if not checked:
            raise ValueError("nothing to stage")
        return self._stage(lambda _conn, _size: checked)

    def append_missing(
        self, checked: Sequence[CheckedItem], *, window: int = RECOVERY_WINDOW
    ) -> list[AuditRecord]:
        """Append those of ``checked`` not among the log's last ``window`` entries (same kind,
        actor, subject and details); returns the records appended.

        For records that may already have been appended once (a node recovering its outbox
        after a crash). The look and the append are one transaction, so two processes
        recovering at once append each record once.
        """
        if not checked:
            return []

        def missing(conn: SqlConnection, size: int) -> Sequence[CheckedItem]:
            rows = conn.execute(
                "SELECT entry FROM entries WHERE seq >= ? ORDER BY seq", (max(0, size - window),)
            ).fetchall()
            present = {_canonical(parse_entry(bytes(entry))) for (entry,) in rows}
            return [c for c in checked if _canonical(c) not in present]

        return self._stage(missing).commit()

    def _stage(self, select: Callable[[SqlConnection, int], Sequence[CheckedItem]]) -> StagedAppend:
        """Begin a write, catch up with any other writer, append what ``select`` (given the
        connection and the log's size) chooses; the transaction is left open."""
        pending = self._db.begin(read=_TOP)
        last: Statement | None = None
        with pending.rolled_back_on_error() as conn:
            # catch up with any other writer, then number after the table's last entry
            start = self._sync(conn, writing=True, top=pending.rows)
            at, records, entries, leaves = self._numbered(start, select(conn, start))
            if self._db.dialect == POSTGRESQL:  # sent with the COMMIT: one round trip
                last = _inserted(records, entries, leaves)
            else:  # written now (on the event loop), committed on the commit thread
                conn.executemany(
                    _INSERT,
                    [(r.seq, e, leaf) for r, e, leaf in zip(records, entries, leaves, strict=True)],
                )
        return StagedAppend(pending, records, lambda: self._committed(start, at, leaves), last)

    async def append_on_loop(self, checked: Sequence[CheckedItem]) -> list[AuditRecord]:
        """:meth:`append_checked` from the event loop, which never waits on the database
        (PostgreSQL): the transaction, the log's lock and its size in one round trip, the
        entries and the ``COMMIT`` in another; returns the records once committed."""
        db = self._db
        if not isinstance(db, PgConnections):
            raise TypeError("appends from the event loop are PostgreSQL's")
        if not checked:
            return []
        with self._cache_lock:
            have = len(self._leaves)
        # one round trip: the transaction, the log's lock, its size and what the cache lacks
        transaction = await db.begin_on_loop(_TOP, _since(have))
        try:
            top, since = transaction.results
            # catch up with any other writer (replica), then number after the last entry
            start = size = _size_of(top)
            if size < have:
                raise _removed(size, have)
            if size > have:
                with self._cache_lock:
                    self._absorb(have, size, since)
            at, records, entries, leaves = self._numbered(start, checked)
            await transaction.commit(_inserted(records, entries, leaves))
        except Exception:
            # nothing of it stays, and the log's lock is free at once (a no-op once ended)
            await transaction.rollback()
            raise
        except BaseException:  # cancelled: no round trip now; the server rolls back
            transaction.abort()
            raise
        self._committed(start, at, leaves)
        return records

    def _numbered(
        self, start: int, chosen: Sequence[CheckedItem]
    ) -> tuple[float, list[AuditRecord], list[bytes], list[bytes]]:
        """``chosen`` as the records from ``start``, their entries and their leaf hashes."""
        at = max(self._clock.now(), self._last_at)  # timestamps never go back
        records = [
            AuditRecord(start + i, at, c.kind, self._node, c.actor, c.subject, c.details)
            for i, c in enumerate(chosen)
        ]
        entries = [r.entry() for r in records]
        return at, records, entries, [leaf_hash(entry) for entry in entries]

    def _committed(self, start: int, at: float, leaves: list[bytes]) -> None:
        """Committed: only now does the cache move."""
        with self._cache_lock:
            if len(self._leaves) == start:
                self._leaves.extend(leaves)
                self._last_at = max(self._last_at, at)

    # --- reading -----------------------------------------------------------------------------

    def size(self) -> int:
        with self._db.read(snapshot=True) as conn:
            return self._sync(conn)

    def entries(self, start: int, end: int) -> list[AuditRecord]:
        """Records ``start`` to ``end`` (exclusive), at most :data:`MAX_PAGE` of them."""
        if start < 0 or end < start:
            raise _bad_range(f"bad audit entry range {start}..{end}")
        end = min(end, start + MAX_PAGE)
        with self._db.read(snapshot=True) as conn:
            rows = conn.execute(
                "SELECT entry FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq", (start, end)
            ).fetchall()
        return [parse_entry(bytes(entry)) for (entry,) in rows]

    def leaf_hashes(self, upto: int) -> list[bytes]:
        self._checked_size(upto)
        with self._cache_lock:
            return self._leaves.prefix(upto)

    # --- heads and proofs --------------------------------------------------------------------

    def tree_head(self, size: int | None = None) -> SignedTreeHead:
        """A signed head of the tree at ``size`` (default: now); signed heads are kept."""
        with self._db.read(snapshot=True) as conn:
            current = self._sync(conn)
        tree_size = current if size is None else size
        self._checked_size(tree_size)
        with self._cache_lock:
            root_hash = self._leaves.root(tree_size)
        with self._db.write() as conn:
            # A head already signed for this size is the head: same size, same root.
            row = conn.execute(
                "SELECT root_hash, issued_at, token FROM heads WHERE tree_size = ?"
                " ORDER BY id DESC LIMIT 1",
                (tree_size,),
            ).fetchone()
            if row is not None and bytes(row[0]) == root_hash:
                return SignedTreeHead(self._node, tree_size, root_hash, float(row[1]), row[2])
            head = sign_tree_head(
                self._signer,
                node=self._node,
                tree_size=tree_size,
                root_hash=root_hash,
                issued_at=self._clock.now(),
            )
            conn.execute(
                "INSERT INTO heads (tree_size, root_hash, issued_at, token) VALUES (?, ?, ?, ?)",
                (head.tree_size, head.root_hash, head.issued_at, head.token),
            )
        return head

    def find_issuance(self, certificate_id: str) -> AuditRecord | None:
        """The issuance record of ``certificate_id`` in this log, if any."""
        with self._db.read(snapshot=True) as conn:
            row = conn.execute(
                _FIND_ISSUANCE[self._db.dialect], (AuditKind.ISSUANCE.value, certificate_id)
            ).fetchone()
        return None if row is None else parse_entry(bytes(row[0]))

    def head_covering(self, seq: int, *, signed_before: float) -> SignedTreeHead | None:
        """The oldest signed head that includes entry ``seq``, signed before a time."""
        with self._db.read(snapshot=True) as conn:
            row = conn.execute(
                "SELECT tree_size, root_hash, issued_at, token FROM heads"
                " WHERE tree_size > ? AND issued_at < ? ORDER BY issued_at LIMIT 1",
                (seq, signed_before),
            ).fetchone()
        if row is None:
            return None
        return SignedTreeHead(self._node, int(row[0]), bytes(row[1]), float(row[2]), str(row[3]))

    def head_at(self, tree_size: int) -> SignedTreeHead | None:
        """The head this log signed for ``tree_size`` entries (the oldest), if any."""
        with self._db.read(snapshot=True) as conn:
            row = conn.execute(
                "SELECT root_hash, issued_at, token FROM heads WHERE tree_size = ?"
                " ORDER BY id LIMIT 1",
                (tree_size,),
            ).fetchone()
        if row is None:
            return None
        return SignedTreeHead(self._node, tree_size, bytes(row[0]), float(row[1]), str(row[2]))

    def inclusion_proof(self, seq: int, tree_size: int) -> list[bytes]:
        if not 0 <= seq < tree_size:
            raise _bad_range(f"entry {seq} is not in a tree of {tree_size} entries")
        self._checked_size(tree_size)
        with self._cache_lock:
            return self._leaves.inclusion_proof(seq, tree_size)

    def issuance_proof(self, certificate_id: str, *, revoked_at: float) -> IssuanceProof:
        """Prove from this log that ``certificate_id`` was issued before ``revoked_at``."""
        record = self.find_issuance(certificate_id)
        if record is None:
            raise NotFoundError(
                "no issuance of that certificate in this log", code="audit.no_proof"
            )
        head = self.head_covering(record.seq, signed_before=revoked_at)
        if head is None:
            raise NotFoundError(
                "no signed tree head from before that time includes the issuance",
                code="audit.no_proof",
            )
        path = self.inclusion_proof(record.seq, head.tree_size)
        return IssuanceProof(record.entry(), record.seq, head.token, tuple(path))

    def consistency_proof(self, m: int, n: int) -> list[bytes]:
        if not 0 <= m <= n:
            raise _bad_range(f"cannot prove a tree of {m} entries consistent with one of {n}")
        self._checked_size(n)
        with self._cache_lock:
            return self._leaves.consistency_proof(m, n)


class SqliteAuditLog(AuditLog):
    """The audit log in one SQLite file (``audit.sqlite3``), WAL mode, ``synchronous = FULL``."""

    _db: Connections

    def __init__(
        self,
        path: Path,
        *,
        node: NodeId,
        signer: Signer,
        clock: Clock,
        busy_timeout: float = 5.0,
    ) -> None:
        self._path = path
        db = Connections(
            path,
            busy_timeout=busy_timeout,
            synchronous=_SYNCHRONOUS,
            prefix="audit",
            store="audit log",
        )
        try:
            # Checkpoints are :meth:`checkpoint`'s, in the background: a commit never copies
            # the WAL into the database (the safety net below only for a log nobody serves).
            db.writer.execute(f"PRAGMA wal_autocheckpoint = {_AUTOCHECKPOINT_PAGES}")
        except sqlite3.Error as exc:
            db.close()
            raise ConfigError(f"cannot open the audit log at {path}", code="audit.open") from exc
        try:
            super().__init__(db, node=node, signer=signer, clock=clock)
        except ConfigError as exc:
            if exc.code == "audit.open":
                raise ConfigError(
                    f"cannot open the audit log at {path}", code="audit.open"
                ) from exc
            raise

    @property
    def path(self) -> Path:
        return self._path


class PostgresAuditLog(AuditLog):
    """The audit log in the schema ``audit`` of the node's PostgreSQL database: every replica
    of the node appends to the one log."""

    def __init__(self, dsn: Secret, *, node: NodeId, signer: Signer, clock: Clock) -> None:
        db = PgConnections(dsn, schema="audit", prefix="audit", store="audit log")
        super().__init__(db, node=node, signer=signer, clock=clock)
