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

import asyncio
import contextlib
import re
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

import psycopg
import psycopg.adapt
import psycopg.errors
from psycopg import pq

from gateway._internal.secret import Secret
from gateway._internal.sql import Statement, Transaction
from gateway.errors import ConfigError, StorageError

DIALECT: Final = "postgresql"
CONNECT_TIMEOUT: Final = 10
"""Seconds to reach the server when a store opens."""
LOOP_READ_CONNECTIONS: Final = 4
"""Connections a store opens at most, on demand, for reads on the event loop
(:meth:`PgConnections.fetch`): that many such reads are in flight at once, the next waits."""
LOOP_READ_TIMEOUT: Final = 10.0
"""Seconds a read on the event loop may take; then it fails ``<prefix>.busy`` and its
connection is dropped."""

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


class PgPendingWrite(Transaction[PgConn]):
    """A write transaction begun by :meth:`PgConnections.begin` (:class:`Transaction`)."""

    error = psycopg.Error

    def _commit(self, last: Statement | None) -> None:
        """``COMMIT`` (durable: ``synchronous_commit`` is the server's, on by default), with
        ``last`` before it in the same round trip (libpq's pipeline mode)."""
        if last is None:
            self.conn.execute("COMMIT")
            return
        with self.conn.raw.pipeline():
            self.conn.execute(*last)
            self.conn.execute("COMMIT")

    def _rollback(self) -> None:
        if not self.conn.in_transaction:
            return
        with contextlib.suppress(psycopg.Error):  # a broken connection: rolled back already
            self.conn.execute("ROLLBACK")


_INT = {21, 23, 20}  # int2, int4, int8
_TEXT = {25, 1043, 1042, 19}  # text, varchar, bpchar, name
_FLOAT4, _FLOAT8, _BYTEA, _BOOL = 700, 701, 17, 16


def _decode(oid: int, value: bytes) -> Any:
    """A column's value in PostgreSQL's binary format, as psycopg would give it."""
    if oid in _TEXT:
        return value.decode("utf-8")
    if oid in _INT:
        return int.from_bytes(value, "big", signed=True)
    if oid == _FLOAT8:
        return struct.unpack(">d", value)[0]
    if oid == _BYTEA:
        return bytes(value)
    if oid == _FLOAT4:
        return struct.unpack(">f", value)[0]
    if oid == _BOOL:
        return value != b"\x00"
    raise TypeError(f"no reader on the event loop for PostgreSQL type oid {oid}")


class PgArray:
    """A one-dimensional array parameter packed in PostgreSQL's binary format: one value to
    send however many elements it has (psycopg would adapt a list element by element)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    @classmethod
    def _packed(cls, oid: int, elements: Sequence[bytes]) -> PgArray:
        header = struct.pack(">iiIii", 1, 0, oid, len(elements), 1)  # 1 dim, no NULL, from 1
        body = b"".join(struct.pack(">i", len(e)) + e for e in elements)
        return cls(header + body)

    @classmethod
    def int8(cls, values: Sequence[int]) -> PgArray:
        return cls._packed(20, [struct.pack(">q", v) for v in values])

    @classmethod
    def bytea(cls, values: Sequence[bytes]) -> PgArray:
        return cls._packed(_BYTEA, values)


class _PgArrayDumper(psycopg.adapt.Dumper):
    """Sends a :class:`PgArray` as it is (binary), for the stores' psycopg connections."""

    format = pq.Format.BINARY

    def dump(self, obj: Any) -> bytes:
        data: bytes = obj.data
        return data


def _decode_text(oid: int, value: bytes) -> Any:
    """A column's value in PostgreSQL's text format (a simple query's results)."""
    if oid in _INT:
        return int(value)
    if oid in (_FLOAT4, _FLOAT8):
        return float(value)
    if oid == _BYTEA:
        return bytes.fromhex(value[2:].decode("ascii"))  # hex output: \x…
    if oid == _BOOL:
        return value == b"t"
    return value.decode("utf-8")


def _encode(value: Any) -> tuple[bytes | None, int]:
    """A parameter as (bytes, format): text for strings and numbers, binary for bytes."""
    if value is None:
        return None, 0
    if isinstance(value, PgArray):
        return value.data, 1
    if isinstance(value, bool):
        return (b"t" if value else b"f"), 0
    if isinstance(value, int | float):
        return repr(value).encode("ascii"), 0
    if isinstance(value, str):
        return value.encode("utf-8"), 0
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), 1
    raise TypeError(f"no PostgreSQL parameter for {type(value).__name__}")


_PLACEHOLDER = re.compile(r"\?")


def _numbered(sql: str) -> str:
    """``?`` placeholders as libpq's ``$1``, ``$2``…"""
    numbers = iter(range(1, sql.count("?") + 1))
    return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", sql)


