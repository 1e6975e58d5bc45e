"""A node as witness and as origin: the cosignatures it makes, gathers and proves with; and
the seal of a key stolen and revoked, judged with an honest proof and with a forged one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from conftest import NOW, marriage_request

from gateway._internal.wire import b64url_decode
from gateway.audit.cosignatures import cosign_head, verify_cosignature
from gateway.audit.heads import SignedTreeHead, sign_tree_head
from gateway.certificates.revocation import (
    IssuanceProof,
    ProvenIssuances,
    check_issuance_proof,
)
from gateway.certificates.schemas import SchemaSet
from gateway.certificates.verification import CertificateVerifier
from gateway.clock import FixedClock
from gateway.crypto.jwks import KeyResolver, KeyState, StaticKeyResolver
from gateway.crypto.keystore import KeyStore
from gateway.crypto.merkle import MerkleLog, leaf_hash
from gateway.crypto.seals import seal
from gateway.errors import CosignatureError, NotFoundError, SealIndeterminate
from gateway.federation.partner_watch import partners_of
from gateway.federation.routing import Topology
from gateway.ids import DepartmentId, NodeId
from gateway.services.node import NodeService
from gateway.sso.auth import Principal, Scope

ZHUJI, SHAOXING, LINQUAN = NodeId("zhuji"), NodeId("shaoxing"), NodeId("linquan")
CLERK = Principal(
    subject="zhuji-civil-affairs",
    client_id="zhuji-civil-affairs",
    scopes=frozenset(s.value for s in Scope),
    department=DepartmentId("zhuji-civil-affairs"),
    node=ZHUJI,
)


@pytest.fixture
def partners(tmp_path: Path) -> dict[NodeId, KeyStore]:
    clock = FixedClock(NOW - 86_400)
    return {
        n: KeyStore.open(tmp_path / "partner-keys", n, clock=clock) for n in (SHAOXING, LINQUAN)
    }


def trust_list(
    service: NodeService, partners: dict[NodeId, KeyStore], **revoked: float
) -> KeyResolver:
    """The federation's keys as the trust list gives them (a node's revoked from a time)."""
    found = {}
    for store in (service.keys, *partners.values()):
        for kid, key in store.verification_keys().items():
            at = revoked.get(key.node)
            found[kid] = key if at is None else replace(key, state=KeyState.REVOKED, revoked_at=at)
    return StaticKeyResolver(found)


def witnessed_by(
    service: NodeService, partners: dict[NodeId, KeyStore], head: SignedTreeHead, *, at: float
) -> None:
    """Each partner cosigns ``head`` at ``at``; the node gathers their cosignatures."""
    for node, keys in partners.items():
        made = cosign_head(keys.signer(), witness=node, head=head, cosigned_at=at)
        assert service.accept_cosignature(made.token, trust_list(service, partners), witness=node)


# --- as a witness ----------------------------------------------------------------------------


def test_a_witness_cosigns_keeps_and_publishes_a_partners_heads(
    service: NodeService, partners: dict[NodeId, KeyStore], clock: FixedClock
) -> None:
    head = sign_tree_head(
        partners[SHAOXING].signer(),
        node=SHAOXING,
        tree_size=3,
        root_hash=bytes(32),
        issued_at=NOW - 5,
    )
    made = service.cosign(head)
    assert (made.witness, made.origin, made.cosigned_at) == (ZHUJI, SHAOXING, NOW)
    verify_cosignature(made.token, trust_list(service, partners), head=head, now=NOW)
    clock.advance(10)
    again = service.cosign(head)  # the same head again: the first cosignature is the one kept
    assert service.cosignatures_made(SHAOXING, after_size=-1) == [made]
    assert again.cosigned_at == NOW + 10
    assert service.cosignatures_made(SHAOXING, after_size=3) == []
    assert service.cosignatures_made(LINQUAN, after_size=-1) == []
    assert service.cosignatures_made(ZHUJI, after_size=-1) == []
    # where the checks of that partner resume, after a restart too
    assert service.cosigned_heads() == {SHAOXING: head}


# --- as an origin -----------------------------------------------------------------------------


def test_the_node_keeps_only_sound_cosignatures_of_its_own_heads(
    service: NodeService, partners: dict[NodeId, KeyStore]
) -> None:
    service.issue(CLERK, marriage_request())
    head = service.audit_head()
    keys = trust_list(service, partners)
    by_shaoxing = cosign_head(
        partners[SHAOXING].signer(), witness=SHAOXING, head=head, cosigned_at=NOW
    )
    assert service.accept_cosignature(by_shaoxing.token, keys, witness=SHAOXING)
    assert not service.accept_cosignature(by_shaoxing.token, keys, witness=SHAOXING)  # kept once
    assert service.gathered_size(SHAOXING) == head.tree_size
    assert service.gathered_size(LINQUAN) == -1
    # a cosignature relayed by another partner than its witness
    with pytest.raises(CosignatureError) as info:
        service.accept_cosignature(by_shaoxing.token, keys, witness=LINQUAN)
    assert info.value.code == "audit.bad_cosignature"
    # a cosignature of a head this node never signed
    never = sign_tree_head(
        service.keys.signer(), node=ZHUJI, tree_size=99, root_hash=bytes(32), issued_at=NOW
    )
    stray = cosign_head(partners[LINQUAN].signer(), witness=LINQUAN, head=never, cosigned_at=NOW)
    with pytest.raises(CosignatureError) as info:
        service.accept_cosignature(stray.token, keys, witness=LINQUAN)
    assert info.value.code == "audit.cosignature_mismatch"
    # nor one of another root at a size it did sign
    other_root = replace(head, root_hash=bytes(32))
    forged = cosign_head(
        partners[LINQUAN].signer(), witness=LINQUAN, head=other_root, cosigned_at=NOW
    )
    with pytest.raises(CosignatureError) as info:
        service.accept_cosignature(forged.token, keys, witness=LINQUAN)
    assert info.value.code == "audit.cosignature_mismatch"
    with pytest.raises(CosignatureError):
        service.accept_cosignature("not.a.jws", keys, witness=LINQUAN)
    assert service.gathered_size(LINQUAN) == -1


def test_the_proof_carries_the_oldest_head_witnessed_before_the_revocation(
    service: NodeService, partners: dict[NodeId, KeyStore], clock: FixedClock
) -> None:
    cert_id = service.issue(CLERK, marriage_request()).certificate.id
    clock.advance(1)
    unwitnessed = service.audit_head()  # never cosigned
    service.issue(CLERK, marriage_request())
    clock.advance(1)
    first = service.audit_head()
    clock.advance(1)
    witnessed_by(service, {SHAOXING: partners[SHAOXING]}, first, at=clock.now())
    service.issue(CLERK, marriage_request())
    clock.advance(1)
    second = service.audit_head()
    clock.advance(1)
    witnessed_by(service, partners, second, at=clock.now())
    revoked_at = clock.now() + 1

    proof = service.issuance_proof(cert_id, revoked_at=revoked_at)
    assert proof.head == first.token
    assert len(proof.cosignatures) == 1
    assert unwitnessed.tree_size < first.tree_size
    # with a quorum of two, only the second head will do
    two = replace(service.federation, witness=replace(service.federation.witness, quorum=2))
    service.federation = two
    proof = service.issuance_proof(cert_id, revoked_at=revoked_at)
    assert proof.head == second.token
    assert len(proof.cosignatures) == 2
    # before any cosignature, the oldest head alone (a verifier finds it unwitnessed)
    early = service.issuance_proof(cert_id, revoked_at=first.issued_at + 1)
    assert (early.head, early.cosignatures) == (unwitnessed.token, ())


# --- the seal of a stolen, revoked key -------------------------------------------------------


def certificate_id(seal: str) -> str:
    return str(orjson.loads(b64url_decode(seal.split(".")[1]))["id"])


def judged(
    service: NodeService,
    schemas: SchemaSet,
    keys: KeyResolver,
    seal: str,
    proof: IssuanceProof,
    *,
    revoked_at: float,
) -> tuple[str, str]:
    """The verdict on ``seal`` as a verifier reaches it (:class:`FederatedVerifier`): the
    proof checked (as received), then the seal, with the issuance proven or not."""
    cert_id = certificate_id(seal)
    proven: ProvenIssuances = {}
    try:
        proven = {
            cert_id: check_issuance_proof(
                IssuanceProof.from_json(orjson.loads(orjson.dumps(proof.to_json()))),
                keys=keys,
                node=ZHUJI,
                certificate_id=cert_id,
                revoked_at=revoked_at,
                partners=frozenset(
                    partners_of(Topology.from_federation(service.federation), ZHUJI)
                ),
                quorum=service.federation.witness.quorum,
                now=service.clock.now(),
            )
        }
    except SealIndeterminate as exc:
        refused: SealIndeterminate | None = exc
    else:
        refused = None
    assert refused is None or refused.code == "seal.revocation_unproven"
    report, _ = CertificateVerifier(keys, schemas, clock=service.clock, proven=proven).report(seal)
    return report.indication.value, report.code


def test_a_head_forged_with_the_stolen_key_leaves_the_seal_unproven_an_honest_one_passes(
    service: NodeService, partners: dict[NodeId, KeyStore], clock: FixedClock, schemas: SchemaSet
) -> None:
    # the node issues; a head that includes the issuance is witnessed by its partners
    honest_seal = service.issue(CLERK, marriage_request()).certificate.seal
    clock.advance(5)
    witnessed_by(service, partners, service.audit_head(), at=clock.now() + 5)
    clock.advance(10)
    # the key is stolen, and revoked
    revoked_at = clock.now()
    clock.advance(600)
    keys = trust_list(service, partners, zhuji=revoked_at)
    report, _ = CertificateVerifier(keys, schemas, clock=clock).report(honest_seal)
    assert (report.indication.value, report.code) == ("INDETERMINATE", "seal.revocation_unproven")

    # honest: the node's proof from its log, with its partners' cosignatures, keeps it PASSED
    honest = service.issuance_proof(certificate_id(honest_seal), revoked_at=revoked_at)
    assert len(honest.cosignatures) == 2
    verdict = judged(service, schemas, keys, honest_seal, honest, revoked_at=revoked_at)
    assert verdict == ("PASSED", "ok")

    # forged: after the revocation the thief seals a certificate with the stolen key,
    # back-dated before the revocation, gets it into the log...
    thief = service.keys.signer()
    issued = service.issue(CLERK, marriage_request()).certificate.seal
    document = orjson.loads(b64url_decode(issued.split(".")[1]))
    document["iat"] = int(revoked_at - 5)
    forged_seal = seal(thief, orjson.dumps(document), signed_at=revoked_at - 5)
    record = service.audit.find_issuance(certificate_id(forged_seal))
    assert record is not None
    # ...and signs, with that key, a head over it back-dated before the revocation
    leaves = MerkleLog()
    leaves.extend(service.audit.leaf_hashes(record.seq + 1))
    back_dated = sign_tree_head(
        thief,
        node=ZHUJI,
        tree_size=record.seq + 1,
        root_hash=leaves.root(record.seq + 1),
        issued_at=revoked_at - 2,
    )
    path = tuple(leaves.inclusion_proof(record.seq, record.seq + 1))
    forged = IssuanceProof(record.entry(), record.seq, back_dated.token, path)
    assert leaf_hash(record.entry()) == leaves.prefix(record.seq + 1)[-1]
    verdict = judged(service, schemas, keys, forged_seal, forged, revoked_at=revoked_at)
    assert verdict == ("INDETERMINATE", "seal.revocation_unproven")
    # the partners' cosignatures of the honest head are of another head: no help to the thief
    forged = replace(forged, cosignatures=honest.cosignatures)
    verdict = judged(service, schemas, keys, forged_seal, forged, revoked_at=revoked_at)
    assert verdict == ("INDETERMINATE", "seal.revocation_unproven")
    # and the node itself has no proof to offer for it: no head before the revocation
    with pytest.raises(NotFoundError) as info:
        service.issuance_proof(certificate_id(forged_seal), revoked_at=revoked_at)
    assert info.value.code == "audit.no_proof"
