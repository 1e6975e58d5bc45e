"""``create_app``: one regional node as an aiohttp application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from gateway.auth import Authenticator, DevelopmentAuthenticator
from gateway.http.appkeys import EXECUTOR, NODE, OPENAPI
from gateway.http.handlers import ROUTES
from gateway.http.middleware import (
    auth_middleware,
    metrics_middleware,
    problem_middleware,
    request_id_middleware,
)
from gateway.http.openapi import build_openapi
from gateway.node import NodeService

AIOHTTP_MAX_FIELD_SIZE = 8190
"""aiohttp's default bound on one header line; its parser answers a bare 400 beyond it."""
HEADER_HEADROOM = 1024
"""Room above ``max_token_bytes`` so the gateway, not the HTTP parser, refuses a long token."""


def create_app(node: NodeService, *, authenticator: Authenticator | None = None) -> web.Application:
    """The HTTP application of one node. The app owns ``node`` and closes it on cleanup."""
    limits = node.federation.limits
    authenticator = authenticator or DevelopmentAuthenticator(
        node.federation.development, node.node.id
    )
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
            auth_middleware(authenticator, max_token_bytes=limits.max_token_bytes),
        ],
    )
    app[NODE] = node
    app[OPENAPI] = build_openapi(node)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tongban-writer")
    app[EXECUTOR] = executor
    yield
    executor.shutdown(wait=True)
    app[NODE].close()
