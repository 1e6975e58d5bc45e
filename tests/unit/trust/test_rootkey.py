"""The federation root key: files and modes, passphrase, the pinned public key."""

from __future__ import annotations

import stat
from pathlib import Path

import orjson
import pytest

from gateway._internal.secret import Secret
from gateway.clock import FixedClock
from gateway.crypto.jwks import KeyState, StaticKeyResolver
from gateway.crypto.keystore import FEDERATION_DIR
from gateway.crypto.seals import sign_compact, verify_compact
from gateway.errors import KeyStoreError
from gateway.trust.rootkey import ROOT_JWK_FILE, ROOT_KEY_FILE, ROOT_NODE, RootKey, load_root_public

NOW = 1_795_507_200.0  # 2026-11-24T08:00:00Z


def open_root(keys_dir: Path, **kwargs: object) -> RootKey:
    return RootKey.open_or_create(keys_dir, clock=FixedClock(NOW), **kwargs)  # type: ignore[arg-type]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_use_creates_private_and_public_files(tmp_path: Path) -> None:
    root = open_root(tmp_path)
    directory = tmp_path / FEDERATION_DIR
    assert root.directory == directory
    assert mode(directory) == 0o700
    assert mode(directory / ROOT_KEY_FILE) == 0o600
    assert mode(directory / ROOT_JWK_FILE) == 0o644
    assert b"BEGIN PRIVATE KEY" in (directory / ROOT_KEY_FILE).read_bytes()
    jwk = orjson.loads((directory / ROOT_JWK_FILE).read_bytes())
    assert "d" not in jwk
    assert jwk == root.public_jwk()
    assert (jwk["kid"], jwk["node"], jwk["status"], jwk["nbf"]) == (
        root.verification_key.kid,
        ROOT_NODE,
        "active",
        int(NOW),
    )
    assert "exp" not in jwk
    assert root.public_jwk_path == directory / ROOT_JWK_FILE
    assert "PRIVATE" not in repr(root)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_signer_signs_what_the_pinned_public_key_verifies(tmp_path: Path, alg: str) -> None:
    root = open_root(tmp_path, alg=alg)
    pinned = load_root_public(tmp_path)
    assert pinned == root.verification_key
    assert (pinned.node, pinned.alg, pinned.state, pinned.verify_allowed) == (
        ROOT_NODE,
        alg,
        KeyState.ACTIVE,
        True,
    )
    token = sign_compact(root.signer(), b"{}", typ="trust-list+jws", signed_at=NOW)
    verified = verify_compact(
        token, StaticKeyResolver({pinned.kid: pinned}), typ="trust-list+jws", now=NOW
    )
    assert verified.node == ROOT_NODE


def test_public_key_loads_from_the_file_itself(tmp_path: Path) -> None:
    root = open_root(tmp_path)
    copy = tmp_path / "pinned.jwk.json"
    copy.write_bytes((tmp_path / FEDERATION_DIR / ROOT_JWK_FILE).read_bytes())
    assert load_root_public(copy).kid == root.verification_key.kid


def test_reopen_loads_the_same_key_whatever_alg_is_asked(tmp_path: Path) -> None:
    first = open_root(tmp_path, alg="EdDSA")
    second = open_root(tmp_path, alg="ES256")
    assert second.verification_key == first.verification_key
    assert second.signer().kid == first.signer().kid


def test_a_missing_public_file_is_rewritten_from_the_private_key(tmp_path: Path) -> None:
    first = open_root(tmp_path)
    jwk_path = tmp_path / FEDERATION_DIR / ROOT_JWK_FILE
    jwk_path.unlink()
    second = open_root(tmp_path)
    assert second.verification_key.kid == first.verification_key.kid
    assert mode(jwk_path) == 0o644
    assert load_root_public(jwk_path).kid == first.verification_key.kid


def test_a_public_key_without_its_private_key_is_never_replaced(tmp_path: Path) -> None:
    open_root(tmp_path)
    (tmp_path / FEDERATION_DIR / ROOT_KEY_FILE).unlink()
    with pytest.raises(KeyStoreError) as info:
        open_root(tmp_path)
    assert info.value.code == "keys.root_missing"


