"""What every Tongban HTTP application shares: JSON in and out, and the server's own bounds."""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import web

from gateway._internal.wire import JsonLimits
from gateway.config import Limits

JSON: Final = "application/json"
PARSER_CEILING_BYTES: Final = 65_536
"""What aiohttp's parser reads of a request line or a header line at most. The gateway's own
bounds (``max_request_line_bytes``, ``max_header_bytes``) are lower and refused with
problem+json (:func:`gateway.http.middleware.size_middleware`); only a line longer than this
ceiling still gets the parser's bare 400."""


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
    """aiohttp's request-handler settings: request and header lines read up to a ceiling well
    above the gateway's own bounds (so the gateway, not the parser, refuses them, as
    problem+json), and (unless ``decompress``) compressed bodies refused (415), never
    inflated: no decompression bombs, and no decoding failures answered outside
    problem+json."""
    ceiling = max(PARSER_CEILING_BYTES, limits.max_request_line_bytes, limits.max_header_bytes)
    args: dict[str, Any] = {"max_line_size": ceiling, "max_field_size": ceiling}
    if not decompress:
        args["auto_decompress"] = False
    return args
