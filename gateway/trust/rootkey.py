"""The federation root key: the one key that signs trust lists (:mod:`gateway.trust.trust_list`).

Layout under ``<keys_dir>/_federation/`` (directory 0700)::

    root.pem        PKCS#8 private key, 0600, encrypted with the federation passphrase when set
    root.jwk.json   the root's PUBLIC JWK, 0644: what every node and offline verifier pins

Only ``national``, the trust-list authority, opens the private key
(:meth:`RootKey.open_or_create`). Everyone else pins the public key with
:func:`load_root_public`, from a keys directory or from a copy of ``root.jwk.json``. The root
key belongs to no node: its JWK names the pseudo-node :data:`ROOT_NODE`, and a trust list's
``iss`` is that name.

There is no root rotation: replacing the root means distributing a new ``root.jwk.json`` to
every verifier out of band.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway._internal.files import (
    PrivateKey,
    atomic_write,
    check_mode,
    ensure_private_dir,
    write_private,
)
from gateway._internal.secret import Secret
from gateway._internal.wire import JsonLimits, loads
from gateway.clock import Clock
from gateway.crypto.jwks import Alg, KeyState, VerificationKey, parse_jwk, public_jwk, thumbprint
from gateway.crypto.keystore import FEDERATION_DIR, generate_private_key
from gateway.crypto.seals import PrivateKeySigner
from gateway.errors import InputError, KeyStoreError, RootKeyMissing, SealError
from gateway.ids import NodeId

ROOT_NODE: Final = NodeId("federation-root")
"""The node name in the root JWK and the ``iss`` of every trust list."""

ROOT_KEY_FILE: Final = "root.pem"
ROOT_JWK_FILE: Final = "root.jwk.json"

_PUBLIC_MODE: Final = 0o644
_MAX_JWK_FILE_BYTES: Final = 4096
_JWK_LIMITS: Final = JsonLimits(max_depth=3, max_string=1024, max_members=64)


class RootKey:
    """The federation root's private key, held in memory. Construct with :meth:`open_or_create`."""

    __slots__ = ("_private", "directory", "verification_key")

    def __init__(
        self, directory: Path, private: PrivateKey, verification_key: VerificationKey
    ) -> None:
        self.directory = directory
        self._private = private
        self.verification_key = verification_key

    def __repr__(self) -> str:
        return f"RootKey(kid={self.verification_key.kid!r}, alg={self.verification_key.alg!r})"

    @classmethod
    def open_or_create(
        cls,
        keys_dir: Path,
        *,
        clock: Clock,
        passphrase: Secret | None = None,
        alg: Alg = "EdDSA",
    ) -> RootKey:
        """Load ``keys_dir/_federation/root.pem``, generating the root key on first use.

        ``alg`` applies only when a key is generated; an existing key keeps its algorithm.
        A new key's JWK carries ``nbf`` = now, so no trust list can claim to predate it.
        """
        directory = keys_dir / FEDERATION_DIR
        ensure_private_dir(directory)
        pem_path, jwk_path = directory / ROOT_KEY_FILE, directory / ROOT_JWK_FILE
        if pem_path.exists():
            private = _load_private(pem_path, passphrase)
            if jwk_path.exists():
                key = load_root_public(jwk_path)
                if key.kid != thumbprint(private.public_key()):
                    raise KeyStoreError(
                        f"{jwk_path}: the public root key is not the one in {pem_path}",
                        code="keys.root_mismatch",
                    )
            else:
                # The public half is derived; its creation time is not known any more.
                key = _verification_key(private, not_before=None)
                _write_public(jwk_path, key)
        elif jwk_path.exists():
            # Verifiers pin this key: silently making a new one would break every one of them.
            raise RootKeyMissing(
                f"{pem_path}: the federation root key is missing but {jwk_path} exists; "
                "restore the key, or remove both files to start a new federation root"
            )
        else:
            private = generate_private_key(alg)
            key = _verification_key(private, not_before=float(int(clock.now())))
            write_private(pem_path, private, passphrase)
            _write_public(jwk_path, key)
        return cls(directory, private, key)

    @property
    def public_jwk_path(self) -> Path:
        return self.directory / ROOT_JWK_FILE

    def public_jwk(self) -> dict[str, Any]:
        """The root's public JWK, as written to ``root.jwk.json``."""
        return public_jwk(self.verification_key)

    def signer(self) -> PrivateKeySigner:
        """A signer for trust lists. The private key never leaves this object otherwise."""
        return PrivateKeySigner(self._private, kid=self.verification_key.kid)


