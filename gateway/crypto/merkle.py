"""Merkle trees in the manner of RFC 9162 §2.1: hashes, roots, inclusion and consistency.

Pure functions over lists of leaf hashes; no I/O. A leaf's hash is SHA-256(0x00 || entry),
an interior node's SHA-256(0x01 || left || right), and the tree over ``n`` leaves splits at
the largest power of two smaller than ``n`` (RFC 9162 §2.1.1), so a tree head commits to the
order of every entry and a log can only grow at its end.

Verification follows the algorithms of RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2
(consistency). It raises :class:`~gateway.errors.VerificationError` with the code
``audit.bad_inclusion`` or ``audit.bad_consistency``; it never returns a bool.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Final

from gateway.errors import InputError, VerificationError

HASH_BYTES: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""The root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1)."""

MAX_PROOF_LENGTH: Final = 64
"""A tree of at most 2**63 leaves needs no longer proof; anything longer is refused."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n`` >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class TreeBuilder:
    """A root computed incrementally: the compact range of perfect subtrees of a growing log.

    Appending is amortised O(1) and :meth:`root` O(log n), so a verifier can stream a log
    once and check a signed head at every size it meets.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (height, hash), heights decreasing
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> None:
        height, value = 0, leaf
        while self._stack and self._stack[-1][0] == height:
            _, left = self._stack.pop()
            value = node_hash(left, value)
            height += 1
        self._stack.append((height, value))
        self._size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        value = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            value = node_hash(left, value)
        return value


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over the given leaf hashes."""
    builder = TreeBuilder()
    for leaf in leaf_hashes:
        builder.append(leaf)
    return builder.root()


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    if hi - lo == 1:
        return leaves[lo]
    k = _split(hi - lo)
    return node_hash(_mth(leaves, lo, lo + k), _mth(leaves, lo + k, hi))


# --- inclusion ------------------------------------------------------------------------------


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) of RFC 9162 §2.1.3.1, leaf to root."""
    return _inclusion_path(len(leaf_hashes), index, lambda lo, hi: _mth(leaf_hashes, lo, hi))


Subtree = Callable[[int, int], bytes]
"""MTH(D[lo:hi]) of one tree's leaves."""


