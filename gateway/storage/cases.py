"""The case store: cases, their sealed events, their materials' bytes, and what they owe.

One store per node, on either backend: :class:`SqliteCaseStore` (one SQLite file, WAL,
``synchronous = FULL``: an acknowledged intake survives a power cut) or
:class:`PostgresCaseStore` (the schema ``cases`` of the node's PostgreSQL database, shared by
every replica of the node), both :class:`SqlCaseStore`. A change of a case is ONE transaction
that writes the case, its new events, the material bytes, and everything the change still owes
elsewhere:

- ``outbox``: messages for other nodes (a case's package, events for the other end), sent
  by :mod:`gateway.federation.cases` in order per peer, retried with backoff, deleted once
  the peer has acknowledged them (the peer applies each once: packages by case number,
  events by id and sequence);
- ``audit_owed``: records for the node's audit log (another file), moved there after the
  commit, or at the next start after a crash (see :meth:`pending_audit`);
- ``deliveries``: webhook notifications (CloudEvents) for subscribed departmental systems.

So a crash at any point loses no acknowledged case and duplicates nothing. Updates are
compare-and-set on the case's event count, so two writers (two worker processes, or two
replicas) never both append event number N. Writers are serialised (SQLite's ``BEGIN
IMMEDIATE``, the store's advisory lock on PostgreSQL): a day's case numbers are handed out
once, and the outbox's sequence numbers are committed in order.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson

from gateway._internal.postgres import PgConnections
from gateway._internal.secret import Secret
from gateway._internal.sql import POSTGRESQL, SQLITE, Database, SqlConnection, Store
from gateway._internal.sqlite import Connections
from gateway.cases.case import Case
from gateway.errors import ConflictError, NotFoundError

SCHEMA_VERSION: Final = 1
_SQLITE_SCHEMA: Final = (
    """
    CREATE TABLE cases (
        id TEXT PRIMARY KEY,
        owner_node TEXT NOT NULL,
        owner_department TEXT,
        window_node TEXT NOT NULL,
        window_department TEXT,
        applicant_digest TEXT NOT NULL,
        state TEXT NOT NULL,
        due_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        seq INTEGER NOT NULL,
        record BLOB NOT NULL
    ) STRICT
    """,
    "CREATE INDEX cases_by_owner ON cases (owner_department, state, id)",
    "CREATE INDEX cases_by_window ON cases (window_department, state, id)",
    "CREATE INDEX cases_by_applicant ON cases (applicant_digest, id)",
    "CREATE INDEX cases_pending ON cases (owner_node, state, updated_at)",
    """
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        case_id TEXT NOT NULL REFERENCES cases (id),
        seq INTEGER NOT NULL,
        token TEXT NOT NULL,
        UNIQUE (case_id, seq)
    ) STRICT
    """,
    """
    CREATE TABLE blobs (
        sha256 TEXT PRIMARY KEY,
        content BLOB NOT NULL
    ) STRICT, WITHOUT ROWID
    """,
    """
    CREATE TABLE numbers (
        day TEXT PRIMARY KEY,
        last INTEGER NOT NULL
    ) STRICT
    """,
    """
    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        case_id TEXT NOT NULL
    ) STRICT
    """,
    """
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('package', 'event')),
        case_id TEXT NOT NULL,
        body BLOB NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL DEFAULT 0
    ) STRICT
    """,
    """
    CREATE TABLE dead_letters (
        seq INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        kind TEXT NOT NULL,
        case_id TEXT NOT NULL,
        body BLOB NOT NULL,
        code TEXT NOT NULL,
        at REAL NOT NULL
    ) STRICT
    """,
    """
    CREATE TABLE audit_owed (
        seq INTEGER PRIMARY KEY,
        owner TEXT NOT NULL,
        record BLOB NOT NULL
    ) STRICT
    """,
    """
    CREATE TABLE subscriptions (
        id TEXT PRIMARY KEY,
        department TEXT NOT NULL,
        url TEXT NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE (department, url)
    ) STRICT
    """,
    """
    CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY,
        subscription TEXT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
        event_id TEXT NOT NULL,
        body BLOB NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL DEFAULT 0,
        UNIQUE (subscription, event_id)
    ) STRICT
    """,
)
_POSTGRESQL_SCHEMA: Final = (
    """
    CREATE TABLE cases (
        id TEXT PRIMARY KEY,
        owner_node TEXT NOT NULL,
        owner_department TEXT,
        window_node TEXT NOT NULL,
        window_department TEXT,
        applicant_digest TEXT NOT NULL,
        state TEXT NOT NULL,
        due_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        seq BIGINT NOT NULL,
        record BYTEA NOT NULL
    )
    """,
    "CREATE INDEX cases_by_owner ON cases (owner_department, state, id)",
    "CREATE INDEX cases_by_window ON cases (window_department, state, id)",
    "CREATE INDEX cases_by_applicant ON cases (applicant_digest, id)",
    "CREATE INDEX cases_pending ON cases (owner_node, state, updated_at)",
    """
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        case_id TEXT NOT NULL REFERENCES cases (id),
        seq BIGINT NOT NULL,
        token TEXT NOT NULL,
        UNIQUE (case_id, seq)
    )
    """,
    """
    CREATE TABLE blobs (
        sha256 TEXT PRIMARY KEY,
        content BYTEA NOT NULL
    )
    """,
    """
    CREATE TABLE numbers (
        day TEXT PRIMARY KEY,
        last BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        case_id TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE outbox (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        target TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('package', 'event')),
        case_id TEXT NOT NULL,
        body BYTEA NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at DOUBLE PRECISION NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE dead_letters (
        seq BIGINT PRIMARY KEY,
        target TEXT NOT NULL,
        kind TEXT NOT NULL,
        case_id TEXT NOT NULL,
        body BYTEA NOT NULL,
        code TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    )
    """,
    """
    CREATE TABLE audit_owed (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        owner TEXT NOT NULL,
        record BYTEA NOT NULL
    )
    """,
    """
    CREATE TABLE subscriptions (
        id TEXT PRIMARY KEY,
        department TEXT NOT NULL,
        url TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        UNIQUE (department, url)
    )
    """,
    """
    CREATE TABLE deliveries (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        subscription TEXT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
        event_id TEXT NOT NULL,
        body BYTEA NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        UNIQUE (subscription, event_id)
    )
    """,
)
SCHEMAS: Final = {SQLITE: _SQLITE_SCHEMA, POSTGRESQL: _POSTGRESQL_SCHEMA}
"""Version 1 of the store's tables, per dialect."""
# A set of keys travels as one JSON array parameter: no SQL text built from input.
_BLOBS: Final = {
    SQLITE: "SELECT sha256, content FROM blobs WHERE sha256 IN (SELECT value FROM json_each(?))",
    POSTGRESQL: "SELECT sha256, content FROM blobs"
    " WHERE sha256 IN (SELECT jsonb_array_elements_text(?::jsonb))",
}
_AUDIT_MOVED: Final = {
    SQLITE: "DELETE FROM audit_owed WHERE seq IN (SELECT value FROM json_each(?))",
    POSTGRESQL: "DELETE FROM audit_owed"
    " WHERE seq IN (SELECT jsonb_array_elements_text(?::jsonb)::bigint)",
}
_SUBSCRIPTIONS: Final = {
    SQLITE: "SELECT id, department, url, created_at FROM subscriptions"
    " WHERE department IN (SELECT value FROM json_each(?)) ORDER BY created_at, id",
    POSTGRESQL: "SELECT id, department, url, created_at FROM subscriptions"
    " WHERE department IN (SELECT jsonb_array_elements_text(?::jsonb))"
    " ORDER BY created_at, id",
}
MAX_READ: Final = 500
"""Rows read at once from an outbox or a list."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: str
    seq: int
    token: str


@dataclass(frozen=True, slots=True)
class Message:
    """One message owed to a peer node."""

    seq: int
    target: str
    kind: str
    case_id: str
    body: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook notification owed to a subscriber."""

    seq: int
    subscription: str
    url: str
    event_id: str
    body: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    department: str
    url: str
    created_at: float

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "department": self.department, "url": self.url}


