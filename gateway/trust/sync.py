"""Every node's copy of the federation trust list, kept fresh from ``national`` over HTTP.

:class:`TrustSync` wraps a :class:`gateway.trust.trust_list.TrustListCache` (the verified
list, kept on disk) and fills it from ``<national>/v1/trust-list``. The cache exists once the
federation root's public key can be read (:func:`gateway.trust.rootkey.load_root_public`);
until then there is nothing to pin a list to, :attr:`TrustSync.cache` is None and every
seal is judged ``trust.unavailable``.

A refresh never makes things worse: a failed fetch (``trust.fetch_failed``,
``trust.fetch_timeout``) or a list the cache refuses (bad signature, older ``seq``, a fork,
expired) is logged and the current list stays. ``national`` itself feeds each list it
publishes straight in with :meth:`TrustSync.offer_local`.

:func:`gateway._internal.fetch.fetch_bounded` is the one bounded GET every fetcher of a
peer's document shares: a total timeout, no redirects, an allowed content type, at most
``max_bytes`` of body.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import aiohttp

from gateway._internal.fetch import fetch_bounded
from gateway.clock import Clock
from gateway.config import Federation
from gateway.crypto.seals import MAX_SEAL_BYTES
from gateway.errors import (
    GatewayError,
    KeyStoreError,
    NetworkError,
    RootKeyMissing,
    SealError,
    SealIndeterminate,
    StorageError,
)
from gateway.trust.rootkey import load_root_public
from gateway.trust.trust_list import TrustList, TrustListCache, TrustListResolver

log = logging.getLogger("gateway.trust.sync")

TRUST_LIST_PATH: Final = "/v1/trust-list"
TRUST_LIST_MEDIA_TYPES: Final = frozenset({"application/jwt", "text/plain"})
SHORT_INTERVAL: Final = 1.0
"""Seconds between attempts while there is no list, or the current one is due a refresh."""
LONG_INTERVAL: Final = 3.0
"""Seconds between checks while the current list is fresh: one small GET, and how quickly a
republished list (a node enrolled, a key changed state) reaches every node."""

Sleep = Callable[[float], Awaitable[None]]


def _unavailable() -> SealIndeterminate:
    error = SealIndeterminate(
        "no trust list is available",
        code="trust.unavailable",
        log_detail="no federation root public key yet",
    )
    error.step = "time"
    return error


class TrustSync:
    """A node's trust list: the cache, its refresh from ``national`` and its background loop.

    ``session`` is the node's one shared client session (never created or closed here).
    """

    def __init__(
        self,
        federation: Federation,
        session: aiohttp.ClientSession,
        *,
        clock: Clock,
        cache_path: Path,
        keys_dir: Path,
        national_url: str,
        fetch_timeout: float = 2.0,
    ) -> None:
        self.federation = federation
        self.fetch_timeout = fetch_timeout
        self.url = national_url.rstrip("/") + TRUST_LIST_PATH
        self._session = session
        self._clock = clock
        self._cache_path = cache_path
        self._keys_dir = keys_dir
        self._cache: TrustListCache | None = None
        self.on_change: Callable[[int, int | None], Awaitable[None]] | None = None
        """Awaited with (new seq, previous seq) whenever a newer list becomes current."""
        self._open_cache()

    @property
    def cache(self) -> TrustListCache | None:
        """The verified list's cache; None until the root public key file exists."""
        return self._cache

    @property
    def token(self) -> str | None:
        """The current signed list as received, for ``GET /v1/trust-list``; None if none."""
        return None if self._cache is None else self._cache.token

    def resolver(self, now: float) -> TrustListResolver:
        """A key resolver over the current list: ``trust.unavailable`` / ``trust.expired``."""
        if self._cache is None:
            raise _unavailable()
        return self._cache.resolver(now)

    def needs_refresh(self, now: float) -> bool:
        return self._cache is None or self._cache.needs_refresh(now)

    async def offer_local(self, token: str) -> TrustList:
        """Make a list ``national`` just published current, without HTTP.

        Raises as :meth:`TrustListCache.offer` does (a list national itself signed must
        verify), or :class:`KeyStoreError` ``keys.root_missing`` without a root key file.
        """
        cache = self._open_cache()
        if cache is None:
            raise RootKeyMissing("no federation root public key")
        before = cache.seq
        trust_list = cache.offer(token, now=self._clock.now())
        if trust_list.seq != before and self.on_change is not None:
            await self.on_change(trust_list.seq, before)
        return trust_list

    async def refresh(self) -> bool:
        """Fetch the list from ``national`` and offer it. True if a newer list became current.

        Never raises for a failed fetch or a refused list: it is logged, the current list stays.
        """
        cache = self._open_cache()
        if cache is None:
            return False
        before = cache.seq
        try:
            body = await fetch_bounded(
                self._session,
                self.url,
                fetch_timeout=self.fetch_timeout,
                max_bytes=MAX_SEAL_BYTES + 2,
                content_types=TRUST_LIST_MEDIA_TYPES,
                accept="application/jwt, text/plain",
                code_prefix="trust",
            )
            try:
                token = body.decode("ascii").strip()
            except UnicodeDecodeError as exc:
                raise NetworkError(
                    "the fetch failed", code="trust.fetch_failed", log_detail="body not ASCII"
                ) from exc
            trust_list = cache.offer(token, now=self._clock.now())
        except (NetworkError, SealError, StorageError) as exc:
            log.warning(
                "trust list refresh failed; keeping the current list",
                extra={"url": self.url, "code": exc.code, "cause": exc.log_detail, "seq": before},
            )
            return False
        changed = trust_list.seq != before
        if changed:
            log.info("trust list updated", extra={"seq": trust_list.seq, "previous": before})
            if self.on_change is not None:
                await self.on_change(trust_list.seq, before)
        return changed

    async def run(self, sleep: Sleep = asyncio.sleep) -> None:
        """Refresh forever: every :data:`SHORT_INTERVAL` while there is no list or it is due a
        refresh, else every :data:`LONG_INTERVAL`. Stops when cancelled."""
        while True:
            await self.refresh()
            due = self.needs_refresh(self._clock.now())
            await sleep(SHORT_INTERVAL if due else LONG_INTERVAL)

    def _open_cache(self) -> TrustListCache | None:
        """The cache, created once the root public key is readable."""
        if self._cache is not None:
            return self._cache
        try:
            root = load_root_public(self._keys_dir)
        except KeyStoreError as exc:
            level = logging.DEBUG if isinstance(exc, RootKeyMissing) else logging.WARNING
            log.log(level, "no usable federation root key yet", extra={"code": exc.code})
            return None
        now = self._clock.now()
        try:
            self._cache = TrustListCache(root, path=self._cache_path, now=now)
        except GatewayError as exc:
            # a saved list that no longer verifies (another root, a damaged file): set it
            # aside for inspection and start empty rather than refuse to start
            aside = self._cache_path.with_name(self._cache_path.name + ".rejected")
            log.warning(
                "the saved trust list is unusable; set aside",
                extra={"code": exc.code, "cause": exc.log_detail, "path": str(aside)},
            )
            try:
                os.replace(self._cache_path, aside)
            except OSError as move_error:
                raise StorageError(
                    "cannot set the saved trust list aside",
                    code="trust.storage",
                    log_detail=str(move_error),
                ) from move_error
            self._cache = TrustListCache(root, path=self._cache_path, now=now)
        return self._cache
