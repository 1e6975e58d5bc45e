"""IETF OAuth Token Status List (draft-ietf-oauth-status-list): encoding and strict parsing.

A node publishes the status of every certificate it issued as a few *status list tokens*:
JWTs (``typ`` :data:`STATUS_LIST_TYP`) whose ``status_list`` claim carries a compressed bit
array, ``BITS`` bits per certificate. A certificate's seal payload points at its entry with
the ``status`` claim built by :func:`status_claim`.

This module is pure encoding: it neither signs nor verifies signatures. The publisher signs
the claims of :func:`status_list_claims`; a verifier verifies the JWS first, then hands the
verified claims to :func:`parse_status_list`.

Layout (draft §4): entry ``i`` occupies bits ``(i * bits) % 8 ...`` of byte ``(i * bits) // 8``,
counted from the least significant bit; the byte array is ZLIB (RFC 1950) compressed and
base64url encoded without padding into ``lst``.

Problems with a status list make the certificate's status *undeterminable*, not the
certificate bad, so they raise :class:`~gateway.errors.SealIndeterminate` (a
:class:`~gateway.errors.SealError`) with codes ``status.invalid``, ``status.expired``,
``status.unknown_index`` and ``status.unknown_value``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from gateway._internal.wire import b64url_decode, b64url_encode, is_int
from gateway.certificates.status import CertStatus
from gateway.errors import InputError, SealIndeterminate

STATUS_LIST_TYP = "statuslist+jwt"
"""JWS ``typ`` of a status list token (draft §5.1)."""

STATUS_LIST_MEDIA_TYPE = "application/statuslist+jwt"
"""HTTP content type of a status list token response."""

BITS = 2
"""Bits per entry in the lists this gateway publishes: VALID, INVALID and SUSPENDED fit."""

ALLOWED_BITS = frozenset({1, 2, 4, 8})

MAX_DECOMPRESSED = 16 * 1024 * 1024
"""Largest accepted decompressed status array (zlib bomb guard): 64 Mi entries at 2 bits."""

MAX_LST_CHARS = 24 * 1024 * 1024
"""Longest accepted ``lst`` string, checked before decoding (covers incompressible data)."""

_COMPRESSION_LEVEL = 9


class StatusCode(IntEnum):
    """Status Type values (draft §7.1)."""

    VALID = 0x00
    INVALID = 0x01
    SUSPENDED = 0x02


_CODE_OF: Mapping[CertStatus, StatusCode] = {
    CertStatus.VALID: StatusCode.VALID,
    CertStatus.REVOKED: StatusCode.INVALID,
    CertStatus.SUSPENDED: StatusCode.SUSPENDED,
}
_STATUS_OF: Mapping[int, CertStatus] = {int(code): status for status, code in _CODE_OF.items()}


def status_code(status: CertStatus) -> StatusCode:
    """The Status Type value a certificate status is published as."""
    return _CODE_OF[status]


# --- encoding --------------------------------------------------------------------------------


def pack_values(values: Sequence[int], *, bits: int = BITS) -> bytes:
    """Pack raw status values into the draft's byte array (entry 0 in the low bits of byte 0).

    Every value must fit in ``bits`` bits. The array is padded with zero (VALID) entries to a
    whole number of bytes.
    """
    if bits not in ALLOWED_BITS:
        raise InputError(f"bits must be one of 1, 2, 4, 8, not {bits}")
    limit = 1 << bits
    per_byte = 8 // bits
    out = bytearray(-(-len(values) // per_byte))
    for index, value in enumerate(values):
        if not 0 <= value < limit:
            raise InputError(f"status value {value} at index {index} does not fit in {bits} bits")
        out[index // per_byte] |= value << ((index % per_byte) * bits)
    return bytes(out)


def pack(statuses: Sequence[CertStatus]) -> bytes:
    """Pack certificate statuses into a :data:`BITS`-bit byte array."""
    return pack_values([_CODE_OF[status] for status in statuses], bits=BITS)


def encode_list(bits_bytes: bytes) -> str:
    """The ``lst`` member: base64url (no padding) of the ZLIB-compressed byte array."""
    return b64url_encode(zlib.compress(bits_bytes, _COMPRESSION_LEVEL))


def status_list_claims(
    *, uri: str, bits_bytes: bytes, iat: int, exp: int, ttl: int
) -> dict[str, Any]:
    """The claims of a status list token for the array ``bits_bytes`` (:data:`BITS` bits)."""
    if not iat < exp:
        raise InputError("a status list token must expire after it is issued")
    if ttl <= 0:
        raise InputError("ttl must be a positive number of seconds")
    return {
        "sub": uri,
        "iat": iat,
        "exp": exp,
        "ttl": ttl,
        "status_list": {"bits": BITS, "lst": encode_list(bits_bytes)},
    }


def status_claim(uri: str, index: int) -> dict[str, Any]:
    """The value of a referenced token's ``status`` claim (draft §6.1)."""
    return {"status_list": {"idx": index, "uri": uri}}


