"""The node's tamper-evident audit log: an append-only Merkle tree log (RFC 9162 style).

Every issuance, status change, lookup hop, fetch, verification, consent use, key event and
trust-list change is one :class:`AuditRecord`. Its canonical bytes (orjson, sorted keys) are
a leaf of a Merkle tree (:mod:`gateway.crypto.merkle`); the node signs tree heads with its seal key
(:data:`STH_TYP`) and keeps every head it signed, so that:

- :func:`verify_log` (``tongban audit verify``) re-reads the whole file and finds an altered,
  removed or reordered entry, or a history rewritten under an older signed head;
- a partner holding an older head asks for a consistency proof and :class:`HeadWatcher`
  reports a fork when the log it sees now does not extend the one it saw before.

Holder ids never enter the log in clear: a ``holder`` member must be a keyed digest
(:mod:`gateway.certificates.holders`), and anything shaped like a resident ID number is refused.

The store is one SQLite file in WAL mode with ``synchronous = FULL``: :meth:`append` returns
after its transaction is durably committed, so an acknowledged record survives ``kill -9``
and a power cut. Writers and readers follow :mod:`gateway.storage.registry`: a writer and a
read-only
reader connection, each behind its own lock.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Final

import orjson

from gateway._internal.sqlite import Connections, PendingWrite, connect, storage_error
from gateway._internal.wire import JsonLimits, b64url_decode, b64url_encode, loads
from gateway.clock import Clock
from gateway.crypto.jwks import KeyResolver
from gateway.crypto.merkle import (
    HASH_BYTES,
    MerkleLog,
    TreeBuilder,
    leaf_hash,
    verify_consistency,
)
from gateway.crypto.seals import Signer, sign_compact, verify_compact
from gateway.errors import (
    ConfigError,
    GatewayError,
    InputError,
    InvalidIdentifier,
    StorageError,
    VerificationError,
)
from gateway.identifiers import parse_certificate_id
from gateway.ids import NodeId

# FULL: a commit is on disk when append returns, so an acknowledged record survives
# kill -9 and power loss (NORMAL in WAL mode may lose the last commits on power loss).
_SYNCHRONOUS = "FULL"
_AUTOCHECKPOINT_PAGES = 65_536
"""256 MiB of WAL at 4 KiB pages: reached only when no node checkpoints the log."""
STH_TYP: Final = "audit-sth+jws"
MAX_PAGE: Final = 1000
MAX_DETAILS_BYTES: Final = 4096
RECOVERY_WINDOW: Final = 100_000
"""Entries :meth:`SqliteAuditLog.append_missing` looks back over for a record already there."""
SCHEMA_VERSION: Final = 1

_DETAILS_LIMITS: Final = JsonLimits(max_depth=4, max_string=1024, max_members=64)
_ENTRY_LIMITS: Final = JsonLimits(max_depth=6, max_string=2048, max_members=128)
_HOLDER_DIGEST: Final = re.compile(r"[0-9a-f]{64}")
# A resident ID number (GB 11643): 17 digits and a check character, standing on its own.
_ID_NUMBER: Final = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
_ID_NUMBER_LENGTH: Final = 18
_CLAIMS_SKEW: Final = 1


class AuditKind(StrEnum):
    ISSUANCE = "issuance"
    STATUS = "status"
    LOOKUP_HOP = "lookup_hop"
    FETCH = "fetch"
    VERIFICATION = "verification"
    CONSENT_USE = "consent_use"
    KEY_EVENT = "key_event"
    TRUST_LIST = "trust_list"


AuditItem = tuple[AuditKind, str, str | None, Mapping[str, Any] | None]
"""A record to append: (kind, actor, subject, details)."""


@dataclass(frozen=True, slots=True)
class CheckedItem:
    """A record :meth:`SqliteAuditLog.check` accepted; its details are a private copy."""

    kind: AuditKind
    actor: str
    subject: str | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry of the log. ``seq`` is its 0-based leaf index."""

    seq: int
    at: float
    kind: AuditKind
    node: NodeId
    actor: str
    """The client id or node id that caused the event."""
    subject: str | None
    """A certificate id or kid, when the event is about one."""
    details: Mapping[str, Any]

    def entry(self) -> bytes:
        """The canonical entry bytes: the leaf's input."""
        return orjson.dumps(
            {
                "seq": self.seq,
                "at": self.at,
                "kind": self.kind.value,
                "node": self.node,
                "actor": self.actor,
                "subject": self.subject,
                "details": dict(self.details),
            },
            option=orjson.OPT_SORT_KEYS,
        )


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    node: NodeId
    tree_size: int
    root_hash: bytes
    issued_at: float
    token: str
    """The compact JWS (typ :data:`STH_TYP`) a partner verifies with :func:`verify_tree_head`."""


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """What :func:`verify_log` checked, when every check passed."""

    size: int
    heads_checked: int
    root_hash: bytes