def _inclusion_path(n: int, index: int, mth: Subtree) -> list[bytes]:
    if not 0 <= index < n:
        raise InputError(
            f"leaf index {index} is outside a tree of {n} leaves", code="audit.bad_range"
        )
    path: list[bytes] = []
    lo, hi, m = 0, n, index
    # Walk down from the root, collecting siblings; the path is read leaf first.
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            path.append(mth(lo + k, hi))
            hi = lo + k
        else:
            path.append(mth(lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def _bad_inclusion(detail: str) -> VerificationError:
    return VerificationError(detail, code="audit.bad_inclusion")


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Check that ``leaf`` is leaf ``index`` of the tree of ``tree_size`` with ``root_hash``.

    RFC 9162 §2.1.3.2. Raises ``audit.bad_inclusion``.
    """
    # 1. the index lies in the tree, the proof is bounded and made of hashes
    if not 0 <= index < tree_size:
        raise _bad_inclusion("the leaf index is outside the tree")
    if len(proof) > MAX_PROOF_LENGTH or any(len(p) != HASH_BYTES for p in proof):
        raise _bad_inclusion("the inclusion proof is malformed")
    # 2. fn = leaf_index, sn = tree_size - 1, r = leaf_hash
    fn, sn, r = index, tree_size - 1, leaf
    # 3. fold each proof element in on the side the index says
    for p in proof:
        if sn == 0:
            raise _bad_inclusion("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # 4. the path reached the root, and the root is the one claimed
    if sn != 0:
        raise _bad_inclusion("the inclusion proof is too short")
    if not hmac.compare_digest(r, root_hash):
        raise _bad_inclusion("the inclusion proof does not lead to the tree head's root")


# --- consistency ----------------------------------------------------------------------------


def consistency_proof(leaf_hashes: Sequence[bytes], m: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1: the tree of ``m`` leaves is a prefix of this one."""
    return _consistency_path(len(leaf_hashes), m, lambda lo, hi: _mth(leaf_hashes, lo, hi))


def _consistency_path(n: int, m: int, mth: Subtree) -> list[bytes]:
    if not 0 <= m <= n:
        raise InputError(
            f"cannot prove a tree of {m} leaves consistent with one of {n}", code="audit.bad_range"
        )
    if m in (0, n):
        return []
    proof: list[bytes] = []
    lo, hi, complete = 0, n, True
    # SUBPROOF(m, D[lo:hi], complete), unrolled; elements are emitted root side first.
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(mth(lo + k, hi))
            hi = lo + k
        else:
            proof.append(mth(lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        proof.append(mth(lo, hi))
    proof.reverse()
    return proof


def _bad_consistency(detail: str) -> VerificationError:
    return VerificationError(detail, code="audit.bad_consistency")


def verify_consistency(
    m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``m`` leaves (``root_m``) is a prefix of that of ``n`` leaves.

    RFC 9162 §2.1.4.2. Raises ``audit.bad_consistency``.
    """
    # 1. sizes in order, a bounded proof made of hashes
    if not 0 <= m <= n:
        raise _bad_consistency("the older tree is larger than the newer one")
    if len(proof) > MAX_PROOF_LENGTH or any(len(p) != HASH_BYTES for p in proof):
        raise _bad_consistency("the consistency proof is malformed")
    # 2. the trivial cases: equal sizes mean equal roots; everything extends the empty tree
    if m in (0, n):
        if proof:
            raise _bad_consistency("the consistency proof should be empty")
        if m == n and not hmac.compare_digest(root_m, root_n):
            raise _bad_consistency("two trees of the same size have different roots")
        if m == 0 and not hmac.compare_digest(root_m, EMPTY_ROOT):
            raise _bad_consistency("the empty tree has a non-empty root")
        return
    # 3. an empty path proves nothing
    if not proof:
        raise _bad_consistency("the consistency proof is empty")
    # 4. if m is a power of two, the old root itself starts the path
    path = list(proof)
    if m & (m - 1) == 0:
        path.insert(0, root_m)
    # 5. fn = m - 1, sn = n - 1, shifted past the common right edge
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 6. rebuild both roots from the path
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise _bad_consistency("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # 7. both roots match and the path reached the top of the newer tree
    if sn != 0:
        raise _bad_consistency("the consistency proof is too short")
    if not hmac.compare_digest(fr, root_m):
        raise _bad_consistency("the consistency proof does not lead to the older root")
    if not hmac.compare_digest(sr, root_n):
        raise _bad_consistency("the consistency proof does not lead to the newer root")


# --- a growing log --------------------------------------------------------------------------

CHUNK_BITS: Final = 8
"""Subtrees of 2**CHUNK_BITS leaves and more have their roots remembered by :class:`MerkleLog`."""


class MerkleLog:
    """A log's leaf hashes, appended to only, with the roots of its aligned perfect subtrees
    of 256 leaves and more remembered as they complete.

    Every subtree RFC 9162 splits a tree into is either perfect and aligned (remembered once
    it has 256 leaves or more) or lies on the tree's right edge, so a root, an inclusion
    proof or a consistency proof at any size costs O(log n) look-ups and at most a few
    hundred hashes, not a pass over every leaf. About 2n/256 extra hashes are kept.
    Not thread-safe: its owner serialises access.
    """

    __slots__ = ("_leaves", "_levels")

    def __init__(self) -> None:
        self._leaves: list[bytes] = []
        # _levels[h][i]: MTH of leaves [i * 2**(CHUNK_BITS + h), (i + 1) * 2**(CHUNK_BITS + h))
        self._levels: list[list[bytes]] = []

    def __len__(self) -> int:
        return len(self._leaves)

    def extend(self, leaves: Sequence[bytes]) -> None:
        chunk = 1 << CHUNK_BITS
        for leaf in leaves:
            self._leaves.append(leaf)
            n = len(self._leaves)
            if n % chunk:
                continue
            value, height = _mth(self._leaves, n - chunk, n), 0
            while True:
                if height == len(self._levels):
                    self._levels.append([])
                level = self._levels[height]
                level.append(value)
                if len(level) % 2:
                    break
                value, height = node_hash(level[-2], value), height + 1

    def prefix(self, size: int) -> list[bytes]:
        """The first ``size`` leaf hashes (a copy)."""
        return self._leaves[:size]

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for ``0 <= lo < hi <= len(self)``."""
        size = hi - lo
        if size == 1:
            return self._leaves[lo]
        if size & (size - 1) == 0 and lo % size == 0:
            height = size.bit_length() - 1 - CHUNK_BITS
            if 0 <= height < len(self._levels) and (lo >> (height + CHUNK_BITS)) < len(
                self._levels[height]
            ):
                return self._levels[height][lo >> (height + CHUNK_BITS)]
        k = _split(size)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= len(self._leaves):
            raise InputError(
                f"the log has {len(self._leaves)} leaves, not {size}", code="audit.bad_range"
            )

    def root(self, size: int) -> bytes:
        """MTH(D[size]): the root of the tree of the first ``size`` leaves."""
        self._check_size(size)
        return EMPTY_ROOT if size == 0 else self.subtree(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[size]), as :func:`inclusion_proof` over the first ``size`` leaves."""
        self._check_size(size)
        return _inclusion_path(size, index, self.subtree)

    def consistency_proof(self, m: int, size: int) -> list[bytes]:
        """PROOF(m, D[size]), as :func:`consistency_proof` over the first ``size`` leaves."""
        self._check_size(size)
        return _consistency_path(size, m, self.subtree)
