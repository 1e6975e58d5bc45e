"""Witness cosignatures of tree heads: a partner's word that it saw a head, and when.

The idea is C2SP's tlog-witness / tlog-cosignature, over this federation's JWS: a node (the
*witness*) cosigns a partner's (the *origin*'s) signed tree head only once it has proven the
head consistent with the last head of that origin it cosigned
(:class:`gateway.audit.watch.HeadWatcher`: never a rollback, never a fork). A cosignature is a
compact JWS (typ :data:`COSIGNATURE_TYP`) by the witness's own trust-listed seal key over

- ``iss``: the witness; ``origin``: the node whose head it is;
- ``tree_size``, ``root_hash``: the head's tree;
- ``head_iat``: the head's own timestamp; ``iat``: the witness's time of cosigning (also the
  JWS's ``sigT``).

A head signed with a key stolen and revoked since can claim any time; a cosignature made
before the revocation by another node's key cannot be back-dated by the thief. So a proof of
issuance before a revocation (:mod:`gateway.certificates.revocation`) counts only a head
cosigned, before the revocation, by at least a quorum of distinct partners:
:func:`check_witnessed`.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass
from typing import Any, Final

import orjson

from gateway._internal.wire import b64url_decode, b64url_encode, is_int
from gateway.audit.heads import SignedTreeHead
from gateway.crypto.jwks import KeyResolver
from gateway.crypto.merkle import HASH_BYTES
from gateway.crypto.seals import Signer, sign_compact, verify_compact
from gateway.errors import (
    CosignatureError,
    InputError,
    VerificationError,
    WitnessQuorumNotMet,
)
from gateway.ids import NodeId

COSIGNATURE_TYP: Final = "audit-cosig+jws"
_CLAIMS_SKEW: Final = 1


@dataclass(frozen=True, slots=True)
class Cosignature:
    witness: NodeId
    origin: NodeId
    tree_size: int
    root_hash: bytes
    head_issued_at: float
    cosigned_at: float
    token: str
    """The compact JWS (typ :data:`COSIGNATURE_TYP`), verified with :func:`verify_cosignature`."""

    def to_json(self) -> dict[str, Any]:
        """As a witness publishes it: the head it cosigned, when, and the cosignature."""
        return {
            "tree_size": self.tree_size,
            "root_hash": b64url_encode(self.root_hash),
            "head_issued_at": int(self.head_issued_at),
            "cosigned_at": int(self.cosigned_at),
            "cosignature": self.token,
        }


def _bad(detail: str, code: str = CosignatureError.code) -> CosignatureError:
    return CosignatureError(detail, code=code)


def cosign_head(
    signer: Signer, *, witness: NodeId, head: SignedTreeHead, cosigned_at: float
) -> Cosignature:
    """The witness's cosignature of ``head`` (already verified and proven consistent)."""
    if head.node == witness:
        raise _bad("a node does not witness its own tree head", "audit.cosigned_by_origin")
    iat = int(cosigned_at)
    claims = {
        "iss": witness,
        "origin": head.node,
        "tree_size": head.tree_size,
        "root_hash": b64url_encode(head.root_hash),
        "head_iat": int(head.issued_at),
        "iat": iat,
    }
    token = sign_compact(
        signer,
        orjson.dumps(claims, option=orjson.OPT_SORT_KEYS),
        typ=COSIGNATURE_TYP,
        signed_at=iat,
    )
    return Cosignature(
        witness,
        head.node,
        head.tree_size,
        head.root_hash,
        float(int(head.issued_at)),
        float(iat),
        token,
    )


