"""The national catalog: which node holds which certificates of a holder.

When a node issues a certificate it registers it with ``national``: the certificate id, its
type, the holding node, the holder's keyed digest (see :mod:`gateway.certificates.holders`) and its
status. A lookup by holder and types (``POST /v1/lookups``) asks the catalog which nodes to
route to. The catalog never sees a holder id in clear: it accepts only 64-character
lower-case hex digests, refuses anything that looks like an ID number, and its table
re-checks the digest's shape (a ``CHECK`` constraint), so no code path can store one.

A node may only register and change its own certificates: the node named in a request must
be the node its hop proof authenticated (:class:`~gateway.federation.hops.HopVerifier`), and once a
certificate id is registered by one node, no other node can claim or change it.

:class:`Catalog` is the small interface the rest of the gateway uses; :class:`SqliteCatalog`
implements it on an embedded SQLite file in WAL mode (owner-only permissions, versioned
schema), so a server database can follow. :class:`CatalogService` validates request bodies
strictly and stamps registrations with the injected clock.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Final, Protocol

from gateway._internal.sqlite import Connections
from gateway.certificates.schemas import CertificateTypeInfo
from gateway.clock import Clock, to_rfc3339
from gateway.errors import (
    ConfigError,
    ConflictError,
    Forbidden,
    GatewayError,
    InputError,
    InvalidIdentifier,
    NotFoundError,
    UnknownCertificateType,
)
from gateway.identifiers import parse_certificate_id
from gateway.ids import CertificateId, NodeId
from gateway.storage.registry import CertStatus

# NORMAL in WAL mode: a commit survives a process crash (kill -9).
_SYNCHRONOUS = "NORMAL"
SCHEMA_VERSION: Final = 2
MAX_STATUS_EVENT: Final = 2**53 - 1
"""The largest status event number a registration may carry (an exact JSON number)."""
MAX_LOOKUP_TYPES: Final = 16
"""A lookup names 1 to this many certificate types."""
MAX_LOOKUP_RESULTS: Final = 100
"""The most entries one service lookup returns."""
MAX_STORE_LIMIT: Final = 1_000
MAX_STORE_TYPES: Final = 64
MAX_TYPE_NAME: Final = 64
MAX_NODE_NAME: Final = 64
MIN_SQLITE: Final = (3, 38, 0)  # STRICT tables, built-in json_each

_HOLDER_DIGEST: Final = re.compile(r"[0-9a-f]{64}")
_CLEAR_ID_LENGTH: Final = 18
"""Both holder id kinds (GB 11643 resident ID numbers, GB 32100 credit codes) are 18 long."""

_REGISTER_MEMBERS: Final = frozenset({"certificate_id", "type", "node", "holder_digest"})
_REGISTER_OPTIONAL: Final = frozenset({"status", "status_event"})
_LOOKUP_MEMBERS: Final = frozenset({"holder_digest", "types"})


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One certificate as the catalog knows it: where it lives, whose it is (keyed)."""

    certificate_id: CertificateId
    type: str
    node: NodeId
    holder_digest: str
    """HMAC-SHA256 of the holder id (:func:`gateway.certificates.holders.holder_digest`),
    lower-case hex."""
    registered_at: float
    status: CertStatus
    status_event: int = 0
    """The holding node's number for the status change that set ``status`` (0: issuance).
    A later change has a larger number, so the catalog keeps the latest status whatever
    order the holding node's messages arrive in."""

    def to_json(self) -> dict[str, Any]:
        return {
            "certificate_id": self.certificate_id,
            "type": self.type,
            "node": self.node,
            "holder_digest": self.holder_digest,
            "registered_at": to_rfc3339(self.registered_at),
            "status": self.status.value,
        }


class Catalog(Protocol):
    """What the gateway needs from a catalog store."""

    def register(self, entry: CatalogEntry) -> CatalogEntry: ...

    def register_many(self, entries: Iterable[CatalogEntry], *, batch: int = 5000) -> int: ...

    def get(self, certificate_id: CertificateId) -> CatalogEntry: ...

    def lookup(
        self, holder_digest: str, types: Collection[str], *, limit: int = MAX_LOOKUP_RESULTS
    ) -> list[CatalogEntry]: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


