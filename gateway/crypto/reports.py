"""Verification reports: PASSED, FAILED or INDETERMINATE, with the checks performed.

In the spirit of ETSI EN 319 102-1 validation reports: the overall indication, a stable
sub-code (``ok`` when it passed, else the error's code), and each check in the order it was
performed. A failed report lists the checks that passed and then the one that did not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Protocol, TypeVar

import orjson

from gateway.clock import to_rfc3339
from gateway.errors import Indication, VerificationError

SEAL_CHECKS: tuple[str, ...] = (
    "format",  # size, three segments, strict base64url
    "header",  # strict JSON; alg, forbidden members, crit/b64, typ, kid, signing time
    "key",  # the kid resolves; the key may verify; its algorithm is the header's
    "signature",
    "time",  # signing time against now and the key's validity and state
    "revocation",
    "payload",  # strict JSON object
    "claims",  # iss and iat (seals only)
)
"""The checks of a seal verification, in the order :mod:`gateway.crypto.seals` performs them."""

PASSED_CODE = "ok"


@dataclass(frozen=True)
class Check:
    name: str
    result: Indication
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self._json)  # a copy: the cached form is shared by every report

    @cached_property
    def _json(self) -> dict[str, Any]:
        if self.detail is None:
            return {"name": self.name, "result": self.result.value}
        return {"name": self.name, "result": self.result.value, "detail": self.detail}


@lru_cache(maxsize=1024)
def passed_check(name: str, detail: str | None = None) -> Check:
    """A passed check, one object per (name, detail): built, and its JSON formed, once."""
    return Check(name, Indication.PASSED, detail)


@dataclass(frozen=True)
class VerificationReport:
    indication: Indication
    code: str
    checks: tuple[Check, ...]
    kid: str | None = None
    node: str | None = None
    certificate_id: str | None = None
    signed_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return self._form([check.to_json() for check in self.checks])

    def _form(self, checks: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "indication": self.indication.value,
            "code": self.code,
            "checks": checks,
        }
        if self.kid is not None:
            out["kid"] = self.kid
        if self.node is not None:
            out["node"] = self.node
        if self.certificate_id is not None:
            out["certificate_id"] = self.certificate_id
        if self.signed_at is not None:
            out["signed_at"] = self.signed_at
        return out

    @classmethod
    def passed(
        cls,
        checks: Sequence[Check],
        *,
        kid: str | None = None,
        node: str | None = None,
        signed_at: float | None = None,
        certificate_id: str | None = None,
    ) -> VerificationReport:
        return cls(
            indication=Indication.PASSED,
            code=PASSED_CODE,
            checks=tuple(checks),
            kid=kid,
            node=node,
            certificate_id=certificate_id,
            signed_at=None if signed_at is None else to_rfc3339(signed_at),
        )

    @classmethod
    def failed_from(
        cls, error: VerificationError, checks_done: Sequence[Check] = ()
    ) -> VerificationReport:
        """The report for ``error``: the checks done, then the failing one with its code."""
        failing = Check(error.step or "verification", error.indication, error.detail)
        return cls(
            indication=error.indication,
            code=error.code,
            checks=(*checks_done, failing),
        )


def dump_reports(reports: Sequence[VerificationReport]) -> bytes:
    """``{"reports": [...]}`` as JSON: what :meth:`VerificationReport.to_json` gives, written
    straight from each check's cached form (no copies: nothing else ever sees them)."""
    return orjson.dumps(
        {"reports": [report._form([c._json for c in report.checks]) for report in reports]}
    )


def checks_before(step: str | None, order: Sequence[str] = SEAL_CHECKS) -> tuple[Check, ...]:
    """The checks a verifier passed before failing at ``step`` (none if the step is unknown)."""
    if step not in order:
        return ()
    return tuple(Check(name, Indication.PASSED) for name in order[: order.index(step)])


class Verified(Protocol):
    """What a report needs from a successful verification (e.g. a ``VerifiedSeal``)."""

    @property
    def kid(self) -> str: ...
    @property
    def node(self) -> str: ...
    @property
    def signed_at(self) -> float: ...
    @property
    def checks(self) -> tuple[Check, ...]: ...


V = TypeVar("V", bound=Verified)


def report_for(verify: Callable[[], V]) -> tuple[VerificationReport, V | None]:
    """Run ``verify`` and report on it. A :class:`VerificationError` becomes a failed report;
    anything else (a network failure fetching keys, a bug) propagates."""
    try:
        verified = verify()
    except VerificationError as error:
        return VerificationReport.failed_from(error, checks_before(error.step)), None
    report = VerificationReport.passed(
        verified.checks, kid=verified.kid, node=verified.node, signed_at=verified.signed_at
    )
    return report, verified