class _LoopConnection:
    """A read-only connection driven from the event loop in libpq's non-blocking mode: a
    statement is prepared on first use, then each read is one round trip whose wait is the
    loop's, never a blocked thread. The socket is watched from the first read to the close
    (a watch per read would cost the loop two system calls a read); what the server sends
    unasked (a notice, its goodbye) is drained as it comes. Closed on the loop's thread, or
    once the loop has ended."""

    def __init__(self, raw: psycopg.Connection[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.raw = raw
        self.pg = raw.pgconn
        self.pg.nonblocking = 1
        self._loop = loop
        self._fd: int | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._prepared: dict[str, bytes] = {}
        self.clean = True
        """False once a round trip was interrupted or the server went away: dropped then."""

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        self._send(await self._statement(sql), params)
        return _rows(_check(await self._result()))

    async def then_commit(self, sql: str, params: Sequence[Any]) -> None:
        """A statement and ``COMMIT`` in one round trip (libpq's pipeline mode). If the
        statement fails, nothing is committed, its error is raised and the connection is
        left unclean (to be dropped: its transaction is aborted)."""
        pg = self.pg
        name = await self._statement(sql)
        self.clean = False
        pg.enter_pipeline_mode()
        self._send(name, params)
        pg.send_query_params(b"COMMIT", None)
        pg.pipeline_sync()
        while pg.flush():
            await self._writable()
        results: list[pq.abc.PGresult] = []
        while True:
            pg.consume_input()
            ended = 0  # a None ends one statement's results; two in a row: none yet
            while not pg.is_busy() and ended < 2:
                result = pg.get_result()
                if result is None:
                    ended += 1
                    continue
                ended = 0
                results.append(result)
                if result.status == pq.ExecStatus.PIPELINE_SYNC:
                    break
            if results and results[-1].status == pq.ExecStatus.PIPELINE_SYNC:
                break
            await self._readable()
        for result in results[:-1]:
            _check(result)  # the statement's error first (the COMMIT was then aborted)
        pg.exit_pipeline_mode()
        self.clean = True

    async def _statement(self, sql: str) -> bytes:
        """The name of ``sql`` prepared on this connection (prepared on first use)."""
        name = self._prepared.get(sql)
        if name is None:
            name = b"tongban_%d" % len(self._prepared)
            self.pg.send_prepare(name, _numbered(sql).encode("utf-8"))
            _check(await self._result())
            self._prepared[sql] = name
        return name

    def _send(self, name: bytes, params: Sequence[Any]) -> None:
        encoded = [_encode(value) for value in params]
        self.pg.send_query_prepared(
            name,
            [value for value, _ in encoded],
            param_formats=[fmt for _, fmt in encoded],
            result_format=pq.Format.BINARY,
        )

    async def query(self, sql: str) -> list[list[tuple[Any, ...]]]:
        """A parameterless script (statements separated by ``;``) in one round trip: the
        rows of each of its statements that returns rows, in order."""
        self.pg.send_query(sql.encode("utf-8"))
        return [
            _rows(result, _decode_text)
            for result in map(_check, await self._results())
            if result.status == pq.ExecStatus.TUPLES_OK
        ]

    async def _result(self) -> pq.abc.PGresult:
        """The result of the statement just sent, once libpq has read all of it."""
        return (await self._results())[-1]

    async def _results(self) -> list[pq.abc.PGresult]:
        """The results of what was just sent (a script: one a statement), once libpq has
        read them all."""
        self.clean = False
        pg = self.pg
        while pg.flush():  # non-blocking: part of the request is still to be sent
            await self._writable()
        results: list[pq.abc.PGresult] = []
        while True:
            pg.consume_input()
            while not pg.is_busy():
                result = pg.get_result()
                if result is None:
                    self.clean = True
                    if not results:
                        raise psycopg.OperationalError("the server sent no result")
                    return results
                results.append(result)
            await self._readable()

    async def _readable(self) -> None:
        if self._fd is None:
            self._fd = self.pg.socket
            self._loop.add_reader(self._fd, self._on_readable)
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _on_readable(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
            return
        try:  # nothing asked: drain it, or learn that the connection is gone
            self.pg.consume_input()
        except psycopg.Error:
            self.clean = False
            self._unwatch()

    async def _writable(self) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()
        fd = self.pg.socket
        self._loop.add_writer(fd, lambda: None if ready.done() else ready.set_result(None))
        try:
            await ready
        finally:
            self._loop.remove_writer(fd)

    def _unwatch(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(RuntimeError):  # the loop has ended: nothing watches
                self._loop.remove_reader(fd)

    def close(self) -> None:
        self._unwatch()
        self.raw.close()


def _rows(
    result: pq.abc.PGresult, decode: Callable[[int, bytes], Any] = _decode
) -> list[tuple[Any, ...]]:
    """A result's rows, each value decoded by its column's type (``decode``: from the
    binary format, or :func:`_decode_text` for a simple query's text)."""
    types = [result.ftype(column) for column in range(result.nfields)]
    return [
        tuple(
            None if (value := result.get_value(row, column)) is None else decode(oid, value)
            for column, oid in enumerate(types)
        )
        for row in range(result.ntuples)
    ]


def _timed_out(what: str) -> psycopg.errors.QueryCanceled:
    """What a round trip that took too long counts as (translated: ``<prefix>.busy``)."""
    return psycopg.errors.QueryCanceled(f"{what} timed out")


def _check(result: pq.abc.PGresult) -> pq.abc.PGresult:
    if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        return result
    raise psycopg.errors.error_from_result(result, encoding="utf-8")


class LoopReads:
    """Reads on the event loop for one store: up to :data:`LOOP_READ_CONNECTIONS` read-only
    connections, opened when first needed (off the loop), each with one read in flight at a
    time; a read that finds them all busy waits for the first to come back. The loop never
    waits on a round trip, so one replica overlaps its requests' reads (a blocked thread,
    or a blocked loop, would serialise them)."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        translate: Callable[[psycopg.Error], StorageError],
        *,
        connections: int = LOOP_READ_CONNECTIONS,
        timeout: float = LOOP_READ_TIMEOUT,
    ) -> None:
        self._connect = connect
        self._translate = translate
        self._limit = connections
        self._timeout = timeout
        self._idle: deque[_LoopConnection] = deque()
        self._waiting: deque[asyncio.Future[_LoopConnection | None]] = deque()
        self._open = 0
        self._closed = False

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        conn = await self._acquire()
        try:
            async with asyncio.timeout(self._timeout):
                return await conn.fetch(sql, params)
        except TimeoutError as exc:
            raise self._translate(_timed_out("the read")) from exc
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        finally:
            self._release(conn)

    async def _acquire(self) -> _LoopConnection:
        while True:
            if self._closed:
                raise self._translate(psycopg.OperationalError("the store is closed"))
            while self._idle:
                conn = self._idle.popleft()
                if conn.clean:
                    return conn
                conn.close()  # the server went away while it was idle
                self._open -= 1
            if self._open < self._limit:
                self._open += 1
                try:
                    raw = await asyncio.to_thread(self._connect)
                    return _LoopConnection(raw, asyncio.get_running_loop())
                except BaseException:
                    self._open -= 1
                    raise
            waiter: asyncio.Future[_LoopConnection | None]
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    handed = waiter.result()
                    if handed is not None:  # handed over just as we were cancelled
                        self._release(handed)
                    else:
                        self._wake(None)
                raise
            if handed is not None:
                return handed
            # None: a connection was dropped, so there is room to open one

    def _release(self, conn: _LoopConnection) -> None:
        if self._closed or not conn.clean or conn.pg.status != pq.ConnStatus.OK:
            conn.close()
            self._open -= 1
            self._wake(None)
            return
        if not self._wake(conn):
            self._idle.append(conn)

    def _wake(self, conn: _LoopConnection | None) -> bool:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def close(self) -> None:
        """Close the idle connections; one in flight is closed when its read ends."""
        self._closed = True
        while self._idle:
            self._idle.popleft().close()
            self._open -= 1


class LoopTransaction:
    """A store's write transaction driven from the event loop
    (:meth:`PgConnections.begin_on_loop`): it holds the store's advisory lock, like every
    writer, from its begin to its one :meth:`commit` or :meth:`rollback`. A failure or a
    timeout on the way drops the connection (the server then rolls the transaction back)."""

    def __init__(self, owner: _LoopWriter, conn: _LoopConnection) -> None:
        self._owner = owner
        self._conn = conn
        self.results: list[list[Any]] = []
        """The rows of each read the transaction began with."""
        self._ended = False

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of a statement inside the transaction (prepared once per connection)."""
        rows: list[Any] = await self._guarded(self._conn.fetch(sql, params))
        return rows

    async def commit(self, last: tuple[str, Sequence[Any]] | None = None) -> None:
        """``COMMIT``, with ``last`` before it in the same round trip."""
        if last is None:
            await self._guarded(self._conn.query("COMMIT"))  # returns no rows
        else:
            await self._guarded(self._conn.then_commit(*last))
        self._end()

    async def rollback(self) -> None:
        """``ROLLBACK``, unless the transaction has ended already (then nothing)."""
        if not self._ended:
            await self._guarded(self._conn.query("ROLLBACK"))
            self._end()

    def abort(self) -> None:
        """End it now, whatever its state, by dropping its connection (the server rolls back
        what was open). Nothing once it has ended."""
        self._end(drop=True)

    async def _guarded(self, step: Any) -> Any:
        """Await ``step`` within the owner's timeout; any failure ends the transaction by
        dropping its connection, and a ``psycopg`` error (or the timeout) comes out
        translated."""
        if self._ended:
            step.close()
            raise RuntimeError("this write transaction has already ended")
        try:
            async with asyncio.timeout(self._owner.timeout):
                return await step
        except BaseException as exc:
            self._end(drop=True)
            if isinstance(exc, psycopg.Error):
                raise self._owner.translate(exc) from exc
            if isinstance(exc, TimeoutError):
                raise self._owner.translate(_timed_out("the transaction")) from exc
            raise

    def _end(self, *, drop: bool = False) -> None:
        if not self._ended:
            self._ended = True
            self._owner.release(drop=drop or not self._conn.clean)


class _LoopWriter:
    """The connection of a store's :class:`LoopTransaction`: opened on first use (off the
    loop); one transaction at a time; dropped after any failure, opened again for the next."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        translate: Callable[[psycopg.Error], StorageError],
        lock_key: int,
        timeout: float,
    ) -> None:
        self._connect = connect
        self.translate = translate
        self._lock_key = lock_key
        self.timeout = timeout
        self._conn: _LoopConnection | None = None
        self._turn: asyncio.Lock | None = None

    async def begin(self, reads: Sequence[str]) -> LoopTransaction:
        if self._turn is None:
            self._turn = asyncio.Lock()
        await self._turn.acquire()
        if self._conn is not None and not self._conn.clean:
            self._conn.close()  # the server closed it while it was idle
            self._conn = None
        try:
            if self._conn is None:
                async with asyncio.timeout(self.timeout):
                    raw = await asyncio.to_thread(self._connect)
                self._conn = _LoopConnection(raw, asyncio.get_running_loop())
        except BaseException as exc:
            self.release(drop=True)
            if isinstance(exc, TimeoutError):
                raise self.translate(_timed_out("connecting")) from exc
            raise
        transaction = LoopTransaction(self, self._conn)
        lock = f"BEGIN; SELECT pg_advisory_xact_lock({self._lock_key})"
        results = await transaction._guarded(self._conn.query("; ".join([lock, *reads])))
        transaction.results = results[1:]  # the lock's own row first
        return transaction

    def release(self, *, drop: bool) -> None:
        """A transaction (or its begin) has ended: the next may begin."""
        if drop and self._conn is not None:
            self._conn.close()  # the server rolls back what was open
            self._conn = None
        assert self._turn is not None
        self._turn.release()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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
        self._loop_reads = LoopReads(lambda: self._connect(read_only=True).raw, self.translate)
        self._loop_writer = _LoopWriter(
            lambda: self._connect().raw, self.translate, self._lock_key, LOOP_READ_TIMEOUT
        )

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
        raw.adapters.register_dumper(PgArray, _PgArrayDumper)
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

    def begin(self, *, read: str | None = None) -> PgPendingWrite:
        """A write transaction holding the store's advisory lock until its one commit or
        rollback (from any thread); ``read`` (one statement, no parameters) run under the
        lock, its rows in :attr:`PgPendingWrite.rows`."""
        self._write_lock.acquire()
        try:
            self.check_open()
            rows: list[Any] = []
            try:  # one round trip: the transaction, the store's lock and the read
                lock = f"BEGIN; SELECT pg_advisory_xact_lock({self._lock_key})"
                if read is None:
                    self.writer.execute(lock)
                else:
                    cursor = self.writer.execute(f"{lock}; {read}")
                    while cursor.nextset():  # the read's rows are the last result's
                        pass
                    rows = cursor.fetchall()
            except psycopg.Error as exc:
                if self.writer.in_transaction:
                    with contextlib.suppress(psycopg.Error):
                        self.writer.execute("ROLLBACK")
                raise self.translate(exc) from exc
        except BaseException:
            self._write_lock.release()
            raise
        return PgPendingWrite(self.writer, self._write_lock, self.translate, rows)

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

    async def begin_on_loop(self, *reads: str) -> LoopTransaction:
        """:meth:`begin` for the event loop, on a connection of its own: every round trip
        awaited, none blocking the loop (the store's advisory lock orders it with the
        other writers, here and in every replica). ``reads`` (statements without
        parameters) run under the lock in the same round trip; their rows are
        :attr:`LoopTransaction.results`."""
        self.check_open()
        return await self._loop_writer.begin(reads)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read statement, for the event loop (:class:`LoopReads`): the
        loop goes on serving while the server answers."""
        self.check_open()
        return await self._loop_reads.fetch(sql, params)

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
            self._loop_reads.close()
            self._loop_writer.close()
            self.reader.close()
            self.writer.close()


def _reason(exc: psycopg.Error) -> str:
    """The server's or libpq's one-line reason (never the DSN, which may hold a password)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