def load_root_public(path: Path) -> VerificationKey:
    """The pinned federation root key, from a keys directory or a ``root.jwk.json`` file.

    Raises :class:`KeyStoreError`: ``keys.root_missing`` when there is no file,
    ``keys.root_invalid`` when it is not one strict public JWK of an active signing key.
    """
    file = path / FEDERATION_DIR / ROOT_JWK_FILE if path.is_dir() else path
    try:
        with file.open("rb") as handle:
            data = handle.read(_MAX_JWK_FILE_BYTES + 1)
    except FileNotFoundError as exc:
        raise RootKeyMissing(f"{file}: no federation root public key") from exc
    except OSError as exc:
        raise KeyStoreError(
            f"{file}: cannot read the federation root public key: {exc.strerror}",
            code="keys.root_invalid",
        ) from exc
    if len(data) > _MAX_JWK_FILE_BYTES:
        raise KeyStoreError(f"{file}: not a JWK (file too large)", code="keys.root_invalid")
    try:
        obj = loads(data, _JWK_LIMITS)
    except InputError as exc:
        raise KeyStoreError(
            f"{file}: not strict JSON: {exc.detail}", code="keys.root_invalid"
        ) from exc
    if not isinstance(obj, dict):
        raise KeyStoreError(f"{file}: a JWK must be a JSON object", code="keys.root_invalid")
    try:
        key = parse_jwk(obj, node=ROOT_NODE)
    except SealError as exc:
        raise KeyStoreError(
            f"{file}: not a valid public JWK: {exc.detail}",
            code="keys.root_invalid",
            log_detail=exc.code,
        ) from exc
    if key.state is not KeyState.ACTIVE or not key.verify_allowed:
        raise KeyStoreError(
            f"{file}: the root key must be active and allowed to verify", code="keys.root_invalid"
        )
    return key


# -- files -------------------------------------------------------------------------------------


def _verification_key(private: PrivateKey, *, not_before: float | None) -> VerificationKey:
    signer = PrivateKeySigner(private)
    return VerificationKey(
        node=ROOT_NODE,
        kid=signer.kid,
        alg=signer.alg,
        public_key=signer.public_key,
        state=KeyState.ACTIVE,
        not_before=not_before,
        not_after=None,
        revoked_at=None,
        verify_allowed=True,
    )


def _write_public(path: Path, key: VerificationKey) -> None:
    atomic_write(path, orjson.dumps(public_jwk(key), option=orjson.OPT_INDENT_2))
    os.chmod(path, _PUBLIC_MODE)  # public by design: verifiers copy and pin it


def _load_private(path: Path, passphrase: Secret | None) -> PrivateKey:
    check_mode(path)
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyStoreError(f"{path}: cannot read the federation root key") from exc
    password = passphrase.reveal().encode("utf-8") if passphrase is not None else None
    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except TypeError as exc:
        raise KeyStoreError(
            f"{path}: the root key is encrypted and no passphrase is configured "
            "(set TONGBAN_KEY_PASSPHRASE)"
            if password is None
            else f"{path}: a passphrase is configured but the root key is not encrypted"
        ) from exc
    except ValueError as exc:
        raise KeyStoreError(f"{path}: cannot load the root key (wrong passphrase?)") from exc
    if not isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1)
    ):
        raise KeyStoreError(f"{path}: the root key must be Ed25519 or P-256")
    return key
