"""SQLite plumbing shared by the node's stores (registry, catalog, audit log)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.errors import GatewayError, StorageError


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


@contextmanager
def write_transaction(
    conn: sqlite3.Connection, translate: Callable[[sqlite3.Error], GatewayError]
) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any error); sqlite3 errors translated.

    The caller holds its write lock; IMMEDIATE also keeps other processes out.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise translate(exc) from exc
    try:
        yield conn
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise translate(exc) from exc
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise translate(exc) from exc


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
