"""The identity provider (the ``idp`` node): one login for the whole federation.

Departmental systems get access tokens with the OAuth 2.0 ``client_credentials`` grant
(RFC 6749 §4.4, client secrets checked against the federation file's scrypt hashes);
citizens log in with :data:`HOLDER_GRANT` (resident ID number and password) and then grant
departments consent (用证授权) to use their certificates for one matter. Access tokens follow
RFC 9068 (:func:`gateway.sso.tokens.issue_access_token`); consent grants are
:func:`gateway.sso.consent.issue_consent` tokens. Both are signed with the IdP's own keys, never a
node's seal keys.

Key lifecycle: there is always an ``active`` key that signs and a ``next`` key already
published in the JWKS, so a verifier knows a kid before anything is signed with it.
:meth:`IdpService.rotate` promotes ``next``, retires the old key (it keeps verifying what it
signed) and pre-publishes a fresh ``next``.

This module is plain synchronous Python: the HTTP layer is :mod:`gateway.http.idp_app`.
Every refusal is a :class:`~gateway.errors.GatewayError` whose ``code`` is ``oauth.<RFC 6749
error>`` on the token endpoint (``oauth.invalid_client``, ``oauth.invalid_grant``, …) and
``consent.*`` / ``matter.*`` for consent.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_plus

from gateway._internal.passwords import verify_secret
from gateway._internal.wire import is_int
from gateway.certificates.holders import HolderSecret
from gateway.certificates.matters import MatterSet
from gateway.clock import Clock
from gateway.config import Citizen, Client, Federation
from gateway.crypto.jwks import Alg, KeyState, ed25519_name, public_jwk
from gateway.crypto.keystore import KeyRecord, KeyStore
from gateway.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    Forbidden,
    InputError,
    InvalidIdentifier,
    KeyStoreError,
    NotFoundError,
)
from gateway.identifiers import validate_resident_id
from gateway.ids import DepartmentId
from gateway.scopes import Scope
from gateway.sso.auth import Principal
from gateway.sso.consent import CLOCK_SKEW as CONSENT_SKEW
from gateway.sso.consent import MAX_TYPES, issue_consent
from gateway.sso.tokens import (
    DEFAULT_LIFETIME,
    AccessClaims,
    CachedTokenValidator,
    TokenCache,
    TokenValidator,
    issue_access_token,
)

log = logging.getLogger("gateway.services.idp")

CLIENT_CREDENTIALS: Final = "client_credentials"
HOLDER_GRANT: Final = "urn:tongban:params:oauth:grant-type:holder-login"
HOLDER_CLIENT_ID: Final = "citizen-portal"
"""The ``client_id`` of holder tokens: the citizens' portal, a public client."""
RESIDENT_ID_TYPE: Final = "111"
"""GB/T 36903 holder id type of a resident ID number."""
MAX_CONSENT_SECONDS: Final = 30 * 86_400
"""The longest a consent grant may run."""
RETIRED_KEY_PUBLISHED_SECONDS: Final = MAX_CONSENT_SECONDS + CONSENT_SKEW
"""How long a retired key stays in the JWKS: until the last grant it signed has expired."""
MAX_CREDENTIAL_CHARS: Final = 256
"""Longest client id, client secret, holder id or password considered (bounded scrypt work)."""
MAX_FORM_FIELDS: Final = 16
TOKEN_CACHE_ENTRIES: Final = 4096

_SCOPE_ORDER: Final = tuple(s.value for s in Scope)
_MAX_NAME: Final = 128
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})"
)
_CONSENT_MEMBERS: Final = frozenset({"department", "matter", "types", "until"})
# A well-formed scrypt hash of a random, discarded secret. An unknown client or citizen is
# checked against it, so "unknown" and "wrong secret" cost the same and answer the same.
_UNKNOWN_HASH: Final = (
    "scrypt$n=16384,r=8,p=1$9PUjeGaLtcmTfTFSUBqk1A$TSQgoYgSAzye379_aiDdcjYyNI_VBYNL9SWcUxWYwJs"
)


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """A successful token response (RFC 6749 §5.1)."""

    access_token: str
    expires_in: int
    scope: str
    token_type: str = "Bearer"  # noqa: S105 - the RFC 6750 token type, not a secret

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "scope": self.scope,
        }


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    """A parsed ``POST /consents`` body."""

    department: DepartmentId
    matter: str
    types: tuple[str, ...]
    until: float


# --- errors ---------------------------------------------------------------------------------


def _invalid_request(detail: str) -> InputError:
    return InputError(detail, code="oauth.invalid_request")


