"""One error hierarchy for the whole gateway.

Every error carries a stable machine ``code`` (dotted, lower case) and the HTTP status the
error middleware maps it to. Only :mod:`gateway.http.middleware` turns these into responses
(RFC 9457 problem+json); nothing else in the package knows about HTTP.

The ``detail`` of an error is safe to return to a caller. Anything an attacker would like to
learn (which check of a signature failed internally, a peer's body, a stack) goes to the log
through ``log_detail`` instead.

The tree is split by cause:

- :class:`InputError` (400/413/415/422): the caller sent something malformed.
- :class:`VerificationError`: a seal or token did not verify. Seal failures carry a
  verification ``indication`` (FAILED or INDETERMINATE) for the report.
- :class:`AuthError` (401/403): who is calling, and may they.
- :class:`NotFoundError` (404), :class:`ConflictError` (409).
- :class:`NetworkError` (502/504): a peer or a fetch failed; never a verdict on a document.
- :class:`ConfigError`: bad configuration, raised at start-up only.
"""

from __future__ import annotations

from enum import StrEnum


class Indication(StrEnum):
    """Overall result of a verification, in the spirit of ETSI EN 319 102-1."""

    PASSED = "PASSED"
    FAILED = "FAILED"
    INDETERMINATE = "INDETERMINATE"


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    code: str = "gateway.error"
    status: int = 500
    title: str = "Gateway error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        log_detail: str | None = None,
        pointers: tuple[str, ...] = (),
    ) -> None:
        self.detail = detail or self.title
        if code is not None:
            self.code = code
        self.log_detail = log_detail
        self.pointers = pointers
        super().__init__(self.detail)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r})"


# --- bad input ------------------------------------------------------------------------------


class InputError(GatewayError):
    code = "input.invalid"
    status = 400
    title = "Invalid input"


class MalformedJSON(InputError):
    code = "input.malformed_json"
    title = "Body is not well-formed JSON"


class DuplicateMember(InputError):
    code = "input.duplicate_member"
    title = "JSON object has a duplicate member name"


class TooDeep(InputError):
    code = "input.too_deep"
    title = "JSON nested too deep"


class TooLarge(InputError):
    code = "input.too_large"
    status = 413
    title = "Input too large"


class UnsupportedMediaType(InputError):
    code = "input.media_type"
    status = 415
    title = "Unsupported media type"


class SchemaViolation(InputError):
    """A document broke its JSON Schema; ``pointers`` lists each failing field."""

    code = "input.schema"
    status = 422
    title = "Document does not match its schema"

    def __init__(
        self,
        detail: str,
        *,
        pointers: tuple[str, ...],
        errors: tuple[str, ...] = (),
        code: str | None = None,
    ):
        super().__init__(detail, pointers=pointers, code=code)
        self.errors = errors


class Unprocessable(InputError):
    """Well-formed, but not something this node can take (a matter its windows may not
    receive, an owner that does not handle it): 422."""

    code = "input.unprocessable"
    status = 422
    title = "Request cannot be processed"


class InvalidIdentifier(InputError):
    """A certificate identifier, credit code or ID number failed its format or check."""

    code = "input.identifier"
    title = "Invalid identifier"


class UnknownCertificateType(InputError):
    code = "input.certificate_type"
    title = "Unknown certificate type"


# --- verification ---------------------------------------------------------------------------


class VerificationError(GatewayError):
    """A seal or token failed verification.

    ``indication`` tells a report whether the document is proven bad (FAILED) or could not
    be judged (INDETERMINATE, e.g. unknown key, unproven revocation).
    """

    code = "verify.failed"
    status = 400
    title = "Verification failed"
    indication: Indication = Indication.FAILED
    step: str | None = None
    """The check that failed (a report check name such as ``header``), set by the verifier."""


class SealError(VerificationError):
    code = "seal.invalid"
    title = "Seal is not valid"


class SealIndeterminate(SealError):
    code = "seal.indeterminate"
    title = "Seal could not be verified"
    indication = Indication.INDETERMINATE


class SignedInFuture(SealError):
    """A seal or proof whose signing time is ahead of this node's clock (beyond the skew)."""

    code = "seal.signed_in_future"


class AuditFork(VerificationError):
    """A partner's audit log shrank, or was rewritten, or cannot be proven to extend the
    log seen before."""

    code = "audit.fork"


class CosignatureError(VerificationError):
    """A witness's cosignature of a tree head does not hold: malformed claims, another
    head than the one it is offered for, or cosigned by the head's own node."""

    code = "audit.bad_cosignature"


class WitnessQuorumNotMet(VerificationError):
    """Fewer distinct partners than the federation's quorum cosigned a tree head in time.

    ``reasons`` holds the code of each cosignature that did not count."""

    code = "audit.witness_quorum"
    indication = Indication.INDETERMINATE

    def __init__(self, detail: str, *, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(detail, log_detail=", ".join(reasons) or None)
        self.reasons = reasons


class RevocationUnproven(SealIndeterminate):
    """A seal by a key revoked later, whose signing before the revocation is not (yet)
    proven: the issuing node's audit log may prove it (:mod:`gateway.certificates.revocation`)."""

    code = "seal.revocation_unproven"


class TokenError(VerificationError):
    """An access token (or other bearer JWT) was rejected: always a 401."""

    code = "token.invalid"
    status = 401
    title = "Invalid access token"


# --- authentication and authorisation -------------------------------------------------------


class AuthError(GatewayError):
    code = "auth.required"
    status = 401
    title = "Authentication required"


class Forbidden(AuthError):
    code = "auth.forbidden"
    status = 403
    title = "Forbidden"


# --- state ----------------------------------------------------------------------------------


class NotFoundError(GatewayError):
    code = "not_found"
    status = 404
    title = "Not found"


class ConflictError(GatewayError):
    code = "conflict"
    status = 409
    title = "Conflict"


class BadTransition(ConflictError):
    """A case action not allowed in the case's state; ``allowed`` names those that are."""

    code = "case.bad_transition"

    def __init__(self, detail: str, *, allowed: tuple[str, ...]) -> None:
        super().__init__(detail)
        self.allowed = allowed


class NotReady(GatewayError):
    """The node cannot do this yet (e.g. the federation does not trust its key yet): the
    same request will succeed once it is ready; ``GET /readyz`` says when."""

    code = "node.not_ready"
    status = 503
    title = "Not ready yet"


# --- storage --------------------------------------------------------------------------------


class StorageError(GatewayError):
    """The embedded store failed or is busy: the service is unavailable, the input was fine."""

    code = "registry.storage"
    status = 503
    title = "Store unavailable"


# --- network --------------------------------------------------------------------------------


class NetworkError(GatewayError):
    """A fetch or a peer failed. Says nothing about the validity of any document."""

    code = "network.bad_gateway"
    status = 502
    title = "Upstream failure"


class UpstreamTimeout(NetworkError):
    code = "network.timeout"
    status = 504
    title = "Upstream timed out"


# --- configuration --------------------------------------------------------------------------


class ConfigError(GatewayError):
    """Bad configuration. Raised at start-up, with a message naming what is wrong."""

    code = "config.invalid"
    status = 500
    title = "Invalid configuration"


class KeyStoreError(ConfigError):
    code = "keys.invalid"
    title = "Key store problem"


class RootKeyMissing(KeyStoreError):
    """No federation root key where one is expected (not yet made, or lost)."""

    code = "keys.root_missing"