@dataclass(slots=True)
class CaseWrite:
    """What one change of a case writes, in one transaction."""

    case: Case
    events: list[StoredEvent] = field(default_factory=list)
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    messages: list[tuple[str, str, bytes]] = field(default_factory=list)
    """(target node, kind, body) for the outbox."""
    audit: list[bytes] = field(default_factory=list)
    notices: list[tuple[str, str, bytes]] = field(default_factory=list)
    """(subscription id, event id, CloudEvent body) for the webhook deliveries."""


class SqlCaseStore(Store):
    """The node's cases (see the module's docstring), over an open
    :class:`~gateway._internal.sql.Database` of either backend (migrated here; closed by
    :meth:`close`). Shared by threads like the registry."""

    def __init__(self, db: Database) -> None:
        self._owner = secrets.token_hex(8)  # this object's audit records (see pending_audit)
        self._db = db
        try:
            db.migrate(SCHEMAS[db.dialect], SCHEMA_VERSION)
        except BaseException:
            db.close()
            raise

    # --- writing ---------------------------------------------------------------------------

    def create(
        self, day: str, build: Callable[[int], CaseWrite], *, idempotency: tuple[str, str] | None
    ) -> tuple[Case, bool]:
        """Number and write a new case: ``build(seq)`` makes it from the day's next number.

        With ``idempotency`` (key, fingerprint of the request): a key seen before returns
        that case and ``False`` (nothing written); the same key with another request is a
        409 ``case.idempotency_conflict``."""
        with self._db.write() as conn:
            if idempotency is not None:
                known = conn.execute(
                    "SELECT fingerprint, case_id FROM idempotency WHERE key = ?",
                    (idempotency[0],),
                ).fetchone()
                if known is not None:
                    if known[0] != idempotency[1]:
                        raise ConflictError(
                            "this Idempotency-Key was used for another application",
                            code="case.idempotency_conflict",
                        )
                    return self._get(conn, known[1]), False
            row = conn.execute("SELECT last FROM numbers WHERE day = ?", (day,)).fetchone()
            seq = (row[0] if row else 0) + 1
            conn.execute(
                "INSERT INTO numbers (day, last) VALUES (?, ?)"
                " ON CONFLICT (day) DO UPDATE SET last = excluded.last",
                (day, seq),
            )
            write = build(seq)
            self._insert(conn, write)
            if idempotency is not None:
                conn.execute(
                    "INSERT INTO idempotency (key, fingerprint, case_id) VALUES (?, ?, ?)",
                    (idempotency[0], idempotency[1], write.case.id),
                )
            self._owe(conn, write)
            return write.case, True

    def arrive(self, write: CaseWrite) -> bool:
        """Write a case arriving from its window; ``False`` if it is already here (a package
        delivered twice is applied once)."""
        with self._db.write() as conn:
            exists = conn.execute("SELECT 1 FROM cases WHERE id = ?", (write.case.id,)).fetchone()
            if exists:
                return False
            self._insert(conn, write)
            self._owe(conn, write)
            return True

    def update(self, write: CaseWrite, *, expected_seq: int) -> None:
        """Write a case's next events, if nobody appended one since it was read at
        ``expected_seq`` (else 409 ``case.conflict``: read it again)."""
        with self._db.write() as conn:
            self._update(conn, write, expected_seq)

    def update_with(self, case_id: str, change: Callable[[Case], CaseWrite | None]) -> Case:
        """Read a case and write ``change(case)`` in one transaction (``None``: nothing)."""
        with self._db.write() as conn:
            case = self._get(conn, case_id)
            write = change(case)
            if write is None:
                return case
            self._update(conn, write, case.seq)
            return write.case

    def _update(self, conn: SqlConnection, write: CaseWrite, expected_seq: int) -> None:
        case = write.case
        changed = conn.execute(
            "UPDATE cases SET state = ?, due_at = ?, updated_at = ?, seq = ?, record = ?"
            " WHERE id = ? AND seq = ?",
            (
                case.state.value,
                case.due_at,
                case.updated_at,
                case.seq,
                orjson.dumps(case.to_record()),
                case.id,
                expected_seq,
            ),
        ).rowcount
        if changed != 1:
            raise ConflictError(
                "the case changed while this action was prepared; read it and try again",
                code="case.conflict",
            )
        self._events(conn, write)
        self._owe(conn, write)

    def _insert(self, conn: SqlConnection, write: CaseWrite) -> None:
        case = write.case
        conn.execute(
            "INSERT INTO cases (id, owner_node, owner_department, window_node,"
            " window_department, applicant_digest, state, due_at, updated_at, seq, record)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                case.id,
                case.owner.node,
                case.owner.department,
                case.window.node,
                case.window.department,
                case.applicant.digest,
                case.state.value,
                case.due_at,
                case.updated_at,
                case.seq,
                orjson.dumps(case.to_record()),
            ),
        )
        self._events(conn, write)

    @staticmethod
    def _events(conn: SqlConnection, write: CaseWrite) -> None:
        conn.executemany(
            "INSERT INTO events (id, case_id, seq, token) VALUES (?, ?, ?, ?)",
            [(e.id, write.case.id, e.seq, e.token) for e in write.events],
        )
        conn.executemany(
            "INSERT INTO blobs (sha256, content) VALUES (?, ?) ON CONFLICT DO NOTHING",
            list(write.blobs.items()),
        )

    def _owe(self, conn: SqlConnection, write: CaseWrite) -> None:
        conn.executemany(
            "INSERT INTO outbox (target, kind, case_id, body) VALUES (?, ?, ?, ?)",
            [(target, kind, write.case.id, body) for target, kind, body in write.messages],
        )
        conn.executemany(
            "INSERT INTO audit_owed (owner, record) VALUES (?, ?)",
            [(self._owner, record) for record in write.audit],
        )
        conn.executemany(
            "INSERT INTO deliveries (subscription, event_id, body) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            write.notices,
        )

    # --- reading ---------------------------------------------------------------------------

    def get(self, case_id: str) -> Case:
        with self._db.read() as conn:
            return self._get(conn, case_id)

    @staticmethod
    def _get(conn: SqlConnection, case_id: str) -> Case:
        row = conn.execute("SELECT record FROM cases WHERE id = ?", (case_id,)).fetchone()
        if row is None:
            raise NotFoundError("no such case", code="case.not_found")
        return Case.from_record(orjson.loads(row[0]))

    def events(self, case_id: str) -> list[StoredEvent]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT id, seq, token FROM events WHERE case_id = ? ORDER BY seq", (case_id,)
            ).fetchall()
        return [StoredEvent(*row) for row in rows]

    def has_event(self, event_id: str) -> bool:
        with self._db.read() as conn:
            return (
                conn.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone()
                is not None
            )

    def blobs(self, digests: Iterable[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(digests))
        with self._db.read() as conn:
            rows = conn.execute(
                _BLOBS[self._db.dialect], (orjson.dumps(wanted).decode(),)
            ).fetchall()
        return {sha: bytes(content) for sha, content in rows}

    def listing(
        self,
        *,
        department: str,
        role: str,
        state: str | None,
        after: str | None,
        limit: int,
    ) -> list[Case]:
        """One page of a department's inbox (``role`` owner) or outbox (window), by case
        number, after the cursor ``after``."""
        column = "owner_department" if role == "owner" else "window_department"
        query = (
            f"SELECT record FROM cases WHERE {column} = ?"  # noqa: S608 - one of two names
            " AND (CAST(? AS TEXT) IS NULL OR state = ?) AND id > ? ORDER BY id LIMIT ?"
        )
        with self._db.read() as conn:
            rows = conn.execute(
                query, (department, state, state, after or "", min(limit, MAX_READ))
            ).fetchall()
        return [Case.from_record(orjson.loads(r[0])) for r in rows]

    def by_applicant(
        self, digest: str, *, after: str | None, limit: int, state: str | None = None
    ) -> list[Case]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT record FROM cases WHERE applicant_digest = ?"
                " AND (CAST(? AS TEXT) IS NULL OR state = ?) AND id > ? ORDER BY id LIMIT ?",
                (digest, state, state, after or "", min(limit, MAX_READ)),
            ).fetchall()
        return [Case.from_record(orjson.loads(r[0])) for r in rows]

    def all_cases(self, *, after: str | None, limit: int) -> list[Case]:
        """Every case (operators, ``tongban cases list``)."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT record FROM cases WHERE id > ? ORDER BY id LIMIT ?",
                (after or "", min(limit, MAX_READ)),
            ).fetchall()
        return [Case.from_record(orjson.loads(r[0])) for r in rows]

    def pending_since(self, owner_node: str, state: str, *, limit: int = MAX_READ) -> list[Case]:
        """Cases this node owns in ``state`` (the deemed-acceptance sweep), oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT record FROM cases WHERE owner_node = ? AND state = ?"
                " ORDER BY updated_at LIMIT ?",
                (owner_node, state, limit),
            ).fetchall()
        return [Case.from_record(orjson.loads(r[0])) for r in rows]

    def lookup_idempotency(self, key: str) -> tuple[str, str] | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT fingerprint, case_id FROM idempotency WHERE key = ?", (key,)
            ).fetchone()
        return (row[0], row[1]) if row else None

    # --- the outbox to peers ---------------------------------------------------------------

    def due_messages(self, now: float, *, limit: int = MAX_READ) -> list[Message]:
        """Messages whose retry time has come, in order (per peer, delivery keeps it)."""
        with self._db.read(snapshot=True) as conn:  # both statements see the same outbox
            rows = conn.execute(
                "SELECT seq, target, kind, case_id, body, attempts FROM outbox"
                " ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            due = {
                seq
                for (seq,) in conn.execute(
                    "SELECT seq FROM outbox WHERE next_at <= ?", (now,)
                ).fetchall()
            }
        messages = [Message(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in rows]
        # a peer's messages go in order: none after one of its messages that is not due
        blocked: set[str] = set()
        out: list[Message] = []
        for message in messages:
            if message.target in blocked:
                continue
            if message.seq not in due:
                blocked.add(message.target)
                continue
            out.append(message)
        return out

    def sent(self, seq: int) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def retry_message(self, seq: int, *, next_at: float) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ? WHERE seq = ?",
                (next_at, seq),
            )

    def dead(self, seq: int, *, code: str, at: float) -> None:
        """Move a message its peer refused for good (a 4xx about the message itself) out of
        the outbox into ``dead_letters``, kept for operators: the peer's later messages go on."""
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO dead_letters (seq, target, kind, case_id, body, code, at)"
                " SELECT seq, target, kind, case_id, body, ?, ? FROM outbox WHERE seq = ?",
                (code, at, seq),
            )
            conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def dead_letters(self, *, limit: int = MAX_READ) -> list[tuple[str, str, str, str, float]]:
        """(case, peer, kind, code, time) of the messages peers refused for good."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT case_id, target, kind, code, at FROM dead_letters ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [(r[0], r[1], r[2], r[3], float(r[4])) for r in rows]

    def outbox_count(self) -> int:
        with self._db.read() as conn:
            return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    # --- the audit records owed ------------------------------------------------------------

    def pending_audit(self, *, every_owner: bool = False) -> list[tuple[int, bytes]]:
        """Audit records still owed: this object's own, or (at start-up, after a crash)
        every process's."""
        query = "SELECT seq, record FROM audit_owed"
        args: tuple[str, ...] = ()
        if not every_owner:
            query += " WHERE owner = ?"
            args = (self._owner,)
        with self._db.read() as conn:
            rows = conn.execute(query + " ORDER BY seq LIMIT 1000", args).fetchall()
        return [(seq, bytes(record)) for seq, record in rows]

    def audit_moved(self, seqs: Collection[int]) -> None:
        with self._db.write() as conn:
            conn.execute(_AUDIT_MOVED[self._db.dialect], (orjson.dumps(list(seqs)).decode(),))

    # --- webhook subscriptions and deliveries ----------------------------------------------

    def subscribe(self, subscription: Subscription, *, max_per_department: int) -> Subscription:
        with self._db.write() as conn:
            known = conn.execute(
                "SELECT id, department, url, created_at FROM subscriptions"
                " WHERE department = ? AND url = ?",
                (subscription.department, subscription.url),
            ).fetchone()
            if known is not None:
                return Subscription(*known)
            count = conn.execute(
                "SELECT count(*) FROM subscriptions WHERE department = ?",
                (subscription.department,),
            ).fetchone()[0]
            if count >= max_per_department:
                raise ConflictError(
                    f"a department may hold at most {max_per_department} subscriptions",
                    code="webhook.too_many",
                )
            conn.execute(
                "INSERT INTO subscriptions (id, department, url, created_at) VALUES (?, ?, ?, ?)",
                (
                    subscription.id,
                    subscription.department,
                    subscription.url,
                    subscription.created_at,
                ),
            )
            return subscription

    def unsubscribe(self, department: str, subscription_id: str) -> None:
        with self._db.write() as conn:
            gone = conn.execute(
                "DELETE FROM subscriptions WHERE id = ? AND department = ?",
                (subscription_id, department),
            ).rowcount
        if gone != 1:
            raise NotFoundError("no such subscription", code="webhook.not_found")

    def subscriptions(self, departments: Collection[str]) -> list[Subscription]:
        with self._db.read() as conn:
            rows = conn.execute(
                _SUBSCRIPTIONS[self._db.dialect], (orjson.dumps(list(departments)).decode(),)
            ).fetchall()
        return [Subscription(*row) for row in rows]

    def due_deliveries(self, now: float, *, limit: int = MAX_READ) -> list[Delivery]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT d.seq, d.subscription, s.url, d.event_id, d.body, d.attempts"
                " FROM deliveries AS d JOIN subscriptions AS s ON s.id = d.subscription"
                " WHERE d.next_at <= ? ORDER BY d.seq LIMIT ?",
                (now, limit),
            ).fetchall()
        return [Delivery(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in rows]

    def delivered(self, seq: int) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM deliveries WHERE seq = ?", (seq,))

    def retry_delivery(self, seq: int, *, next_at: float, give_up_after: int) -> bool:
        """Schedule another attempt; ``False`` (and dropped) after ``give_up_after``."""
        with self._db.write() as conn:
            row = conn.execute("SELECT attempts FROM deliveries WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                return False
            if row[0] + 1 >= give_up_after:
                conn.execute("DELETE FROM deliveries WHERE seq = ?", (seq,))
                return False
            conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next_at = ? WHERE seq = ?",
                (next_at, seq),
            )
            return True

    def delivery_count(self) -> int:
        with self._db.read() as conn:
            return int(conn.execute("SELECT count(*) FROM deliveries").fetchone()[0])


class SqliteCaseStore(SqlCaseStore):
    """The node's cases in one SQLite file (``cases.sqlite3``) every process of it shares."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        db = Connections(
            path,
            busy_timeout=busy_timeout,
            synchronous="FULL",
            prefix="case",
            store="case store",
            foreign_keys=True,
        )
        super().__init__(db)


class PostgresCaseStore(SqlCaseStore):
    """The node's cases in the schema ``cases`` of its PostgreSQL database, shared by every
    replica of the node."""

    def __init__(self, dsn: Secret) -> None:
        super().__init__(PgConnections(dsn, schema="cases", prefix="case", store="case store"))
