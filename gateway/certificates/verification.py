"""Verifying a sealed certificate end to end: seal, schema, identifiers, validity, status.

:class:`CertificateVerifier` is the domain core shared by the node (``POST /v1/seals/verify``,
the verification report of every fetch) and the offline CLI (``tongban verify``). It raises
on the first failure; :meth:`CertificateVerifier.report` turns the outcome into an
ETSI-style report listing every check performed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from gateway.certificates.documents import certificate_date
from gateway.certificates.revocation import ProvenIssuances, RevocationSetAside, describe
from gateway.certificates.schemas import SchemaSet
from gateway.certificates.status import CertStatus
from gateway.clock import Clock
from gateway.crypto.jwks import KeyResolver
from gateway.crypto.reports import (
    PASSED_CODE,
    Check,
    VerificationReport,
    checks_before,
    passed_check,
)
from gateway.crypto.seals import MAX_SEAL_BYTES, SealMemo, VerifiedSeal, verify_seal
from gateway.errors import (
    Indication,
    InvalidIdentifier,
    RevocationUnproven,
    SchemaViolation,
    SealError,
    VerificationError,
)
from gateway.identifiers import parse_certificate_id

_IDENTIFIER_PASSED = Check("identifier", Indication.PASSED)
_VALIDITY_PASSED = Check("validity", Indication.PASSED)
_STATUS_NOT_CHECKED = Check("status", Indication.INDETERMINATE, "no status source: not checked")


class StatusResolver(Protocol):
    def status_of(self, uri: str, index: int) -> CertStatus:
        """The status at ``index`` of the list at ``uri``; raises SealIndeterminate if unknown."""
        ...

    def statuses_of(self, refs: Sequence[StatusRef]) -> list[CertStatus | VerificationError]:
        """:meth:`status_of` of each ``(uri, index)``: the status, or the error it raises."""
        ...


StatusRef = tuple[str, int]
"""A status list entry: the list's uri and the index in it."""


def statuses_one_by_one(
    resolver: StatusResolver, refs: Sequence[StatusRef]
) -> list[CertStatus | VerificationError]:
    """:meth:`StatusResolver.statuses_of` for a resolver with nothing to gain from batches."""
    results: list[CertStatus | VerificationError] = []
    for uri, index in refs:
        try:
            results.append(resolver.status_of(uri, index))
        except VerificationError as exc:
            results.append(exc)
    return results


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
        self.checks.append(passed_check(name, detail))

    def done(self) -> tuple[Check, ...]:
        return tuple(self.checks)


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
        schemas: SchemaSet,
        *,
        clock: Clock,
        statuses: StatusResolver | None = None,
        proven: ProvenIssuances | None = None,
        memo: SealMemo | None = None,
        max_seal_bytes: int = MAX_SEAL_BYTES,
    ) -> None:
        """``memo``: remembers seals that verified (see :class:`SealMemo`); only
        for seals this verifier sees again and again, such as a node's own stored ones.
        ``max_seal_bytes``: a node's own (lower) limit on the size of a seal."""
        self._max_seal_bytes = max_seal_bytes
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
            raise VerificationFailed(exc, progress.done()) from exc

    def _verify(self, token: str, progress: _Progress) -> VerifiedCertificate:
        seal, document = self._verify_document(token, progress, self._clock.now())
        found: CertStatus | VerificationError | None = None
        if self._statuses is not None:
            try:
                found = self._statuses.status_of(*_status_ref(document))
            except VerificationError as exc:
                found = exc
        status = _judged(found, progress)
        return VerifiedCertificate(seal, document, status, progress.done())

    def _verify_document(
        self, token: str, progress: _Progress, now: float
    ) -> tuple[VerifiedSeal, Mapping[str, Any]]:
        """Every check before the status: the seal and the document it carries."""
        # 1. The seal: format, header, key, signature, key validity and revocation.
        if len(token) > self._max_seal_bytes:
            too_large = SealError(
                f"a seal may be at most {self._max_seal_bytes} bytes", code="seal.too_large"
            )
            too_large.step = "format"
            raise too_large
        try:
            seal = verify_seal(token, self._keys, now=now, memo=self._memo)
            progress.checks.extend(seal.checks)
        except SealError as exc:
            if not isinstance(exc, RevocationUnproven) or not self._proven:
                raise
            seal = self._proven_before_revocation(token, now, exc, progress)
        document = seal.payload
        # 2. The document matches the schema of its certificate type (a missing or unknown
        #    type is checked against the generic certificate schema, which refuses it).
        try:
            self._schemas.validate_certificate(document.copy())
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
        return seal, document

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
            return _failed_report(failed.error, failed.checks), None
        return _passed_report(verified), verified

    def reports(self, tokens: Sequence[str]) -> list[VerificationReport]:
        """:meth:`report` of each token, with the statuses of the whole batch read at once
        (:meth:`StatusResolver.statuses_of`) once every other check of every token is done."""
        return [report for report, _ in self.finish(self.begin(tokens))]

    def begin(self, tokens: Sequence[str]) -> PendingBatch:
        """Every check of every token except the status, whose entries the batch then
        names (:meth:`PendingBatch.status_refs`): :meth:`finish` reads them all at once."""
        now = self._clock.now()
        batch = PendingBatch()
        for token in tokens:
            progress = _Progress()
            try:
                seal, document = self._verify_document(token, progress, now)
            except VerificationError as exc:
                batch.outcomes.append((_failed_report(exc, progress.done()), None))
                continue
            batch.pending.append((len(batch.outcomes), progress, seal, document))
            batch.outcomes.append(None)
        return batch

    def finish(
        self, batch: PendingBatch
    ) -> list[tuple[VerificationReport, VerifiedCertificate | None]]:
        """The batch's statuses, read at once, and so each token's report (and certificate,
        if it passed), in the order of the tokens."""
        pending = batch.pending
        if self._statuses is None:
            statuses: list[CertStatus | VerificationError | None] = [None] * len(pending)
        else:
            statuses = [*self._statuses.statuses_of(batch.status_refs())]
        outcomes = list(batch.outcomes)
        for (at, progress, seal, document), found in zip(pending, statuses, strict=True):
            try:
                judged = _judged(found, progress)
            except VerificationError as exc:
                outcomes[at] = (_failed_report(exc, progress.done()), None)
                continue
            verified = VerifiedCertificate(seal, document, judged, progress.done())
            outcomes[at] = (_passed_report(verified), verified)
        return [outcome for outcome in outcomes if outcome is not None]