# --- SQLite ----------------------------------------------------------------------------------

_SCHEMA: Final = (
    """
    CREATE TABLE entries (
        seq INTEGER PRIMARY KEY,
        certificate_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL CHECK (length(type) BETWEEN 1 AND 64),
        node TEXT NOT NULL CHECK (length(node) BETWEEN 1 AND 64),
        holder_digest TEXT NOT NULL
            CHECK (length(holder_digest) = 64 AND holder_digest NOT GLOB '*[^0-9a-f]*'),
        registered_at REAL NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('valid', 'suspended', 'revoked')),
        status_event INTEGER NOT NULL DEFAULT 0 CHECK (status_event >= 0)
    ) STRICT
    """,
    # Lookups are by holder and a few types, oldest first.
    "CREATE INDEX entries_by_holder ON entries (holder_digest, type, registered_at)",
)
_UPGRADES: Final = {
    1: (
        "ALTER TABLE entries ADD COLUMN"
        " status_event INTEGER NOT NULL DEFAULT 0 CHECK (status_event >= 0)",
    ),
}
"""From schema version 1 (no status event numbers: every entry counts as issued) to 2."""

_COLUMNS: Final = "certificate_id, type, node, holder_digest, registered_at, status, status_event"
_GET: Final = f"SELECT {_COLUMNS} FROM entries WHERE certificate_id = ?"  # noqa: S608
# The wanted types travel as one JSON array parameter: no SQL text built from input.
_LOOKUP: Final = (
    f"SELECT {_COLUMNS} FROM entries WHERE holder_digest = ?"  # noqa: S608
    " AND type IN (SELECT value FROM json_each(?)) ORDER BY registered_at, seq LIMIT ?"
)
_INSERT: Final = f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608

_Row = tuple[str, str, str, str, float, str, int]


def _require_digest(holder_digest: object) -> str:
    """The holder digest, or :class:`InputError`. Never echoes the value (it may be an id)."""
    if isinstance(holder_digest, str) and _HOLDER_DIGEST.fullmatch(holder_digest):
        return holder_digest
    if isinstance(holder_digest, str) and len(holder_digest.strip()) == _CLEAR_ID_LENGTH:
        raise InputError(
            "holder_digest looks like a holder id in clear; send its keyed digest instead",
            code="catalog.clear_holder_id",
            pointers=("/holder_digest",),
        )
    raise InputError(
        "holder_digest must be a lower-case hex HMAC-SHA256 (64 characters)",
        code="catalog.bad_holder_digest",
        pointers=("/holder_digest",),
    )


def _entry(row: _Row) -> CatalogEntry:
    return CatalogEntry(
        certificate_id=CertificateId(row[0]),
        type=row[1],
        node=NodeId(row[2]),
        holder_digest=row[3],
        registered_at=row[4],
        status=CertStatus(row[5]),
        status_event=row[6],
    )


def _same_certificate(stored: CatalogEntry, new: CatalogEntry) -> bool:
    return stored.type == new.type and stored.holder_digest == new.holder_digest


