"""What a node sends to its peers: one signed, bounded, retried outbound client.

Every request a node makes to another node goes through :class:`PeerClient` (X-Road's client
proxy; Synapse's ``federation_client``), so the rules are written once:

- a POST carries this node's hop proof (:func:`gateway.federation.hops.sign_hop`) over its
  exact bytes, and the caller's token and consent grant when it acts for one;
- every call has a deadline (:class:`~gateway.federation.resilience.Deadline`); idempotent
  calls are retried with jitter inside it, and a peer that keeps failing is cut off by its
  circuit breaker and probed back in;
- no answer is read past :attr:`gateway.config.Network.max_answer_bytes`; a GET of a
  peer's public document goes through :func:`gateway._internal.fetch.fetch_bounded` with
  :attr:`gateway.config.Network.fetch_timeout_seconds`;
- failures name the hop (``hop zhuji→shaoxing: unreachable``); a peer's own 4xx refusal
  comes back as :class:`UpstreamProblem` with its status and code.

Every number comes from the federation file's ``[network]`` table (:class:`Network`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import urlencode

import aiohttp
import orjson

from gateway._internal.fetch import fetch_bounded
from gateway.clock import Clock
from gateway.config import Federation
from gateway.crypto.seals import Signer
from gateway.errors import GatewayError, NetworkError
from gateway.federation.hops import HOP_HEADER, sign_hop
from gateway.federation.resilience import (
    Breakers,
    Deadline,
    RetryPolicy,
    call_with_retries,
)
from gateway.ids import NodeId
from gateway.sso.consent import CONSENT_HEADER

JSON_TYPES: Final = frozenset({"application/json"})

Sleep = Callable[[float], Awaitable[None]]


class UpstreamProblem(GatewayError):
    """A peer's own refusal (4xx problem+json), relayed with its status and code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail, code=code)
        self.status = status
        self.title = "Refused by the holding region"


class PeerClient:
    """This node's one outbound client to the other nodes of its federation.

    Lives as long as the node serves: one ``ClientSession``, one breaker per peer, the
    retry policy and the deadline budget, all from the federation file.
    """

    def __init__(
        self,
        me: NodeId,
        federation: Federation,
        session: aiohttp.ClientSession,
        *,
        signer: Callable[[], Signer],
        clock: Clock,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        network = federation.network
        self.me = me
        self._federation = federation
        self._session = session
        self._signer = signer
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._budget = federation.limits.request_timeout_seconds
        self._fetch_timeout = network.fetch_timeout_seconds
        self._max_answer = network.max_answer_bytes
        self._policy = RetryPolicy(
            attempts=network.retry_attempts,
            base_delay=network.retry_base_delay_seconds,
            max_delay=network.retry_max_delay_seconds,
        )
        self.breakers = Breakers(
            clock=clock,
            failure_threshold=network.breaker_failures,
            open_seconds=network.breaker_open_seconds,
        )

    def deadline(self) -> Deadline:
        """A fresh deadline of the node's whole request budget."""
        return Deadline(self._budget, self._clock)

    def url(self, peer: NodeId, path: str) -> str:
        return self._federation.url(peer) + path

    async def post(
        self,
        peer: NodeId,
        path: str,
        body: bytes,
        *,
        deadline: Deadline | None = None,
        bearer: str | None = None,
        consent: str | None = None,
    ) -> dict[str, Any]:
        """POST ``body`` to ``peer`` under this node's hop proof; the answer's JSON object.

        Retried (node-to-node POSTs are idempotent: a fetch, a catalog entry ordered by its
        status event, a key change national applies once) within ``deadline`` (default: the
        whole budget). Raises :class:`NetworkError` naming the hop, or :class:`UpstreamProblem`.
        """
        url = self.url(peer, path)

        async def attempt(budget: float) -> dict[str, Any]:
            headers = {
                "Content-Type": "application/json",
                HOP_HEADER: sign_hop(
                    self._signer(),
                    node=self.me,
                    audience=peer,
                    method="POST",
                    path=path,
                    body=body,
                    now=self._clock.now(),
                ),
            }
            if bearer is not None:
                headers["Authorization"] = f"Bearer {bearer}"
            if consent is not None:
                headers[CONSENT_HEADER] = consent
            return await self._post(url, body, headers, budget, peer)

        return await call_with_retries(
            attempt,
            deadline=deadline or self.deadline(),
            policy=self._policy,
            breaker=self.breakers.for_peer(peer),
            idempotent=True,
            sleep=self._sleep,
            rng=self._rng,
            peer=peer,
            source=self.me,
        )

    async def get(
        self,
        peer: NodeId,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        content_types: frozenset[str] = JSON_TYPES,
        accept: str = "application/json",
        max_bytes: int | None = None,
        code_prefix: str = "network",
    ) -> bytes:
        """GET one of ``peer``'s public documents: a 200 of an allowed type, at most
        ``max_bytes`` (default: the network's answer cap), within the fetch timeout."""
        url = self.url(peer, path)
        if params:
            url = f"{url}?{urlencode(params)}"
        return await fetch_bounded(
            self._session,
            url,
            fetch_timeout=self._fetch_timeout,
            max_bytes=min(max_bytes or self._max_answer, self._max_answer),
            content_types=content_types,
            accept=accept,
            code_prefix=code_prefix,
        )

    async def _post(
        self, url: str, body: bytes, headers: Mapping[str, str], budget: float, peer: NodeId
    ) -> dict[str, Any]:
        # details name no hop: call_with_retries names it once, for every failure
        try:
            async with self._session.post(
                url,
                data=body,
                headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=budget),
                allow_redirects=False,
            ) as response:
                raw = await response.content.read(self._max_answer + 1)
                status = response.status
        except TimeoutError as exc:
            raise NetworkError("timed out", code="network.timeout") from exc
        except aiohttp.ClientError as exc:
            raise NetworkError("unreachable", code="network.unreachable") from exc
        if len(raw) > self._max_answer:
            raise NetworkError(
                f"answered more than {self._max_answer} bytes", code="network.answer_too_large"
            )
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise NetworkError(f"answered {status} without JSON") from exc
        if status in (200, 201) and isinstance(answer, dict):
            return answer
        if isinstance(answer, dict) and isinstance(answer.get("code"), str) and status < 500:
            raise UpstreamProblem(status, answer["code"], str(answer.get("detail", "")))
        if isinstance(answer, dict) and str(answer.get("code", "")).startswith("network."):
            # a hop further down failed; relay its verdict (it names the hop) unchanged
            raise UpstreamProblem(status, answer["code"], str(answer.get("detail", "")))
        raise NetworkError(f"answered {status}", code="network.bad_gateway")
