"""The reference server of figure A: a bare aiohttp handler returning fixed bytes.

``python -m bench.bare PORT BODY_FILE``: same framework, same event loop policy (uvloop when
the gateway uses it), no middleware, no token, no database.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from aiohttp import web


def main(argv: list[str]) -> None:
    port, body = int(argv[0]), Path(argv[1]).read_bytes()

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/certificates/{id}", handler)
    app.router.add_get("/healthz", handler)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=lambda _m: None)


if __name__ == "__main__":
    main(sys.argv[1:])
