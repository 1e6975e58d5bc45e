"""``tongban audit verify``: re-read a node's whole audit log file and check it end to end.

Finds an altered, removed or reordered entry, or a history rewritten under an older signed
head, and names the first bad entry.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway._internal.sql import SqlConnection
from gateway.audit.heads import SignedTreeHead, verify_tree_head
from gateway.audit.records import parse_entry
from gateway.crypto.jwks import KeyResolver
from gateway.crypto.merkle import (
    TreeBuilder,
    leaf_hash,
)
from gateway.errors import (
    InputError,
    StorageError,
    VerificationError,
)
from gateway.ids import NodeId
from gateway.storage.audit_log import AuditLog, SqliteAuditLog, audit_storage_error


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """What :func:`verify_log` checked, when every check passed."""

    size: int
    heads_checked: int
    root_hash: bytes


# --- verifying a whole log ------------------------------------------------------------------


def _tamper(code: str, seq: int, detail: str) -> VerificationError:
    return VerificationError(f"entry seq {seq}: {detail}", code=code, pointers=(f"/entries/{seq}",))


def verify_log(
    log: Path | AuditLog, keys: KeyResolver, *, node: NodeId, now: float
) -> AuditVerification:
    """Check a node's audit log end to end: ``tongban audit verify``.

    Raises :class:`VerificationError` naming the first bad entry: ``audit.removed``,
    ``audit.reordered``, ``audit.altered`` or ``audit.rewritten`` (a signed head the entries
    no longer match); a bad head signature keeps its ``seal.*`` code.

    ``log``: a SQLite file (read on a connection of its own), or an open log of either
    backend (read in one snapshot: PostgreSQL's replicas may append meanwhile).
    """
    if isinstance(log, AuditLog) and not isinstance(log, SqliteAuditLog):
        with log.snapshot() as conn:
            return _verify(conn, keys, node=node, now=now)
    path = log.path if isinstance(log, SqliteAuditLog) else log
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open the audit log at {path}", code="audit.open") from exc
    try:
        conn.execute("BEGIN")
        return _verify(conn, keys, node=node, now=now)
    except sqlite3.Error as exc:
        raise audit_storage_error(exc) from exc
    finally:
        conn.close()


VERIFY_PAGE: Final = 10_000
"""Entries read at once: a log of any size is verified in bounded memory."""


def _rows(conn: SqlConnection) -> Iterator[tuple[int, bytes, bytes]]:
    """Every entry in ``seq`` order, a page at a time (keyset pages, in the caller's one
    snapshot: a client-side cursor over the whole table would hold it all in memory)."""
    last = -1
    while True:
        page = conn.execute(
            "SELECT seq, entry, leaf_hash FROM entries WHERE seq > ? ORDER BY seq LIMIT ?",
            (last, VERIFY_PAGE),
        ).fetchall()
        for seq, entry, leaf in page:
            yield int(seq), bytes(entry), bytes(leaf)
        if len(page) < VERIFY_PAGE:
            return
        last = int(page[-1][0])


def _verify(
    conn: SqlConnection, keys: KeyResolver, *, node: NodeId, now: float
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
    for seq, entry, stored_leaf in _rows(conn):
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
