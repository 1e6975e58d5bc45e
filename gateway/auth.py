"""Who is calling: principals, scopes, and the authenticator behind every protected endpoint.

The HTTP middleware extracts a bearer token and hands it to an :class:`Authenticator`;
it never looks inside the token itself. Until single sign-on is configured, the only
authenticator is :class:`DevelopmentAuthenticator`, which accepts exactly one token named in
the federation file (``[development]``), marked as development-only, and rejects everything
else. The SSO work replaces it with access-token validation.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Protocol

from gateway.config import DevelopmentToken
from gateway.errors import AuthError, Forbidden, TokenError
from gateway.ids import DepartmentId, NodeId
from gateway.scopes import Scope

__all__ = ["Authenticator", "DevelopmentAuthenticator", "Principal", "Scope", "parse_authorization"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    subject: str
    client_id: str
    scopes: frozenset[str]
    department: DepartmentId | None = None
    node: NodeId | None = None
    development: bool = False

    def require(self, scope: Scope) -> None:
        if scope.value not in self.scopes:
            raise Forbidden(f"this call needs the {scope.value!r} scope", code="auth.scope")


class Authenticator(Protocol):
    def authenticate(self, token: str) -> Principal:
        """Return the caller, or raise :class:`TokenError` / :class:`AuthError`."""
        ...


class DevelopmentAuthenticator:
    """Accepts only the federation file's development token. Development use only."""

    def __init__(self, config: DevelopmentToken, node: NodeId) -> None:
        self._config = config
        self._node = node

    def authenticate(self, token: str) -> Principal:
        expected = self._config.token.reveal()
        if not self._config.enabled or not expected:
            raise AuthError(
                "no authentication is configured for this node", code="auth.not_configured"
            )
        if not hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8")):
            raise TokenError("the bearer token is not valid", code="token.invalid")
        return Principal(
            subject="development",
            client_id="development",
            scopes=frozenset(s.value for s in Scope),
            node=self._node,
            development=True,
        )


def parse_authorization(header: str | None, *, max_bytes: int) -> str:
    """Extract the bearer token from an ``Authorization`` header (RFC 6750 §2.1)."""
    if header is None:
        raise AuthError("a bearer token is required", code="auth.required")
    if len(header) > max_bytes + 7:
        raise TokenError("the bearer token is too large", code="token.too_large")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError("expected 'Authorization: Bearer <token>'", code="auth.scheme")
    return token