class SqliteCatalog:
    """:class:`Catalog` on one SQLite file in WAL mode.

    Threads: like :class:`~gateway.storage.registry.SqliteRegistry`, a writer and a read-only reader
    connection (``check_same_thread=False``), each behind its own lock; writes also take
    ``BEGIN IMMEDIATE`` against other processes, and reads see the last committed state
    without waiting for a write in progress.
    """

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigError(
                f"SQLite {sqlite3.sqlite_version} is too old; the catalog needs 3.38 or later",
                code="catalog.open",
            )
        self._path = path
        self._db = Connections(
            path,
            busy_timeout=busy_timeout,
            synchronous=_SYNCHRONOUS,
            prefix="catalog",
            store="catalog",
        )
        try:
            self._db.migrate(_SCHEMA, SCHEMA_VERSION, upgrades=_UPGRADES)
        except BaseException:
            self._db.close()
            raise

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close both connections. Idempotent."""
        self._db.close()

    def __enter__(self) -> SqliteCatalog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- registration ------------------------------------------------------------------------

    @staticmethod
    def _register_one(conn: sqlite3.Connection, entry: CatalogEntry) -> CatalogEntry:
        # 1. The digest's shape, before anything reaches the file (the table checks it too).
        _require_digest(entry.holder_digest)
        status = CertStatus(entry.status)
        if not 0 <= entry.status_event <= MAX_STATUS_EVENT:
            raise InputError("status_event out of range", code="catalog.bad_status_event")
        # 2. Already registered? Another node claiming it, or different facts for it, is a
        #    conflict; the same node re-sending it is a retry or a later status.
        row = conn.execute(_GET, (entry.certificate_id,)).fetchone()
        if row is not None:
            return SqliteCatalog._update(conn, _entry(row), entry)
        # 3. New: store it as given.
        conn.execute(
            _INSERT,
            (
                entry.certificate_id,
                entry.type,
                entry.node,
                entry.holder_digest,
                entry.registered_at,
                status.value,
                entry.status_event,
            ),
        )
        return replace(entry, status=status)

    @staticmethod
    def _update(
        conn: sqlite3.Connection, stored: CatalogEntry, entry: CatalogEntry
    ) -> CatalogEntry:
        if stored.node != entry.node:
            raise ConflictError(
                "this certificate is registered by another node", code="catalog.conflict"
            )
        if not _same_certificate(stored, entry):
            raise ConflictError(
                "this certificate is already registered with another type or holder",
                code="catalog.mismatch",
            )
        if entry.status_event <= stored.status_event:
            return stored  # a retry, or a status the catalog already holds a later one of
        if stored.status is CertStatus.REVOKED and entry.status is not CertStatus.REVOKED:
            raise ConflictError(
                f"cannot make a revoked certificate {entry.status.value}: revocation is final",
                code="catalog.status_transition",
            )
        conn.execute(
            "UPDATE entries SET status = ?, status_event = ? WHERE certificate_id = ?",
            (entry.status.value, entry.status_event, stored.certificate_id),
        )
        return replace(stored, status=entry.status, status_event=entry.status_event)

    def register(self, entry: CatalogEntry) -> CatalogEntry:
        """Register a certificate, or a later status of it; returns the stored entry.

        Idempotent for the same certificate id and node: the first registration's time is
        kept, and its status changes only for a larger ``status_event`` (so a retry, or a
        change that arrives after a later one, changes nothing). ``catalog.conflict`` when
        another node holds the id; ``catalog.mismatch`` when the same node re-registers it
        with another type or holder digest; ``catalog.status_transition`` for a later status
        of a revoked certificate that is not ``revoked`` (revocation is final).
        """
        with self._db.write() as conn:
            return self._register_one(conn, entry)

    def register_many(self, entries: Iterable[CatalogEntry], *, batch: int = 5000) -> int:
        """Register many entries, ``batch`` per transaction; returns how many were processed.

        Same rules as :meth:`register`, entry by entry. If a batch fails it is rolled back;
        earlier batches stay, and the error's detail says how many entries they held.
        """
        if batch <= 0:
            raise InputError(f"batch size must be positive, not {batch}")
        iterator = iter(entries)
        done = 0
        while chunk := list(islice(iterator, batch)):
            try:
                with self._db.write() as conn:
                    for entry in chunk:
                        self._register_one(conn, entry)
            except GatewayError as exc:
                raise type(exc)(
                    f"{exc.detail} ({done} entries were registered before this batch)",
                    code=exc.code,
                    log_detail=exc.log_detail,
                    pointers=exc.pointers,
                ) from exc
            done += len(chunk)
        return done

    # --- reads -------------------------------------------------------------------------------

    def get(self, certificate_id: CertificateId) -> CatalogEntry:
        """The entry of one certificate, or ``catalog.not_found``."""
        with self._db.read() as conn:
            row = conn.execute(_GET, (certificate_id,)).fetchone()
        if row is None:
            raise NotFoundError("no such certificate in the catalog", code="catalog.not_found")
        return _entry(row)

    def lookup(
        self, holder_digest: str, types: Collection[str], *, limit: int = MAX_LOOKUP_RESULTS
    ) -> list[CatalogEntry]:
        """A holder's certificates of the given types, oldest registration first."""
        _require_digest(holder_digest)
        if not 1 <= limit <= MAX_STORE_LIMIT:
            raise InputError(
                f"limit must be between 1 and {MAX_STORE_LIMIT}", code="catalog.bad_limit"
            )
        wanted = sorted(set(types))
        if not wanted:
            return []
        if len(wanted) > MAX_STORE_TYPES:
            raise InputError(
                f"at most {MAX_STORE_TYPES} certificate types per lookup", code="catalog.bad_types"
            )
        with self._db.read() as conn:
            rows = conn.execute(_LOOKUP, (holder_digest, json.dumps(wanted), limit)).fetchall()
        return [_entry(row) for row in rows]

    def count(self) -> int:
        with self._db.read() as conn:
            return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])