def verify_cosignature(
    token: str, keys: KeyResolver, *, head: SignedTreeHead, now: float
) -> Cosignature:
    """Verify a witness's cosignature of ``head`` (a head already verified). Raises a
    :class:`VerificationError`.

    Seal failures keep their ``seal.*`` codes (among them: a key the trust list does not hold,
    a key not in service at the cosigning time, a revoked key); then ``audit.bad_cosignature``
    for unsound claims, ``audit.cosigned_by_origin`` for a head cosigned by its own node and
    ``audit.cosignature_mismatch`` for a cosignature of another head.
    """
    # 1. a compact JWS of the pinned type, by a key the trust list holds, in service when
    #    it was signed (never `next`, within its validity, never revoked)
    verified = verify_compact(token, keys, typ=COSIGNATURE_TYP, now=now)
    claims = verified.payload
    # 2. the key is the witness's, and the cosignature says it is that witness's
    witness = verified.node
    if claims.get("iss") != witness:
        raise _bad("the cosignature is not signed by the node it claims to be from")
    # 3. a witness is another node than the head's
    if witness == head.node:
        raise _bad(
            "a tree head cosigned by its own node witnesses nothing", "audit.cosigned_by_origin"
        )
    # 4. sound claims: a size, a 32-byte root, two integer times, iat the signing time
    tree_size, head_iat, iat = claims.get("tree_size"), claims.get("head_iat"), claims.get("iat")
    if not is_int(tree_size) or tree_size < 0 or not is_int(head_iat) or not is_int(iat):
        raise _bad("the cosignature's size or times are not integers")
    root_b64 = claims.get("root_hash")
    try:
        root_hash = b64url_decode(root_b64, max_length=64) if isinstance(root_b64, str) else b""
    except InputError as exc:
        raise _bad("the cosignature's root is not base64url") from exc
    if len(root_hash) != HASH_BYTES:
        raise _bad("the cosignature's root is not a SHA-256 hash")
    if abs(iat - int(verified.signed_at)) > _CLAIMS_SKEW:
        raise _bad("the cosignature's iat does not match its signing time")
    # 5. it is a cosignature of this very head: origin, size, root and the head's own time
    if (
        claims.get("origin") != head.node
        or tree_size != head.tree_size
        or root_hash != head.root_hash
        or head_iat != int(head.issued_at)
    ):
        raise _bad("the cosignature is of another tree head", "audit.cosignature_mismatch")
    # 6. nobody cosigns a head before it was signed
    if iat < head_iat:
        raise _bad("the cosignature predates the head it cosigns")
    return Cosignature(witness, head.node, tree_size, root_hash, float(head_iat), float(iat), token)


def check_witnessed(
    head: SignedTreeHead,
    tokens: Iterable[str],
    keys: KeyResolver,
    *,
    partners: Set[NodeId],
    quorum: int,
    before: float,
    now: float,
) -> tuple[NodeId, ...]:
    """The distinct ``partners`` of the head's node (the nodes that watch its log) that
    cosigned ``head`` strictly before ``before``: at least ``quorum`` of them, or
    :class:`WitnessQuorumNotMet` (``audit.witness_quorum``, INDETERMINATE: more cosignatures
    may prove it), whose ``reasons`` name why each other one did not count.
    """
    if quorum < 1:
        raise ValueError("a witness quorum is at least one partner")
    witnesses: list[NodeId] = []
    reasons: list[str] = []
    for token in tokens:
        # 1. each cosignature verifies as one of this head, by another node than its own
        try:
            cosignature = verify_cosignature(token, keys, head=head, now=now)
        except VerificationError as exc:
            reasons.append(exc.code)
            continue
        # 2. by a partner of the head's node: one that watches its log
        if cosignature.witness not in partners:
            reasons.append("audit.not_a_partner")
            continue
        # 3. made before the time it must predate, by the witness's own clock
        if cosignature.cosigned_at >= before:
            reasons.append("audit.cosigned_too_late")
            continue
        # 4. one vote a witness
        if cosignature.witness in witnesses:
            reasons.append("audit.duplicate_witness")
            continue
        witnesses.append(cosignature.witness)
    if len(witnesses) < quorum:
        raise WitnessQuorumNotMet(
            f"{len(witnesses)} of the {quorum} partners needed cosigned the tree head in time",
            reasons=tuple(reasons),
        )
    return tuple(witnesses)
