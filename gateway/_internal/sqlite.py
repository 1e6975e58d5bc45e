"""SQLite plumbing shared by the node's stores (registry, catalog, audit log)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from gateway._internal.sql import Statement, Transaction
from gateway.errors import ConfigError, StorageError


def create_private(path: Path) -> None:
    """Create the database file readable by its owner only (SQLite's -wal/-shm copy it)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def storage_error(exc: sqlite3.Error, *, prefix: str, store: str) -> StorageError:
    """``<prefix>.busy`` when another writer holds the file, else ``<prefix>.storage``."""
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return StorageError(f"the {store} is busy", code=f"{prefix}.busy", log_detail=str(exc))
    return StorageError(f"the {store} failed", code=f"{prefix}.storage", log_detail=repr(exc))


class PendingWrite(Transaction[sqlite3.Connection]):
    """A write transaction begun by :meth:`Connections.begin` (:class:`Transaction`).

    :meth:`commit` may run on another thread than the one that began the transaction (the
    lock is a plain lock, and the connection is shared): a node commits its audit records on
    a thread of its own, so the event loop does not wait for the disk.
    """

    error = sqlite3.Error

    def _commit(self, last: Statement | None) -> None:
        """``last``, then ``COMMIT`` (durable per the connection's ``synchronous``)."""
        if last is not None:
            self.conn.execute(*last)
        self.conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def connect(
    path: Path,
    busy_timeout: float,
    *,
    synchronous: str,
    read_only: bool = False,
    foreign_keys: bool = False,
) -> sqlite3.Connection:
    """A WAL-mode connection in autocommit (transactions are explicit), shareable by threads.

    ``synchronous``: ``NORMAL`` survives a process crash; ``FULL`` also a power cut.
    Raises ``sqlite3.Error`` (callers translate it) when the file cannot use WAL.
    """
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"unsupported synchronous mode {synchronous!r}")
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL not supported")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