class PendingBatch:
    """Tokens verified up to their statuses (:meth:`CertificateVerifier.begin`). Each is
    either done (failed before the status step) or waits with its verified document."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[VerificationReport, VerifiedCertificate | None] | None] = []
        self.pending: list[tuple[int, _Progress, VerifiedSeal, Mapping[str, Any]]] = []

    def status_refs(self) -> list[StatusRef]:
        """The status entries the waiting tokens' verified documents name, in their order."""
        return [_status_ref(document) for _, _, _, document in self.pending]


def _status_ref(document: Mapping[str, Any]) -> StatusRef:
    ref = document["status"]["status_list"]
    return str(ref["uri"]), int(ref["idx"])


def _judged(found: CertStatus | VerificationError | None, progress: _Progress) -> CertStatus | None:
    """5. Status (IETF Token Status List): the status found for a certificate (None: no
    status source), if the certificate passes in it. Suspended and revoked certificates,
    and a status that could not be read, raise."""
    if isinstance(found, VerificationError):
        found.step = found.step or "status"
        raise found
    if found is None:
        progress.checks.append(_STATUS_NOT_CHECKED)
        return None
    if found is CertStatus.REVOKED:
        raise CertificateFailure(
            "the certificate has been revoked", code="status.revoked", step="status"
        )
    if found is CertStatus.SUSPENDED:
        raise CertificateFailure(
            "the certificate is suspended", code="status.suspended", step="status"
        )
    progress.passed("status", found.value)
    return found


def _failed_report(error: VerificationError, checks: tuple[Check, ...]) -> VerificationReport:
    return VerificationReport.failed_from(error, checks or checks_before(error.step))


def _passed_report(verified: VerifiedCertificate) -> VerificationReport:
    seal = verified.seal
    return VerificationReport(
        Indication.PASSED,
        PASSED_CODE,
        verified.checks,
        kid=seal.kid,
        node=seal.node,
        signed_at=seal.signed_at_text,
        certificate_id=str(verified.document["id"]),
    )


__all__ = [
    "CertificateFailure",
    "CertificateVerifier",
    "PendingBatch",
    "StatusRef",
    "StatusResolver",
    "VerificationFailed",
    "VerifiedCertificate",
    "statuses_one_by_one",
]