# --- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusList:
    """A decoded status list.

    Built by :func:`parse_status_list` from a verified token (with its times), or by
    :meth:`from_bits` from the node's own registry (no token, no times).
    """

    uri: str
    bits: int
    data: bytes
    iat: int | None = None
    exp: int | None = None
    ttl: int | None = None

    @classmethod
    def from_bits(cls, data: bytes, *, bits: int = BITS, uri: str = "") -> StatusList:
        """A list over trusted local bytes, e.g.
        :meth:`gateway.storage.registry.Registry.status_bits`."""
        if bits not in ALLOWED_BITS:
            raise InputError(f"bits must be one of 1, 2, 4, 8, not {bits}")
        return cls(uri=uri, bits=bits, data=bytes(data))

    def __len__(self) -> int:
        return len(self.data) * 8 // self.bits

    def value(self, index: int) -> int:
        """The raw Status Type value of entry ``index``."""
        if not is_int(index) or not 0 <= index < len(self):
            raise SealIndeterminate(
                "the status list has no entry for this certificate",
                code="status.unknown_index",
                log_detail=f"index {index!r} outside a list of {len(self)} entries at {self.uri}",
            )
        per_byte = 8 // self.bits
        byte = self.data[index // per_byte]
        return (byte >> ((index % per_byte) * self.bits)) & ((1 << self.bits) - 1)

    def status(self, index: int) -> CertStatus:
        """The certificate status of entry ``index``.

        A value this gateway does not assign (0x03 and up, application specific) cannot be
        judged and raises ``status.unknown_value``.
        """
        value = self.value(index)
        try:
            return _STATUS_OF[value]
        except KeyError as exc:
            raise SealIndeterminate(
                "the status list holds a status value this gateway does not know",
                code="status.unknown_value",
                log_detail=f"value {value:#04x} at index {index} of {self.uri}",
            ) from exc


def _invalid(detail: str, *, log_detail: str | None = None) -> SealIndeterminate:
    return SealIndeterminate(detail, code="status.invalid", log_detail=log_detail)


def decode_list(lst: str) -> bytes:
    """Decode an ``lst`` member: strict base64url, then bounded ZLIB decompression."""
    try:
        compressed = b64url_decode(lst, max_length=MAX_LST_CHARS)
    except InputError as exc:
        raise _invalid("status list lst is not valid base64url", log_detail=exc.detail) from exc
    # Room for one byte more than allowed: producing it proves the list too large, without
    # ever inflating more than that (a few KiB of zeroes would otherwise expand to GiB).
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(compressed, MAX_DECOMPRESSED + 1)
    except zlib.error as exc:
        raise _invalid("status list lst is not ZLIB data", log_detail=str(exc)) from exc
    if len(data) > MAX_DECOMPRESSED:
        raise _invalid(f"status list decompresses to more than {MAX_DECOMPRESSED} bytes")
    if not inflater.eof:
        raise _invalid("status list lst is a truncated ZLIB stream")
    if inflater.unused_data:
        raise _invalid("status list lst has data after the ZLIB stream")
    if not data:
        raise _invalid("status list is empty")
    return data


def parse_status_list(claims: Mapping[str, Any], *, uri: str, now: float) -> StatusList:
    """Check the verified claims of a status list token and decode its list.

    ``uri`` is the status list URI the certificate referenced; ``now`` the verifier's time.
    """
    # 1. The token is about the list the certificate points at.
    sub = claims.get("sub")
    if sub != uri:
        raise _invalid(
            "status list token is for another list", log_detail=f"sub {sub!r}, expected {uri!r}"
        )
    # 2. Times: iat required, exp required and in the future, ttl optional and positive.
    iat, exp, ttl = claims.get("iat"), claims.get("exp"), claims.get("ttl")
    if not is_int(iat):
        raise _invalid("status list token iat must be an integer")
    if not is_int(exp):
        raise _invalid("status list token exp must be an integer")
    if ttl is not None and (not is_int(ttl) or ttl <= 0):
        raise _invalid("status list token ttl must be a positive integer")
    if exp <= now:
        raise SealIndeterminate(
            "status list token has expired",
            code="status.expired",
            log_detail=f"exp {exp} <= now {now} for {uri}",
        )
    # 3. The status_list claim: exactly bits, lst and optionally aggregation_uri.
    body = claims.get("status_list")
    if not isinstance(body, Mapping):
        raise _invalid("status list token has no status_list object")
    unknown = set(body) - {"bits", "lst", "aggregation_uri"}
    if unknown:
        raise _invalid("status_list has unknown members", log_detail=f"members {sorted(unknown)}")
    bits, lst = body.get("bits"), body.get("lst")
    if not is_int(bits) or bits not in ALLOWED_BITS:
        raise _invalid("status_list bits must be 1, 2, 4 or 8", log_detail=f"bits {bits!r}")
    if not isinstance(lst, str):
        raise _invalid("status_list lst must be a string")
    if "aggregation_uri" in body and not isinstance(body["aggregation_uri"], str):
        raise _invalid("status_list aggregation_uri must be a string")
    # 4. The list itself: strict base64url, bounded decompression.
    data = decode_list(lst)
    return StatusList(uri=uri, bits=bits, data=data, iat=iat, exp=exp, ttl=ttl)