def test_a_public_key_of_another_root_is_refused(tmp_path: Path) -> None:
    open_root(tmp_path)
    other = open_root(tmp_path / "other")
    (tmp_path / FEDERATION_DIR / ROOT_JWK_FILE).write_bytes(orjson.dumps(other.public_jwk()))
    with pytest.raises(KeyStoreError) as info:
        open_root(tmp_path)
    assert info.value.code == "keys.root_mismatch"


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    open_root(tmp_path)
    (tmp_path / FEDERATION_DIR / ROOT_KEY_FILE).chmod(0o644)
    with pytest.raises(KeyStoreError, match="chmod 600") as info:
        open_root(tmp_path)
    assert info.value.code == "keys.invalid"


def test_a_corrupt_private_key_is_refused(tmp_path: Path) -> None:
    open_root(tmp_path)
    (tmp_path / FEDERATION_DIR / ROOT_KEY_FILE).write_bytes(b"not a key")
    with pytest.raises(KeyStoreError, match="cannot load") as info:
        open_root(tmp_path)
    assert info.value.code == "keys.invalid"


# -- passphrase --------------------------------------------------------------------------------


def test_passphrase_encrypts_the_private_key(tmp_path: Path) -> None:
    secret = Secret("correct horse battery staple")
    first = open_root(tmp_path, passphrase=secret)
    pem = (tmp_path / FEDERATION_DIR / ROOT_KEY_FILE).read_bytes()
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in pem
    assert open_root(tmp_path, passphrase=secret).verification_key == first.verification_key


def test_an_encrypted_key_without_the_passphrase_is_refused(tmp_path: Path) -> None:
    open_root(tmp_path, passphrase=Secret("correct horse battery staple"))
    with pytest.raises(KeyStoreError, match="no passphrase is configured") as info:
        open_root(tmp_path)
    assert info.value.code == "keys.invalid"


def test_a_wrong_passphrase_is_refused(tmp_path: Path) -> None:
    open_root(tmp_path, passphrase=Secret("correct horse battery staple"))
    with pytest.raises(KeyStoreError, match="wrong passphrase") as info:
        open_root(tmp_path, passphrase=Secret("incorrect"))
    assert info.value.code == "keys.invalid"


def test_a_passphrase_for_an_unencrypted_key_is_refused(tmp_path: Path) -> None:
    open_root(tmp_path)
    with pytest.raises(KeyStoreError, match="not encrypted") as info:
        open_root(tmp_path, passphrase=Secret("correct horse battery staple"))
    assert info.value.code == "keys.invalid"


# -- the pinned public key ---------------------------------------------------------------------


def test_load_root_public_without_a_file(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError) as info:
        load_root_public(tmp_path)
    assert info.value.code == "keys.root_missing"


def _public_file(tmp_path: Path, **changes: object) -> Path:
    jwk = open_root(tmp_path).public_jwk()
    jwk.update(changes)
    path = tmp_path / "root.jwk.json"
    path.write_bytes(orjson.dumps(jwk))
    return path


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"d": "AAAA"}, id="private-member"),
        pytest.param({"status": "retired"}, id="not-active"),
        pytest.param({"use": "enc"}, id="not-for-verifying"),
        pytest.param({"node": "national"}, id="names-a-node"),
        pytest.param({"kid": "not-the-thumbprint"}, id="kid-mismatch"),
    ],
)
def test_load_root_public_refuses_a_bad_jwk(tmp_path: Path, changes: dict[str, object]) -> None:
    path = _public_file(tmp_path, **changes)
    with pytest.raises(KeyStoreError) as info:
        load_root_public(path)
    assert info.value.code == "keys.root_invalid"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"kty": "OKP", "kty": "OKP"}', id="duplicate-member"),
        pytest.param(b"[]", id="not-an-object"),
        pytest.param(b"{", id="not-json"),
        pytest.param(b" " * 5000, id="too-large"),
    ],
)
def test_load_root_public_refuses_a_bad_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "root.jwk.json"
    path.write_bytes(content)
    with pytest.raises(KeyStoreError) as info:
        load_root_public(path)
    assert info.value.code == "keys.root_invalid"
