"""``national`` as replicas over a real PostgreSQL: one author of the trust list at a time; a
killed author is replaced within its lease and the sequence never repeats or goes back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway._internal.secret import Secret
from gateway.clock import FixedClock
from gateway.config import Federation, load_federation
from gateway.crypto.jwks import KeyState, VerificationKey, public_jwk
from gateway.crypto.seals import PrivateKeySigner
from gateway.errors import ConflictError
from gateway.ids import NodeId
from gateway.services.authority import TrustAuthority
from gateway.storage.authority_state import PostgresAuthorityStore
from gateway.trust.rootkey import RootKey
from gateway.trust.trust_list import verify_trust_list

NOW = 1_795_507_200.0
LEASE = 10.0
ZHUJI = NodeId("zhuji")
FED: Federation = load_federation(env={})


def zhuji_keys(seed: int) -> dict[str, object]:
    key = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))
    return {
        "keys": [
            public_jwk(
                VerificationKey(
                    node=ZHUJI,
                    kid=key.kid,
                    alg=key.alg,
                    public_key=key.public_key,
                    state=KeyState.ACTIVE,
                    not_before=NOW - 1000,
                    not_after=NOW + 365 * 86_400,
                    revoked_at=None,
                    verify_allowed=True,
                )
            )
        ]
    }


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def replica(
    pg_dsn: Secret, tmp_path: Path, clock: FixedClock
) -> Iterator[Callable[[str], TrustAuthority]]:
    """A replica of national (its own state file path, unused: the state is the database's)."""
    root = RootKey.open_or_create(tmp_path / "keys", clock=clock)
    stores: list[PostgresAuthorityStore] = []

    def open_replica(name: str) -> TrustAuthority:
        store = PostgresAuthorityStore(pg_dsn)
        stores.append(store)
        return TrustAuthority.open(
            FED,
            clock=clock,
            root=root,
            state_path=tmp_path / name / "authority.json",
            store=store,
            holder=name,
            lease_seconds=LEASE,
        )

    yield open_replica
    for store in stores:
        store.close()


def seq_of(authority: TrustAuthority, root_key: RootKey, now: float) -> int:
    assert authority.token is not None
    return verify_trust_list(authority.token, root_key.verification_key, now=now).seq


def test_one_author_then_a_killed_author_is_replaced(
    replica: Callable[[str], TrustAuthority], clock: FixedClock, tmp_path: Path
) -> None:
    a, b = replica("a"), replica("b")
    assert a.lead(clock.now())
    assert not b.lead(clock.now())  # one author at a time
    a.observe(ZHUJI, zhuji_keys(1))
    a.publish()
    a.publish()
    assert a.seq == 2
    assert b.reload()  # the follower serves the author's list
    assert (b.seq, b.token) == (2, a.token)
    with pytest.raises(ConflictError) as caught:  # a follower cannot publish
        b.publish()
    assert caught.value.code == "trust.not_author"
    assert b.seq == 2

    # a is killed: it renews no more; within its lease b still waits, then takes over
    clock.advance(LEASE - 1)
    assert not b.lead(clock.now())
    clock.advance(1)
    assert b.lead(clock.now())
    b.publish()
    assert b.seq == 3  # after a's last list: never repeated, never back
    assert [key.history for key in b.keys(ZHUJI)] == [key.history for key in a.keys(ZHUJI)]

    # a comes back (it was only paused): it may not write over b
    with pytest.raises(ConflictError):
        a.publish()
    assert not a.lead(clock.now())
    assert a.reload()
    assert a.seq == 3

    # a replica that starts now follows the same state
    c = replica("c")
    assert (c.seq, c.token) == (3, b.token)
    root = RootKey.open_or_create(tmp_path / "keys", clock=clock)
    assert seq_of(c, root, clock.now()) == 3


def test_a_clean_stop_hands_over_at_once(
    replica: Callable[[str], TrustAuthority], clock: FixedClock
) -> None:
    a, b = replica("a"), replica("b")
    assert a.lead(clock.now())
    a.publish()
    a.resign()
    assert b.lead(clock.now())
    b.publish()
    assert b.seq == 2
