"""Notifications to departmental systems: CloudEvents 1.0 over HTTP, signed, at least once.

A case's transition owes each subscribed department of this node a CloudEvent (structured
mode, ``application/cloudevents+json``), written in the same transaction as the transition
(:mod:`gateway.storage.cases`). :class:`WebhookSender` POSTs them, oldest first, each with a
``Tongban-Signature`` header: a compact JWS (``typ`` ``webhook+jws``) by this node's seal key
over the body's SHA-256, the subscriber's URL, the event id and the time, which the
subscriber verifies with the node's JWKS (``/.well-known/jwks.json``). A 2xx answer removes
the delivery; anything else is retried with backoff (doubling, with jitter) up to
:data:`MAX_ATTEMPTS`, so a subscriber may see an event more than once and de-duplicates it by
its ``id``, the case event's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Callable
from typing import Final

import aiohttp
import orjson

from gateway._internal.wire import b64url_encode
from gateway.clock import Clock
from gateway.crypto.seals import Signer, sign_compact
from gateway.federation.resilience import backoff
from gateway.storage.cases import Delivery, SqlCaseStore

log = logging.getLogger("gateway.federation.webhooks")

SIGNATURE_HEADER: Final = "Tongban-Signature"
WEBHOOK_TYP: Final = "webhook+jws"
CONTENT_TYPE: Final = "application/cloudevents+json"
MAX_ATTEMPTS: Final = 12
POLL_SECONDS: Final = 1.0


def sign_delivery(
    signer: Signer, *, node: str, url: str, event_id: str, body: bytes, now: float
) -> str:
    claims = {
        "iss": node,
        "aud": url,
        "iat": int(now),
        "jti": event_id,
        "digest": b64url_encode(hashlib.sha256(body).digest()),
    }
    return sign_compact(signer, orjson.dumps(claims), typ=WEBHOOK_TYP, signed_at=now)


class WebhookSender:
    """Delivers the case store's owed notifications for as long as the node runs."""

    def __init__(
        self,
        store: SqlCaseStore,
        session: aiohttp.ClientSession,
        *,
        node: str,
        signer: Callable[[], Signer],
        clock: Clock,
        timeout: float,
        retry: tuple[float, float] = (0.5, 30.0),
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._session = session
        self._node = node
        self._signer = signer
        self._clock = clock
        self._timeout = timeout
        self._retry = retry
        """(first pause, longest pause) between tries, from ``[network]``."""
        self._rng = rng or random.Random()
        self._due = asyncio.Event()

    def due(self) -> None:
        self._due.set()

    async def run(self) -> None:
        while True:
            await self.deliver_due()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
            # cancellation that comes as due() wakes it, and the node's shutdown then waits
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await self._due.wait()
            self._due.clear()

    async def deliver_due(self) -> int:
        """One pass over the deliveries whose time has come; returns how many succeeded."""
        done = 0
        for delivery in await asyncio.to_thread(self._store.due_deliveries, self._clock.now()):
            if await self._post(delivery):
                await asyncio.to_thread(self._store.delivered, delivery.seq)
                done += 1
                continue
            base, most = self._retry
            delay = backoff(delivery.attempts, self._rng, base=base, most=most)
            kept = await asyncio.to_thread(
                self._store.retry_delivery,
                delivery.seq,
                next_at=self._clock.now() + delay,
                give_up_after=MAX_ATTEMPTS,
            )
            if not kept:
                log.error(
                    "a webhook delivery was given up",
                    extra={"subscription": delivery.subscription, "event": delivery.event_id},
                )
        return done

    async def _post(self, delivery: Delivery) -> bool:
        signature = sign_delivery(
            self._signer(),
            node=self._node,
            url=delivery.url,
            event_id=delivery.event_id,
            body=delivery.body,
            now=self._clock.now(),
        )
        headers = {"Content-Type": CONTENT_TYPE, SIGNATURE_HEADER: signature}
        try:
            async with self._session.post(
                delivery.url,
                data=delivery.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,
            ) as response:
                await response.content.read(4096)
                return 200 <= response.status < 300
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return False
