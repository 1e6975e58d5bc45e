"""Witness cosignatures of tree heads: their format, and every reason one does not count."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.audit.cosignatures import (
    COSIGNATURE_TYP,
    check_witnessed,
    cosign_head,
    verify_cosignature,
)
from gateway.audit.heads import SignedTreeHead, sign_tree_head
from gateway.crypto.jwks import KeyState, StaticKeyResolver, VerificationKey
from gateway.crypto.seals import PrivateKeySigner, sign_compact
from gateway.errors import CosignatureError, VerificationError, WitnessQuorumNotMet
from gateway.ids import NodeId

NOW = 1_795_507_200.0
ZHUJI, SHAOXING, LINQUAN = NodeId("zhuji"), NodeId("shaoxing"), NodeId("linquan")
ZHUJI_KEY = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
SHAOXING_KEY = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
LINQUAN_KEY = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34))))
STRANGER_KEY = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(3, 35))))


def vkey(signer: PrivateKeySigner, node: NodeId, **changes: Any) -> VerificationKey:
    key = VerificationKey(
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
    return replace(key, **changes)


def resolver(**changes: dict[str, Any]) -> StaticKeyResolver:
    """The trust list's keys of the three nodes, a node's key changed as named."""
    keys = {
        "zhuji": (ZHUJI_KEY, ZHUJI),
        "shaoxing": (SHAOXING_KEY, SHAOXING),
        "linquan": (LINQUAN_KEY, LINQUAN),
    }
    return StaticKeyResolver(
        {
            signer.kid: vkey(signer, node, **changes.get(name, {}))
            for name, (signer, node) in keys.items()
        }
    )


KEYS = resolver()
HEAD = sign_tree_head(
    ZHUJI_KEY, node=ZHUJI, tree_size=7, root_hash=bytes(range(32)), issued_at=NOW - 60
)


def crafted(signer: PrivateKeySigner = SHAOXING_KEY, **claims: Any) -> str:
    """A cosignature of HEAD by ``signer`` at NOW - 30, with claims changed as named."""
    body: dict[str, Any] = {
        "iss": "shaoxing",
        "origin": "zhuji",
        "tree_size": HEAD.tree_size,
        "root_hash": b64url_encode(HEAD.root_hash),
        "head_iat": int(HEAD.issued_at),
        "iat": int(NOW - 30),
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    signed_at = body.get("iat", NOW - 30)
    return sign_compact(
        signer,
        orjson.dumps(body),
        typ=COSIGNATURE_TYP,
        signed_at=signed_at if isinstance(signed_at, int) else NOW - 30,
    )


def code_of(token: str, keys: StaticKeyResolver = KEYS, head: SignedTreeHead = HEAD) -> str:
    with pytest.raises(VerificationError) as info:
        verify_cosignature(token, keys, head=head, now=NOW)
    return info.value.code


# --- the format -----------------------------------------------------------------------------


def test_a_cosignature_binds_origin_tree_head_time_and_the_witness_time() -> None:
    made = cosign_head(SHAOXING_KEY, witness=SHAOXING, head=HEAD, cosigned_at=NOW - 30.5)
    header_b64, payload_b64, _ = made.token.split(".")
    header = orjson.loads(b64url_decode(header_b64))
    assert header["typ"] == "audit-cosig+jws"
    assert header["kid"] == SHAOXING_KEY.kid
    assert orjson.loads(b64url_decode(payload_b64)) == {
        "iss": "shaoxing",
        "origin": "zhuji",
        "tree_size": 7,
        "root_hash": b64url_encode(bytes(range(32))),
        "head_iat": int(NOW - 60),
        "iat": int(NOW - 31),
    }
    verified = verify_cosignature(made.token, KEYS, head=HEAD, now=NOW)
    assert verified == made
    assert (verified.witness, verified.origin, verified.cosigned_at) == (
        SHAOXING,
        ZHUJI,
        NOW - 31,
    )


def test_a_node_does_not_cosign_its_own_head() -> None:
    with pytest.raises(CosignatureError) as info:
        cosign_head(ZHUJI_KEY, witness=ZHUJI, head=HEAD, cosigned_at=NOW)
    assert info.value.code == "audit.cosigned_by_origin"


# --- each rejection, with its code ----------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("claims another witness", "audit.bad_cosignature"),
        ("cosigned by the origin", "audit.cosigned_by_origin"),
        ("another origin", "audit.cosignature_mismatch"),
        ("another size", "audit.cosignature_mismatch"),
        ("another root", "audit.cosignature_mismatch"),
        ("another head time", "audit.cosignature_mismatch"),
        ("root not a hash", "audit.bad_cosignature"),
        ("root not base64url", "audit.bad_cosignature"),
        ("size a string", "audit.bad_cosignature"),
        ("no head time", "audit.bad_cosignature"),
        ("iat is not the signing time", "audit.bad_cosignature"),
        ("cosigned before the head", "audit.bad_cosignature"),
        ("unknown key", "seal.unknown_kid"),
        ("a head, not a cosignature", "seal.wrong_typ"),
        ("tampered", "seal.bad_signature"),
    ],
)
def test_every_broken_cosignature_is_refused_with_its_code(case: str, expected: str) -> None:
    token = {
        "claims another witness": lambda: crafted(iss="linquan"),
        "cosigned by the origin": lambda: crafted(ZHUJI_KEY, iss="zhuji"),
        "another origin": lambda: crafted(origin="shaoxing"),
        "another size": lambda: crafted(tree_size=8),
        "another root": lambda: crafted(root_hash=b64url_encode(bytes(32))),
        "another head time": lambda: crafted(head_iat=int(NOW - 59)),
        "root not a hash": lambda: crafted(root_hash=b64url_encode(bytes(16))),
        "root not base64url": lambda: crafted(root_hash="not base64!"),
        "size a string": lambda: crafted(tree_size="7"),
        "no head time": lambda: crafted(head_iat=None),
        "iat is not the signing time": lambda: sign_compact(
            SHAOXING_KEY,
            orjson.dumps(
                {
                    "iss": "shaoxing",
                    "origin": "zhuji",
                    "tree_size": 7,
                    "root_hash": b64url_encode(HEAD.root_hash),
                    "head_iat": int(NOW - 60),
                    "iat": int(NOW - 40),
                }
            ),
            typ=COSIGNATURE_TYP,
            signed_at=NOW - 30,
        ),
        "cosigned before the head": lambda: crafted(iat=int(NOW - 61)),
        "unknown key": lambda: crafted(STRANGER_KEY),
        "a head, not a cosignature": lambda: HEAD.token,
        "tampered": lambda: crafted()[:-6] + "AAAAAA",
    }[case]()
    assert code_of(token) == expected


@pytest.mark.parametrize(
    ("key_change", "expected"),
    [
        ({"state": KeyState.NEXT}, "seal.key_not_active"),
        ({"not_before": NOW - 10}, "seal.key_not_yet_valid"),  # cosigned at NOW - 30
        ({"not_after": NOW - 40}, "seal.key_expired"),
        ({"state": KeyState.REVOKED, "revoked_at": NOW - 40}, "seal.key_revoked"),
        ({"state": KeyState.REVOKED, "revoked_at": NOW - 20}, "seal.revocation_unproven"),
        ({"verify_allowed": False}, "seal.key_use"),
    ],
)
def test_the_witness_key_must_be_in_service_when_it_cosigned(
    key_change: dict[str, Any], expected: str
) -> None:
    assert code_of(crafted(), keys=resolver(shaoxing=key_change)) == expected


def test_a_cosignature_signed_in_the_future_is_refused() -> None:
    with pytest.raises(VerificationError) as info:
        verify_cosignature(crafted(iat=int(NOW + 600)), KEYS, head=HEAD, now=NOW)
    assert info.value.code == "seal.signed_in_future"


# --- the quorum -----------------------------------------------------------------------------


PARTNERS = frozenset({SHAOXING, LINQUAN})  # zhuji's parent and its point-to-point peer


def witnessed(
    tokens: list[str],
    *,
    quorum: int = 1,
    before: float = NOW,
    partners: frozenset[NodeId] = PARTNERS,
) -> tuple[NodeId, ...]:
    return check_witnessed(
        HEAD, tokens, KEYS, partners=partners, quorum=quorum, before=before, now=NOW
    )


def refused(
    tokens: list[str],
    *,
    quorum: int = 1,
    before: float = NOW,
    partners: frozenset[NodeId] = PARTNERS,
) -> WitnessQuorumNotMet:
    with pytest.raises(WitnessQuorumNotMet) as info:
        witnessed(tokens, quorum=quorum, before=before, partners=partners)
    assert info.value.code == "audit.witness_quorum"
    return info.value


def test_a_quorum_of_distinct_partners_cosigned_in_time() -> None:
    by_shaoxing = crafted()
    by_linquan = crafted(LINQUAN_KEY, iss="linquan")
    assert witnessed([by_shaoxing]) == (SHAOXING,)
    assert witnessed([by_shaoxing, by_linquan], quorum=2) == (SHAOXING, LINQUAN)


def test_no_cosignature_is_no_quorum() -> None:
    assert refused([]).reasons == ()


def test_a_cosignature_made_at_or_after_the_time_does_not_count() -> None:
    error = refused([crafted()], before=NOW - 30)  # cosigned at NOW - 30 exactly
    assert error.reasons == ("audit.cosigned_too_late",)


def test_only_a_partner_of_the_heads_node_witnesses_it() -> None:
    error = refused([crafted()], partners=frozenset({LINQUAN}))
    assert error.reasons == ("audit.not_a_partner",)


def test_one_witness_counts_once() -> None:
    error = refused([crafted(), crafted(iat=int(NOW - 20))], quorum=2)
    assert error.reasons == ("audit.duplicate_witness",)


def test_the_reasons_name_every_cosignature_that_did_not_count() -> None:
    error = refused(
        [crafted(ZHUJI_KEY, iss="zhuji"), crafted(tree_size=8), crafted(STRANGER_KEY)], quorum=1
    )
    assert error.reasons == (
        "audit.cosigned_by_origin",
        "audit.cosignature_mismatch",
        "seal.unknown_kid",
    )
    assert error.indication.value == "INDETERMINATE"


def test_a_quorum_below_one_is_a_bug() -> None:
    with pytest.raises(ValueError, match="at least one"):
        witnessed([crafted()], quorum=0)
