"""The audit log: append and read, proofs, signed heads, every tamper class, fork detection."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.heads import STH_TYP, SignedTreeHead, sign_tree_head, verify_tree_head
from gateway.audit.records import AuditKind, check_items, decode_item, encode_item
from gateway.audit.watch import HeadWatcher
from gateway.clock import FixedClock
from gateway.crypto.jwks import KeyState, StaticKeyResolver, VerificationKey
from gateway.crypto.merkle import leaf_hash, root, verify_consistency, verify_inclusion
from gateway.crypto.seals import PrivateKeySigner, sign_compact
from gateway.errors import InputError, SealError, StorageError, VerificationError
from gateway.ids import NodeId
from gateway.storage.audit_log import MAX_PAGE, AuditLog, SqliteAuditLog
from gateway.storage.audit_verify import verify_log

NOW = 1_795_507_200.0
ZHUJI = NodeId("zhuji")
YIWU = NodeId("yiwu")
SIGNER = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
OTHER = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
DIGEST = "ab" * 32


def vkey(signer: PrivateKeySigner, node: NodeId) -> VerificationKey:
    return VerificationKey(
        node=node,
        kid=signer.kid,
        alg=signer.alg,
        public_key=signer.public_key,
        state=KeyState.ACTIVE,
        not_before=None,
        not_after=None,
        revoked_at=None,
        verify_allowed=True,
    )


KEYS = StaticKeyResolver({SIGNER.kid: vkey(SIGNER, ZHUJI), OTHER.kid: vkey(OTHER, YIWU)})


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.sqlite"


@pytest.fixture
def log(path: Path, clock: FixedClock) -> Iterator[SqliteAuditLog]:
    with SqliteAuditLog(path, node=ZHUJI, signer=SIGNER, clock=clock) as opened:
        yield opened


def fill(log: AuditLog, clock: FixedClock, n: int) -> None:
    for _ in range(n):
        seq = log.size()
        log.append(AuditKind.ISSUANCE, "zhuji-civil-affairs", f"cert-{seq}", {"holder": DIGEST})
        clock.advance(1)


def tamper(path: Path, *statements: str) -> None:
    """What someone with write access to the file could do: drop the guards, edit rows."""
    conn = sqlite3.connect(path)
    for trigger in ("entries_no_update", "entries_no_delete", "heads_no_update", "heads_no_delete"):
        conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def expect(code: str, path: Path, seq: int | None = None) -> VerificationError:
    with pytest.raises(VerificationError) as err:
        verify_log(path, KEYS, node=ZHUJI, now=NOW + 3600)
    assert err.value.code == code
    if seq is not None:
        assert err.value.pointers == (f"/entries/{seq}",)
        assert f"seq {seq}" in err.value.detail
    return err.value


# --- appending and reading ------------------------------------------------------------------


def test_append_and_read_back(log: SqliteAuditLog, clock: FixedClock) -> None:
    first = log.append(AuditKind.LOOKUP_HOP, "client-1", None, {"route": ["a", "b"]})
    clock.advance(5)
    second, third = log.append_many(
        [
            (AuditKind.FETCH, "yiwu", "cert-1", {"holder": DIGEST}),
            (AuditKind.KEY_EVENT, "ops", SIGNER.kid, None),
        ]
    )
    assert (first.seq, second.seq, third.seq) == (0, 1, 2)
    assert (first.at, second.at) == (NOW, NOW + 5)
    assert log.size() == 3
    assert log.entries(0, 10) == [first, second, third]
    assert log.entries(1, 2) == [second]
    assert log.leaf_hashes(3) == [leaf_hash(r.entry()) for r in (first, second, third)]
    # the canonical entry: sorted keys, orjson
    assert first.entry() == orjson.dumps(
        {
            "actor": "client-1",
            "at": NOW,
            "details": {"route": ["a", "b"]},
            "kind": "lookup_hop",
            "node": "zhuji",
            "seq": 0,
            "subject": None,
        }
    )


def test_reopen_keeps_entries_and_continues(path: Path, clock: FixedClock) -> None:
    with SqliteAuditLog(path, node=ZHUJI, signer=SIGNER, clock=clock) as log:
        fill(log, clock, 3)
        head = log.tree_head()
    with SqliteAuditLog(path, node=ZHUJI, signer=SIGNER, clock=clock) as log:
        assert log.size() == 3
        assert log.append(AuditKind.STATUS, "ops").seq == 3
        assert log.tree_head(3).root_hash == head.root_hash


def test_a_second_writer_is_seen(path: Path, clock: FixedClock) -> None:
    with (
        SqliteAuditLog(path, node=ZHUJI, signer=SIGNER, clock=clock) as a,
        SqliteAuditLog(path, node=ZHUJI, signer=SIGNER, clock=clock) as b,
    ):
        a.append(AuditKind.FETCH, "x")
        assert b.append(AuditKind.FETCH, "y").seq == 1
        assert a.tree_head().tree_size == 2
        assert a.leaf_hashes(2) == b.leaf_hashes(2)


def test_timestamps_never_go_back(log: SqliteAuditLog, clock: FixedClock) -> None:
    log.append(AuditKind.FETCH, "x")
    clock.advance(-100)
    assert log.append(AuditKind.FETCH, "x").at == NOW


def test_entries_page_is_bounded(log: SqliteAuditLog, clock: FixedClock) -> None:
    log.append_many([(AuditKind.FETCH, "x", None, None)] * (MAX_PAGE + 5))
    assert len(log.entries(0, 5000)) == MAX_PAGE
    assert log.entries(MAX_PAGE + 5, MAX_PAGE + 10) == []
    with pytest.raises(InputError) as err:
        log.entries(5, 4)
    assert err.value.code == "audit.bad_range"


def test_file_is_private_and_durable(log: SqliteAuditLog, path: Path) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert log._db.writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert log._db.writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_gateway_cannot_edit_its_own_log(log: SqliteAuditLog, path: Path) -> None:
    log.append(AuditKind.FETCH, "x")
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM entries")
    conn.close()


@pytest.mark.parametrize(
    "details",
    [
        {"holder": "330681199001011234"},
        {"holder": "33068119900101123X"},
        {"holder_id": "91330681MA2BXXXX1A"},
        {"note": "for 330681199001011234 today"},
        {"nested": {"list": ["330681199001011234"]}},
        {"holder": "AB" * 32},
    ],
)
def test_clear_holder_ids_are_refused(log: SqliteAuditLog, details: dict[str, object]) -> None:
    with pytest.raises(InputError) as err:
        log.append(AuditKind.ISSUANCE, "dept", "cert-1", details)
    assert err.value.code == "audit.clear_holder_id"
    assert log.size() == 0


def test_clear_holder_id_in_subject_or_actor_is_refused(log: SqliteAuditLog) -> None:
    for actor, subject in [("330681199001011234", None), ("dept", "330681199001011234")]:
        with pytest.raises(InputError) as err:
            log.append(AuditKind.LOOKUP_HOP, actor, subject)
        assert err.value.code == "audit.clear_holder_id"


@pytest.mark.parametrize(
    "details",
    [
        {"n": float("nan")},
        {"n": [1.0, float("inf")]},
        {1: "x"},
        {"x": "y" * 5000},
        {"a": {"b": {"c": {"d": {}}}}},
        {"a": [[[[]]]]},
        {f"m{i}": i for i in range(65)},
        {"list": list(range(64))},
        {"x": "y" * 1025},
        {"y" * 1025: "x"},
    ],
    ids=[
        "nan",
        "nested-infinity",
        "int-key",
        "too-large",
        "too-deep",
        "too-deep-lists",
        "too-many-members",
        "too-many-items",
        "long-string",
        "long-name",
    ],
)
def test_bad_details_are_refused(log: SqliteAuditLog, details: dict[object, object]) -> None:
    with pytest.raises(InputError) as err:
        log.append(AuditKind.FETCH, "x", None, details)  # type: ignore[arg-type]
    assert err.value.code == "audit.bad_details"


def test_details_at_their_limits_are_kept_as_a_private_copy(log: SqliteAuditLog) -> None:
    details: dict[str, Any] = {
        "a": {"b": {"c": ["d"]}},
        "x": "y" * 1024,
        "items": list(range(54)),  # 64 members in all
        "holder": "ab" * 32,
        "ids": [
            {"cert": "1.2.156.3005.2.11100000000013338W001.113306810025211840.20260000009817.001.9"}
        ],
    }
    record = log.append(AuditKind.FETCH, "x", None, details)
    details["a"]["b"]["c"].append("changed")
    assert record.details["a"] == {"b": {"c": ["d"]}}
    assert log.entries(0, 1)[0].details == record.details


def test_a_clear_holder_id_is_named_by_its_path(log: SqliteAuditLog) -> None:
    with pytest.raises(InputError) as err:
        log.append(AuditKind.FETCH, "x", None, {"routes": [{"by": "330681199001011234"}]})
    assert err.value.code == "audit.clear_holder_id"
    assert "details/routes/0/by" in err.value.detail


def test_a_failed_batch_writes_nothing(log: SqliteAuditLog) -> None:
    with pytest.raises(InputError):
        log.append_many(
            [
                (AuditKind.FETCH, "x", None, None),
                (AuditKind.FETCH, "", None, None),
            ]
        )
    assert log.size() == 0


def test_staged_records_are_invisible_until_committed_from_another_thread(
    log: SqliteAuditLog, path: Path
) -> None:
    staged = log.stage(check_items([(AuditKind.FETCH, "client", "cert-1", None)]))
    assert log.size() == 0  # written, not committed
    with ThreadPoolExecutor(max_workers=1) as thread:  # as the group commit does
        records = thread.submit(staged.commit).result()
    assert [r.seq for r in records] == [0]
    assert log.size() == 1
    with SqliteAuditLog(path, node=ZHUJI, signer=SIGNER, clock=FixedClock(NOW)) as again:
        assert [r.subject for r in again.entries(0, 1)] == ["cert-1"]
    # the writer is free again: the next append numbers after the committed record
    assert log.append(AuditKind.FETCH, "client", "cert-2").seq == 1
    with pytest.raises(RuntimeError, match="already ended"):
        staged.commit()


def test_a_rolled_back_stage_leaves_nothing_and_frees_the_writer(log: SqliteAuditLog) -> None:
    staged = log.stage(check_items([(AuditKind.FETCH, "client", "cert-1", None)]))
    staged.rollback()
    assert log.size() == 0
    assert log.append(AuditKind.FETCH, "client", "cert-2").seq == 0
    assert log.leaf_hashes(1) == [leaf_hash(log.entries(0, 1)[0].entry())]


def test_staging_a_closed_log_is_refused(log: SqliteAuditLog) -> None:
    checked = check_items([(AuditKind.FETCH, "client", "cert-1", None)])
    log.close()
    with pytest.raises(StorageError) as err:
        log.stage(checked)
    assert err.value.code == "audit.closed"


def test_append_missing_appends_only_what_the_recent_log_lacks(log: SqliteAuditLog) -> None:
    done = (AuditKind.ISSUANCE, "client", "cert-1", {"type": "x"})
    log.append(*done)
    log.append(AuditKind.FETCH, "client", "cert-9")
    lost = (AuditKind.STATUS, "client", "cert-1", {"event": 1})
    appended = log.append_missing(check_items([done, lost]))
    assert [(r.seq, r.kind) for r in appended] == [(2, AuditKind.STATUS)]
    assert log.append_missing(check_items([done, lost])) == []  # idempotent
    # beyond the window a record is not looked for: it is appended again
    assert [r.seq for r in log.append_missing(check_items([done]), window=2)] == [3]


def test_a_pending_record_round_trips_and_a_bad_one_is_refused() -> None:
    item = (AuditKind.ISSUANCE, "client", "cert-1", {"holder": DIGEST, "type": "x"})
    assert decode_item(encode_item(item)) == item
    with pytest.raises(InputError) as err:
        encode_item((AuditKind.ISSUANCE, "", "cert-1", None))  # checked before it is kept
    assert err.value.code == "audit.bad_record"
    for data in (b"{}", b'["nope", "a", null, {}]', b'["fetch", "a", null]', b"[1,2"):
        with pytest.raises(InputError):
            decode_item(data)


# --- proofs and heads -----------------------------------------------------------------------


def test_proofs_verify_against_signed_heads(log: SqliteAuditLog, clock: FixedClock) -> None:
    fill(log, clock, 7)
    small = log.tree_head()
    fill(log, clock, 6)
    head = verify_tree_head(log.tree_head().token, KEYS, node=ZHUJI, now=clock.now())
    assert head.tree_size == 13
    leaves = log.leaf_hashes(13)
    assert head.root_hash == root(leaves)
    for seq in range(13):
        verify_inclusion(leaves[seq], seq, 13, log.inclusion_proof(seq, 13), head.root_hash)
    proof = log.consistency_proof(7, 13)
    verify_consistency(7, 13, small.root_hash, head.root_hash, proof)
    with pytest.raises(InputError) as err:
        log.inclusion_proof(13, 13)
    assert err.value.code == "audit.bad_range"
    with pytest.raises(InputError) as err:
        log.consistency_proof(7, 14)
    assert err.value.code == "audit.bad_range"


def test_tree_head_for_a_size_is_signed_once(log: SqliteAuditLog, clock: FixedClock) -> None:
    fill(log, clock, 3)
    first = log.tree_head()
    clock.advance(60)
    assert log.tree_head(3) == first
    assert log.tree_head(2).tree_size == 2
    with pytest.raises(InputError) as err:
        log.tree_head(4)
    assert err.value.code == "audit.bad_range"


def test_tree_head_claims(log: SqliteAuditLog) -> None:
    head = log.tree_head()
    verified = verify_tree_head(head.token, KEYS, node=ZHUJI, now=NOW)
    assert verified == SignedTreeHead(ZHUJI, 0, root([]), NOW, head.token)


def test_tampered_head_signature_is_refused(log: SqliteAuditLog) -> None:
    token = log.tree_head().token
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload[:-2]}AA.{signature}"
    with pytest.raises(SealError) as err:
        verify_tree_head(forged, KEYS, node=ZHUJI, now=NOW)
    assert err.value.code in {"seal.bad_signature", "seal.bad_encoding"}


def test_head_of_another_node_is_refused() -> None:
    head = sign_tree_head(OTHER, node=YIWU, tree_size=0, root_hash=root([]), issued_at=NOW)
    with pytest.raises(VerificationError) as err:
        verify_tree_head(head.token, KEYS, node=ZHUJI, now=NOW)
    assert err.value.code == "audit.bad_head"
    # a node's key signing a head that claims another node
    lying = sign_tree_head(OTHER, node=ZHUJI, tree_size=0, root_hash=root([]), issued_at=NOW)
    with pytest.raises(VerificationError) as err:
        verify_tree_head(lying.token, KEYS, node=ZHUJI, now=NOW)
    assert err.value.code == "audit.bad_head"


def test_head_of_wrong_type_is_refused() -> None:
    token = sign_compact(SIGNER, b"{}", typ="tongban-seal+jws", signed_at=NOW)
    with pytest.raises(SealError) as err:
        verify_tree_head(token, KEYS, node=ZHUJI, now=NOW)
    assert err.value.code == "seal.wrong_typ"


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "zhuji", "tree_size": -1, "root_hash": "A" * 43, "iat": int(NOW)},
        {"iss": "zhuji", "tree_size": True, "root_hash": "A" * 43, "iat": int(NOW)},
        {"iss": "zhuji", "tree_size": 1, "root_hash": "AAAA", "iat": int(NOW)},
        {"iss": "zhuji", "tree_size": 1, "root_hash": "A=", "iat": int(NOW)},
        {"iss": "zhuji", "tree_size": 1, "root_hash": 5, "iat": int(NOW)},
        {"iss": "zhuji", "tree_size": 1, "root_hash": "A" * 43, "iat": int(NOW) - 10},
        {"iss": "zhuji", "tree_size": 1, "root_hash": "A" * 43},
    ],
    ids=["negative", "bool", "short-root", "bad-b64", "root-not-string", "iat-off", "no-iat"],
)
def test_malformed_head_claims_are_refused(claims: dict[str, object]) -> None:
    token = sign_compact(SIGNER, orjson.dumps(claims), typ=STH_TYP, signed_at=NOW)
    with pytest.raises(VerificationError) as err:
        verify_tree_head(token, KEYS, node=ZHUJI, now=NOW)
    assert err.value.code == "audit.bad_head"


# --- verify_log: every tamper class ---------------------------------------------------------


def build(path: Path, clock: FixedClock, n: int = 10, heads: tuple[int, ...] = (4, 10)) -> None:
    with SqliteAuditLog(path, node=ZHUJI, signer=SIGNER, clock=clock) as log:
        for size in sorted({*heads, n}):
            fill(log, clock, size - log.size())
            if size in heads:
                log.tree_head()


def test_an_intact_log_verifies(path: Path, clock: FixedClock) -> None:
    build(path, clock)
    with SqliteAuditLog(path, node=ZHUJI, signer=SIGNER, clock=clock) as log:
        result = verify_log(log, KEYS, node=ZHUJI, now=NOW + 3600)
        assert result.size == 10
        assert result.heads_checked == 2
        assert result.root_hash == root(log.leaf_hashes(10))


def test_an_empty_log_verifies(log: SqliteAuditLog) -> None:
    log.tree_head()
    result = verify_log(log, KEYS, node=ZHUJI, now=NOW)
    assert (result.size, result.heads_checked, result.root_hash) == (0, 1, root([]))


def test_altered_entry(path: Path, clock: FixedClock) -> None:
    build(path, clock)
    tamper(
        path,
        "UPDATE entries SET entry = CAST(replace(CAST(entry AS TEXT), 'cert-6', "
        "'cert-X') AS BLOB) WHERE seq = 6",
    )
    expect("audit.altered", path, 6)


def test_altered_entry_that_is_not_a_record(path: Path, clock: FixedClock) -> None:
    build(path, clock)
    tamper(path, "UPDATE entries SET entry = X'7B7D' WHERE seq = 2")
    expect("audit.altered", path, 2)


def test_altered_entry_with_recomputed_leaf_hash(path: Path, clock: FixedClock) -> None:
    build(path, clock)
    conn = sqlite3.connect(path)
    entry = bytes(conn.execute("SELECT entry FROM entries WHERE seq = 6").fetchone()[0])
    conn.close()
    altered = entry.replace(b"cert-6", b"cert-X")
    tamper(
        path,
        f"UPDATE entries SET entry = X'{altered.hex()}', "
        f"leaf_hash = X'{leaf_hash(altered).hex()}' WHERE seq = 6",
    )
    # caught by the signed head of size 10; the head of size 4 still matches
    expect("audit.rewritten", path, 4)


def test_removed_entry(path: Path, clock: FixedClock) -> None:
    build(path, clock)
    tamper(path, "DELETE FROM entries WHERE seq = 3")
    expect("audit.removed", path, 3)


def test_removed_tail(path: Path, clock: FixedClock) -> None:
    build(path, clock)
    tamper(path, "DELETE FROM entries WHERE seq >= 8")
    expect("audit.removed", path, 8)


def test_reordered_entries(path: Path, clock: FixedClock) -> None:
    build(path, clock)
    tamper(
        path,
        "UPDATE entries SET seq = -1 WHERE seq = 5",
        "UPDATE entries SET seq = 5 WHERE seq = 6",
        "UPDATE entries SET seq = 6 WHERE seq = -1",
    )
    expect("audit.reordered", path, 5)


def test_timestamps_going_back(path: Path, clock: FixedClock) -> None:
    build(path, clock)
    conn = sqlite3.connect(path)
    entry = bytes(conn.execute("SELECT entry FROM entries WHERE seq = 7").fetchone()[0])
    conn.close()
    record = orjson.loads(entry)
    record["at"] = NOW - 1
    altered = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    tamper(
        path,
        f"UPDATE entries SET entry = X'{altered.hex()}', "
        f"leaf_hash = X'{leaf_hash(altered).hex()}' WHERE seq = 7",
    )
    expect("audit.reordered", path, 7)


def test_rewritten_history_with_a_re_signed_head(path: Path, clock: FixedClock) -> None:
    build(path, clock, n=10, heads=(4, 10))
    # the operator rewrites entry 2 and re-signs a head over the new history
    conn = sqlite3.connect(path)
    entry = bytes(conn.execute("SELECT entry FROM entries WHERE seq = 2").fetchone()[0])
    conn.close()
    altered = entry.replace(b"cert-2", b"cert-X")
    tamper(
        path,
        f"UPDATE entries SET entry = X'{altered.hex()}', "
        f"leaf_hash = X'{leaf_hash(altered).hex()}' WHERE seq = 2",
        "DELETE FROM heads WHERE tree_size = 10",
    )
    with SqliteAuditLog(path, node=ZHUJI, signer=SIGNER, clock=clock) as log:
        log.tree_head(10)
    # the older head of size 4 still commits to the original entry 2
    expect("audit.rewritten", path, 0)


def test_stored_head_columns_must_match_its_signature(path: Path, clock: FixedClock) -> None:
    build(path, clock)
    tamper(path, "UPDATE heads SET tree_size = 5 WHERE tree_size = 4")
    expect("audit.rewritten", path)


def test_a_forged_stored_head_is_refused(path: Path, clock: FixedClock) -> None:
    build(path, clock)
    forged = sign_tree_head(OTHER, node=YIWU, tree_size=4, root_hash=b"\x00" * 32, issued_at=NOW)
    tamper(path, f"UPDATE heads SET token = '{forged.token}' WHERE tree_size = 4")
    expect("audit.bad_head", path)


def test_open_refuses_a_log_that_shrank(path: Path, clock: FixedClock) -> None:
    with SqliteAuditLog(path, node=ZHUJI, signer=SIGNER, clock=clock) as log:
        fill(log, clock, 3)
        tamper(path, "DELETE FROM entries WHERE seq = 2")
        with pytest.raises(VerificationError) as err:
            log.tree_head()
        assert err.value.code == "audit.removed"


# --- partners watching each other -----------------------------------------------------------


def test_head_watcher_accepts_a_growing_log(log: SqliteAuditLog, clock: FixedClock) -> None:
    watcher = HeadWatcher()
    fill(log, clock, 3)
    watcher.observe(ZHUJI, log.tree_head(), log.consistency_proof)
    fill(log, clock, 5)
    watcher.observe(ZHUJI, log.tree_head(), log.consistency_proof)
    watcher.observe(ZHUJI, log.tree_head(), log.consistency_proof)
    last = watcher.last(ZHUJI)
    assert last is not None
    assert last.tree_size == 8
    assert watcher.forks == frozenset()


def test_head_watcher_detects_a_rewritten_log(tmp_path: Path, clock: FixedClock) -> None:
    watcher = HeadWatcher()
    with SqliteAuditLog(tmp_path / "a", node=ZHUJI, signer=SIGNER, clock=clock) as honest:
        fill(honest, clock, 4)
        watcher.observe(ZHUJI, honest.tree_head(), honest.consistency_proof)
    # a different history under the same key, re-signed from scratch
    with SqliteAuditLog(tmp_path / "b", node=ZHUJI, signer=SIGNER, clock=clock) as rewritten:
        rewritten.append(AuditKind.FETCH, "someone-else")
        fill(rewritten, clock, 6)
        with pytest.raises(VerificationError) as err:
            watcher.observe(ZHUJI, rewritten.tree_head(), rewritten.consistency_proof)
        assert err.value.code == "audit.fork"
        assert isinstance(err.value.__cause__, VerificationError)
        assert err.value.__cause__.code == "audit.bad_consistency"
        assert watcher.forks == frozenset({ZHUJI})
        # same size, different root
        with pytest.raises(VerificationError) as err:
            watcher.observe(ZHUJI, rewritten.tree_head(4), rewritten.consistency_proof)
        assert err.value.code == "audit.fork"
    last = watcher.last(ZHUJI)
    assert last is not None
    assert last.tree_size == 4  # the last good head is kept


def test_head_watcher_detects_a_shrinking_log(log: SqliteAuditLog, clock: FixedClock) -> None:
    watcher = HeadWatcher()
    fill(log, clock, 5)
    watcher.observe(ZHUJI, log.tree_head(), log.consistency_proof)
    with pytest.raises(VerificationError) as err:
        watcher.observe(ZHUJI, log.tree_head(3), log.consistency_proof)
    assert err.value.code == "audit.fork"
    assert watcher.forks == frozenset({ZHUJI})


def test_head_watcher_refuses_a_head_of_another_node(log: SqliteAuditLog) -> None:
    watcher = HeadWatcher()
    with pytest.raises(VerificationError) as err:
        watcher.observe(YIWU, log.tree_head(), log.consistency_proof)
    assert err.value.code == "audit.bad_head"
    assert watcher.forks == frozenset()


def test_commits_leave_checkpoints_to_checkpoint(log: SqliteAuditLog, path: Path) -> None:
    """A commit never copies the WAL into the database; checkpoint() does, and loses nothing."""
    for n in range(40):
        log.append(AuditKind.FETCH, "zhuji-civil-affairs", f"cert-{n}", {"holder": DIGEST})
    wal = path.with_name(path.name + "-wal")
    before = path.stat().st_size
    assert wal.stat().st_size > 0
    log.checkpoint()
    assert path.stat().st_size > before  # the frames reached the database file
    log.checkpoint()  # nothing new: harmless
    log.close()
    with SqliteAuditLog(path, node=ZHUJI, signer=SIGNER, clock=FixedClock(NOW)) as again:
        assert again.size() == 40
        assert [r.subject for r in again.entries(38, 40)] == ["cert-38", "cert-39"]


def test_checkpoint_of_a_closed_log(log: SqliteAuditLog) -> None:
    log.close()
    with pytest.raises(StorageError) as info:
        log.checkpoint()
    assert info.value.code == "audit.closed"
