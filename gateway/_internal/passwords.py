"""Hashing of client secrets and holder passwords (scrypt, RFC 7914), stdlib only.

The federation file stores only hashes of the form
``scrypt$n=<N>,r=<r>,p=<p>$<salt, base64url>$<hash, base64url>``; the IdP compares in
constant time. ``tongban hash-secret`` prints a hash for a new client or citizen.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from gateway._internal.wire import Base64Error, b64url_decode, b64url_encode
from gateway.errors import AuthError, ConfigError

_FORMAT = re.compile(r"scrypt\$n=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)")
N, R, P = 2**14, 8, 1
_MAX_N = 2**20
_DKLEN = 32


def hash_secret(secret: str, *, salt: bytes | None = None, n: int = N) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=R, p=P, dklen=_DKLEN)
    return f"scrypt$n={n},r={R},p={P}${b64url_encode(salt)}${b64url_encode(digest)}"


def check_hash_format(encoded: str) -> None:
    """Raise :class:`ConfigError` unless ``encoded`` is a well-formed scrypt hash."""
    _parse(encoded)


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    match = _FORMAT.fullmatch(encoded)
    if not match:
        raise ConfigError("not a secret hash of the form scrypt$n=…,r=…,p=…$salt$hash")
    n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    if n < 2**10 or n > _MAX_N or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ConfigError("secret hash parameters out of range")
    try:
        salt, digest = b64url_decode(match.group(4)), b64url_decode(match.group(5))
    except Base64Error as exc:
        raise ConfigError("secret hash is not valid base64url") from exc
    return n, r, p, salt, digest


def verify_secret(secret: str, encoded: str) -> None:
    """Raise :class:`AuthError` (``auth.bad_credentials``) unless ``secret`` matches."""
    n, r, p, salt, digest = _parse(encoded)
    candidate = hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=2**27
    )
    if not hmac.compare_digest(candidate, digest):
        raise AuthError("the credentials are not valid", code="auth.bad_credentials")
