"""The reference servers: bare aiohttp handlers that do nothing a gateway does.

``python -m bench.bare PORT BODY_FILE``: figure A's reference, a handler returning fixed
bytes; same framework, same event loop policy (uvloop when the gateway uses it), no
middleware, no token, no database.

``python -m bench.bare PORT BODY_FILE NEXT_URL``: one link of figure C's reference chain.
Every request is forwarded to ``NEXT_URL`` with aiohttp's client (one session, kept-alive
connections, as a node forwards a routed fetch), with its bearer token and consent header;
the answer's bytes are returned as they came. A chain of these, ending in a server of the
first kind, is what a routed fetch costs the framework alone: aiohttp's server and client at
every hop, on the same cores, with no hop proof, no token or consent check, no audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

FORWARDED = ("Authorization", "Tongban-Consent")
"""The headers a link passes on (a node forwards the caller's token and consent grant)."""
SESSION = web.AppKey("session", aiohttp.ClientSession)


def app(body: bytes, next_url: str | None = None) -> web.Application:
    """The bare server: ``body`` for every request, or what ``next_url`` answers."""

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def forward(request: web.Request, url: str) -> web.Response:
        # a GET starts the chain: like a node, its first hop turns it into a POST whose
        # body names the request; a POST (from a link before) is passed on as it came
        if request.method == "POST":
            data = await request.read()
        else:
            data = orjson.dumps({"path": request.path_qs})
        headers = {"Content-Type": "application/json"}
        headers.update({h: request.headers[h] for h in FORWARDED if h in request.headers})
        async with request.app[SESSION].post(url, data=data, headers=headers) as response:
            answered = await response.read()
            status = response.status
        return web.Response(body=answered, status=status, content_type="application/json")

    async def session(application: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as client:
            application[SESSION] = client
            yield

    application = web.Application()
    handler: Callable[[web.Request], Awaitable[web.Response]] = answer
    if next_url is not None:
        handler = functools.partial(forward, url=next_url)
        application.cleanup_ctx.append(session)
    application.router.add_get("/v1/certificates/{id}", handler)
    application.router.add_post("/v1/relay", handler)
    application.router.add_get("/healthz", answer)
    return application


def main(argv: list[str]) -> None:
    port, body = int(argv[0]), Path(argv[1]).read_bytes()
    next_url = argv[2] if len(argv) > 2 else None
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        app(body, next_url),
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=lambda _m: None,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
