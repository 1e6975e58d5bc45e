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