# --- records --------------------------------------------------------------------------------


def _clear_holder(where: str) -> InputError:
    return InputError(
        f"{where} looks like a holder id in clear; the audit log takes only holder digests",
        code="audit.clear_holder_id",
    )


def _has_id_number(text: str) -> bool:
    """Something shaped like a resident ID number in clear somewhere in ``text``.

    A GB/T 36904 certificate identifier is not one, though its all-digit issuer credit code
    can look like one: identifiers are recognised and allowed whole.
    """
    # shape alone: a mistyped number is still personal data
    if len(text) < _ID_NUMBER_LENGTH or _ID_NUMBER.search(text) is None:
        return False
    try:
        parse_certificate_id(text)
    except InvalidIdentifier:
        return True
    return False


def _check_finite(value: Any) -> None:
    """orjson writes NaN and infinities as ``null``: refuse them rather than change them."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
        elif isinstance(node, float) and not math.isfinite(node):
            raise InputError("audit details must be finite numbers", code="audit.bad_details")


def _canonical_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """A private, JSON-only copy of ``details``, bounded, with no holder id in clear."""
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise InputError("audit details must be a JSON object", code="audit.bad_details")
    plain = dict(details)
    try:
        data = orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise InputError(
            "audit details must be plain JSON", code="audit.bad_details", log_detail=str(exc)
        ) from exc
    _check_finite(plain)  # after dumps, which refuses cycles and deep nesting
    if len(data) > MAX_DETAILS_BYTES:
        raise InputError(
            f"audit details may be at most {MAX_DETAILS_BYTES} bytes", code="audit.bad_details"
        )
    # orjson's own output reads back exactly (members unique, numbers finite as checked,
    # integers within 64 bits, strings valid UTF-8), so no strict parser is needed here
    value: dict[str, Any] = orjson.loads(data)
    _check_details(value)
    return value


def _check_details(details: dict[str, Any]) -> None:
    """One walk of a copy of details: within :data:`_DETAILS_LIMITS`, and no holder id in
    clear (a member whose name says ``holder`` holds a digest; no string holds an ID number)."""
    limits = _DETAILS_LIMITS
    members = 0
    stack: list[tuple[Any, str, int]] = [(details, "details", 1)]
    while stack:
        node, path, depth = stack.pop()
        if depth > limits.max_depth:
            raise _bad_details(f"nested deeper than {limits.max_depth} levels")
        members += len(node)
        if members > limits.max_members:
            raise _bad_details(f"more than {limits.max_members} members")
        named = node.items() if type(node) is dict else enumerate(node)
        for name, child in named:
            if type(name) is str:
                if len(name) > limits.max_string:
                    raise _bad_details(f"a name is longer than {limits.max_string} characters")
                if "holder" in name.lower() and not (
                    type(child) is str and _HOLDER_DIGEST.fullmatch(child)
                ):
                    raise _clear_holder(f"{path}/{name}")
            if type(child) is str:
                if len(child) > limits.max_string:
                    raise _bad_details(f"a string is longer than {limits.max_string} characters")
                if _has_id_number(child):
                    raise _clear_holder(f"{path}/{name}")
            elif type(child) is dict or type(child) is list:
                stack.append((child, f"{path}/{name}", depth + 1))


def _bad_details(detail: str) -> InputError:
    return InputError(f"audit details exceed a limit: {detail}", code="audit.bad_details")


def _check_text(value: str | None, what: str) -> None:
    if value is None:
        if what == "subject":
            return
        raise InputError(f"audit {what} is required", code="audit.bad_record")
    if not isinstance(value, str) or not value or len(value) > 256:
        raise InputError(f"audit {what} must be a short string", code="audit.bad_record")
    if _has_id_number(value):
        raise _clear_holder(what)


def _canonical(record: AuditRecord | CheckedItem) -> bytes:
    """A record's event (kind, actor, subject, details) in one canonical form: what makes two
    records the same event whatever their place and time in the log, and what an outbox
    keeps (:func:`encode_item`)."""
    return orjson.dumps(
        [record.kind.value, record.actor, record.subject, dict(record.details)],
        option=orjson.OPT_SORT_KEYS,
    )


def encode_item(item: AuditItem) -> bytes:
    """A record to append later (a store's outbox), checked now: a bad record fails before
    the change it describes is committed. :func:`decode_item` reads it back."""
    (checked,) = SqliteAuditLog.check([item])
    return _canonical(checked)


def decode_item(data: bytes) -> AuditItem:
    """A record :func:`encode_item` wrote. Raises :class:`InputError` for anything else."""
    value = loads(data, _ENTRY_LIMITS)
    if not (isinstance(value, list) and len(value) == 4 and isinstance(value[3], dict)):
        raise InputError("not a pending audit record", code="audit.bad_record")
    kind, actor, subject, details = value
    try:
        return AuditKind(kind), actor, subject, details
    except ValueError as exc:
        raise InputError("not a pending audit record", code="audit.bad_record") from exc


def parse_entry(entry: bytes) -> AuditRecord:
    """An :class:`AuditRecord` from its entry bytes. Raises :class:`InputError`."""
    obj = loads(entry, _ENTRY_LIMITS)
    try:
        if not isinstance(obj, dict) or set(obj) != {
            "seq",
            "at",
            "kind",
            "node",
            "actor",
            "subject",
            "details",
        }:
            raise TypeError("wrong members")
        seq, at, details = obj["seq"], obj["at"], obj["details"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise TypeError("seq")
        if not isinstance(at, float | int) or isinstance(at, bool):
            raise TypeError("at")
        if not isinstance(details, dict):
            raise TypeError("details")
        subject = obj["subject"]
        if not isinstance(obj["node"], str) or not isinstance(obj["actor"], str):
            raise TypeError("node/actor")
        if subject is not None and not isinstance(subject, str):
            raise TypeError("subject")
        return AuditRecord(
            seq=seq,
            at=float(at),
            kind=AuditKind(obj["kind"]),
            node=NodeId(obj["node"]),
            actor=obj["actor"],
            subject=subject,
            details=MappingProxyType(details),
        )
    except (TypeError, ValueError) as exc:
        raise InputError(
            "an audit entry is malformed", code="audit.bad_entry", log_detail=str(exc)
        ) from exc


# --- signed tree heads ----------------------------------------------------------------------


def _bad_head(detail: str) -> VerificationError:
    return VerificationError(detail, code="audit.bad_head")


def sign_tree_head(
    signer: Signer, *, node: NodeId, tree_size: int, root_hash: bytes, issued_at: float
) -> SignedTreeHead:
    iat = int(issued_at)
    claims = {
        "iss": node,
        "tree_size": tree_size,
        "root_hash": b64url_encode(root_hash),
        "iat": iat,
    }
    token = sign_compact(
        signer, orjson.dumps(claims, option=orjson.OPT_SORT_KEYS), typ=STH_TYP, signed_at=iat
    )
    return SignedTreeHead(node, tree_size, root_hash, float(iat), token)


def verify_tree_head(token: str, keys: KeyResolver, *, node: NodeId, now: float) -> SignedTreeHead:
    """Verify a signed tree head of ``node``. Raises a :class:`VerificationError`.

    Seal failures keep their ``seal.*`` codes; a head that is well signed but claims the
    wrong node or malformed values is ``audit.bad_head``.
    """
    # 1. a compact JWS of the pinned type, signed by a key we trust
    verified = verify_compact(token, keys, typ=STH_TYP, now=now)
    claims = verified.payload
    # 2. the key belongs to the node we asked about, and the head says it is that node's
    if verified.node != node or claims.get("iss") != node:
        raise _bad_head("the tree head is not signed by the node it claims to be from")
    # 3. the size is a non-negative integer, the root a 32-byte hash
    tree_size = claims.get("tree_size")
    if not isinstance(tree_size, int) or isinstance(tree_size, bool) or tree_size < 0:
        raise _bad_head("the tree head's size is not a non-negative integer")
    root_b64 = claims.get("root_hash")
    try:
        root_hash = b64url_decode(root_b64, max_length=64) if isinstance(root_b64, str) else b""
    except InputError as exc:
        raise _bad_head("the tree head's root is not base64url") from exc
    if len(root_hash) != HASH_BYTES:
        raise _bad_head("the tree head's root is not a SHA-256 hash")
    # 4. iat is an integer matching the signing time
    iat = claims.get("iat")
    if (
        not isinstance(iat, int)
        or isinstance(iat, bool)
        or abs(iat - int(verified.signed_at)) > _CLAIMS_SKEW
    ):
        raise _bad_head("the tree head's iat does not match its signing time")
    return SignedTreeHead(node, tree_size, root_hash, float(iat), token)


# --- the SQLite store -----------------------------------------------------------------------

_SCHEMA = (
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


def _storage_error(exc: sqlite3.Error) -> GatewayError:
    return storage_error(exc, prefix="audit", store="audit log")


def _bad_range(detail: str) -> InputError:
    return InputError(detail, code="audit.bad_range")


class StagedAppend:
    """Audit records written in an open transaction (:meth:`SqliteAuditLog.stage`)."""

    def __init__(
        self,
        pending: PendingWrite,
        records: list[AuditRecord],
        on_commit: Callable[[], None],
    ) -> None:
        self._pending = pending
        self._records = records
        self._on_commit = on_commit

    def commit(self) -> list[AuditRecord]:
        """Commit (the durable point: with ``synchronous = FULL``, the disk flush); the records."""
        self._pending.commit()
        self._on_commit()
        return self._records

    def rollback(self) -> None:
        self._pending.rollback()


class SqliteAuditLog:
    """The audit log of ``node`` in one SQLite file; tree heads signed by ``signer``.

    The leaf hashes are cached in memory (32 bytes an entry), loaded at open and extended
    after each commit; before any head or proof, the cache is brought up to the table's size
    (another process may have appended), and a table smaller than the cache is an error.
    """

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
        self._busy_timeout = busy_timeout
        self._node = node
        self._signer = signer
        self._clock = clock
        self._cache_lock = threading.Lock()
        self._leaves = MerkleLog()  # every leaf hash, with its subtrees' roots
        self._last_at = 0.0
        self._db = Connections(
            path,
            busy_timeout=busy_timeout,
            synchronous=_SYNCHRONOUS,
            prefix="audit",
            store="audit log",
        )
        try:
            # Checkpoints are :meth:`checkpoint`'s, in the background: a commit never copies
            # the WAL into the database (the safety net below only for a log nobody serves).
            self._db.writer.execute(f"PRAGMA wal_autocheckpoint = {_AUTOCHECKPOINT_PAGES}")
            self._db.migrate(_SCHEMA, SCHEMA_VERSION)
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error):
                raise ConfigError(
                    f"cannot open the audit log at {path}", code="audit.open"
                ) from exc
            raise
        self._checkpoint_lock = threading.Lock()
        self._checkpointer: sqlite3.Connection | None = None
        with self._db.read(snapshot=True) as conn:
            self._sync(conn)

    # --- lifecycle ---------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Copy committed WAL frames into the database (SQLite's PASSIVE checkpoint: never
        waits for, nor blocks, readers and writers), on a connection of its own. A serving
        node calls it every few seconds off the event loop."""
        with self._checkpoint_lock:
            self._db.check_open()
            try:
                if self._checkpointer is None:
                    self._checkpointer = connect(
                        self._path, self._busy_timeout, synchronous=_SYNCHRONOUS
                    )
                self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                raise self._db.translate(exc) from exc

    def close(self) -> None:
        self._db.close()
        with self._checkpoint_lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None

    def __enter__(self) -> SqliteAuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def node(self) -> NodeId:
        return self._node

    # --- plumbing ----------------------------------------------------------------------------

    @staticmethod
    def _table_size(conn: sqlite3.Connection) -> int:
        top = conn.execute("SELECT max(seq) FROM entries").fetchone()[0]
        return 0 if top is None else int(top) + 1

    def _sync(self, conn: sqlite3.Connection) -> int:
        """Bring the leaf cache up to the table (read in ``conn``'s snapshot); its size."""
        size = self._table_size(conn)
        with self._cache_lock:
            have = len(self._leaves)
            if size < have and conn is not self._db.writer and self._fresh_size() >= have:
                # A read snapshot taken before this process's latest commit: the cache is
                # ahead, not wrong (a fresh look at the file shows the entries are there).
                return size
            if size < have:
                raise VerificationError(
                    f"the audit log holds {size} entries but {have} were seen: "
                    f"entries from seq {size} were removed",
                    code="audit.removed",
                )
            if size > have:
                rows = conn.execute(
                    "SELECT seq, leaf_hash, entry FROM entries WHERE seq >= ? ORDER BY seq",
                    (have,),
                ).fetchall()
                if [seq for seq, _, _ in rows] != list(range(have, size)):
                    raise VerificationError(
                        "the audit log has a gap in its sequence", code="audit.removed"
                    )
                self._leaves.extend([bytes(leaf) for _, leaf, _ in rows])
                self._last_at = max(self._last_at, parse_entry(bytes(rows[-1][2])).at)
            return size

    def _fresh_size(self) -> int:
        """The table's size on a new connection: no snapshot, no lock of ours (rare path)."""
        conn = sqlite3.connect(f"{self._path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return self._table_size(conn)
        except sqlite3.Error as exc:
            raise self._db.translate(exc) from exc
        finally:
            conn.close()

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
        return self.append_checked(self.check(items))

    @staticmethod
    def check(items: Iterable[AuditItem]) -> list[CheckedItem]:
        """Records validated (and their details copied) before anything touches the store;
        raises :class:`InputError` ``audit.bad_record`` for the first bad one."""
        checked: list[CheckedItem] = []
        for kind, actor, subject, details in items:
            if not isinstance(kind, AuditKind):
                raise InputError("unknown audit record kind", code="audit.bad_record")
            _check_text(actor, "actor")
            _check_text(subject, "subject")
            checked.append(CheckedItem(kind, actor, subject, _canonical_details(details)))
        return checked

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

        def missing(conn: sqlite3.Connection, size: int) -> Sequence[CheckedItem]:
            rows = conn.execute(
                "SELECT entry FROM entries WHERE seq >= ? ORDER BY seq", (max(0, size - window),)
            ).fetchall()
            present = {_canonical(parse_entry(bytes(entry))) for (entry,) in rows}
            return [c for c in checked if _canonical(c) not in present]

        return self._stage(missing).commit()

    def _stage(
        self, select: Callable[[sqlite3.Connection, int], Sequence[CheckedItem]]
    ) -> StagedAppend:
        """Begin a write, catch up with any other writer, append what ``select`` (given the
        connection and the log's size) chooses; the transaction is left open."""
        pending = self._db.begin()
        with pending.rolled_back_on_error() as conn:
            # catch up with any other writer, then number after the table's last entry
            start = self._sync(conn)
            chosen = select(conn, start)
            at = max(self._clock.now(), self._last_at)  # timestamps never go back
            records = [
                AuditRecord(start + i, at, c.kind, self._node, c.actor, c.subject, c.details)
                for i, c in enumerate(chosen)
            ]
            entries = [r.entry() for r in records]
            leaves = [leaf_hash(entry) for entry in entries]
            conn.executemany(
                "INSERT INTO entries (seq, entry, leaf_hash) VALUES (?, ?, ?)",
                [(r.seq, e, leaf) for r, e, leaf in zip(records, entries, leaves, strict=True)],
            )
        return StagedAppend(pending, records, lambda: self._committed(start, at, leaves))

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
                "SELECT entry FROM entries WHERE json_extract(CAST(entry AS TEXT), '$.kind') = ?"
                " AND json_extract(CAST(entry AS TEXT), '$.subject') = ? ORDER BY seq LIMIT 1",
                (AuditKind.ISSUANCE.value, certificate_id),
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

    def inclusion_proof(self, seq: int, tree_size: int) -> list[bytes]:
        if not 0 <= seq < tree_size:
            raise _bad_range(f"entry {seq} is not in a tree of {tree_size} entries")
        self._checked_size(tree_size)
        with self._cache_lock:
            return self._leaves.inclusion_proof(seq, tree_size)

    def consistency_proof(self, m: int, n: int) -> list[bytes]:
        if not 0 <= m <= n:
            raise _bad_range(f"cannot prove a tree of {m} entries consistent with one of {n}")
        self._checked_size(n)
        with self._cache_lock:
            return self._leaves.consistency_proof(m, n)


# --- verifying a whole log ------------------------------------------------------------------


def _tamper(code: str, seq: int, detail: str) -> VerificationError:
    return VerificationError(f"entry seq {seq}: {detail}", code=code, pointers=(f"/entries/{seq}",))


def verify_log(
    log: Path | SqliteAuditLog, keys: KeyResolver, *, node: NodeId, now: float
) -> AuditVerification:
    """Check a node's audit log end to end: ``tongban audit verify``.

    Raises :class:`VerificationError` naming the first bad entry: ``audit.removed``,
    ``audit.reordered``, ``audit.altered`` or ``audit.rewritten`` (a signed head the entries
    no longer match); a bad head signature keeps its ``seal.*`` code.
    """
    path = log.path if isinstance(log, SqliteAuditLog) else log
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open the audit log at {path}", code="audit.open") from exc
    try:
        conn.execute("BEGIN")
        return _verify(conn, keys, node=node, now=now)
    except sqlite3.Error as exc:
        raise _storage_error(exc) from exc
    finally:
        conn.close()


def _verify(
    conn: sqlite3.Connection, keys: KeyResolver, *, node: NodeId, now: float
) -> AuditVerification:
    # 1. every stored head verifies, and its columns agree with what it signed
    heads: dict[int, list[SignedTreeHead]] = {}
    for tree_size, root_hash, token in conn.execute(
        "SELECT tree_size, root_hash, token FROM heads ORDER BY tree_size, id"
    ):
        head = verify_tree_head(token, keys, node=node, now=now)
        if head.tree_size != tree_size or head.root_hash != bytes(root_hash):
            raise VerificationError(
                f"the stored head of size {tree_size} does not match its signature",
                code="audit.rewritten",
            )
        heads.setdefault(head.tree_size, []).append(head)
    builder = TreeBuilder()
    last_good = 0  # the largest head size the entries were proven to match
    last_at = float("-inf")

    def check_heads(size: int) -> None:
        nonlocal last_good
        root_hash = builder.root()
        for head in heads.get(size, ()):
            if head.root_hash != root_hash:
                raise _tamper(
                    "audit.rewritten",
                    last_good,
                    f"the entries from seq {last_good} to {size - 1} no longer match "
                    f"the signed tree head of size {size}",
                )
        if size in heads:
            last_good = size

    check_heads(0)
    cursor = conn.execute("SELECT seq, entry, leaf_hash FROM entries ORDER BY seq")
    for seq, entry, stored_leaf in cursor:
        expected = builder.size
        # 2. the sequence is contiguous: a gap is a removed entry
        if seq != expected:
            raise _tamper("audit.removed", expected, "the entry is missing")
        entry_bytes = bytes(entry)
        # 3. the entry parses, and says it is at the row it is in
        try:
            record = parse_entry(entry_bytes)
        except InputError as exc:
            raise _tamper("audit.altered", seq, "the entry is not a valid record") from exc
        if record.seq != seq:
            raise _tamper("audit.reordered", seq, f"the row holds the entry of seq {record.seq}")
        # 4. the stored leaf hash is the hash of the entry
        leaf = leaf_hash(entry_bytes)
        if leaf != bytes(stored_leaf):
            raise _tamper("audit.altered", seq, "the entry does not match its leaf hash")
        # 5. time never runs backwards
        if record.at < last_at:
            raise _tamper("audit.reordered", seq, "the entry is older than the one before it")
        last_at = record.at
        # 6. every head signed at this size matches the recomputed tree
        builder.append(leaf)
        check_heads(builder.size)
    # 7. a head larger than the log: the entries after the log's end were removed
    beyond = [size for size in heads if size > builder.size]
    if beyond:
        raise _tamper(
            "audit.removed",
            builder.size,
            f"a signed tree head covers {max(beyond)} entries; the log has {builder.size}",
        )
    return AuditVerification(
        size=builder.size,
        heads_checked=sum(len(v) for v in heads.values()),
        root_hash=builder.root(),
    )


# --- partners checking each other -----------------------------------------------------------

ConsistencyProofFetcher = Callable[[int, int], Sequence[bytes]]
"""``fetch(m, n)``: the partner's consistency proof between its trees of m and n entries."""


class HeadWatcher:
    """Keeps the last verified head of each partner and proves each new one extends it.

    A head that is smaller, differs at the same size, or cannot be proven consistent is a
    fork (``audit.fork``): the partner is remembered in :attr:`forks` (for metrics) and its
    last good head is kept. Fetch failures propagate as they are: they prove nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[NodeId, SignedTreeHead] = {}
        self._forks: set[NodeId] = set()

    @property
    def forks(self) -> frozenset[NodeId]:
        with self._lock:
            return frozenset(self._forks)

    def last(self, node: NodeId) -> SignedTreeHead | None:
        with self._lock:
            return self._last.get(node)

    def _fork(self, node: NodeId, detail: str, exc: Exception | None = None) -> VerificationError:
        with self._lock:
            self._forks.add(node)
        return VerificationError(
            f"the audit log of {node} forked: {detail}",
            code="audit.fork",
            log_detail=None if exc is None else repr(exc),
        )

    def observe(
        self, node: NodeId, sth: SignedTreeHead, consistency_proof_fetcher: ConsistencyProofFetcher
    ) -> None:
        """Check ``sth`` (already verified with :func:`verify_tree_head`) against the last."""
        if sth.node != node:
            raise _bad_head(f"a tree head of {sth.node} was offered as one of {node}")
        previous = self.last(node)
        # 1. the first head of a partner is taken on trust (trust on first use)
        if previous is not None:
            # 2. a log never shrinks
            if sth.tree_size < previous.tree_size:
                raise self._fork(
                    node, f"its size went from {previous.tree_size} to {sth.tree_size}"
                )
            # 3. the same size has the same root
            if sth.tree_size == previous.tree_size:
                if sth.root_hash != previous.root_hash:
                    raise self._fork(node, f"two different roots at size {sth.tree_size}")
            # 4. a larger tree is proven to extend the last one
            else:
                proof = consistency_proof_fetcher(previous.tree_size, sth.tree_size)
                try:
                    verify_consistency(
                        previous.tree_size,
                        sth.tree_size,
                        previous.root_hash,
                        sth.root_hash,
                        proof,
                    )
                except VerificationError as exc:
                    raise self._fork(
                        node,
                        f"size {sth.tree_size} does not extend size {previous.tree_size}",
                        exc,
                    ) from exc
        with self._lock:
            self._last[node] = sth
