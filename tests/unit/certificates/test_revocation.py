"""Proving from the audit log that a seal's issuance predates its key's revocation: a head
older than the revocation, witnessed before it by a quorum of partners."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway.audit.cosignatures import cosign_head
from gateway.audit.heads import sign_tree_head, verify_tree_head
from gateway.audit.records import AuditKind
from gateway.certificates.revocation import IssuanceProof, WitnessedHead, check_issuance_proof
from gateway.clock import FixedClock
from gateway.crypto.jwks import KeyResolver, KeyState, StaticKeyResolver
from gateway.crypto.keystore import KeyStore
from gateway.crypto.merkle import MerkleLog, leaf_hash
from gateway.errors import GatewayError, NotFoundError, SealIndeterminate, WitnessQuorumNotMet
from gateway.ids import NodeId
from gateway.storage.audit_log import SqliteAuditLog

NOW = 1_795_507_200.0
NODE = NodeId("zhuji")
CERT = "1.2.156.3005.2.111000000000MCA07A003.11330681002521002U.20260000000000.001.H"
OTHER = "1.2.156.3005.2.111000000000MCA07A003.11330681002521002U.20260000000001.001.1"


WITNESS = NodeId("shaoxing")
OTHER_WITNESS = NodeId("linquan")


@pytest.fixture
def world(tmp_path: Path) -> tuple[SqliteAuditLog, KeyStore, FixedClock]:
    clock = FixedClock(NOW)
    keys = KeyStore.open(tmp_path / "keys", NODE, clock=clock)
    log = SqliteAuditLog(
        tmp_path / "audit.sqlite3", node=NODE, signer=keys.current_signer(), clock=clock
    )
    log.append(AuditKind.FETCH, "someone", OTHER, {"matter": "marriage-registration"})
    log.append(AuditKind.ISSUANCE, "zhuji-civil-affairs", CERT, {"type": "marriage"})
    clock.advance(10)
    log.tree_head()  # signed at NOW + 10
    clock.advance(10)
    return log, keys, clock


@pytest.fixture
def witnesses(tmp_path: Path) -> dict[NodeId, KeyStore]:
    clock = FixedClock(NOW - 86_400)
    return {
        node: KeyStore.open(tmp_path / "keys", node, clock=clock)
        for node in (WITNESS, OTHER_WITNESS)
    }


def trusted(keys: KeyStore, witnesses: dict[NodeId, KeyStore], **revoked: float) -> KeyResolver:
    """The trust list: the node's and the witnesses' keys (a node's revoked from a time)."""
    found = {}
    for store in (keys, *witnesses.values()):
        for kid, key in store.verification_keys().items():
            at = revoked.get(key.node)
            found[kid] = key if at is None else replace(key, state=KeyState.REVOKED, revoked_at=at)
    return StaticKeyResolver(found)


def cosigned(
    proof: IssuanceProof,
    keys: KeyStore,
    witnesses: dict[NodeId, KeyStore],
    *,
    at: float,
    by: tuple[str, ...] = ("shaoxing",),
) -> IssuanceProof:
    """``proof`` with its head cosigned at ``at`` by the named witnesses."""
    head = verify_tree_head(proof.head, keys, node=NODE, now=NOW + 20)
    tokens = tuple(
        cosign_head(
            witnesses[NodeId(name)].signer(), witness=NodeId(name), head=head, cosigned_at=at
        ).token
        for name in by
    )
    return replace(proof, cosignatures=proof.cosignatures + tokens)


def check(
    proof: IssuanceProof,
    keys: KeyStore,
    revoked_at: float,
    cert: str = CERT,
    *,
    witnesses: dict[NodeId, KeyStore],
    quorum: int = 1,
) -> WitnessedHead:
    return check_issuance_proof(
        proof,
        keys=trusted(keys, witnesses, zhuji=revoked_at),
        node=NODE,
        certificate_id=cert,
        revoked_at=revoked_at,
        partners=frozenset({WITNESS, OTHER_WITNESS}),
        quorum=quorum,
        now=NOW + 20,
    )


def unproven_because(
    proof: IssuanceProof,
    keys: KeyStore,
    witnesses: dict[NodeId, KeyStore],
    *,
    revoked_at: float = NOW + 15,
    quorum: int = 1,
) -> str:
    """The code of the check that left the proof unproven."""
    with pytest.raises(SealIndeterminate) as info:
        check(proof, keys, revoked_at, witnesses=witnesses, quorum=quorum)
    assert info.value.code == "seal.revocation_unproven"
    cause = info.value.__cause__
    return cause.code if isinstance(cause, GatewayError) else info.value.code


World = tuple[SqliteAuditLog, KeyStore, FixedClock]


def test_an_issuance_in_an_older_witnessed_head_is_proven(
    world: World, witnesses: dict[NodeId, KeyStore]
) -> None:
    log, keys, _ = world
    proof = cosigned(log.issuance_proof(CERT, revoked_at=NOW + 15), keys, witnesses, at=NOW + 12)
    assert proof.seq == 1
    proven = check(IssuanceProof.from_json(proof.to_json()), keys, NOW + 15, witnesses=witnesses)
    assert (proven.head.tree_size, proven.witnesses) == (2, (WITNESS,))


def test_no_head_before_the_revocation_means_no_proof(world: World) -> None:
    log, _, _ = world
    with pytest.raises(NotFoundError) as info:
        log.issuance_proof(CERT, revoked_at=NOW + 5)
    assert info.value.code == "audit.no_proof"
    with pytest.raises(NotFoundError):
        log.issuance_proof("1.2.156.3005.2.unknown", revoked_at=NOW + 15)


def test_a_head_not_older_than_the_revocation_is_refused(
    world: World, witnesses: dict[NodeId, KeyStore]
) -> None:
    log, keys, _ = world
    proof = cosigned(log.issuance_proof(CERT, revoked_at=NOW + 15), keys, witnesses, at=NOW + 10)
    # the head was signed at NOW + 10 exactly (and cosigned then)
    assert (
        unproven_because(proof, keys, witnesses, revoked_at=NOW + 10) == "seal.revocation_unproven"
    )


def test_an_unwitnessed_head_proves_nothing(
    world: World, witnesses: dict[NodeId, KeyStore]
) -> None:
    log, keys, _ = world
    proof = log.issuance_proof(CERT, revoked_at=NOW + 15)  # the node's own head alone
    assert proof.cosignatures == ()
    assert unproven_because(proof, keys, witnesses) == "audit.witness_quorum"


def test_a_head_witnessed_only_after_the_revocation_proves_nothing(
    world: World, witnesses: dict[NodeId, KeyStore]
) -> None:
    log, keys, _ = world
    proof = cosigned(log.issuance_proof(CERT, revoked_at=NOW + 15), keys, witnesses, at=NOW + 15)
    assert unproven_because(proof, keys, witnesses) == "audit.witness_quorum"


def test_the_quorum_counts_distinct_partners(
    world: World, witnesses: dict[NodeId, KeyStore]
) -> None:
    log, keys, _ = world
    proof = log.issuance_proof(CERT, revoked_at=NOW + 15)
    once = cosigned(proof, keys, witnesses, at=NOW + 12)
    twice = cosigned(once, keys, witnesses, at=NOW + 13)  # shaoxing again
    assert unproven_because(twice, keys, witnesses, quorum=2) == "audit.witness_quorum"
    both = cosigned(once, keys, witnesses, at=NOW + 13, by=("linquan",))
    proven = check(both, keys, NOW + 15, witnesses=witnesses, quorum=2)
    assert proven.witnesses == (WITNESS, OTHER_WITNESS)


def test_a_head_forged_with_the_stolen_key_is_not_witnessed(
    world: World, witnesses: dict[NodeId, KeyStore], tmp_path: Path
) -> None:
    """After the revocation, the thief signs a head back-dated before it, over a log of its
    own making; the witnesses never saw it, and their cosignatures of the honest head are of
    another head."""
    log, keys, _ = world
    honest = cosigned(log.issuance_proof(CERT, revoked_at=NOW + 15), keys, witnesses, at=NOW + 12)
    forged_entry = replace(log.entries(1, 2)[0], details={"type": "marriage", "forged": True})
    leaves = MerkleLog()
    leaves.extend([leaf_hash(log.entries(0, 1)[0].entry()), leaf_hash(forged_entry.entry())])
    back_dated = sign_tree_head(
        keys.signer(), node=NODE, tree_size=2, root_hash=leaves.root(2), issued_at=NOW + 5
    )
    forged = IssuanceProof(
        forged_entry.entry(), 1, back_dated.token, tuple(leaves.inclusion_proof(1, 2))
    )
    assert unproven_because(forged, keys, witnesses) == "audit.witness_quorum"
    with_honest_cosignatures = replace(forged, cosignatures=honest.cosignatures)
    assert unproven_because(with_honest_cosignatures, keys, witnesses) == "audit.witness_quorum"


def test_a_cosignature_by_a_node_that_is_not_a_partner_does_not_count(
    world: World, witnesses: dict[NodeId, KeyStore]
) -> None:
    log, keys, _ = world
    proof = cosigned(log.issuance_proof(CERT, revoked_at=NOW + 15), keys, witnesses, at=NOW + 12)
    with pytest.raises(SealIndeterminate) as info:
        check_issuance_proof(
            proof,
            keys=trusted(keys, witnesses, zhuji=NOW + 15),
            node=NODE,
            certificate_id=CERT,
            revoked_at=NOW + 15,
            partners=frozenset({OTHER_WITNESS}),  # shaoxing does not watch this node here
            quorum=1,
            now=NOW + 20,
        )
    cause = info.value.__cause__
    assert isinstance(cause, WitnessQuorumNotMet)
    assert cause.reasons == ("audit.not_a_partner",)


def test_too_many_cosignatures_are_refused_unread(
    world: World, witnesses: dict[NodeId, KeyStore]
) -> None:
    log, keys, _ = world
    proof = cosigned(log.issuance_proof(CERT, revoked_at=NOW + 15), keys, witnesses, at=NOW + 12)
    raw = proof.to_json()
    with pytest.raises(SealIndeterminate) as info:
        IssuanceProof.from_json(
            {**raw, "cosignatures": raw["cosignatures"] * 3}, max_cosignatures=2
        )
    assert info.value.code == "seal.revocation_unproven"
    for bad in ("x", [1], None):
        with pytest.raises(SealIndeterminate):
            IssuanceProof.from_json({**raw, "cosignatures": bad})
    unwitnessed = {k: v for k, v in raw.items() if k != "cosignatures"}
    assert IssuanceProof.from_json(unwitnessed).cosignatures == ()


@pytest.mark.parametrize(
    "mutation", ["other certificate", "wrong seq", "bad path", "bad head", "foreign key"]
)
def test_every_broken_proof_is_unproven(
    world: World, witnesses: dict[NodeId, KeyStore], tmp_path: Path, mutation: str
) -> None:
    log, keys, clock = world
    proof = cosigned(log.issuance_proof(CERT, revoked_at=NOW + 15), keys, witnesses, at=NOW + 12)
    resolver = trusted(keys, witnesses, zhuji=NOW + 15)
    cert = CERT
    if mutation == "other certificate":
        cert = OTHER
    elif mutation == "wrong seq":
        proof = replace(proof, seq=0)
    elif mutation == "bad path":
        proof = replace(proof, path=tuple(bytes(32) for _ in proof.path) or (bytes(32),))
    elif mutation == "bad head":
        proof = replace(proof, head=proof.head[:-4] + "AAAA")
    elif mutation == "foreign key":
        stranger = KeyStore.open(tmp_path / "other", NodeId("linquan"), clock=clock)
        resolver = StaticKeyResolver(stranger.verification_keys())
    with pytest.raises(SealIndeterminate) as info:
        check_issuance_proof(
            proof,
            keys=resolver,
            node=NODE,
            certificate_id=cert,
            revoked_at=NOW + 15,
            partners=frozenset({WITNESS, OTHER_WITNESS}),
            quorum=1,
            now=NOW + 20,
        )
    assert info.value.code == "seal.revocation_unproven"
