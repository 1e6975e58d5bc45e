"""The middlewares every node runs, outermost first.

1. request id: accept a sane ``X-Request-Id`` or mint one; echo it; put it in the logs.
2. problems: the ONE place that maps :class:`gateway.errors.GatewayError` (and aiohttp's own
   HTTP exceptions) to RFC 9457 ``application/problem+json``. Anything unexpected is logged
   with its stack and answered as an opaque 500 that names the request id, never the cause.
3. metrics: request counts and latency by route.
4. authentication: every route not marked public needs a bearer token the node's
   :class:`gateway.sso.auth.Authenticator` accepts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.config import Limits
from gateway.errors import AuthError, BadTransition, GatewayError, SchemaViolation, TooLarge
from gateway.logs import request_id_var
from gateway.metrics import Metrics
from gateway.sso.auth import Authenticator, Principal, parse_authorization

log = logging.getLogger("gateway.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROBLEM_TYPE_BASE = "https://tongban.example/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

CLIENT_CLOSED = 499
"""Status recorded in metrics for a request whose caller went away before the answer."""

PRINCIPAL = web.RequestKey("tongban.principal", Principal)
BEARER = web.RequestKey("tongban.bearer", str)
"""The caller's validated access token, forwarded on routed hops (re-validated at each)."""
"""Where the auth middleware puts the caller (a typed key: aiohttp ≥ 3.14 warns on str keys)."""
PUBLIC = "tongban.public"

_HTTP_CODES = {
    400: "http.bad_request",
    404: "http.not_found",
    405: "http.method_not_allowed",
    413: "input.too_large",
    415: "input.media_type",
}


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    if extra:
        body.update(extra)
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def principal_of(request: web.Request) -> Principal:
    principal = request.get(PRINCIPAL)
    if not isinstance(principal, Principal):  # pragma: no cover - middleware guarantees it
        raise AuthError("not authenticated", code="auth.required")
    return principal


def public(handler: Handler) -> Handler:
    """Mark a handler as reachable without a token (health, metrics, catalogs, keys)."""
    setattr(handler, PUBLIC, True)
    return handler


WORKER_HEADER = "Tongban-Worker"
"""The id of the process that answered (``serve --workers N`` runs N of them)."""


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
    token = request_id_var.set(request_id)
    try:
        response = await handler(request)
        response.headers["X-Request-Id"] = request_id
        response.headers[WORKER_HEADER] = str(os.getpid())
        return response
    finally:
        request_id_var.reset(token)


class LineTooLong(TooLarge):
    status = 414
    title = "Request line too long"


class HeaderTooLarge(TooLarge):
    status = 431
    title = "Request header too large"


def size_middleware(limits: Limits) -> Any:
    """The request line and every header line within the configured bounds, or 414 / 431
    ``input.too_large`` as problem+json; nothing of the input is echoed."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        line = len(request.method) + len(request.raw_path.encode("utf-8", "surrogateescape"))
        if line + len(" HTTP/1.1") > limits.max_request_line_bytes:
            raise LineTooLong(
                f"the request line may be at most {limits.max_request_line_bytes} bytes"
            )
        for name, value in request.raw_headers:
            if len(name) + len(value) + 2 > limits.max_header_bytes:
                raise HeaderTooLarge(
                    f"a header line may be at most {limits.max_header_bytes} bytes"
                )
        return await handler(request)

    return middleware


def problem_middleware(metrics: Metrics) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            metrics.errors.labels(code=exc.code).inc()
            if exc.log_detail or exc.status >= 500:
                log.warning(
                    "request refused",
                    extra={"code": exc.code, "why": exc.log_detail or exc.detail},
                )
            extra: dict[str, Any] = {}
            if exc.pointers:
                extra["errors"] = [{"pointer": p} for p in exc.pointers]
                if isinstance(exc, SchemaViolation):
                    extra["errors"] = [
                        {"pointer": p, "detail": d}
                        for p, d in zip(exc.pointers, exc.errors or exc.pointers, strict=False)
                    ]
            if isinstance(exc, BadTransition):
                extra["allowed"] = list(exc.allowed)
            headers = {"WWW-Authenticate": 'Bearer realm="tongban"'} if exc.status == 401 else None
            return problem(
                exc.status,
                exc.code,
                exc.title,
                exc.detail,
                instance=request.path,
                extra=extra,
                headers=headers,
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _HTTP_CODES.get(exc.status, f"http.{exc.status}")
            metrics.errors.labels(code=code).inc()
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return problem(
                exc.status,
                code,
                exc.reason,
                exc.text or exc.reason,
                instance=request.path,
                headers=headers,
            )
        except Exception:
            metrics.errors.labels(code="internal").inc()
            log.exception("unhandled error", extra={"path": request.path})
            return problem(
                500,
                "internal",
                "Internal error",
                "the request failed inside the gateway; quote the request id to the operators",
                instance=request.path,
            )

    return middleware


def metrics_middleware(metrics: Metrics) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except GatewayError as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED  # the caller hung up: not a failure of the gateway
            raise
        finally:
            metrics.request_done(name, request.method, status, time.perf_counter() - started)

    return middleware


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
"""Set by the app at start-up (a node builds its IdP key cache inside ``cleanup_ctx``)."""


def auth_middleware(*, max_token_bytes: int) -> Any:
    """Authenticate every non-public route with the app's :data:`AUTHENTICATOR`."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if getattr(request.match_info.handler, PUBLIC, False):
            return await handler(request)
        if request.match_info.http_exception is not None:
            raise request.match_info.http_exception
        # parse_authorization admits only RFC 6750 b64token characters (so never the lone
        # surrogates aiohttp hands over for header bytes that are not UTF-8).
        token = parse_authorization(request.headers.get("Authorization"), max_bytes=max_token_bytes)
        request[PRINCIPAL] = await request.app[AUTHENTICATOR].authenticate(token)
        request[BEARER] = token
        return await handler(request)

    return middleware
