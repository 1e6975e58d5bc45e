"""Who is calling: principals, scopes, and the authenticator behind every protected endpoint.

The HTTP middleware extracts a bearer token and hands it to an :class:`Authenticator`;
it never looks inside the token itself. At a regional node the authenticator is
:class:`gateway.sso.node_auth.NodeAuthenticator`: RFC 9068 access tokens from the federation's IdP,
validated locally against the IdP's cached keys. At the IdP it is the IdP itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import AuthError, Forbidden, TokenError
from gateway.ids import DepartmentId, NodeId
from gateway.scopes import Scope

__all__ = ["Authenticator", "Principal", "Scope", "parse_authorization"]

# RFC 6750 §2.1 b64token: the only characters a bearer token may contain.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a departmental system or a holder (citizen)."""

    subject: str
    client_id: str
    scopes: frozenset[str]
    department: DepartmentId | None = None
    node: NodeId | None = None
    """The node the caller's department belongs to."""
    holder: bool = False
    """A citizen logged in at the IdP; ``subject`` is then the holder digest, never the id."""

    def require(self, scope: Scope) -> None:
        if scope.value not in self.scopes:
            raise Forbidden(f"this call needs the {scope.value!r} scope", code="auth.scope")


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Principal:
        """Return the caller, or raise :class:`TokenError` / :class:`AuthError`."""
        ...


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
    if not _B64TOKEN.fullmatch(token):
        raise TokenError("the bearer token is not valid", code="token.invalid")
    return token