# --- service ---------------------------------------------------------------------------------


def _bad_body(detail: str, pointer: str = "") -> InputError:
    return InputError(detail, code="catalog.bad_body", pointers=(pointer,))


def _check_members(
    body: object, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> Mapping[str, object]:
    """The body as a mapping with exactly the ``required`` members (and maybe ``optional``)."""
    if not isinstance(body, Mapping):
        raise _bad_body("the request body must be a JSON object")
    for name in body:
        if not isinstance(name, str) or name not in required | optional:
            shown = name[:64] if isinstance(name, str) else "?"
            raise _bad_body(f"unexpected member {shown!r}", f"/{shown}")
    for name in sorted(required):
        if name not in body:
            raise _bad_body(f"missing member {name!r}", f"/{name}")
    return body


class CatalogService:
    """Validates catalog requests from nodes and applies them to a :class:`Catalog`.

    ``caller`` is always the node that the request's hop proof authenticated
    (:meth:`gateway.federation.hops.HopVerifier.verify`), never a value read from the body.
    ``types`` are the federation's certificate types (``SchemaCatalog.certificate_types()``):
    a registered type must be one of them and agree with the certificate id's type code.
    """

    __slots__ = ("_catalog", "_clock", "_types")

    def __init__(
        self, catalog: Catalog, *, clock: Clock, types: Iterable[CertificateTypeInfo]
    ) -> None:
        self._catalog = catalog
        self._clock = clock
        self._types: Mapping[str, CertificateTypeInfo] = MappingProxyType(
            {info.name: info for info in types}
        )
        if not self._types:
            raise ConfigError(
                "the catalog needs at least one certificate type", code="catalog.types"
            )

    # --- field parsers -----------------------------------------------------------------------

    @staticmethod
    def _certificate_id(value: object) -> tuple[CertificateId, str]:
        """The id and its type code; identifier errors keep their code and get a pointer."""
        if not isinstance(value, str):
            raise InvalidIdentifier(
                "certificate_id must be a string",
                code="input.identifier.format",
                pointers=("/certificate_id",),
            )
        try:
            parsed = parse_certificate_id(value)
        except InvalidIdentifier as exc:
            raise InvalidIdentifier(
                f"certificate_id: {exc.detail}",
                code=exc.code,
                log_detail=exc.log_detail,
                pointers=("/certificate_id",),
            ) from exc
        return parsed.certificate_id, parsed.type_code

    def _type(self, value: object, pointer: str) -> CertificateTypeInfo:
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_TYPE_NAME:
            raise InputError(
                f"a certificate type must be a name of 1 to {MAX_TYPE_NAME} characters",
                code="catalog.bad_type",
                pointers=(pointer,),
            )
        info = self._types.get(value)
        if info is None:
            raise UnknownCertificateType(f"unknown certificate type {value!r}", pointers=(pointer,))
        return info

    @staticmethod
    def _node(value: object, caller: NodeId) -> NodeId:
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_NODE_NAME:
            raise InputError(
                f"node must be a node name of 1 to {MAX_NODE_NAME} characters",
                code="catalog.bad_node",
                pointers=("/node",),
            )
        if value != caller:
            raise Forbidden(
                "a node may only register and change its own certificates",
                code="catalog.not_owner",
                log_detail=f"caller {caller!r} named node {value!r}",
            )
        return caller

    @staticmethod
    def _status(value: object) -> CertStatus:
        try:
            if not isinstance(value, str):
                raise TypeError(type(value).__name__)
            return CertStatus(value)
        except (TypeError, ValueError) as exc:
            raise InputError(
                "status must be one of valid, suspended, revoked",
                code="catalog.bad_status",
                pointers=("/status",),
            ) from exc

    @staticmethod
    def _status_event(value: object) -> int:
        # bool is an int in Python, not in JSON
        if type(value) is not int or not 0 <= value <= MAX_STATUS_EVENT:
            raise InputError(
                f"status_event must be an integer from 0 to {MAX_STATUS_EVENT}",
                code="catalog.bad_status_event",
                pointers=("/status_event",),
            )
        return value

    # --- operations --------------------------------------------------------------------------

    def register(self, caller: NodeId, body: Mapping[str, Any]) -> CatalogEntry:
        """Register one of ``caller``'s certificates; idempotent for a retry.

        Body: ``certificate_id``, ``type``, ``node`` (must be ``caller``), ``holder_digest``,
        and optionally ``status`` (default ``valid``) with ``status_event``, the holding
        node's number for the change that set it (default 0, the issuance): the holding node
        sends the entry again, with a larger number, on every status change.
        """
        # 1. Exactly the members we know.
        fields = _check_members(body, _REGISTER_MEMBERS, _REGISTER_OPTIONAL)
        # 2. The holder digest first: an id in clear is refused before anything else.
        digest = _require_digest(fields["holder_digest"])
        # 3. The certificate id, and a known type that agrees with the id's type code.
        certificate_id, type_code = self._certificate_id(fields["certificate_id"])
        info = self._type(fields["type"], "/type")
        if info.type_code != type_code:
            raise InputError(
                f"certificate_id's type code is not that of type {info.name!r}",
                code="catalog.type_mismatch",
                pointers=("/type",),
            )
        status = self._status(fields["status"]) if "status" in fields else CertStatus.VALID
        status_event = self._status_event(fields.get("status_event", 0))
        # 4. A node registers only its own certificates.
        node = self._node(fields["node"], caller)
        # 5. Store (another node's id is a conflict, a retry or an older status changes
        #    nothing).
        entry = CatalogEntry(
            certificate_id=certificate_id,
            type=info.name,
            node=node,
            holder_digest=digest,
            registered_at=self._clock.now(),
            status=status,
            status_event=status_event,
        )
        return self._catalog.register(entry)

    def lookup(self, body: Mapping[str, Any]) -> list[CatalogEntry]:
        """Where a holder's certificates of some types are, oldest registration first.

        Body: ``holder_digest`` and ``types``, 1 to 16 distinct known type names. At most
        :data:`MAX_LOOKUP_RESULTS` entries.
        """
        fields = _check_members(body, _LOOKUP_MEMBERS)
        digest = _require_digest(fields["holder_digest"])
        types = fields["types"]
        if (
            not isinstance(types, list)
            or not 1 <= len(types) <= MAX_LOOKUP_TYPES
            or not all(isinstance(name, str) for name in types)
            or len(set(types)) != len(types)
        ):
            raise InputError(
                f"types must list 1 to {MAX_LOOKUP_TYPES} distinct certificate type names",
                code="catalog.bad_types",
                pointers=("/types",),
            )
        names = [self._type(name, f"/types/{i}").name for i, name in enumerate(types)]
        return self._catalog.lookup(digest, names, limit=MAX_LOOKUP_RESULTS)
