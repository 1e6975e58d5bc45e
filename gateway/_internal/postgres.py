"""PostgreSQL plumbing with the same shape as :mod:`gateway._internal.sqlite`.

A store is written once, over :class:`gateway._internal.sqlite.Connections` or
:class:`PgConnections`: both offer ``write()``, ``begin()``, ``read(snapshot=)``,
``migrate()``, ``translate()``, ``checkpoint()`` and ``close()``, and connections whose
``execute`` takes ``?`` placeholders and returns a cursor. What differs between the two
dialects (the schema, a JSON function) a store spells twice, keyed by :attr:`dialect`.

Each store lives in a PostgreSQL schema of its own (``audit``, ``nonces``…) of the node's
database, so two stores may both have an ``entries`` table. Every write transaction of a
store first takes a transaction-scoped advisory lock named after that schema: writers of a
store are serialised across every replica of the node exactly as SQLite's ``BEGIN
IMMEDIATE`` serialises them across processes, so code written for one holds on the other
(the audit log's one sequence, the nonce store's first use wins). Readers never wait.

Round trips are what a request pays for here (the server is another process): both
connections are in autocommit, a read of one statement is one round trip, a snapshot read
and a write open their transactions explicitly, and a write's ``BEGIN`` and advisory lock go
in one round trip.
"""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

import psycopg
import psycopg.errors

from gateway._internal.secret import Secret
from gateway.errors import ConfigError, GatewayError, StorageError

DIALECT: Final = "postgresql"
CONNECT_TIMEOUT: Final = 10
"""Seconds to reach the server when a store opens."""

Error = psycopg.Error
IntegrityError = psycopg.IntegrityError


