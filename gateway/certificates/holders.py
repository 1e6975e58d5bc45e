"""Holder identifiers, kept only as keyed hashes.

A holder id (a resident ID number, a unified social credit code) is personal data. The
gateway never stores or logs it in clear: the registry and the national catalog index
certificates by ``holder_digest``, an HMAC-SHA256 of ``id_type + ":" + holder_id`` under a
federation-wide secret. Without the secret the digest cannot be reversed by enumerating the
(small) space of ID numbers; with it, any node computes the same digest for the same holder,
so a lookup by holder works across regions.

Callers pass the canonical form of the id (as validated by :mod:`gateway.identifiers`, e.g. a
resident ID number's check character upper case): the digest is of the exact bytes given.
"""

from __future__ import annotations

import hashlib
import hmac

from gateway.errors import ConfigError, InputError

MIN_SECRET_BYTES = 16
"""Shortest accepted HMAC key: anything shorter could be brute-forced offline."""


def holder_digest(secret: bytes, id_type: str, holder_id: str) -> str:
    """The keyed hash a holder is known by: lower-case hex HMAC-SHA256.

    ``id_type`` is the GB/T 36903 holder id type code (``111`` resident ID, ``001`` unified
    social credit code). It may not contain ``:`` (so that distinct pairs never hash the same
    input); neither value may be empty.
    """
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"holder secret must be at least {MIN_SECRET_BYTES} bytes", code="config.holder_secret"
        )
    if not id_type or ":" in id_type:
        raise InputError("holder id type must be non-empty and contain no ':'")
    if not holder_id:
        raise InputError("holder id must not be empty")
    message = f"{id_type}:{holder_id}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


class HolderSecret:
    """The federation's holder-hashing key. ``repr`` and ``str`` never show the bytes."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if len(value) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"holder secret must be at least {MIN_SECRET_BYTES} bytes",
                code="config.holder_secret",
            )
        self._value = bytes(value)

    def reveal(self) -> bytes:
        """The raw key, for the one place that needs it."""
        return self._value

    def digest(self, id_type: str, holder_id: str) -> str:
        """:func:`holder_digest` under this secret."""
        return holder_digest(self._value, id_type, holder_id)

    def __repr__(self) -> str:
        return "HolderSecret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HolderSecret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash((HolderSecret, hashlib.sha256(self._value).digest()))
