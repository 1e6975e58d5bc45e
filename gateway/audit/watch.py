"""Partners checking each other's logs: each new head of a partner must extend the last one.

:class:`HeadWatcher` is the pure part (no I/O): the federation's
:class:`gateway.federation.partner_watch.PartnerWatch` fetches heads and consistency proofs over
HTTP and hands them here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

from gateway.audit.heads import SignedTreeHead, bad_head
from gateway.crypto.merkle import (
    verify_consistency,
)
from gateway.errors import (
    AuditFork,
    VerificationError,
)
from gateway.ids import NodeId

# --- partners checking each other -----------------------------------------------------------

ConsistencyProofFetcher = Callable[[int, int], Sequence[bytes]]
"""``fetch(m, n)``: the partner's consistency proof between its trees of m and n entries."""


class HeadWatcher:
    """Keeps the last verified head of each partner and proves each new one extends it.

    A head that is smaller, differs at the same size, or cannot be proven consistent is a
    fork (``audit.fork``): the partner is remembered in :attr:`forks` (for metrics) and its
    last good head is kept. Fetch failures propagate as they are: they prove nothing.
    """

    def __init__(self, last: Mapping[NodeId, SignedTreeHead] | None = None) -> None:
        """``last``: the heads checks resume from (a witness's last cosigned heads, kept
        across restarts, so that it never cosigns a rollback)."""
        self._lock = threading.Lock()
        self._last: dict[NodeId, SignedTreeHead] = dict(last or {})
        self._forks: set[NodeId] = set()

    @property
    def forks(self) -> frozenset[NodeId]:
        with self._lock:
            return frozenset(self._forks)

    def last(self, node: NodeId) -> SignedTreeHead | None:
        with self._lock:
            return self._last.get(node)

    def _fork(self, node: NodeId, detail: str, exc: Exception | None = None) -> AuditFork:
        with self._lock:
            self._forks.add(node)
        return AuditFork(
            f"the audit log of {node} forked: {detail}",
            log_detail=None if exc is None else repr(exc),
        )

    def observe(
        self, node: NodeId, sth: SignedTreeHead, consistency_proof_fetcher: ConsistencyProofFetcher
    ) -> None:
        """Check ``sth`` (already verified with :func:`verify_tree_head`) against the last."""
        if sth.node != node:
            raise bad_head(f"a tree head of {sth.node} was offered as one of {node}")
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
