"""``create_app``: one regional node as an aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import aiohttp
from aiohttp import web

from gateway.auth import Authenticator
from gateway.clock import Clock
from gateway.http.appkeys import EXECUTOR, NODE, OPENAPI, SESSION
from gateway.http.handlers import ROUTES
from gateway.http.middleware import (
    AUTHENTICATOR,
    auth_middleware,
    metrics_middleware,
    problem_middleware,
    request_id_middleware,
)
from gateway.http.openapi import build_openapi
from gateway.idp import idp_issuer
from gateway.ids import NodeId
from gateway.keycache import RemoteKeySet
from gateway.node import NodeService
from gateway.sso import NodeAuthenticator

AIOHTTP_MAX_FIELD_SIZE = 8190
"""aiohttp's default bound on one header line; its parser answers a bare 400 beyond it."""
HEADER_HEADROOM = 1024
"""Room above ``max_token_bytes`` so the gateway, not the HTTP parser, refuses a long token."""


def create_app(
    node: NodeService,
    *,
    authenticator: Authenticator | None = None,
    clock: Clock | None = None,
) -> web.Application:
    """The HTTP application of one node. The app owns ``node`` and closes it on cleanup.

    Without an ``authenticator`` the node validates the federation IdP's access tokens with a
    :class:`gateway.keycache.RemoteKeySet` on one shared ``ClientSession``, both created at
    start-up and closed at shutdown; the same keys verify consent grants.
    """
    limits = node.federation.limits
    app = web.Application(
        client_max_size=limits.max_body_bytes,
        handler_args={
            "max_field_size": max(AIOHTTP_MAX_FIELD_SIZE, limits.max_token_bytes + HEADER_HEADROOM),
            # Compressed request bodies are refused (415), never inflated: no decompression
            # bombs, and no decoding failures answered by aiohttp's parser outside problem+json.
            "auto_decompress": False,
        },
        middlewares=[
            request_id_middleware,
            problem_middleware(node.metrics),
            metrics_middleware(node.metrics),
            auth_middleware(max_token_bytes=limits.max_token_bytes),
        ],
    )
    app[NODE] = node
    app[OPENAPI] = build_openapi(node)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.cleanup_ctx.append(_lifecycle)
    if authenticator is not None:
        app[AUTHENTICATOR] = authenticator
    else:
        app.cleanup_ctx.append(_sso(clock or node.clock))
    return app


def _sso(clock: Clock) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        node = app[NODE]
        federation = node.federation
        issuer = idp_issuer(federation)
        timeout = aiohttp.ClientTimeout(total=federation.limits.request_timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            keys = RemoteKeySet(issuer, session, clock=clock, node=NodeId("idp"))
            app[SESSION] = session
            app[AUTHENTICATOR] = NodeAuthenticator.for_federation(
                federation, keys, clock=clock, issuer=issuer
            )
            node.use_idp_keys(keys)
            # The first load happens in the background loop: a node may start before its IdP.
            refresher = asyncio.create_task(keys.run_background_refresh())
            try:
                yield
            finally:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
                await keys.aclose()

    return lifecycle


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tongban-writer")
    app[EXECUTOR] = executor
    yield
    executor.shutdown(wait=True)
    app[NODE].close()
