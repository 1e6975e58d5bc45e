"""RFC 9162 Merkle trees: against a literal recursive reference, and every tampered proof."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.crypto.merkle import (
    EMPTY_ROOT,
    MerkleLog,
    TreeBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from gateway.errors import InputError, VerificationError

# --- the reference: RFC 9162 §2.1 written as literally as possible --------------------------


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


ENTRIES = [f"entry {i}".encode() for i in range(64)]
LEAVES = [leaf_hash(e) for e in ENTRIES]
ROOTS = [ref_mth(ENTRIES[:n]) for n in range(65)]


def flip(data: bytes, bit: int = 0) -> bytes:
    return bytes([data[0] ^ (1 << bit), *data[1:]])


# --- hashing and roots ----------------------------------------------------------------------


def test_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    assert EMPTY_ROOT == hashlib.sha256(b"").digest() == root([])


def test_roots_match_reference_for_all_sizes() -> None:
    builder = TreeBuilder()
    for n in range(65):
        assert root(LEAVES[:n]) == ROOTS[n], n
        assert builder.size == n
        assert builder.root() == ROOTS[n]
        if n < 64:
            builder.append(LEAVES[n])


def test_known_answer_rfc6962_three_leaves() -> None:
    # MTH of {d0, d1, d2} = H(1 || H(1 || H(0||d0) || H(0||d1)) || H(0||d2))
    d = [b"", b"\x00", b"\x10"]
    h = [hashlib.sha256(b"\x00" + x).digest() for x in d]
    expected = hashlib.sha256(
        b"\x01" + hashlib.sha256(b"\x01" + h[0] + h[1]).digest() + h[2]
    ).digest()
    assert root(h) == expected == ref_mth(d)


# --- inclusion ------------------------------------------------------------------------------


def test_inclusion_matches_reference_and_verifies_all_sizes() -> None:
    for n in range(1, 65):
        for i in range(n):
            proof = inclusion_proof(LEAVES[:n], i)
            assert proof == ref_path(i, ENTRIES[:n]), (n, i)
            verify_inclusion(LEAVES[i], i, n, proof, ROOTS[n])


def test_every_tampered_inclusion_element_is_refused() -> None:
    for n in (1, 2, 3, 5, 8, 13, 33, 64):
        for i in range(n):
            proof = inclusion_proof(LEAVES[:n], i)
            for j in range(len(proof)):
                bad = [*proof[:j], flip(proof[j]), *proof[j + 1 :]]
                with pytest.raises(VerificationError) as err:
                    verify_inclusion(LEAVES[i], i, n, bad, ROOTS[n])
                assert err.value.code == "audit.bad_inclusion"


@given(n=st.integers(1, 64), data=st.data())
def test_inclusion_refuses_wrong_leaf_index_size_or_root(n: int, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(LEAVES[:n], i)
    cases = [
        (flip(LEAVES[i]), i, n, proof, ROOTS[n]),
        (LEAVES[i], i, n, proof, flip(ROOTS[n])),
        (LEAVES[i], i, n, [*proof, LEAVES[0]], ROOTS[n]),
    ]
    if proof:
        cases.append((LEAVES[i], i, n, proof[:-1], ROOTS[n]))
    other = data.draw(st.integers(0, n))
    if other not in (i, n):
        cases.append((LEAVES[i], other, n, proof, ROOTS[n]))
    for leaf, index, size, path, root_hash in cases:
        with pytest.raises(VerificationError) as err:
            verify_inclusion(leaf, index, size, path, root_hash)
        assert err.value.code == "audit.bad_inclusion"


@pytest.mark.parametrize(
    ("index", "size", "proof"),
    [
        (3, 3, []),
        (-1, 3, []),
        (0, 2, [b"short"]),
        (0, 2, [b"\x00" * 32] * 65),
    ],
    ids=["index-past-end", "negative-index", "short-element", "overlong"],
)
def test_inclusion_refuses_malformed_input(index: int, size: int, proof: list[bytes]) -> None:
    with pytest.raises(VerificationError) as err:
        verify_inclusion(LEAVES[0], index, size, proof, ROOTS[size])
    assert err.value.code == "audit.bad_inclusion"


def test_inclusion_proof_refuses_index_outside_tree() -> None:
    with pytest.raises(InputError) as err:
        inclusion_proof(LEAVES[:3], 3)
    assert err.value.code == "audit.bad_range"


# --- consistency ----------------------------------------------------------------------------


def test_consistency_matches_reference_and_verifies_all_sizes() -> None:
    for n in range(1, 65):
        for m in range(n + 1):
            proof = consistency_proof(LEAVES[:n], m)
            expected = ref_proof(m, ENTRIES[:n]) if 0 < m < n else []
            assert proof == expected, (m, n)
            verify_consistency(m, n, ROOTS[m], ROOTS[n], proof)


def test_every_tampered_consistency_element_is_refused() -> None:
    for n in range(2, 65):
        for m in range(1, n):
            proof = consistency_proof(LEAVES[:n], m)
            for j in range(len(proof)):
                bad = [*proof[:j], flip(proof[j], 7), *proof[j + 1 :]]
                with pytest.raises(VerificationError) as err:
                    verify_consistency(m, n, ROOTS[m], ROOTS[n], bad)
                assert err.value.code == "audit.bad_consistency"


@given(n=st.integers(2, 64), data=st.data())
def test_consistency_refuses_wrong_roots_sizes_or_lengths(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(1, n - 1))
    proof = consistency_proof(LEAVES[:n], m)
    cases = [
        (m, n, flip(ROOTS[m]), ROOTS[n], proof),
        (m, n, ROOTS[m], flip(ROOTS[n]), proof),
        (m, n, ROOTS[m], ROOTS[n], proof[:-1]),
        (m, n, ROOTS[m], ROOTS[n], [*proof, LEAVES[0]]),
        (n, m, ROOTS[n], ROOTS[m], proof),
    ]
    other = data.draw(st.integers(1, n - 1))
    if other != m:
        cases.append((other, n, ROOTS[m], ROOTS[n], proof))
    for args in cases:
        with pytest.raises(VerificationError) as err:
            verify_consistency(*args)
        assert err.value.code == "audit.bad_consistency"


def test_consistency_trivial_cases() -> None:
    verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])
    for args in [
        (5, 5, ROOTS[5], ROOTS[4], []),  # same size, different roots: a fork
        (5, 5, ROOTS[5], ROOTS[5], [LEAVES[0]]),  # equal sizes take no proof
        (0, 5, ROOTS[1], ROOTS[5], []),  # the empty tree has one root
        (2, 5, ROOTS[2], ROOTS[5], []),  # an empty path proves nothing
        (1, 5, ROOTS[1], ROOTS[5], [b"short"]),
    ]:
        with pytest.raises(VerificationError) as err:
            verify_consistency(*args)
        assert err.value.code == "audit.bad_consistency"


def test_consistency_proof_refuses_sizes_out_of_order() -> None:
    with pytest.raises(InputError) as err:
        consistency_proof(LEAVES[:3], 4)
    assert err.value.code == "audit.bad_range"


# --- MerkleLog: remembered subtrees give the same answers as the plain functions -------------

LOG_SIZE = 1_300  # past 4 * 256 leaves: remembered subtrees of 256, 512 and 1024 leaves


@pytest.fixture(scope="module")
def grown() -> tuple[MerkleLog, list[bytes]]:
    leaves = [leaf_hash(n.to_bytes(4, "big")) for n in range(LOG_SIZE)]
    log = MerkleLog()
    for start in range(0, LOG_SIZE, 97):  # appended in uneven batches
        log.extend(leaves[start : start + 97])
    return log, leaves


def test_merkle_log_roots_match_at_every_size(grown: tuple[MerkleLog, list[bytes]]) -> None:
    log, leaves = grown
    assert len(log) == LOG_SIZE
    assert log.root(0) == EMPTY_ROOT
    builder = TreeBuilder()
    for size in range(1, LOG_SIZE + 1):
        builder.append(leaves[size - 1])
        assert log.root(size) == builder.root(), size
    assert log.root(LOG_SIZE) == root(leaves)
    assert log.prefix(10) == leaves[:10]


@given(data=st.data())
def test_merkle_log_proofs_match_the_plain_functions(
    grown: tuple[MerkleLog, list[bytes]], data: st.DataObject
) -> None:
    log, leaves = grown
    size = data.draw(st.sampled_from([1, 255, 256, 257, 511, 512, 513, 1024, 1025, LOG_SIZE]))
    index = data.draw(st.integers(0, size - 1))
    m = data.draw(st.integers(0, size))
    assert log.inclusion_proof(index, size) == inclusion_proof(leaves[:size], index)
    assert log.consistency_proof(m, size) == consistency_proof(leaves[:size], m)
    verify_inclusion(leaves[index], index, size, log.inclusion_proof(index, size), log.root(size))
    verify_consistency(m, size, log.root(m), log.root(size), log.consistency_proof(m, size))


@pytest.mark.parametrize("size", [-1, LOG_SIZE + 1])
def test_merkle_log_refuses_sizes_it_does_not_have(
    grown: tuple[MerkleLog, list[bytes]], size: int
) -> None:
    log, _ = grown
    for ask in (lambda: log.root(size), lambda: log.consistency_proof(0, size)):
        with pytest.raises(InputError) as info:
            ask()
        assert info.value.code == "audit.bad_range"
    with pytest.raises(InputError) as info:
        log.inclusion_proof(LOG_SIZE, LOG_SIZE)
    assert info.value.code == "audit.bad_range"
