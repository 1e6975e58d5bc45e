"""What every Tongban HTTP application shares: JSON in and out, and the server's own bounds."""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import web

from gateway._internal.wire import JsonLimits
from gateway.config import Limits

JSON: Final = "application/json"
AIOHTTP_MAX_FIELD_SIZE: Final = 8190
"""aiohttp's default bound on one header line; its parser answers a bare 400 beyond it."""
HEADER_HEADROOM: Final = 1024
"""Room above ``max_token_bytes`` so the gateway, not the HTTP parser, refuses a long token."""


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON, headers=headers)


def json_limits(limits: Limits) -> JsonLimits:
    """The strict JSON parser's bounds for a request body, from the federation's limits."""
    return JsonLimits(
        max_depth=limits.max_json_depth,
        max_string=limits.max_string_length,
        max_members=limits.max_json_members,
    )


def handler_args(limits: Limits, *, decompress: bool = False) -> dict[str, Any]:
    """aiohttp's request-handler settings: header lines long enough for the longest accepted
    token, and (unless ``decompress``) compressed bodies refused (415), never inflated: no
    decompression bombs, and no decoding failures answered outside problem+json."""
    args: dict[str, Any] = {
        "max_field_size": max(AIOHTTP_MAX_FIELD_SIZE, limits.max_token_bytes + HEADER_HEADROOM)
    }
    if not decompress:
        args["auto_decompress"] = False
    return args