def _invalid_client(log_detail: str | None = None) -> AuthError:
    return AuthError(
        "client authentication failed", code="oauth.invalid_client", log_detail=log_detail
    )


def _invalid_grant(log_detail: str | None = None) -> AuthError:
    return AuthError(
        "the holder id or password is not valid", code="oauth.invalid_grant", log_detail=log_detail
    )


def _invalid_scope(detail: str) -> Forbidden:
    return Forbidden(detail, code="oauth.invalid_scope")


def _bad_consent(detail: str, pointer: str | None = None) -> InputError:
    return InputError(
        detail, code="consent.bad_request", pointers=(pointer,) if pointer is not None else ()
    )


# --- wire parsing (the HTTP layer hands over bytes and headers) ------------------------------


def parse_form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as parameters (RFC 6749 §3.1, §3.2).

    A parameter given twice is refused; one given with an empty value counts as omitted.
    Raises :class:`InputError` ``oauth.invalid_request``.
    """
    try:
        # 1. percent-encoded ASCII, then strict UTF-8 after decoding; a bounded field count
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        raise _invalid_request("the body is not a well-formed form-urlencoded body") from exc
    # 2. every parameter at most once; an empty one is as if absent
    params: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            raise _invalid_request(f"the parameter {name[:32]!r} is given more than once")
        seen.add(name)
        if value:
            params[name] = value
    return params


def parse_basic(header: str) -> tuple[str, str]:
    """``client_secret_basic`` (RFC 6749 §2.3.1): the client id and secret of a Basic header.

    Both are form-urlencoded before base64 (so ``:`` in an id arrives as ``%3A``). Anything
    malformed is a failed client authentication, :class:`AuthError` ``oauth.invalid_client``.
    """
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "basic":
        raise _invalid_client("the Authorization scheme is not Basic")
    credentials = credentials.strip()
    if not credentials or len(credentials) > 4 * MAX_CREDENTIAL_CHARS:
        raise _invalid_client("the Basic credentials are empty or too long")
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            raise ValueError("no ':' between client id and secret")
        client_id = unquote_plus(client_id, errors="strict")
        secret = unquote_plus(secret, errors="strict")
    except (binascii.Error, ValueError) as exc:
        raise _invalid_client(f"malformed Basic credentials: {type(exc).__name__}") from exc
    if not client_id or not secret:
        raise _invalid_client("the Basic credentials have an empty id or secret")
    return client_id, secret


def parse_time(value: object, pointer: str = "/until") -> float:
    """An RFC 3339 date-time with a zone (``2026-11-25T08:00:00Z``, ``…+08:00``) or a
    NumericDate (an integer number of seconds). Raises :class:`InputError`
    ``consent.bad_request``."""
    if is_int(value):
        return float(value)
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError as exc:
            raise _bad_consent("'until' is not a real date and time", pointer) from exc
    raise _bad_consent(
        "'until' must be an RFC 3339 date-time with a zone or an integer NumericDate", pointer
    )


def _name(body: Mapping[str, Any], member: str) -> str:
    value = body.get(member)
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME:
        raise _bad_consent(f"{member!r} must be a non-empty string", f"/{member}")
    return value


def parse_consent_request(body: Any) -> ConsentRequest:
    """A ``POST /consents`` body: ``{department, matter, types, until}``, nothing else."""
    if not isinstance(body, dict):
        raise _bad_consent("the body must be a JSON object")
    unknown = sorted(body.keys() - _CONSENT_MEMBERS)
    if unknown:
        raise _bad_consent("the body has unknown members", _pointer(unknown[0]))
    missing = sorted(_CONSENT_MEMBERS - body.keys())
    if missing:
        raise _bad_consent(f"the body has no {missing[0]!r} member", _pointer(missing[0]))
    types = body["types"]
    if (
        not isinstance(types, list)
        or not 1 <= len(types) <= MAX_TYPES
        or not all(isinstance(t, str) and 0 < len(t) <= _MAX_NAME for t in types)
    ):
        raise _bad_consent(f"'types' must list 1 to {MAX_TYPES} certificate type names", "/types")
    if len(set(types)) != len(types):
        raise _bad_consent("'types' names a certificate type twice", "/types")
    return ConsentRequest(
        department=DepartmentId(_name(body, "department")),
        matter=_name(body, "matter"),
        types=tuple(types),
        until=parse_time(body["until"]),
    )


def _pointer(member: str) -> str:
    """The JSON pointer (RFC 6901) of a top-level member."""
    return "/" + member[:_MAX_NAME].replace("~", "~0").replace("/", "~1")


# --- the service ----------------------------------------------------------------------------


class IdpService:
    """Issues access tokens and consent grants. Construct with :meth:`open`."""

    def __init__(
        self,
        federation: Federation,
        *,
        clock: Clock,
        keys: KeyStore,
        issuer: str,
        holder_secret: HolderSecret,
        matters: MatterSet,
        lifetime: int = DEFAULT_LIFETIME,
    ) -> None:
        self.federation = federation
        self.node = federation.idp()
        self.keys = keys
        self.issuer = issuer.rstrip("/")
        self.matters = matters
        self.lifetime = lifetime
        self._clock = clock
        self._holder_secret = holder_secret
        self._clients: dict[str, Client] = {c.id: c for c in federation.clients}
        self._citizens: dict[str, Citizen] = {c.id: c for c in federation.citizens}
        self._validator = CachedTokenValidator(
            TokenValidator(
                keys,
                issuer=self.issuer,
                audience=federation.audience,
                skew=federation.clock_skew_seconds,
                max_bytes=federation.limits.max_token_bytes,
            ),
            TokenCache(TOKEN_CACHE_ENTRIES),
        )
        self._ensure_next()

    def __repr__(self) -> str:
        return f"IdpService(issuer={self.issuer!r}, keys={self.keys!r})"

    @classmethod
    def open(
        cls,
        federation: Federation,
        *,
        clock: Clock,
        public_url: str | None = None,
        holder_secret: bytes,
        matters: MatterSet | None = None,
    ) -> IdpService:
        """Open the IdP's key store (``keys_dir/idp``), creating its active and next keys."""
        node = federation.idp()
        # Tokens are verified by departmental systems' JOSE libraries, none of which knows
        # SM2: an SM2 federation's IdP signs with Ed25519.
        alg: Alg = "ES256" if federation.seal_alg == "ES256" else "EdDSA"
        keys = KeyStore.open(
            federation.keys_dir,
            node.id,
            clock=clock,
            passphrase=federation.key_passphrase,
            default_alg=alg,
            validity_days=federation.key_validity_days,
            ed25519_name=ed25519_name(federation.ed25519_alg),
        )
        return cls(
            federation,
            clock=clock,
            keys=keys,
            issuer=public_url or federation.url(node.id),
            holder_secret=HolderSecret(holder_secret),
            matters=matters or MatterSet(),
        )

    # -- keys ------------------------------------------------------------------------------

    def _ensure_next(self) -> KeyRecord:
        pending = [r for r in self.keys.records() if r.state is KeyState.NEXT]
        if pending:
            return max(pending, key=lambda r: r.created)
        record = self.keys.add_key(state=KeyState.NEXT)
        log.info("pre-published the next IdP key", extra={"kid": record.kid})
        return record

    def next_key(self) -> KeyRecord:
        """The pre-published key the next :meth:`rotate` will activate."""
        pending = [r for r in self.keys.records() if r.state is KeyState.NEXT]
        if not pending:  # pragma: no cover - the constructor and rotate() guarantee one
            raise KeyStoreError("the IdP has no pre-published next key")
        return max(pending, key=lambda r: r.created)

    def now(self) -> float:
        return self._clock.now()

    def rotate(self) -> KeyRecord:
        """``next`` -> ``active``, old ``active`` -> ``retired``, then a fresh ``next``.

        Returns the newly active key. The old key keeps verifying what it signed (a retired
        key stays in the JWKS for :data:`RETIRED_KEY_PUBLISHED_SECONDS`).
        """
        old = self.keys.active()
        promoted = self._ensure_next()
        # 1. promote first, so there is never a moment without an active key
        active = self.keys.set_state(promoted.kid, KeyState.ACTIVE)
        # 2. the old key only verifies from now on
        self.keys.set_state(old.kid, KeyState.RETIRED)
        # 3. pre-publish the key after this one
        upcoming = self.keys.add_key(state=KeyState.NEXT)
        log.info(
            "rotated the IdP key",
            extra={"kid": active.kid, "retired": old.kid, "next": upcoming.kid},
        )
        return active

    def retire(self, kid: str) -> KeyRecord:
        """Retire a key that is not the active one (it still verifies what it signed)."""
        record = self.keys.record(kid)
        if record.state in (KeyState.ACTIVE, KeyState.REVOKED):
            raise ConflictError(
                f"a {record.state.value} key cannot be retired; rotate instead",
                code="keys.state",
            )
        retired = self.keys.set_state(record.kid, KeyState.RETIRED)
        self._ensure_next()
        return retired

    def revoke(self, kid: str, *, at: float | None = None) -> KeyRecord:
        """Revoke a key from ``at`` (default now); the active one is rotated away first."""
        record = self.keys.record(kid)
        if record.state is KeyState.REVOKED:
            raise ConflictError("that key is already revoked", code="keys.revoked")
        if record.state is KeyState.ACTIVE:
            self.rotate()
        revoked = self.keys.set_state(record.kid, KeyState.REVOKED, at=at)
        self._ensure_next()
        return revoked

    def jwks(self) -> dict[str, Any]:
        """The IdP's public keys: active, next, revoked, and retired ones still needed."""
        now = self._clock.now()
        published = [
            public_jwk(self.keys.verification_key(record))
            for record in self.keys.records()
            if not (
                record.state is KeyState.RETIRED
                and record.retired_at is not None
                and now > record.retired_at + RETIRED_KEY_PUBLISHED_SECONDS
            )
        ]
        return {"keys": published}

    def signing_algs(self) -> list[str]:
        """The algorithms of the keys that sign now or will sign next."""
        serving = (KeyState.ACTIVE, KeyState.NEXT)
        return sorted({r.alg for r in self.keys.records() if r.state in serving})

    # -- discovery -------------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        """OpenID Provider / RFC 8414 authorization server metadata."""
        algs = self.signing_algs()
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks",
            "token_endpoint": f"{self.issuer}/token",
            "consent_endpoint": f"{self.issuer}/consents",
            "grant_types_supported": [CLIENT_CREDENTIALS, HOLDER_GRANT],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": [],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
            "access_token_signing_alg_values_supported": algs,
            "consent_signing_alg_values_supported": algs,
            "scopes_supported": list(_SCOPE_ORDER),
            "claims_supported": [
                "iss",
                "sub",
                "aud",
                "exp",
                "iat",
                "jti",
                "client_id",
                "scope",
                "department",
                "region",
                "holder",
            ],
        }

    # -- the token endpoint ----------------------------------------------------------------

    def token(
        self, params: Mapping[str, str], *, basic: tuple[str, str] | None = None
    ) -> TokenResponse:
        """Answer a token request: form ``params`` and, if sent, the Basic client credentials.

        Unrecognised parameters are ignored (RFC 6749 §3.2).
        """
        # 1. the grant type is required, and one we support
        grant_type = params.get("grant_type")
        if grant_type is None:
            raise _invalid_request("the 'grant_type' parameter is required")
        if grant_type == CLIENT_CREDENTIALS:
            client_id, secret = self._client_authentication(params, basic)
            return self.client_credentials(client_id, secret, params.get("scope"))
        if grant_type == HOLDER_GRANT:
            # 2. the citizens' portal is a public client: it sends no client credentials
            if basic is not None or "client_secret" in params:
                raise _invalid_request("the holder login grant takes no client credentials")
            username, password = params.get("username"), params.get("password")
            if username is None or password is None:
                raise _invalid_request("the holder login grant needs 'username' and 'password'")
            if params.get("scope"):
                raise _invalid_scope("holder tokens carry no scopes")
            return self.holder_login(username, password)
        raise InputError("the grant type is not supported", code="oauth.unsupported_grant_type")

    @staticmethod
    def _client_authentication(
        params: Mapping[str, str], basic: tuple[str, str] | None
    ) -> tuple[str, str]:
        """client_secret_basic or client_secret_post, exactly one (RFC 6749 §2.3)."""
        if basic is not None:
            if "client_secret" in params:
                raise _invalid_request("authenticate the client one way only")
            given = params.get("client_id")
            if given is not None and given != basic[0]:
                raise _invalid_request("'client_id' does not match the Basic credentials")
            return basic
        client_id, secret = params.get("client_id"), params.get("client_secret")
        if client_id is None or secret is None:
            raise _invalid_client("no client authentication was included")
        return client_id, secret

    def client_credentials(
        self, client_id: str, client_secret: str, requested_scope: str | None
    ) -> TokenResponse:
        """A departmental system's token (RFC 6749 §4.4)."""
        # 1. the client and its secret; unknown and wrong cost and answer the same
        bounded = (
            len(client_id) <= MAX_CREDENTIAL_CHARS and len(client_secret) <= MAX_CREDENTIAL_CHARS
        )
        client = self._clients.get(client_id) if bounded else None
        try:
            verify_secret(
                client_secret if bounded else "",
                client.secret_hash if client is not None else _UNKNOWN_HASH,
            )
        except AuthError as exc:
            raise _invalid_client("wrong client secret" if client else "unknown client") from exc
        if client is None:  # pragma: no cover - nobody knows the unknown-client secret
            raise _invalid_client("unknown client")
        # 2. the scopes: the client's own, or a subset of them that it asks for
        allowed = set(client.scopes)
        if requested_scope:
            wanted = set(requested_scope.split(" "))
            if not wanted <= allowed:
                raise _invalid_scope("the client may not have the scopes it asked for")
        else:
            wanted = allowed
        scopes = tuple(s for s in _SCOPE_ORDER if s in wanted)
        # 3. the department and the region of its node
        region = self.federation.node(client.node).region
        # 4. sign
        now = self._clock.now()
        token = issue_access_token(
            self.keys.signer(),
            issuer=self.issuer,
            audience=self.federation.audience,
            subject=client.id,
            client_id=client.id,
            scopes=scopes,
            department=client.department,
            region=region,
            now=now,
            lifetime=self.lifetime,
            jti=secrets.token_urlsafe(16),
        )
        log.info("issued a client token", extra={"client_id": client.id})
        return TokenResponse(access_token=token, expires_in=self.lifetime, scope=" ".join(scopes))

    def holder_login(self, holder_id: str, password: str) -> TokenResponse:
        """A citizen's token (:data:`HOLDER_GRANT`). ``sub`` is the holder digest, never the id."""
        # 1. a well-formed GB 11643 resident ID number
        try:
            resident = validate_resident_id(holder_id)
        except InvalidIdentifier as exc:
            raise _invalid_grant(exc.code) from exc
        # 2. a known citizen and the right password; unknown and wrong cost and answer the same
        bounded = len(password) <= MAX_CREDENTIAL_CHARS
        citizen = self._citizens.get(resident.value)
        try:
            verify_secret(
                password if bounded else "",
                citizen.password_hash if citizen is not None else _UNKNOWN_HASH,
            )
        except AuthError as exc:
            raise _invalid_grant("wrong password" if citizen else "unknown citizen") from exc
        if citizen is None or not bounded:  # pragma: no cover - as for clients
            raise _invalid_grant("unknown citizen")
        # 3. a holder token: the keyed digest as subject, no department scopes
        now = self._clock.now()
        token = issue_access_token(
            self.keys.signer(),
            issuer=self.issuer,
            audience=self.federation.audience,
            subject=self._holder_secret.digest(RESIDENT_ID_TYPE, resident.value),
            client_id=HOLDER_CLIENT_ID,
            scopes=(),
            department=None,
            region=None,
            now=now,
            lifetime=self.lifetime,
            jti=secrets.token_urlsafe(16),
            holder=True,
        )
        log.info("issued a holder token")
        return TokenResponse(access_token=token, expires_in=self.lifetime, scope="")

    # -- validating its own tokens ---------------------------------------------------------

    def validate_access_token(self, token: str) -> AccessClaims:
        """An access token this IdP issued, verified against its own keys (cached until exp)."""
        return self._validator.validate(token, now=self._clock.now())

    async def authenticate(self, token: str) -> Principal:
        """:class:`gateway.sso.auth.Authenticator` over this IdP's own access tokens."""
        return self.validate_access_token(token).to_principal()

    # -- consent ---------------------------------------------------------------------------

    def grant_consent(
        self,
        holder_claims: AccessClaims,
        *,
        department: str,
        matter: str,
        types: tuple[str, ...] | list[str],
        until: float,
    ) -> str:
        """A holder grants ``department`` the use of ``types`` for ``matter`` until ``until``."""
        # 1. only a holder may grant, and only for themself (the token's subject)
        if not holder_claims.holder:
            raise Forbidden("only a logged-in holder can grant consent", code="consent.not_holder")
        # 2. a department of the federation
        try:
            self.federation.department(department)
        except ConfigError:
            raise NotFoundError(
                f"unknown department {department[:64]!r}", code="consent.unknown_department"
            ) from None
        # 3. a matter of the catalog, and only types that matter uses (purpose limitation)
        self.matters.get(matter)
        for cert_type in types:
            self.matters.require_type(matter, cert_type)
        # 4. a bounded time: after now, at most MAX_CONSENT_SECONDS ahead
        now = self._clock.now()
        if not now < until <= now + MAX_CONSENT_SECONDS:
            raise _bad_consent(
                f"'until' must be in the future and at most {MAX_CONSENT_SECONDS // 86_400} "
                "days ahead",
                "/until",
            )
        # 5. sign, bound to the holder digest
        consent = issue_consent(
            self.keys.signer(),
            issuer=self.issuer,
            holder_digest=holder_claims.sub,
            department=DepartmentId(department),
            matter=matter,
            types=tuple(types),
            now=now,
            until=until,
            jti=secrets.token_urlsafe(16),
        )
        log.info(
            "issued a consent grant",
            extra={"department": department, "matter": matter, "types": list(types)},
        )
        return consent
