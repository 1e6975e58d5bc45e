"""Other nodes' status lists, fetched ahead of a verification and judged by the trust list.

A certificate's seal points at its status list by URI. Verification is synchronous
(:class:`gateway.certificates.verification.StatusResolver`), so the async caller first awaits
:meth:`RemoteStatuses.prefetch` for the URI, then verifies; :meth:`RemoteStatuses.status_of`
answers only from what was prefetched.

The URI comes from a document under verification, so it is attacker-controlled:

1. only ``<url of a node in the trust list>/v1/status-lists/<digits>`` is ever fetched (no
   SSRF: any other URI is refused without a request), and redirects are never followed;
2. the token must verify as a :data:`~gateway.certificates.status_list.STATUS_LIST_TYP`
   JWS against the trust list, with a key of the node that owns the URI
   (``status.wrong_node`` otherwise);
3. its claims must be a valid, unexpired list for that very URI
   (:func:`gateway.certificates.status_list.parse_status_list`).

A list is cached until the earliest of ``ttl``, its own ``ttl`` claim and its ``exp``. A
failure is remembered for :data:`FAILURE_TTL` seconds so a bad peer is not asked again on
every verification. Every failure is :class:`~gateway.errors.SealIndeterminate` (the status
cannot be judged; the certificate is not proven bad): ``status.unavailable`` (not
prefetched, not a trusted status URI, fetch failed, no trust list), ``status.<seal code>``
(the token's JWS was refused, e.g. ``status.bad_signature``), ``status.wrong_node``,
:func:`~gateway.certificates.status_list.parse_status_list`'s ``status.invalid`` /
``status.expired``, and the trust list's own ``trust.unavailable`` / ``trust.expired``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp

from gateway._internal.fetch import fetch_bounded
from gateway.certificates.status import CertStatus
from gateway.certificates.status_list import (
    STATUS_LIST_MEDIA_TYPE,
    STATUS_LIST_TYP,
    StatusList,
    parse_status_list,
)
from gateway.certificates.verification import StatusRef, statuses_one_by_one
from gateway.clock import Clock
from gateway.crypto.seals import MAX_SEAL_BYTES, verify_compact
from gateway.errors import (
    GatewayError,
    NetworkError,
    SealError,
    SealIndeterminate,
    VerificationError,
)
from gateway.ids import NodeId
from gateway.trust.trust_list import TrustListResolver

log = logging.getLogger("gateway.federation.remote_status")

FAILURE_TTL: Final = 5.0
"""Seconds a failed fetch is remembered before the URI may be fetched again."""
MAX_ENTRIES: Final = 1024
"""Most URIs held at once (lists and remembered failures)."""

_STATUS_URI: Final = re.compile(
    r"(https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?)/v1/status-lists/([0-9]{1,9})"
)
_MEDIA_TYPES: Final = frozenset({STATUS_LIST_MEDIA_TYPE, "application/jwt"})

TrustSource = Callable[[float], TrustListResolver]


@dataclass(frozen=True, slots=True)
class _Entry:
    until: float
    status_list: StatusList | None = None
    error: tuple[str, str, str | None] | None = None
    """A remembered failure: code, detail, log detail."""


def _indeterminate(detail: str, code: str, log_detail: str | None = None) -> SealIndeterminate:
    error = SealIndeterminate(detail, code=code, log_detail=log_detail)
    error.step = "status"
    return error


class RemoteStatuses:
    """A :class:`gateway.certificates.verification.StatusResolver` over status lists prefetched
    over HTTP.

    ``trust`` gives the trust list's resolver at a time (e.g. :meth:`TrustSync.resolver`);
    ``session`` is the node's one shared client session (never created or closed here).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        trust: TrustSource,
        *,
        clock: Clock,
        ttl: float = 60,
        fetch_timeout: float = 2.0,
        max_bytes: int = MAX_SEAL_BYTES,
    ) -> None:
        self._session = session
        self._trust = trust
        self._clock = clock
        self.ttl = ttl
        self.fetch_timeout = fetch_timeout
        self.max_bytes = max_bytes
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Task[None]] = {}

    # -- the resolver (synchronous) --------------------------------------------------------

    def status_of(self, uri: str, index: int) -> CertStatus:
        """The status at ``index`` of the prefetched list at ``uri``; raises SealIndeterminate."""
        now = self._clock.now()
        entry = self._entries.get(uri)
        if entry is None or now >= entry.until:
            raise _indeterminate(
                "the certificate's status list is not available",
                "status.unavailable",
                log_detail=f"{uri[:200]!r} not prefetched or no longer fresh",
            )
        if entry.error is not None:
            code, detail, log_detail = entry.error
            raise _indeterminate(detail, code, log_detail)
        assert entry.status_list is not None  # an entry holds a list or an error
        return entry.status_list.status(index)

    def statuses_of(self, refs: Sequence[StatusRef]) -> list[CertStatus | VerificationError]:
        return statuses_one_by_one(self, refs)

    # -- fetching --------------------------------------------------------------------------

    async def prefetch(self, uri: str) -> None:
        """Make ``uri``'s list (or why it cannot be had) available to :meth:`status_of`.

        Never raises for a refused or failed list; concurrent calls for one URI share a fetch.
        """
        entry = self._entries.get(uri)
        if entry is not None and self._clock.now() < entry.until:
            return
        task = self._inflight.get(uri)
        if task is None:
            task = asyncio.create_task(self._prefetch(uri), name=f"status-list {uri[:100]}")
            self._inflight[uri] = task
            task.add_done_callback(lambda done: self._flight_done(uri, done))
        await asyncio.shield(task)

    async def aclose(self) -> None:
        """Cancel fetches in flight (at shutdown, before the shared session closes)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _flight_done(self, uri: str, task: asyncio.Task[None]) -> None:
        if self._inflight.get(uri) is task:
            del self._inflight[uri]
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have been cancelled meanwhile

    async def _prefetch(self, uri: str) -> None:
        try:
            status_list = await self._fetch(uri)
        except SealError as exc:
            log.warning(
                "status list unavailable",
                extra={"uri": uri[:200], "code": exc.code, "cause": exc.log_detail},
            )
            until = self._clock.now() + min(FAILURE_TTL, self.ttl)
            self._store(uri, _Entry(until=until, error=(exc.code, exc.detail, exc.log_detail)))
            return
        now = self._clock.now()
        assert status_list.exp is not None  # parse_status_list requires exp
        limits = [now + self.ttl, float(status_list.exp)]
        if status_list.ttl is not None:
            limits.append(now + status_list.ttl)
        self._store(uri, _Entry(until=min(limits), status_list=status_list))

    def _store(self, uri: str, entry: _Entry) -> None:
        if uri not in self._entries and len(self._entries) >= MAX_ENTRIES:
            now = self._clock.now()
            for stale in [u for u, e in self._entries.items() if now >= e.until]:
                del self._entries[stale]
            if len(self._entries) >= MAX_ENTRIES:
                del self._entries[min(self._entries, key=lambda u: self._entries[u].until)]
        self._entries[uri] = entry

    async def _fetch(self, uri: str) -> StatusList:
        now = self._clock.now()
        # 1. the trust list names the node that owns this URI; nothing else is ever fetched
        match = _STATUS_URI.fullmatch(uri) if isinstance(uri, str) else None
        if match is None:
            raise _indeterminate(
                "the certificate's status list is not available",
                "status.unavailable",
                log_detail=f"not a status list URI: {uri[:200]!r}",
            )
        resolver = self._trust(now)  # trust.unavailable / trust.expired: SealIndeterminate
        owner = _owner(resolver, match.group(1))
        if owner is None:
            raise _indeterminate(
                "the certificate's status list is not available",
                "status.unavailable",
                log_detail=f"no trusted node at {match.group(1)[:200]!r}",
            )
        # 2. fetch: bounded, no redirects
        try:
            body = await fetch_bounded(
                self._session,
                uri,
                fetch_timeout=self.fetch_timeout,
                max_bytes=self.max_bytes,
                content_types=_MEDIA_TYPES,
                accept=STATUS_LIST_MEDIA_TYPE,
                code_prefix="status",
            )
            token = body.decode("ascii").strip()
        except (NetworkError, UnicodeDecodeError) as exc:
            cause = exc.log_detail if isinstance(exc, GatewayError) else "body not ASCII"
            raise _indeterminate(
                "the certificate's status list is not available",
                "status.unavailable",
                log_detail=f"fetch failed: {cause}",
            ) from exc
        # 3. the JWS: typ pinned, a key the trust list holds, of the node owning the URI
        now = self._clock.now()
        try:
            verified = verify_compact(token, resolver, typ=STATUS_LIST_TYP, now=now)
        except SealError as exc:
            suffix = exc.code.partition(".")[2] or "invalid"
            raise _indeterminate(
                f"the status list token was refused: {exc.detail}",
                f"status.{suffix}",
                log_detail=exc.log_detail,
            ) from exc
        if verified.node != owner:
            raise _indeterminate(
                "the status list is signed by another node than the one serving it",
                "status.wrong_node",
                log_detail=f"signed by {verified.node!r}, served by {owner!r}",
            )
        # 4. the claims: this very URI, not expired, a well-formed list
        return parse_status_list(verified.payload, uri=uri, now=now)


def _owner(resolver: TrustListResolver, origin: str) -> NodeId | None:
    for node in resolver.nodes():
        if node.url.rstrip("/") == origin:
            return node.id
    return None