def _placeholders(sql: str) -> str:
    """``?`` placeholders (the stores' one spelling) as psycopg's ``%s``."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConn:
    """A psycopg connection that takes the stores' SQL (``?`` placeholders)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        if not params:
            return self.raw.execute(sql)
        return self.raw.execute(_placeholders(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        cursor.executemany(_placeholders(sql), rows)
        return cursor

    @property
    def in_transaction(self) -> bool:
        status = self.raw.info.transaction_status
        return status != psycopg.pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


def storage_error(exc: psycopg.Error, *, prefix: str, store: str) -> StorageError:
    """``<prefix>.busy`` for a lock or serialisation conflict, else ``<prefix>.storage``."""
    busy = (
        psycopg.errors.LockNotAvailable,
        psycopg.errors.SerializationFailure,
        psycopg.errors.DeadlockDetected,
        psycopg.errors.QueryCanceled,
    )
    if isinstance(exc, busy):
        return StorageError(f"the {store} is busy", code=f"{prefix}.busy", log_detail=str(exc))
    return StorageError(f"the {store} failed", code=f"{prefix}.storage", log_detail=repr(exc))


def lock_key(name: str) -> int:
    """A stable 63-bit advisory lock key for ``name`` (the same in every replica)."""
    return zlib.crc32(f"tongban:{name}".encode()) | (1 << 40)


class PgPendingWrite:
    """A write transaction begun by :meth:`PgConnections.begin`; see
    :class:`gateway._internal.sqlite.PendingWrite` (the same contract)."""

    def __init__(
        self,
        conn: PgConn,
        lock: threading.Lock,
        translate: Callable[[psycopg.Error], GatewayError],
    ) -> None:
        self.conn = conn
        self._lock = lock
        self._translate = translate
        self._ended = False

    @contextmanager
    def rolled_back_on_error(self) -> Iterator[PgConn]:
        try:
            yield self.conn
        except BaseException as exc:
            self.rollback()
            if isinstance(exc, psycopg.Error):
                raise self._translate(exc) from exc
            raise

    def _end(self) -> None:
        if self._ended:
            raise RuntimeError("this write transaction has already ended")
        self._ended = True

    def commit(self) -> None:
        """``COMMIT`` (durable: ``synchronous_commit`` is the server's, on by default)."""
        self._end()
        try:
            self.conn.execute("COMMIT")
        except psycopg.Error as exc:
            self._quiet_rollback()
            raise self._translate(exc) from exc
        finally:
            self._lock.release()

    def rollback(self) -> None:
        self._end()
        try:
            self._quiet_rollback()
        finally:
            self._lock.release()

    def _quiet_rollback(self) -> None:
        if not self.conn.in_transaction:
            return
        with contextlib.suppress(psycopg.Error):  # a broken connection: rolled back already
            self.conn.execute("ROLLBACK")


class PgConnections:
    """A store's writer and reader connections to the node's PostgreSQL database.

    ``schema`` is the store's own PostgreSQL schema (created on first use); ``prefix`` and
    ``store`` name the store in error codes and messages, as for SQLite.
    """

    dialect: Final = DIALECT
    Error = psycopg.Error
    IntegrityError = psycopg.IntegrityError

    def __init__(self, dsn: Secret, *, schema: str, prefix: str, store: str) -> None:
        """Connect (writer, then reader); ``ConfigError`` ``<prefix>.open`` when the server
        cannot be reached or refuses."""
        if not schema.isidentifier() or not schema.islower():
            raise ValueError(f"bad schema name {schema!r}")
        self._dsn = dsn
        self._schema = schema
        self._prefix = prefix
        self._store = store
        self._lock_key = lock_key(schema)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._closed = False
        self.writer = self._connect()
        try:
            self.reader = self._connect(read_only=True)
        except BaseException:
            self.writer.close()
            raise

    def _connect(self, *, read_only: bool = False) -> PgConn:
        try:
            raw = psycopg.connect(
                self._dsn.reveal(), autocommit=True, connect_timeout=CONNECT_TIMEOUT
            )
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot open the {self._store} in PostgreSQL: {_reason(exc)}",
                code=f"{self._prefix}.open",
            ) from exc
        try:
            raw.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            raw.execute(f'SET search_path TO "{self._schema}"')
            if read_only:
                raw.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            raw.close()
            raise ConfigError(
                f"cannot open the {self._store} in PostgreSQL: {_reason(exc)}",
                code=f"{self._prefix}.open",
            ) from exc
        return PgConn(raw)

    @property
    def schema(self) -> str:
        return self._schema

    def migrate(
        self,
        schema: Sequence[str],
        version: int,
        *,
        seed: Callable[[PgConn], None] | None = None,
        upgrades: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        """As :meth:`gateway._internal.sqlite.Connections.migrate`: create or upgrade the
        store's tables to ``version`` in one transaction, under the store's advisory lock
        (replicas starting together migrate once). The version is kept in the store's
        ``schema_version`` table. ``ConfigError`` ``<prefix>.schema`` for a newer schema (or
        one it has no upgrade from), ``<prefix>.open`` when PostgreSQL fails."""
        steps = upgrades or {}
        conn = self.writer
        try:
            with self._write_lock:
                conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({self._lock_key})")
                try:
                    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
                    row = conn.execute("SELECT version FROM schema_version").fetchone()
                    found = 0 if row is None else int(row[0])
                    if found == 0:
                        for statement in schema:
                            conn.execute(statement)
                        if seed is not None:
                            seed(conn)
                        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                    elif found != version:
                        if found > version or any(v not in steps for v in range(found, version)):
                            raise ConfigError(
                                f"the {self._store} in PostgreSQL (schema {self._schema}) has "
                                f"schema version {found}; this gateway knows version {version}",
                                code=f"{self._prefix}.schema",
                            )
                        for v in range(found, version):
                            for statement in steps[v]:
                                conn.execute(statement)
                        conn.execute("UPDATE schema_version SET version = ?", (version,))
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot open the {self._store} in PostgreSQL: {_reason(exc)}",
                code=f"{self._prefix}.open",
            ) from exc

    def version(self) -> int:
        """The store's schema version (0 before its first migration)."""
        with self.read() as conn:
            exists = conn.execute("SELECT to_regclass('schema_version')").fetchone()
            if exists is None or exists[0] is None:
                return 0
            row = conn.execute("SELECT version FROM schema_version").fetchone()
        return 0 if row is None else int(row[0])

    def translate(self, exc: psycopg.Error) -> StorageError:
        return storage_error(exc, prefix=self._prefix, store=self._store)

    def check_open(self) -> None:
        if self._closed:
            raise StorageError(f"the {self._store} is closed", code=f"{self._prefix}.closed")

    @contextmanager
    def write(self) -> Iterator[PgConn]:
        """One write transaction, serialised with every other writer of this store (in any
        replica) by the store's advisory lock; ``ROLLBACK`` on any error, errors translated."""
        pending = self.begin()
        with pending.rolled_back_on_error() as conn:
            yield conn
        pending.commit()

    def begin(self) -> PgPendingWrite:
        """A write transaction holding the store's advisory lock until its one commit or
        rollback (from any thread)."""
        self._write_lock.acquire()
        try:
            self.check_open()
            try:  # one round trip: the transaction and the store's lock
                self.writer.execute(f"BEGIN; SELECT pg_advisory_xact_lock({self._lock_key})")
            except psycopg.Error as exc:
                if self.writer.in_transaction:
                    with contextlib.suppress(psycopg.Error):
                        self.writer.execute("ROLLBACK")
                raise self.translate(exc) from exc
        except BaseException:
            self._write_lock.release()
            raise
        return PgPendingWrite(self.writer, self._write_lock, self.translate)

    @contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[PgConn]:
        """The reader (read only): each statement on its own, or for a ``snapshot`` in one
        ``REPEATABLE READ`` transaction (every statement sees the same state)."""
        with self._read_lock:
            self.check_open()
            conn = self.reader
            try:
                if not snapshot:
                    yield conn
                    return
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                try:
                    yield conn
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")  # read only: nothing to keep
            except psycopg.Error as exc:
                raise self.translate(exc) from exc

    @contextmanager
    def fresh(self) -> Iterator[PgConn]:
        """A new connection of its own, outside any snapshot (rare paths)."""
        conn = self._connect(read_only=True)
        try:
            yield conn
        except psycopg.Error as exc:
            raise self.translate(exc) from exc
        finally:
            conn.close()

    def checkpoint(self) -> None:
        """Nothing to do: the server checkpoints its own WAL."""
        self.check_open()

    def close(self) -> None:
        """Close both connections. Idempotent."""
        with self._write_lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            self.reader.close()
            self.writer.close()


def _reason(exc: psycopg.Error) -> str:
    """The server's or libpq's one-line reason (never the DSN, which may hold a password)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
