"""The node-side cache of one issuer's signing keys (the IdP's JWKS), kept fresh over HTTP.

:class:`RemoteKeySet` discovers the issuer's ``jwks_uri`` from
``<issuer>/.well-known/openid-configuration`` and fetches the JWKS with the node's one shared
:class:`aiohttp.ClientSession`. It serves :meth:`~RemoteKeySet.key_for` synchronously from an
immutable snapshot, so it is a :class:`gateway.crypto.jwks.KeyResolver` the strict token
verifier can use as is. The snapshot changes only when a fetch fully succeeds:

- **single flight**: concurrent refreshes share one fetch (one discovery, one JWKS GET);
- **unknown kid**: a token naming a key we do not hold triggers at most one refresh per
  cooldown, however many kids are missed, so random ``kid`` values cannot hammer the IdP;
- **background refresh** every ``refresh_interval`` (sooner if the JWKS response's
  ``Cache-Control: max-age`` says so), retried with jittered, capped backoff on failure;
- **bounded**: a per-fetch timeout, a body-size cap, strict JSON, strict JWK parsing;
- **last good set**: a failed fetch raises a :class:`~gateway.errors.NetworkError` but never
  empties or alters the snapshot. Only the very first load can leave the set empty.

Errors: :class:`~gateway.errors.UpstreamTimeout` ``keys.fetch_timeout``;
:class:`~gateway.errors.NetworkError` ``keys.fetch_failed`` (status, content type, size,
JSON, JWKS rejected; the cause goes to ``log_detail``) and ``keys.discovery_mismatch`` (the
discovery document names another issuer).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from gateway._internal.wire import b64url_decode, loads
from gateway.clock import Clock
from gateway.crypto.jwks import KeyState, VerificationKey, parse_jwks
from gateway.crypto.seals import MAX_HEADER_BYTES
from gateway.errors import (
    ConfigError,
    GatewayError,
    NetworkError,
    SealIndeterminate,
    TokenError,
    UpstreamTimeout,
)
from gateway.ids import KeyId, NodeId
from gateway.sso.tokens import AccessClaims, AccessTokenValidator

log = logging.getLogger("gateway.sso.idp_keys")

DISCOVERY_PATH: Final = "/.well-known/openid-configuration"
ROTATION_REFRESH_FLOOR = 1.0
"""Seconds between refreshes caused by a key we hold as ``next`` starting to sign."""
MIN_REFRESH_INTERVAL: Final = 10.0
"""A ``Cache-Control: max-age`` shorter than this (or ``no-cache``) is raised to it."""
BACKOFF_BASE: Final = 1.0
"""First retry delay after a failed background refresh; doubles per failure, jittered."""

_JSON_TYPES: Final = frozenset({"application/json"})
_JWKS_TYPES: Final = frozenset({"application/json", "application/jwk-set+json"})
_MAX_AGE: Final = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?([0-9]{1,10})\"?\s*(?:,|$)", re.I)
_NO_CACHE: Final = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|$)", re.I)

Sleep = Callable[[float], Awaitable[None]]
_Fingerprint = frozenset[tuple[object, ...]]


def _fetch_failed(detail: str, log_detail: str) -> NetworkError:
    return NetworkError(detail, code="keys.fetch_failed", log_detail=log_detail)


def _fingerprint(keys: Mapping[KeyId, VerificationKey]) -> _Fingerprint:
    # the kid is the RFC 7638 thumbprint, so it stands for the key material itself
    return frozenset(
        (k.kid, k.node, k.alg, k.state, k.not_before, k.not_after, k.revoked_at, k.verify_allowed)
        for k in keys.values()
    )


def _http_scheme(url: object) -> str | None:
    """``http`` or ``https`` for an absolute http(s) URL with a host; None for anything else."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return parts.scheme


def _max_age(cache_control: str | None) -> float | None:
    if not cache_control:
        return None
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return None if match is None else float(match.group(1))