class Connections:
    """A store's two connections to its SQLite file, and what every store does with them.

    The writer runs one transaction at a time under a lock (:meth:`write`); the reader is
    query-only (:meth:`read`). Both are closed once, under both locks (:meth:`close`); after
    that every use raises ``StorageError`` ``<prefix>.closed``. ``prefix`` and ``store`` name
    the store in error codes and messages (``registry``, "certificate store").
    The same shape as :class:`gateway._internal.postgres.PgConnections`: a store written over
    one runs over the other, spelling its schema per :attr:`dialect`.
    """

    dialect: Final = "sqlite"
    Error = sqlite3.Error
    IntegrityError = sqlite3.IntegrityError

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float,
        synchronous: str,
        prefix: str,
        store: str,
        foreign_keys: bool = False,
    ) -> None:
        """Open (creating the file 0600) the writer, then the reader; ``ConfigError``
        ``<prefix>.open`` when the file cannot be opened in WAL mode."""
        self._path = path
        self._prefix = prefix
        self._store = store
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._checkpointer: sqlite3.Connection | None = None
        self._closed = False
        try:
            create_private(path)
            self.writer = connect(
                path, busy_timeout, synchronous=synchronous, foreign_keys=foreign_keys
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._cannot_open(path) from exc
        try:
            self.reader = connect(
                path,
                busy_timeout,
                synchronous=synchronous,
                read_only=True,
                foreign_keys=foreign_keys,
            )
        except BaseException as exc:
            self.writer.close()
            if isinstance(exc, sqlite3.Error):
                raise self._cannot_open(path) from exc
            raise

    def migrate(
        self,
        schema: Sequence[str],
        version: int,
        *,
        seed: Callable[[sqlite3.Connection], None] | None = None,
        upgrades: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        """Create ``schema`` in a new file (then ``seed`` it, in the same transaction) and
        stamp it ``version``, or bring an existing file to ``version``: ``upgrades[v]`` are
        the statements from version ``v`` to ``v + 1``, all steps in one transaction.

        Raises ``ConfigError`` ``<prefix>.schema`` for a file of a version it cannot bring to
        ``version``, and ``<prefix>.open`` when SQLite fails.
        """
        steps = upgrades or {}
        conn = self.writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute("PRAGMA user_version").fetchone()[0]
                if found == 0:
                    for statement in schema:
                        conn.execute(statement)
                    if seed is not None:
                        seed(conn)
                    conn.execute(f"PRAGMA user_version = {version}")
                elif found != version:
                    if found > version or any(v not in steps for v in range(found, version)):
                        raise ConfigError(
                            f"{self._store} {self._path} has schema version {found}; "
                            f"this gateway knows version {version}",
                            code=f"{self._prefix}.schema",
                        )
                    for v in range(found, version):
                        for statement in steps[v]:
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {version}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._cannot_open(self._path) from exc

    def _cannot_open(self, path: Path) -> ConfigError:
        return ConfigError(f"cannot open the {self._store} at {path}", code=f"{self._prefix}.open")

    def translate(self, exc: sqlite3.Error) -> StorageError:
        """``<prefix>.busy`` or ``<prefix>.storage`` (see :func:`storage_error`)."""
        return storage_error(exc, prefix=self._prefix, store=self._store)

    def check_open(self) -> None:
        if self._closed:
            raise StorageError(f"the {self._store} is closed", code=f"{self._prefix}.closed")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer, under the write lock: ``BEGIN IMMEDIATE``
        (which also keeps other processes out) … ``COMMIT``, or ``ROLLBACK`` on any error;
        errors translated."""
        pending = self.begin()
        with pending.rolled_back_on_error() as conn:
            yield conn
        pending.commit()

    def begin(self, *, read: str | None = None) -> PendingWrite:
        """A write transaction begun (``BEGIN IMMEDIATE``) under the write lock, to be ended
        by exactly one :meth:`PendingWrite.commit` or :meth:`PendingWrite.rollback`, from any
        thread: the lock is held until then. ``read``: a statement whose rows the
        transaction starts with (:attr:`PendingWrite.rows`). Errors translated."""
        self._write_lock.acquire()
        try:
            self.check_open()
            try:
                self.writer.execute("BEGIN IMMEDIATE")
                try:
                    rows = [] if read is None else self.writer.execute(read).fetchall()
                except sqlite3.Error:
                    self.writer.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self.translate(exc) from exc
        except BaseException:
            self._write_lock.release()
            raise
        return PendingWrite(self.writer, self._write_lock, self.translate, rows)

    @contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[sqlite3.Connection]:
        """The reader, under the read lock; errors translated. ``snapshot``: inside one
        read transaction, so every statement sees the same state of the file."""
        with self._read_lock:
            self.check_open()
            conn = self.reader
            try:
                if not snapshot:
                    yield conn
                    return
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self.translate(exc) from exc

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read statement, for the event loop. In process a read takes
        microseconds: it runs right here, under the read lock (as :meth:`read`)."""
        with self.read() as conn:
            return conn.execute(sql, params).fetchall()

    @contextmanager
    def fresh(self) -> Iterator[sqlite3.Connection]:
        """A new read-only connection of its own: no snapshot, no lock of ours (rare paths)."""
        self.check_open()
        try:
            conn = sqlite3.connect(f"{self._path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc
        finally:
            conn.close()

    def checkpoint(self) -> None:
        """Copy committed WAL frames into the database (SQLite's PASSIVE checkpoint: never
        waits for, nor blocks, readers and writers), on a connection of its own, so that a
        store whose commits do not checkpoint (``wal_autocheckpoint`` set high) can have it
        done off the event loop, every few seconds."""
        with self._checkpoint_lock:
            self.check_open()
            try:
                if self._checkpointer is None:
                    self._checkpointer = connect(
                        self._path, self._busy_timeout, synchronous=self._synchronous
                    )
                self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                raise self.translate(exc) from exc

    def close(self) -> None:
        """Close every connection. Idempotent."""
        with self._write_lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            self.reader.close()
            self.writer.close()
        with self._checkpoint_lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
