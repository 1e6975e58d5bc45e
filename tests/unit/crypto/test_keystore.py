from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway._internal.secret import Secret
from gateway.clock import FixedClock
from gateway.crypto.jwks import KeyState, StaticKeyResolver, parse_jwks
from gateway.crypto.keystore import KeyStore, federation_holder_secret, iter_key_files
from gateway.crypto.seals import seal, verify_seal
from gateway.errors import KeyStoreError, NotFoundError
from gateway.ids import NodeId

NOW = 1_795_507_200.0
NODE = NodeId("zhuji")


def open_store(root: Path, **kwargs: object) -> KeyStore:
    return KeyStore.open(root, NODE, clock=FixedClock(NOW), **kwargs)  # type: ignore[arg-type]


def test_first_start_generates_an_active_key_with_private_files(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    [record] = store.records()
    assert record.state is KeyState.ACTIVE
    assert record.not_before == NOW
    assert record.not_after == NOW + 365 * 86_400
    directory = tmp_path / NODE
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = [
        *iter_key_files(directory),
        directory / "keyring.json",
        tmp_path / "_federation" / "holder.secret",
    ]
    assert len(files) == 3
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_reopen_loads_the_same_key(tmp_path: Path) -> None:
    first = open_store(tmp_path)
    second = open_store(tmp_path)
    assert [r.kid for r in second.records()] == [r.kid for r in first.records()]
    assert second.holder_secret == first.holder_secret
    token = seal(first.signer(), b'{"iss":"zhuji","iat":1795507200}', signed_at=NOW)
    verified = verify_seal(token, StaticKeyResolver(second.verification_keys()), now=NOW)
    assert verified.kid == first.active().kid


def test_signer_is_made_once_per_key_and_follows_the_active_key(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    first = store.signer()
    assert store.signer() is first
    nxt = store.add_key(state=KeyState.NEXT)
    store.set_state(nxt.kid, KeyState.ACTIVE, at=NOW + 10)
    store.set_state(first.kid, KeyState.RETIRED, at=NOW + 10)
    assert store.signer().kid == nxt.kid != first.kid
    token = seal(store.current_signer(), b'{"iss":"zhuji","iat":1795507200}', signed_at=NOW)
    assert verify_seal(token, StaticKeyResolver(store.verification_keys()), now=NOW).kid == nxt.kid


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_jwks_publishes_status_and_validity_without_private_parts(tmp_path: Path, alg: str) -> None:
    store = open_store(tmp_path, default_alg=alg)
    jwks = store.jwks()
    [jwk] = jwks["keys"]
    assert jwk["alg"] == alg
    assert jwk["status"] == "active"
    assert jwk["nbf"] == int(NOW)
    assert jwk["exp"] == int(NOW) + 365 * 86_400
    assert "d" not in jwk
    assert set(parse_jwks(jwks)) == {store.active().kid}


def test_passphrase_encrypts_keys_at_rest(tmp_path: Path) -> None:
    store = open_store(tmp_path, passphrase=Secret("correct horse"))
    pem = (tmp_path / NODE / f"{store.active().kid}.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in pem
    assert (
        open_store(tmp_path, passphrase=Secret("correct horse")).active().kid == store.active().kid
    )
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        open_store(tmp_path, passphrase=Secret("wrong"))
    with pytest.raises(KeyStoreError, match="no passphrase is configured"):
        open_store(tmp_path)


def test_unencrypted_keys_are_plain_pkcs8(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    pem = (tmp_path / NODE / f"{store.active().kid}.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_group_readable_key_is_refused(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    path = tmp_path / NODE / f"{store.active().kid}.pem"
    path.chmod(0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        open_store(tmp_path)


def test_missing_private_key_is_refused(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    (tmp_path / NODE / f"{store.active().kid}.pem").unlink()
    with pytest.raises(KeyStoreError, match="missing"):
        open_store(tmp_path)


def test_key_swapped_under_another_kid_is_refused(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    other = store.add_key(state=KeyState.NEXT)
    directory = tmp_path / NODE
    a, b = directory / f"{store.active().kid}.pem", directory / f"{other.kid}.pem"
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    with pytest.raises(KeyStoreError, match="does not match its kid"):
        open_store(tmp_path)


def test_corrupt_keyring_is_refused(tmp_path: Path) -> None:
    open_store(tmp_path)
    (tmp_path / NODE / "keyring.json").write_bytes(orjson.dumps({"keys": [{"kid": "x"}]}))
    with pytest.raises(KeyStoreError, match="malformed"):
        open_store(tmp_path)


def test_state_changes_are_recorded_and_persisted(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    old = store.active()
    new = store.add_key(state=KeyState.NEXT)
    store.set_state(new.kid, KeyState.ACTIVE, at=NOW + 10)
    store.set_state(old.kid, KeyState.RETIRED, at=NOW + 10)
    reopened = open_store(tmp_path)
    assert reopened.active().kid == new.kid
    assert reopened.record(old.kid).retired_at == NOW + 10
    revoked = reopened.set_state(old.kid, KeyState.REVOKED, at=NOW + 20)
    assert revoked.revoked_at == NOW + 20
    with pytest.raises(NotFoundError) as info:
        reopened.record("nope")
    assert info.value.code == "keys.not_found"


def test_holder_secret_is_shared_by_every_node(tmp_path: Path) -> None:
    zhuji = open_store(tmp_path)
    linquan = KeyStore.open(tmp_path, NodeId("linquan"), clock=FixedClock(NOW))
    assert zhuji.holder_secret == linquan.holder_secret
    assert len(zhuji.holder_secret) == 32


def _secret_after(barrier: Any, root: str) -> str:
    barrier.wait()  # every process reaches the first start at the same moment
    return federation_holder_secret(Path(root)).hex()


def test_nodes_starting_together_agree_on_the_holder_secret(tmp_path: Path) -> None:
    """Two processes creating the secret at once must not each keep their own (a holder's
    digest would then differ between nodes, and consent between them fail)."""
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    try:
        barrier = manager.Barrier(6)
        with context.Pool(6) as pool:
            secrets = pool.starmap(_secret_after, [(barrier, str(tmp_path))] * 6)
    finally:
        manager.shutdown()
    assert len(set(secrets)) == 1
    assert federation_holder_secret(tmp_path).hex() == secrets[0]
    assert [p.name for p in (tmp_path / "_federation").iterdir()] == ["holder.secret"]


def test_repr_shows_no_secret(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    assert store.holder_secret.hex() not in repr(store)
    assert repr(store) == "KeyStore(node='zhuji', keys=1)"
