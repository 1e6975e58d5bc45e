"""Proving from the audit log that a seal's issuance predates its key's revocation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway.audit.records import AuditKind
from gateway.certificates.revocation import IssuanceProof, check_issuance_proof
from gateway.clock import FixedClock
from gateway.crypto.jwks import KeyResolver, StaticKeyResolver
from gateway.crypto.keystore import KeyStore
from gateway.errors import NotFoundError, SealIndeterminate
from gateway.ids import NodeId
from gateway.storage.audit_log import SqliteAuditLog

NOW = 1_795_507_200.0
NODE = NodeId("zhuji")
CERT = "1.2.156.3005.2.111000000000MCA07A003.11330681002521002U.20260000000000.001.H"
OTHER = "1.2.156.3005.2.111000000000MCA07A003.11330681002521002U.20260000000001.001.1"


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


def check(proof: IssuanceProof, keys: KeyStore, revoked_at: float, cert: str = CERT) -> None:
    check_issuance_proof(
        proof, keys=keys, node=NODE, certificate_id=cert, revoked_at=revoked_at, now=NOW + 20
    )


def test_an_issuance_in_an_older_head_is_proven(
    world: tuple[SqliteAuditLog, KeyStore, FixedClock],
) -> None:
    log, keys, _ = world
    proof = log.issuance_proof(CERT, revoked_at=NOW + 15)
    assert proof.seq == 1
    check(IssuanceProof.from_json(proof.to_json()), keys, NOW + 15)


def test_no_head_before_the_revocation_means_no_proof(
    world: tuple[SqliteAuditLog, KeyStore, FixedClock],
) -> None:
    log, _, _ = world
    with pytest.raises(NotFoundError) as info:
        log.issuance_proof(CERT, revoked_at=NOW + 5)
    assert info.value.code == "audit.no_proof"
    with pytest.raises(NotFoundError):
        log.issuance_proof("1.2.156.3005.2.unknown", revoked_at=NOW + 15)


def test_a_head_not_older_than_the_revocation_is_refused(
    world: tuple[SqliteAuditLog, KeyStore, FixedClock],
) -> None:
    log, keys, _ = world
    proof = log.issuance_proof(CERT, revoked_at=NOW + 15)
    with pytest.raises(SealIndeterminate) as info:
        check(proof, keys, NOW + 10)  # the head was signed at NOW + 10 exactly
    assert info.value.code == "seal.revocation_unproven"


@pytest.mark.parametrize(
    "mutation", ["other certificate", "wrong seq", "bad path", "bad head", "foreign key"]
)
def test_every_broken_proof_is_unproven(
    world: tuple[SqliteAuditLog, KeyStore, FixedClock], tmp_path: Path, mutation: str
) -> None:
    log, keys, clock = world
    proof = log.issuance_proof(CERT, revoked_at=NOW + 15)
    resolver: KeyResolver = keys
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
            now=NOW + 20,
        )
    assert info.value.code == "seal.revocation_unproven"
