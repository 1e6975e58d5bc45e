"""Single sign-on at a regional node (一号登录、全网漫游).

Every node validates the IdP's RFC 9068 access tokens locally: a verified-token cache first
(bounded, each entry dropped at its ``exp``), then the IdP's keys from a
:class:`gateway.sso.idp_keys.RemoteKeySet` (discovered, cached, refreshed in the background,
refetched with a cooldown when a token names a kid we do not know yet or still hold as
``next``). No call to the IdP happens on the request path unless the IdP rotated its keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from gateway.clock import Clock
from gateway.config import Federation
from gateway.crypto.jwks import KeyResolver
from gateway.ids import DepartmentId, NodeId
from gateway.sso.auth import Principal
from gateway.sso.idp_keys import RemoteKeySet, validate_with_refresh
from gateway.sso.tokens import CachedTokenValidator, TokenCache, TokenValidator

TOKEN_CACHE_ENTRIES = 10_000


class NodeAuthenticator:
    """:class:`gateway.sso.auth.Authenticator` for regional nodes."""

    def __init__(
        self,
        validator: CachedTokenValidator,
        keys: KeyResolver,
        *,
        clock: Clock,
        departments: Mapping[DepartmentId, NodeId],
    ) -> None:
        self._validator = validator
        self._keys = keys
        self._clock = clock
        self._departments = departments

    @classmethod
    def for_federation(
        cls, federation: Federation, keys: KeyResolver, *, clock: Clock, issuer: str
    ) -> NodeAuthenticator:
        validator = TokenValidator(
            keys,
            issuer=issuer,
            audience=federation.audience,
            skew=federation.clock_skew_seconds,
            max_bytes=federation.limits.max_token_bytes,
        )
        departments = {d.id: n.id for n in federation.nodes for d in n.departments}
        return cls(
            CachedTokenValidator(validator, TokenCache(TOKEN_CACHE_ENTRIES)),
            keys,
            clock=clock,
            departments=departments,
        )

    async def authenticate(self, token: str) -> Principal:
        now = self._clock.now()
        if isinstance(self._keys, RemoteKeySet):
            claims = await validate_with_refresh(self._validator, self._keys, token, now=now)
        else:
            claims = self._validator.validate(token, now=now)
        principal = claims.to_principal()
        if principal.department is None:
            return principal
        return replace(principal, node=self._departments.get(principal.department))