class RemoteKeySet:
    """An async cache of one issuer's JWKS; a synchronous :class:`KeyResolver` over its snapshot.

    ``session`` is the node's one shared client session (never created here, never closed
    here). ``sleep`` and ``rng`` drive the background loop's waits and jitter (tests inject
    both); every other time comes from ``clock``.
    """

    def __init__(
        self,
        issuer: str,
        session: aiohttp.ClientSession,
        *,
        clock: Clock,
        node: NodeId,
        fetch_timeout: float = 2.0,
        refresh_interval: float = 300.0,
        unknown_kid_cooldown: float = 30.0,
        max_bytes: int = 256_000,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if _http_scheme(issuer) is None:
            raise ConfigError(f"the issuer {issuer!r} is not an http(s) URL")
        if fetch_timeout <= 0 or refresh_interval <= 0:
            raise ConfigError("key fetch timeout and refresh interval must be positive")
        if unknown_kid_cooldown < 0 or max_bytes < 1:
            raise ConfigError("unknown-kid cooldown must be >= 0 and max_bytes >= 1")
        self.issuer = issuer
        self.node = node
        self.fetch_timeout = fetch_timeout
        self.refresh_interval = refresh_interval
        self.unknown_kid_cooldown = unknown_kid_cooldown
        self.max_bytes = max_bytes
        self._session = session
        self._clock = clock
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._keys: Mapping[KeyId, VerificationKey] = MappingProxyType({})
        self._jwks_uri: str | None = None
        self._max_age: float | None = None
        self._last_refreshed: float | None = None
        self._failures = 0
        self._unknown_kid_refresh_at: float | None = None
        self._rotation_refresh_at: float | None = None
        self._inflight: asyncio.Task[bool] | None = None

    # --- the snapshot (synchronous) ---------------------------------------------------------

    def key_for(self, kid: KeyId) -> VerificationKey:
        try:
            return self._keys[kid]
        except KeyError:
            raise SealIndeterminate(
                "no key with that kid is known", code="seal.unknown_kid"
            ) from None

    def snapshot_kids(self) -> frozenset[KeyId]:
        return frozenset(self._keys)

    @property
    def last_refreshed(self) -> float | None:
        """When the snapshot was last fetched successfully (clock seconds), or None."""
        return self._last_refreshed

    @property
    def failures(self) -> int:
        """Consecutive failed fetches since the last success."""
        return self._failures

    # --- refreshing -------------------------------------------------------------------------

    async def ensure_loaded(self) -> None:
        """Load the set once; raises the fetch's :class:`NetworkError` if it cannot."""
        if self._last_refreshed is None:
            await self.refresh(reason="initial")

    async def refresh(self, *, reason: str) -> bool:
        """Fetch the set now, sharing a fetch already in flight. True if the set changed.

        On failure the snapshot is untouched and the :class:`NetworkError` is raised.
        """
        task = self._inflight
        if task is None:
            task = asyncio.create_task(self._refresh(reason), name=f"jwks-refresh {self.issuer}")
            task.add_done_callback(self._flight_done)
            self._inflight = task
        # shielded: a caller that is cancelled does not cancel the fetch the others await
        return await asyncio.shield(task)

    async def refresh_for_unknown_kid(self, kid: KeyId) -> bool:
        """Refresh because a token named ``kid``; True if ``kid`` is now known.

        At most one such refresh starts per cooldown, whatever the kid: within it this
        returns False without fetching (unless a fetch is already in flight, which it joins).
        """
        if self._usable(kid):
            return True  # a refresh since the miss already brought it
        if self._inflight is None:
            now = self._clock.now()
            last = self._unknown_kid_refresh_at
            if last is not None and now < last + self.unknown_kid_cooldown:
                log.debug("unknown kid within cooldown: not fetching", extra={"kid": kid})
                return False
            self._unknown_kid_refresh_at = now
        await self.refresh(reason="unknown_kid")
        return self._usable(kid)

    async def refresh_for_rotation(self, kid: KeyId) -> bool:
        """Refresh because a token verified against a key we still hold as ``next``.

        That signature proves the IdP rotated, so the unknown-kid cooldown does not apply
        (an attacker cannot forge it); a short floor still keeps a down IdP from being
        fetched on every request. Single-flight like every refresh.
        """
        if self._usable(kid):
            return True
        if self._inflight is None:
            now = self._clock.now()
            last = self._rotation_refresh_at
            if last is not None and now < last + ROTATION_REFRESH_FLOOR:
                return False
            self._rotation_refresh_at = now
        await self.refresh(reason="rotation")
        return self._usable(kid)

    def _usable(self, kid: KeyId) -> bool:
        """Known and in service: a key we hold as ``next`` has been rotated in at the IdP."""
        key = self._keys.get(kid)
        return key is not None and key.state is not KeyState.NEXT

    async def run_background_refresh(self) -> None:
        """Refresh forever: at the set's refresh time, or with backoff after a failure.

        Never raises a fetch error (the last good set stays served); stops when cancelled.
        """
        while True:
            await self._sleep(self._next_delay())
            try:
                await self.refresh(reason="scheduled")
            except NetworkError:
                continue  # logged and counted by the fetch; _next_delay backs off

    async def aclose(self) -> None:
        """Cancel a fetch in flight (at shutdown, before the shared session closes)."""
        task = self._inflight
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _next_delay(self) -> float:
        if self._failures:
            # jittered exponential backoff, capped at the refresh interval
            cap = min(self.refresh_interval, BACKOFF_BASE * 2.0 ** min(self._failures - 1, 30))
            return cap * (0.5 + 0.5 * self._rng.random())
        if self._last_refreshed is None:
            return 0.0
        interval = self.refresh_interval
        if self._max_age is not None:
            interval = min(interval, max(self._max_age, MIN_REFRESH_INTERVAL))
        return max(0.0, self._last_refreshed + interval - self._clock.now())

    def _flight_done(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have been cancelled meanwhile

    async def _refresh(self, reason: str) -> bool:
        try:
            # 1. discovery (once; again after any failure, in case the jwks_uri moved)
            jwks_uri = self._jwks_uri or await self._discover()
            self._jwks_uri = jwks_uri
            # 2. the JWKS, parsed strictly into a complete new snapshot
            keys, max_age = await self._fetch_jwks(jwks_uri)
        except NetworkError as exc:
            # 3a. failure: count it, keep the last good set
            self._failures += 1
            self._jwks_uri = None
            log.warning(
                "key set refresh failed; serving the last good set",
                extra={
                    "issuer": self.issuer,
                    "reason": reason,
                    "code": exc.code,
                    "cause": exc.log_detail,
                    "failures": self._failures,
                    "kids": len(self._keys),
                },
            )
            raise
        # 3b. success: swap the snapshot in one assignment
        changed = _fingerprint(keys) != _fingerprint(self._keys)
        self._keys = MappingProxyType(keys)
        self._max_age = max_age
        self._last_refreshed = self._clock.now()
        self._failures = 0
        log.log(
            logging.INFO if changed else logging.DEBUG,
            "key set refreshed",
            extra={"issuer": self.issuer, "reason": reason, "changed": changed, "kids": len(keys)},
        )
        return changed

    async def _discover(self) -> str:
        url = self.issuer.rstrip("/") + DISCOVERY_PATH
        document, _ = await self._get_json(url, _JSON_TYPES, what="discovery document")
        if not isinstance(document, dict):
            raise _fetch_failed("the discovery document is invalid", f"{url}: not a JSON object")
        if document.get("issuer") != self.issuer:
            raise NetworkError(
                "the discovery document names another issuer",
                code="keys.discovery_mismatch",
                log_detail=f"{url}: issuer {str(document.get('issuer'))[:200]!r}",
            )
        jwks_uri = document.get("jwks_uri")
        scheme = _http_scheme(jwks_uri)
        if scheme is None:
            raise _fetch_failed("the discovery document is invalid", f"{url}: bad jwks_uri")
        if _http_scheme(self.issuer) == "https" and scheme != "https":
            # no downgrade: keys for an https issuer never travel over plain http
            raise _fetch_failed("the discovery document is invalid", f"{url}: http jwks_uri")
        assert isinstance(jwks_uri, str)  # _http_scheme accepts only strings
        return jwks_uri

    async def _fetch_jwks(self, url: str) -> tuple[dict[KeyId, VerificationKey], float | None]:
        document, max_age = await self._get_json(url, _JWKS_TYPES, what="JWKS")
        try:
            keys = parse_jwks(document, node=self.node)
        except GatewayError as exc:
            raise _fetch_failed(
                "the issuer's key set is invalid", f"{url}: {exc.code}: {exc.detail}"
            ) from exc
        if not keys:
            # an issuer with no keys can sign nothing: a broken deploy, not a rotation
            raise _fetch_failed("the issuer's key set is invalid", f"{url}: no keys")
        return keys, max_age

    async def _get_json(
        self, url: str, content_types: frozenset[str], *, what: str
    ) -> tuple[Any, float | None]:
        """GET ``url``: 200, an allowed JSON type, at most ``max_bytes``, strict JSON."""
        timeout = aiohttp.ClientTimeout(total=self.fetch_timeout)
        failed = f"could not fetch the issuer's {what}"
        try:
            async with self._session.get(
                url,
                timeout=timeout,
                allow_redirects=False,
                headers={"Accept": "application/json"},
            ) as response:
                if response.status != 200:
                    raise _fetch_failed(failed, f"{url}: HTTP {response.status}")
                if response.content_type not in content_types:
                    raise _fetch_failed(
                        failed, f"{url}: content type {response.content_type[:100]!r}"
                    )
                length = response.content_length
                if length is not None and length > self.max_bytes:
                    raise _fetch_failed(failed, f"{url}: Content-Length {length}")
                body = await self._read_bounded(response)
                if body is None:
                    raise _fetch_failed(failed, f"{url}: body over {self.max_bytes} bytes")
                max_age = _max_age(response.headers.get("Cache-Control"))
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutError subclasses
            raise UpstreamTimeout(
                f"the issuer's {what} did not arrive in time",
                code="keys.fetch_timeout",
                log_detail=f"{url}: no answer within {self.fetch_timeout} s",
            ) from exc
        except aiohttp.ClientError as exc:
            raise _fetch_failed(failed, f"{url}: {type(exc).__name__}: {exc}") from exc
        try:
            return loads(body), max_age
        except GatewayError as exc:
            raise _fetch_failed(failed, f"{url}: {exc.code}: {exc.detail}") from exc

    async def _read_bounded(self, response: aiohttp.ClientResponse) -> bytes | None:
        """The body, or None as soon as it exceeds ``max_bytes`` (reads at most one more)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await response.content.read(self.max_bytes + 1 - size)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)


# --- validating with one refresh on an unknown kid ------------------------------------------


def _unverified_kid(token: str) -> KeyId | None:
    """The header's kid, read before verification, only to decide whether to refresh."""
    try:
        header_b64 = token.split(".", 1)[0]
        unverified_header = loads(b64url_decode(header_b64, max_length=MAX_HEADER_BYTES))
    except GatewayError:
        return None
    unverified_kid = unverified_header.get("kid") if isinstance(unverified_header, dict) else None
    return KeyId(unverified_kid) if isinstance(unverified_kid, str) else None


async def validate_with_refresh(
    validator: AccessTokenValidator, keys: RemoteKeySet, token: str, *, now: float
) -> AccessClaims:
    """Validate ``token``; on an unknown kid, or one we still hold as ``next`` (the IdP has
    rotated since our last fetch), refresh ``keys`` (cooldown) and retry once.

    If the refresh is refused by the cooldown, brings nothing, or fails (the IdP is down),
    the original :class:`TokenError` is raised: an unresolvable key authenticates no one.
    """
    try:
        return validator.validate(token, now=now)
    except TokenError as exc:
        if exc.code not in ("token.unknown_kid", "token.key_not_active"):
            raise
        unverified_kid = _unverified_kid(token)
        if unverified_kid is None:  # pragma: no cover - the verifier read a kid to get here
            raise
        refresh = (
            keys.refresh_for_rotation
            if exc.code == "token.key_not_active"
            else keys.refresh_for_unknown_kid
        )
        try:
            known = await refresh(unverified_kid)
        except NetworkError as network_error:
            log.warning(
                "could not refresh keys for an unknown kid",
                extra={"kid": unverified_kid, "code": network_error.code},
            )
            known = False
        if not known:
            raise
    return validator.validate(token, now=now)
