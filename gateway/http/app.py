"""``create_app``: one regional node as an aiohttp application."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from gateway.clock import Clock
from gateway.http.appkeys import LINKS, NODE, OPENAPI
from gateway.http.cases import CASE_ROUTES
from gateway.http.handlers import ROUTES
from gateway.http.middleware import (
    AUTHENTICATOR,
    auth_middleware,
    metrics_middleware,
    problem_middleware,
    request_id_middleware,
    size_middleware,
)
from gateway.http.openapi import build_openapi
from gateway.http.responses import handler_args
from gateway.server.node import linked
from gateway.services.node import NodeService
from gateway.sso.auth import Authenticator


def create_app(
    node: NodeService,
    *,
    authenticator: Authenticator | None = None,
    clock: Clock | None = None,
) -> web.Application:
    """The HTTP application of one node. The app owns ``node`` and closes it on cleanup.

    At start-up :func:`gateway.server.node.linked` (the composition root) builds the node's
    links to the federation on one ``ClientSession``; they stop at shutdown. Without an
    ``authenticator`` the node validates the federation IdP's access tokens with the IdP's
    published keys, which also verify consent grants.
    """
    limits = node.federation.limits
    app = web.Application(
        client_max_size=limits.max_body_bytes,
        handler_args=handler_args(limits),
        middlewares=[
            request_id_middleware,
            problem_middleware(node.metrics),
            size_middleware(limits),
            metrics_middleware(node.metrics),
            auth_middleware(max_token_bytes=limits.max_token_bytes),
        ],
    )
    app[NODE] = node
    app[OPENAPI] = build_openapi(node)
    for method, path, handler in (*ROUTES, *CASE_ROUTES):
        app.router.add_route(method, path, handler)
    app.cleanup_ctx.append(_running(node, clock or node.clock, authenticator))
    return app


def _running(
    node: NodeService, clock: Clock, authenticator: Authenticator | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def running(app: web.Application) -> AsyncIterator[None]:
        try:
            async with linked(node, clock=clock, authenticator=authenticator) as links:
                app[LINKS] = links
                app[AUTHENTICATOR] = links.authenticator
                yield
        finally:
            node.close()

    return running
