"""A certificate's status and the actions that change it: the vocabulary every layer shares.

``valid`` → ``suspended`` (reinstated back to ``valid``) and either → ``revoked``, which is final.
The status lists (:mod:`gateway.certificates.status_list`) publish it; the registry
(:mod:`gateway.storage.registry`) stores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.errors import (
    ConflictError,
)


class CertStatus(StrEnum):
    VALID = "valid"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class StatusAction(StrEnum):
    SUSPEND = "suspend"
    REINSTATE = "reinstate"
    REVOKE = "revoke"


_TRANSITIONS: dict[tuple[StatusAction, CertStatus], CertStatus] = {
    (StatusAction.SUSPEND, CertStatus.VALID): CertStatus.SUSPENDED,
    (StatusAction.REINSTATE, CertStatus.SUSPENDED): CertStatus.VALID,
    (StatusAction.REVOKE, CertStatus.VALID): CertStatus.REVOKED,
    (StatusAction.REVOKE, CertStatus.SUSPENDED): CertStatus.REVOKED,
}


def transition(current: CertStatus, action: StatusAction) -> CertStatus:
    """The status ``action`` leads to from ``current``, or ``cert.status_transition``."""
    try:
        return _TRANSITIONS[(action, current)]
    except KeyError as exc:
        if current is CertStatus.REVOKED:
            detail = f"cannot {action.value} a revoked certificate: revocation is final"
        else:
            detail = f"cannot {action.value} a certificate that is {current.value}"
        raise ConflictError(detail, code="cert.status_transition") from exc


@dataclass(frozen=True, slots=True)
class StatusSlot:
    """A certificate's entry in the node's status lists."""

    list_id: int
    index: int
