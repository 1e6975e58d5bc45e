"""Seals by a revoked key that can be shown to predate the revocation.

A key revoked from time T fails every seal signed at or after T. A seal whose signing time
says "before T" proves nothing by itself (whoever holds the key can write any time), so it
is ``INDETERMINATE`` (``seal.revocation_unproven``) unless the issuing node's audit log
proves the issuance: the issuance record of that certificate, included (RFC 9162
inclusion proof) in a signed tree head issued before T, and **witnessed**: cosigned before T
by at least the federation's quorum of partners (:mod:`gateway.audit.cosignatures`). Then
the seal stays valid.

The head alone is not enough: it is signed by the node, often with the very key that was
revoked, so a thief of that key could back-date one. The partners' cosignatures are made
with their own keys, at their own time: a thief cannot back-date those.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, replace
from typing import Any

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.audit.cosignatures import check_witnessed
from gateway.audit.heads import SignedTreeHead, verify_tree_head
from gateway.audit.records import AuditKind, parse_entry
from gateway.config import Witness
from gateway.crypto.jwks import KeyResolver, KeyState, VerificationKey
from gateway.crypto.merkle import leaf_hash, verify_inclusion
from gateway.errors import GatewayError, RevocationUnproven
from gateway.ids import KeyId, NodeId

PROOF_PATH = "/v1/audit/issuance-proof"
_MAX_COSIGNATURES = Witness().max_cosignatures


class RevocationSetAside:
    """Keys as they were before their revocation: only for checking a proof's own time."""

    def __init__(self, keys: KeyResolver) -> None:
        self._keys = keys

    def key_for(self, kid: KeyId) -> VerificationKey:
        key = self._keys.key_for(kid)
        if key.revoked_at is None:
            return key
        return replace(key, revoked_at=None, state=KeyState.RETIRED)


@dataclass(frozen=True, slots=True)
class IssuanceProof:
    entry: bytes
    seq: int
    head: str
    """The signed tree head (compact JWS) that includes the entry."""
    path: tuple[bytes, ...]
    cosignatures: tuple[str, ...] = ()
    """Partners' cosignatures of that head (compact JWS, :mod:`gateway.audit.cosignatures`)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "entry": b64url_encode(self.entry),
            "seq": self.seq,
            "signed_tree_head": self.head,
            "proof": [b64url_encode(p) for p in self.path],
            "cosignatures": list(self.cosignatures),
        }

    @classmethod
    def from_json(cls, raw: Any, *, max_cosignatures: int = _MAX_COSIGNATURES) -> IssuanceProof:
        """A proof as a peer sent it (``cosignatures`` may be absent: an unwitnessed head)."""
        try:
            cosignatures = raw.get("cosignatures", [])
            if not isinstance(cosignatures, list) or len(cosignatures) > max_cosignatures:
                raise _unproven(
                    f"an issuance proof carries a list of at most {max_cosignatures} cosignatures"
                )
            if not all(isinstance(c, str) for c in cosignatures):
                raise _unproven("an issuance proof's cosignatures are compact JWS strings")
            return cls(
                entry=b64url_decode(raw["entry"]),
                seq=int(raw["seq"]),
                head=str(raw["signed_tree_head"]),
                path=tuple(b64url_decode(p) for p in raw["proof"]),
                cosignatures=tuple(cosignatures),
            )
        except (AttributeError, KeyError, TypeError, ValueError, GatewayError) as exc:
            raise _unproven("the issuance proof is malformed") from exc


@dataclass(frozen=True, slots=True)
class WitnessedHead:
    """The head that proved an issuance, and the partners that witnessed it in time."""

    head: SignedTreeHead
    witnesses: tuple[NodeId, ...]


def _unproven(detail: str) -> RevocationUnproven:
    return RevocationUnproven(detail)


def check_issuance_proof(
    proof: IssuanceProof,
    *,
    keys: KeyResolver,
    node: NodeId,
    certificate_id: str,
    revoked_at: float,
    partners: Set[NodeId],
    quorum: int,
    now: float,
) -> WitnessedHead:
    """Raise ``seal.revocation_unproven`` unless ``proof`` shows the issuance predates it:
    in a head of ``node`` older than ``revoked_at``, cosigned before then by ``quorum``
    distinct ``partners`` of ``node`` (the error's cause says which check failed)."""
    # 1. the head is the issuing node's, signed before the revocation (by that very key,
    #    typically: its revocation is set aside for the head, whose time is then checked)
    try:
        head = verify_tree_head(proof.head, RevocationSetAside(keys), node=node, now=now)
    except GatewayError as exc:
        raise _unproven("the issuance proof's tree head does not verify") from exc
    if head.issued_at >= revoked_at:
        raise _unproven("the issuance proof's tree head is not older than the revocation")
    # 2. the entry records this certificate's issuance at this node, at this position
    try:
        record = parse_entry(proof.entry)
    except GatewayError as exc:
        raise _unproven("the issuance proof's entry is malformed") from exc
    if (
        record.kind is not AuditKind.ISSUANCE
        or record.subject != certificate_id
        or record.node != node
        or record.seq != proof.seq
    ):
        raise _unproven("the issuance proof's entry is not this certificate's issuance")
    # 3. the entry is in the tree that head commits to
    try:
        verify_inclusion(
            leaf_hash(proof.entry), proof.seq, head.tree_size, list(proof.path), head.root_hash
        )
    except GatewayError as exc:
        raise _unproven("the issuance proof's inclusion path does not verify") from exc
    # 4. the head was witnessed before the revocation: cosigned, with their own keys (active
    #    in the trust list when they cosigned), by `quorum` of the node's partners
    try:
        witnesses = check_witnessed(
            head,
            proof.cosignatures,
            keys,
            partners=partners,
            quorum=quorum,
            before=revoked_at,
            now=now,
        )
    except GatewayError as exc:
        raise _unproven(
            "the issuance proof's tree head was not witnessed by enough partners before"
            " the revocation"
        ) from exc
    return WitnessedHead(head, witnesses)


def describe(proven: WitnessedHead) -> str:
    head = proven.head
    return (
        f"issuance proven by {head.node}'s signed tree head of size {head.tree_size},"
        f" cosigned by {', '.join(proven.witnesses)}"
    )


ProvenIssuances = Mapping[str, WitnessedHead]
"""certificate id → the head that proved its issuance predates its key's revocation."""
