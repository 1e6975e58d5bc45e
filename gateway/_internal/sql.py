"""What a store sees of its database, whichever the backend: SQLite or PostgreSQL.

:class:`gateway._internal.sqlite.Connections` and
:class:`gateway._internal.postgres.PgConnections` both satisfy :class:`Database`; a store is
written once against it, with ``?`` placeholders, and spells per :attr:`Database.dialect`
only what the two dialects say differently (its schema, a JSON function).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, Final, Generic, Protocol, Self, TypeVar

from gateway.errors import GatewayError

SQLITE: Final = "sqlite"
POSTGRESQL: Final = "postgresql"
DIALECTS: Final = (SQLITE, POSTGRESQL)


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class SqlConnection(Protocol):
    def execute(self, sql: str, params: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, rows: Any, /) -> Cursor: ...


Statement = tuple[str, Sequence[Any]]
"""A statement and its parameters."""


class PendingWrite(Protocol):
    """A write transaction begun by :meth:`Database.begin`, ended once, from any thread."""

    @property
    def conn(self) -> SqlConnection: ...

    @property
    def rows(self) -> list[Any]:
        """The rows of the ``read`` :meth:`Database.begin` was given (else none)."""
        ...

    def rolled_back_on_error(self) -> AbstractContextManager[SqlConnection]: ...

    def commit(self, last: Statement | None = None) -> None:
        """``COMMIT``, after ``last`` if given: the transaction's last statement, sent with
        the ``COMMIT`` (on PostgreSQL in one round trip)."""
        ...

    def rollback(self) -> None: ...


C = TypeVar("C")


class Transaction(Generic[C]):
    """What both backends' :class:`PendingWrite` do alike: statements on :attr:`conn`, then
    exactly one :meth:`commit` or :meth:`rollback` (from any thread), which also releases the
    store's write lock; errors of the backend's :attr:`error` class come out translated. A
    backend says how it commits (:meth:`_commit`) and rolls back (:meth:`_rollback`)."""

    error: type[Exception]
    """The backend's error class (``sqlite3.Error``, ``psycopg.Error``)."""

    def __init__(
        self,
        conn: C,
        lock: threading.Lock,
        translate: Callable[[Any], GatewayError],
        rows: list[Any] | None = None,
    ) -> None:
        self.conn = conn
        self._lock = lock
        self._translate = translate
        self._ended = False
        self.rows: list[Any] = rows or []
        """The rows of the ``read`` the transaction began with."""

    @contextmanager
    def rolled_back_on_error(self) -> Iterator[C]:
        """The transaction's statements: on any error it is rolled back (the backend's
        errors translated); otherwise it stays open for :meth:`commit`."""
        try:
            yield self.conn
        except BaseException as exc:
            self.rollback()
            if isinstance(exc, self.error):
                raise self._translate(exc) from exc
            raise

    def commit(self, last: Statement | None = None) -> None:
        """``last`` if given, then ``COMMIT``; or ``ROLLBACK`` and the translated error."""
        self._end()
        try:
            self._commit(last)
        except self.error as exc:
            self._rollback()
            raise self._translate(exc) from exc
        finally:
            self._lock.release()

    def rollback(self) -> None:
        """``ROLLBACK``: nothing of the transaction stays."""
        self._end()
        try:
            self._rollback()
        finally:
            self._lock.release()

    def _end(self) -> None:
        if self._ended:
            raise RuntimeError("this write transaction has already ended")
        self._ended = True

    def _commit(self, last: Statement | None) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError


class Database(Protocol):
    """A store's connections: one writer at a time (across every process or replica of the
    node), snapshot reads, versioned migrations, errors translated to ``StorageError``."""

    @property
    def dialect(self) -> str: ...

    @property
    def Error(self) -> type[Exception]: ...  # noqa: N802 - the DB-API name

    @property
    def IntegrityError(self) -> type[Exception]: ...  # noqa: N802 - the DB-API name

    def migrate(
        self,
        schema: Sequence[str],
        version: int,
        *,
        seed: Callable[[Any], None] | None = None,
        upgrades: Mapping[int, Sequence[str]] | None = None,
    ) -> None: ...

    def translate(self, exc: Any) -> Exception: ...

    def check_open(self) -> None: ...

    def write(self) -> AbstractContextManager[SqlConnection]: ...

    def begin(self, *, read: str | None = None) -> PendingWrite:
        """A write transaction holding the store's write lock; ``read`` (one statement
        without parameters) is run right after the lock is taken, its rows in
        :attr:`PendingWrite.rows` (on PostgreSQL in the same round trip)."""
        ...

    def read(self, *, snapshot: bool = False) -> AbstractContextManager[SqlConnection]: ...

    def fresh(self) -> AbstractContextManager[SqlConnection]: ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read statement, for the event loop, which it never blocks on a
        round trip (a hot read: a certificate fetched)."""
        ...

    def checkpoint(self) -> None: ...

    def close(self) -> None: ...


class Store:
    """What every store does over its lifetime with its :class:`Database` (``_db``): close
    it (idempotent), checkpoint it off the event loop, and serve as a context manager."""

    _db: Database

    def checkpoint(self) -> None:
        """The write-ahead log into the database (SQLite; nothing to do on PostgreSQL), on
        the thread that calls it: a serving node calls it on its writer thread."""
        self._db.checkpoint()

    def close(self) -> None:
        """Close the store's connections. Idempotent."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
