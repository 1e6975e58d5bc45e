"""``create_idp_app``: the identity provider (the ``idp`` node) as an aiohttp application.

Routes: ``GET /.well-known/openid-configuration``, ``GET /jwks``, ``POST /token``
(RFC 6749 §4.4 and the holder login grant), ``POST /consents``, ``GET /healthz``,
``GET /readyz``, ``GET /metrics``, ``GET /openapi.json``.

The middleware stack is the nodes' (request id, problems, metrics, authentication), plus one
innermost layer for the token endpoint only: its errors are problem+json with our ``code``
*and* the RFC 6749 §5.2 ``error`` member, and never cached.

Authentication: every route is ``@public`` except ``POST /consents``, so a route added later
without thought fails closed. The auth middleware validates the bearer token with the IdP's
own keys (:meth:`IdpService.authenticate`); the consent handler then needs the full claims
(the ``holder`` flag, the holder digest), which a :class:`~gateway.sso.auth.Principal` does not
carry, and takes them from the service's verified-token cache: the signature is checked once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from aiohttp import web

from gateway._internal.wire import JsonLimits, is_int, loads
from gateway.clock import to_rfc3339
from gateway.crypto.jwks import jws_names
from gateway.errors import Forbidden, GatewayError, InputError, TooLarge, UnsupportedMediaType
from gateway.http.middleware import (
    AUTHENTICATOR,
    Handler,
    auth_middleware,
    metrics_middleware,
    principal_of,
    problem,
    problem_middleware,
    public,
    request_id_middleware,
    size_middleware,
)
from gateway.http.responses import JSON, handler_args, json_limits, json_response
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.services.idp import (
    CLIENT_CREDENTIALS,
    HOLDER_GRANT,
    MAX_CONSENT_SECONDS,
    IdpService,
    parse_basic,
    parse_consent_request,
    parse_form,
)
from gateway.sso.auth import Scope, parse_authorization

log = logging.getLogger("gateway.http")

FORM: Final = "application/x-www-form-urlencoded"
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}
"""RFC 6749 §5.1: token responses (and consent grants, also bearer credentials)."""
PUBLIC_CACHE: Final = {"Cache-Control": "public, max-age=60"}
PASSWORD_WORKERS: Final = 4
"""Threads for scrypt checks: they keep the event loop free and bound the memory in use."""
OAUTH: Final = "tongban.oauth"

IDP = web.AppKey("idp", IdpService)
IDP_METRICS = web.AppKey("idp_metrics", Metrics)
IDP_EXECUTOR = web.AppKey("idp_executor", ThreadPoolExecutor)
IDP_OPENAPI = web.AppKey("idp_openapi", dict[str, Any])


def create_idp_app(service: IdpService, *, metrics: Metrics | None = None) -> web.Application:
    """The HTTP application of the identity provider."""
    metrics = metrics or Metrics(service.node.id)
    limits = service.federation.limits
    app = web.Application(
        client_max_size=limits.max_body_bytes,
        handler_args=handler_args(limits, decompress=True),
        middlewares=[
            request_id_middleware,
            problem_middleware(metrics),
            size_middleware(limits),
            metrics_middleware(metrics),
            auth_middleware(max_token_bytes=limits.max_token_bytes),
            oauth_error_middleware(metrics),
        ],
    )
    app[IDP] = service
    app[AUTHENTICATOR] = service
    app[IDP_METRICS] = metrics
    app[IDP_OPENAPI] = build_idp_openapi(service)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.cleanup_ctx.append(_password_workers)
    return app


async def _password_workers(app: web.Application) -> AsyncIterator[None]:
    executor = ThreadPoolExecutor(max_workers=PASSWORD_WORKERS, thread_name_prefix="tongban-idp")
    app[IDP_EXECUTOR] = executor
    yield
    executor.shutdown(wait=True)


# -- the token endpoint's error format -------------------------------------------------------


def oauth_endpoint(handler: Handler) -> Handler:
    """Mark a handler whose errors carry the RFC 6749 §5.2 ``error`` member."""
    setattr(handler, OAUTH, True)
    return handler


def oauth_error(code: str) -> str:
    """The RFC 6749 ``error`` of one of our codes: ``oauth.invalid_client`` -> ``invalid_client``;
    anything else the caller got wrong (media type, body size, JSON) is ``invalid_request``."""
    prefix, _, name = code.partition(".")
    return name if prefix == "oauth" else "invalid_request"


def oauth_error_middleware(metrics: Metrics) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not getattr(request.match_info.handler, OAUTH, False):
            return await handler(request)
        try:
            return await handler(request)
        except GatewayError as exc:
            if exc.status >= 500:
                raise  # the problem middleware logs it and answers opaquely
            metrics.errors.labels(code=exc.code).inc()
            if exc.log_detail:
                log.warning(
                    "token request refused", extra={"code": exc.code, "why": exc.log_detail}
                )
            headers = dict(NO_STORE)
            if exc.status == 401:
                # RFC 6749 §5.2: a 401 names the client authentication scheme
                headers["WWW-Authenticate"] = 'Basic realm="tongban"'
            return problem(
                exc.status,
                exc.code,
                exc.title,
                exc.detail,
                instance=request.path,
                extra={"error": oauth_error(exc.code)},
                headers=headers,
            )

    return middleware


# -- helpers ---------------------------------------------------------------------------------


async def read_body(request: web.Request, media_type: str) -> bytes:
    """The raw body, of ``media_type`` and within ``max_body_bytes``."""
    if request.content_type != media_type:
        raise UnsupportedMediaType(f"send the body as {media_type}")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise TooLarge(
            f"the body may be at most {request.app[IDP].federation.limits.max_body_bytes} bytes"
        ) from exc
    except web.RequestPayloadError as exc:  # e.g. a Content-Encoding that does not decode
        raise InputError(
            "the request body could not be decoded", code="input.body_encoding"
        ) from exc


def _json_limits(request: web.Request) -> JsonLimits:
    return json_limits(request.app[IDP].federation.limits)


# -- handlers --------------------------------------------------------------------------------


@public
async def discovery(request: web.Request) -> web.Response:
    return json_response(request.app[IDP].discovery(), headers=PUBLIC_CACHE)


@public
async def jwks(request: web.Request) -> web.Response:
    return json_response(request.app[IDP].jwks(), headers=PUBLIC_CACHE)


@public
@oauth_endpoint
async def token(request: web.Request) -> web.Response:
    service = request.app[IDP]
    # 1. a form body (RFC 6749 §4.4.2) within the body limit, each parameter at most once
    params = parse_form(await read_body(request, FORM))
    # 2. client credentials from the Basic header, if sent (client_secret_basic)
    header = request.headers.get("Authorization")
    basic = parse_basic(header) if header is not None else None
    # 3. scrypt runs on the IdP's password threads, never on the event loop
    loop = asyncio.get_running_loop()
    issued = await loop.run_in_executor(
        request.app[IDP_EXECUTOR], functools.partial(service.token, params, basic=basic)
    )
    return json_response(issued.to_json(), headers=NO_STORE)


# -- key administration (keys:admin, the federation operator at national) ---------------------

IDP_OPERATOR_NODE = "national"


def _idp_admin(request: web.Request) -> None:
    principal = principal_of(request)
    principal.require(Scope.KEYS_ADMIN)
    federation = request.app[IDP].federation
    owner = next(
        (n.id for n in federation.nodes if n.department(principal.department or "") is not None),
        None,
    )
    if owner != IDP_OPERATOR_NODE:
        raise Forbidden(
            "the IdP's keys are administered by national's operators", code="keys.not_owner"
        )


def _key_rows(service: IdpService) -> list[dict[str, Any]]:
    now = service.now()
    return [
        {
            "state": r.state.value,
            "kid": r.kid,
            "alg": r.alg,
            "created": to_rfc3339(r.created),
            "activates": to_rfc3339(r.not_before),
            "expires": to_rfc3339(r.not_after),
            "expires_in_days": int((r.not_after - now) // 86_400),
        }
        for r in service.keys.records()
    ]


async def admin_keys(request: web.Request) -> web.Response:
    _idp_admin(request)
    return json_response({"keys": _key_rows(request.app[IDP])})


async def admin_rotate(request: web.Request) -> web.Response:
    """Rotate the IdP's signing key: the pre-published ``next`` key signs from now on.

    Its algorithm is the one the federation file gives the IdP: a rotation asking for
    another one (``tongban keys rotate --node idp --alg SM2``) is refused, not ignored."""
    _idp_admin(request)
    service = request.app[IDP]
    body = await request.read()
    raw = loads(body, JsonLimits(max_depth=2, max_string=64, max_members=4)) if body else {}
    wanted = raw.get("alg") if isinstance(raw, dict) else None
    if wanted is not None and wanted not in jws_names(service.keys.active().alg):
        raise InputError(
            "the IdP's keys keep the algorithm the federation file gives them "
            "(tokens are verified by standard JOSE libraries)",
            code="keys.bad_change",
        )
    previous = service.keys.active().kid
    active = service.rotate()
    return json_response({"previous": previous, "active": active.kid})


async def admin_retire(request: web.Request) -> web.Response:
    _idp_admin(request)
    record = request.app[IDP].retire(request.match_info["kid"])
    return json_response({"retired": record.kid})


async def admin_revoke(request: web.Request) -> web.Response:
    _idp_admin(request)
    body = await request.read()
    raw = loads(body, JsonLimits(max_depth=2, max_string=64, max_members=4)) if body else {}
    at = raw.get("at") if isinstance(raw, dict) else None
    if at is not None and (not is_int(at)):
        raise InputError("'at' is a NumericDate (integer seconds)", code="keys.bad_change")
    record = request.app[IDP].revoke(request.match_info["kid"], at=at)
    return json_response({"revoked": record.kid, "from": record.revoked_at})


async def consents(request: web.Request) -> web.Response:
    service = request.app[IDP]
    # 1. the caller's claims (the auth middleware verified the token; this is a cache hit)
    bearer = parse_authorization(
        request.headers.get("Authorization"),
        max_bytes=service.federation.limits.max_token_bytes,
    )
    claims = service.validate_access_token(bearer)
    # 2. the request, strictly parsed
    body = loads(await read_body(request, JSON), _json_limits(request))
    wanted = parse_consent_request(body)
    # 3. the grant
    consent = service.grant_consent(
        claims,
        department=wanted.department,
        matter=wanted.matter,
        types=wanted.types,
        until=wanted.until,
    )
    return json_response(
        {"consent": consent, "expires_at": int(wanted.until)}, status=201, headers=NO_STORE
    )


@public
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "node": request.app[IDP].node.id})


@public
async def readyz(request: web.Request) -> web.Response:
    service = request.app[IDP]
    try:
        active, upcoming = service.keys.active(), service.next_key()
    except GatewayError as exc:
        return json_response({"status": "unavailable", "reason": exc.code}, status=503)
    return json_response(
        {"status": "ready", "node": service.node.id, "active": active.kid, "next": upcoming.kid}
    )


@public
async def metrics(request: web.Request) -> web.Response:
    body = request.app[IDP_METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


@public
async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[IDP_OPENAPI])


ROUTES: Final[tuple[tuple[str, str, Handler], ...]] = (
    ("GET", "/.well-known/openid-configuration", discovery),
    ("GET", "/jwks", jwks),
    ("POST", "/token", token),
    ("POST", "/consents", consents),
    ("GET", "/v1/admin/keys", admin_keys),
    ("POST", "/v1/admin/keys/rotate", admin_rotate),
    ("POST", "/v1/admin/keys/{kid}/retire", admin_retire),
    ("POST", "/v1/admin/keys/{kid}/revoke", admin_revoke),
    ("GET", "/healthz", healthz),
    ("GET", "/readyz", readyz),
    ("GET", "/metrics", metrics),
    ("GET", "/openapi.json", openapi),
)


_KID = {
    "name": "kid",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 128},
}

# -- OpenAPI 3.1 -----------------------------------------------------------------------------

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_OBJECT = {"type": "object"}


def _ok(schema: dict[str, Any], *, status: int = 200, media: str = JSON) -> dict[str, Any]:
    return {
        str(status): {
            "description": "OK" if status == 200 else "Created",
            "content": {media: {"schema": schema}},
        },
        "default": _PROBLEM,
    }


def build_idp_openapi(service: IdpService) -> dict[str, Any]:
    """A small OpenAPI 3.1 document for the IdP's routes (a test checks it both ways)."""
    token_request = {
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {"enum": [CLIENT_CREDENTIALS, HOLDER_GRANT]},
            "scope": {"type": "string", "description": "space-separated; a subset of the client's"},
            "client_id": {"type": "string", "description": "client_secret_post"},
            "client_secret": {"type": "string", "description": "client_secret_post"},
            "username": {"type": "string", "description": "holder login: resident ID number"},
            "password": {"type": "string", "description": "holder login: password"},
        },
    }
    token_response = {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "scope"],
        "properties": {
            "access_token": {"type": "string", "description": "RFC 9068 JWT (typ at+jwt)"},
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer"},
            "scope": {"type": "string"},
        },
    }
    consent_request = {
        "type": "object",
        "required": ["department", "matter", "types", "until"],
        "additionalProperties": False,
        "properties": {
            "department": {"type": "string"},
            "matter": {"type": "string"},
            "types": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "until": {
                "oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}],
                "description": f"at most {MAX_CONSENT_SECONDS // 86_400} days ahead",
            },
        },
    }
    consent_response = {
        "type": "object",
        "required": ["consent", "expires_at"],
        "properties": {
            "consent": {"type": "string", "description": "JWS, typ consent+jwt"},
            "expires_at": {"type": "integer"},
        },
    }
    ops = {"tags": ["ops"], "security": []}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tongban identity provider",
            "version": "1",
            "description": "Single sign-on (一号登录) and holder consent (用证授权).",
        },
        "servers": [{"url": service.issuer}],
        "paths": {
            "/.well-known/openid-configuration": {
                "get": {"summary": "Provider metadata", **ops, "responses": _ok(_OBJECT)}
            },
            "/jwks": {"get": {"summary": "Signing keys (JWKS)", **ops, "responses": _ok(_OBJECT)}},
            "/token": {
                "post": {
                    "summary": "Access token (client_credentials, holder login)",
                    "tags": ["oauth"],
                    "security": [{}, {"basic": []}],
                    "requestBody": {"required": True, "content": {FORM: {"schema": token_request}}},
                    "responses": {
                        **_ok(token_response),
                        **dict.fromkeys(("400", "401", "403", "413", "415"), _PROBLEM),
                    },
                }
            },
            "/v1/admin/keys": {
                "get": {
                    "summary": "The IdP's signing keys (keys:admin, national's operators)",
                    "tags": ["admin"],
                    "security": [{"bearer": []}],
                    "responses": {**_ok(_OBJECT), **dict.fromkeys(("401", "403"), _PROBLEM)},
                }
            },
            "/v1/admin/keys/rotate": {
                "post": {
                    "summary": "Rotate: the pre-published next key signs from now on",
                    "tags": ["admin"],
                    "security": [{"bearer": []}],
                    "responses": {**_ok(_OBJECT), **dict.fromkeys(("401", "403"), _PROBLEM)},
                }
            },
            "/v1/admin/keys/{kid}/retire": {
                "post": {
                    "summary": "Retire a key that no longer signs (it keeps verifying)",
                    "tags": ["admin"],
                    "security": [{"bearer": []}],
                    "parameters": [_KID],
                    "responses": {
                        **_ok(_OBJECT),
                        **dict.fromkeys(("401", "403", "404", "409"), _PROBLEM),
                    },
                }
            },
            "/v1/admin/keys/{kid}/revoke": {
                "post": {
                    "summary": "Revoke a key from a time (the active key is rotated away first)",
                    "tags": ["admin"],
                    "security": [{"bearer": []}],
                    "parameters": [_KID],
                    "responses": {
                        **_ok(_OBJECT),
                        **dict.fromkeys(("401", "403", "404", "409"), _PROBLEM),
                    },
                }
            },
            "/consents": {
                "post": {
                    "summary": "A holder grants a department consent for one matter",
                    "tags": ["consent"],
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {JSON: {"schema": consent_request}},
                    },
                    "responses": {
                        **_ok(consent_response, status=201),
                        **dict.fromkeys(("400", "401", "403", "404", "413", "415"), _PROBLEM),
                    },
                }
            },
            "/healthz": {"get": {"summary": "Liveness", **ops, "responses": _ok(_OBJECT)}},
            "/readyz": {"get": {"summary": "Readiness", **ops, "responses": _ok(_OBJECT)}},
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    **ops,
                    "responses": _ok({"type": "string"}, media="text/plain"),
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", **ops, "responses": _ok(_OBJECT)}
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "basic": {"type": "http", "scheme": "basic"},
            },
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem; token errors add the RFC 6749 'error'",
                    "content": {"application/problem+json": {"schema": _OBJECT}},
                }
            },
        },
    }
