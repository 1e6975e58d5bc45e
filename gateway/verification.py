"""Verifying a sealed certificate end to end: seal, schema, identifiers, validity, status.

:class:`CertificateVerifier` is the domain core shared by the node (``POST /v1/seals/verify``,
the verification report of every fetch) and the offline CLI (``tongban verify``). It raises
on the first failure; :meth:`CertificateVerifier.report` turns the outcome into an
ETSI-style report listing every check performed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from gateway.certificates import certificate_date
from gateway.clock import Clock
from gateway.errors import (
    Indication,
    InvalidIdentifier,
    SchemaViolation,
    SealError,
    VerificationError,
)
from gateway.identifiers import parse_certificate_id
from gateway.jwks import KeyResolver
from gateway.registry import CertStatus
from gateway.reports import Check, VerificationReport, checks_before
from gateway.revocation import ProvenIssuances, RevocationSetAside, describe
from gateway.schemas import SchemaCatalog
from gateway.seals import SignatureMemo, VerifiedSeal, verify_seal

_IDENTIFIER_PASSED = Check("identifier", Indication.PASSED)
_VALIDITY_PASSED = Check("validity", Indication.PASSED)


class StatusResolver(Protocol):
    def status_of(self, uri: str, index: int) -> CertStatus:
        """The status at ``index`` of the list at ``uri``; raises SealIndeterminate if unknown."""
        ...


@dataclass(frozen=True, slots=True)
class VerifiedCertificate:
    seal: VerifiedSeal
    document: Mapping[str, Any]
    status: CertStatus | None
    """None when no status source was available (offline verification without a list)."""
    checks: tuple[Check, ...]


class CertificateFailure(SealError):
    """A well-sealed document whose content is not an acceptable certificate."""

    code = "certificate.invalid"

    def __init__(self, detail: str, *, code: str, step: str, **kwargs: Any) -> None:
        super().__init__(detail, code=code, **kwargs)
        self.step = step


class _Progress:
    def __init__(self) -> None:
        self.checks: list[Check] = []

    def passed(self, name: str, detail: str | None = None) -> None:
        self.checks.append(Check(name, Indication.PASSED, detail))


class VerificationFailed(Exception):
    """Carries the checks done before a failure, alongside the error itself."""

    def __init__(self, error: VerificationError, checks: tuple[Check, ...]) -> None:
        super().__init__(error.code)
        self.error = error
        self.checks = checks


class CertificateVerifier:
    def __init__(
        self,
        keys: KeyResolver,
        schemas: SchemaCatalog,
        *,
        clock: Clock,
        statuses: StatusResolver | None = None,
        proven: ProvenIssuances | None = None,
        memo: SignatureMemo | None = None,
    ) -> None:
        """``memo``: remembers signatures that verified (see :class:`SignatureMemo`); only
        for seals this verifier sees again and again, such as a node's own stored ones."""
        self._keys = keys
        self._memo = memo
        self._schemas = schemas
        self._clock = clock
        self._statuses = statuses
        self._proven = proven or {}

    def verify(self, token: str) -> VerifiedCertificate:
        """Verify a sealed certificate; raises :class:`VerificationFailed`."""
        progress = _Progress()
        try:
            return self._verify(token, progress)
        except VerificationError as exc:
            raise VerificationFailed(exc, tuple(progress.checks)) from exc

    def _verify(self, token: str, progress: _Progress) -> VerifiedCertificate:
        now = self._clock.now()
        # 1. The seal: format, header, key, signature, key validity and revocation.
        try:
            seal = verify_seal(token, self._keys, now=now, memo=self._memo)
            progress.checks.extend(seal.checks)
        except SealError as exc:
            if exc.code != "seal.revocation_unproven" or not self._proven:
                raise
            seal = self._proven_before_revocation(token, now, exc, progress)
        document = seal.payload
        # 2. The document matches the schema of its certificate type (a missing or unknown
        #    type is checked against the generic certificate schema, which refuses it).
        try:
            self._schemas.validate_certificate(dict(document))
        except SchemaViolation as exc:
            raise CertificateFailure(
                "the sealed document does not match its certificate type's schema",
                code="certificate.schema",
                step="schema",
                pointers=exc.pointers,
                log_detail="; ".join(exc.errors),
            ) from exc
        progress.passed("schema", f"type:{document['type']}")
        # 3. The identifier's check character, and that it names this type and issuer.
        try:
            ident = parse_certificate_id(str(document["id"]))
        except InvalidIdentifier as exc:
            raise CertificateFailure(
                exc.detail, code="certificate.identifier", step="identifier"
            ) from exc
        if (
            ident.type_code != document["type_code"]
            or ident.issuer_code != document["issuer"]["code"]
        ):
            raise CertificateFailure(
                "the identifier does not name the document's type and issuer",
                code="certificate.identifier",
                step="identifier",
            )
        progress.checks.append(_IDENTIFIER_PASSED)
        # 4. The certificate's own validity period, in calendar days where it was issued.
        today = certificate_date(now)
        if date.fromisoformat(document["valid_from"]) > today:
            raise CertificateFailure(
                "the certificate is not valid yet",
                code="certificate.not_yet_valid",
                step="validity",
            )
        until = document.get("valid_until")
        if until is not None and date.fromisoformat(until) < today:
            raise CertificateFailure(
                "the certificate has expired", code="certificate.expired", step="validity"
            )
        progress.checks.append(_VALIDITY_PASSED)
        # 5. Status (IETF Token Status List): suspended and revoked certificates fail.
        status = self._check_status(document, progress)
        return VerifiedCertificate(seal, document, status, tuple(progress.checks))

    def _check_status(self, document: Mapping[str, Any], progress: _Progress) -> CertStatus | None:
        if self._statuses is None:
            progress.checks.append(
                Check("status", Indication.INDETERMINATE, "no status source: not checked")
            )
            return None
        ref = document["status"]["status_list"]
        try:
            status = self._statuses.status_of(str(ref["uri"]), int(ref["idx"]))
        except VerificationError as exc:
            exc.step = exc.step or "status"
            raise
        if status is CertStatus.REVOKED:
            raise CertificateFailure(
                "the certificate has been revoked", code="status.revoked", step="status"
            )
        if status is CertStatus.SUSPENDED:
            raise CertificateFailure(
                "the certificate is suspended", code="status.suspended", step="status"
            )
        progress.passed("status", status.value)
        return status

    def _proven_before_revocation(
        self, token: str, now: float, unproven: SealError, progress: _Progress
    ) -> VerifiedSeal:
        """A revoked key's seal whose issuance the audit log proves predates the revocation."""
        # Every other check of the seal, with only the key's revocation set aside...
        seal = verify_seal(token, RevocationSetAside(self._keys), now=now)
        head = self._proven.get(str(seal.payload.get("id")))
        if head is None:  # ...and without a proof for this certificate, still unproven
            raise unproven
        progress.checks.extend(
            Check("revocation", Indication.PASSED, describe(head)) if c.name == "revocation" else c
            for c in seal.checks
        )
        return seal

    def report(self, token: str) -> tuple[VerificationReport, VerifiedCertificate | None]:
        """Verify and describe the outcome; never raises for a bad document."""
        try:
            verified = self.verify(token)
        except VerificationFailed as failed:
            error = failed.error
            done = failed.checks or checks_before(error.step)
            return VerificationReport.failed_from(error, done), None
        seal = verified.seal
        report = VerificationReport.passed(
            verified.checks,
            kid=seal.kid,
            node=seal.node,
            signed_at=seal.signed_at,
            certificate_id=str(verified.document["id"]),
        )
        return report, verified


__all__ = [
    "CertificateFailure",
    "CertificateVerifier",
    "StatusResolver",
    "VerificationFailed",
    "VerifiedCertificate",
]
