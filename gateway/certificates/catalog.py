"""An entry of national's catalog: which node holds a certificate, and whose it is (keyed).

When a node issues a certificate it registers it with ``national``: the certificate id, its
type, the holding node, the holder's keyed digest (see :mod:`gateway.certificates.holders`)
and its status. The catalog never sees a holder id in clear: :func:`require_holder_digest`
accepts only 64-character lower-case hex digests and refuses anything that looks like an id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from gateway.certificates.status import CertStatus
from gateway.clock import to_rfc3339
from gateway.errors import (
    InputError,
)
from gateway.identifiers import HOLDER_DIGEST
from gateway.ids import CertificateId, NodeId

MAX_STATUS_EVENT: Final = 2**53 - 1
"""The largest status event number a registration may carry (an exact JSON number)."""
MAX_LOOKUP_TYPES: Final = 16
"""A lookup names 1 to this many certificate types."""
MAX_LOOKUP_RESULTS: Final = 100
"""The most entries one service lookup returns."""
MAX_TYPE_NAME: Final = 64
MAX_NODE_NAME: Final = 64
_CLEAR_ID_LENGTH: Final = 18
"""Both holder id kinds (GB 11643 resident ID numbers, GB 32100 credit codes) are 18 long."""


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One certificate as the catalog knows it: where it lives, whose it is (keyed)."""

    certificate_id: CertificateId
    type: str
    node: NodeId
    holder_digest: str
    """HMAC-SHA256 of the holder id (:func:`gateway.certificates.holders.holder_digest`),
    lower-case hex."""
    registered_at: float
    status: CertStatus
    status_event: int = 0
    """The holding node's number for the status change that set ``status`` (0: issuance).
    A later change has a larger number, so the catalog keeps the latest status whatever
    order the holding node's messages arrive in."""

    def to_json(self) -> dict[str, Any]:
        return {
            "certificate_id": self.certificate_id,
            "type": self.type,
            "node": self.node,
            "holder_digest": self.holder_digest,
            "registered_at": to_rfc3339(self.registered_at),
            "status": self.status.value,
        }


def require_holder_digest(holder_digest: object) -> str:
    """The holder digest, or :class:`InputError`. Never echoes the value (it may be an id)."""
    if isinstance(holder_digest, str) and HOLDER_DIGEST.fullmatch(holder_digest):
        return holder_digest
    if isinstance(holder_digest, str) and len(holder_digest.strip()) == _CLEAR_ID_LENGTH:
        raise InputError(
            "holder_digest looks like a holder id in clear; send its keyed digest instead",
            code="catalog.clear_holder_id",
            pointers=("/holder_digest",),
        )
    raise InputError(
        "holder_digest must be a lower-case hex HMAC-SHA256 (64 characters)",
        code="catalog.bad_holder_digest",
        pointers=("/holder_digest",),
    )
