"""Private files on disk: 0700 directories, 0600 files, atomic and durable writes."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway._internal.secret import Secret
from gateway.errors import KeyStoreError

PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def ensure_private_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(PermissionError):
        directory.chmod(0o700)


def atomic_write(path: Path, data: bytes, *, replace: bool = True) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically and durably.

    ``replace=False`` creates the file only if there is none: when another process created
    it first, that one stays and :class:`FileExistsError` is raised (two processes starting
    together agree on one file, never on two in turn).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists; a complete file appears or none
            tmp.unlink()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check_mode(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyStoreError(
            f"{path}: private material must not be readable by group or others "
            f"(mode {mode:o}); run: chmod 600 {path}"
        )


def write_private(path: Path, key: PrivateKey, passphrase: Secret | None) -> None:
    encryption: serialization.KeySerializationEncryption
    if passphrase is not None:
        encryption = serialization.BestAvailableEncryption(passphrase.reveal().encode("utf-8"))
    else:
        encryption = serialization.NoEncryption()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    atomic_write(path, pem)
