"""HTTP handlers of cases (办件) and their webhooks: parse, call the service, respond."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from gateway.cases.materials import case_json_limits
from gateway.errors import InputError
from gateway.federation.cases import CASES_PATH
from gateway.federation.hops import HOP_HEADER
from gateway.http.appkeys import LINKS, NODE
from gateway.http.handlers import read_json
from gateway.http.middleware import principal_of, public
from gateway.http.responses import json_response

IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")


async def _read_case_json(request: web.Request) -> Any:
    """A body that may carry materials: strict JSON whose strings may be as long as one
    material's base64url (``[limits] max_material_bytes``), within ``max_body_bytes``."""
    return await read_json(request, case_json_limits(request.app[NODE].federation.limits))


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InputError("the body is a JSON object", code="input.schema")
    return body


async def create_case(request: web.Request) -> web.Response:
    """受理: a window receives an application (or an applicant files one online)."""
    principal = principal_of(request)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InputError(
            f"{IDEMPOTENCY_HEADER} is 1 to 128 of A-Z a-z 0-9 . _ : -", code="case.idempotency_key"
        )
    body = _object(await _read_case_json(request))
    links = request.app[LINKS]
    case, created = await links.cases.intake(principal, body, key)
    node = request.app[NODE]
    answer = case.to_json(now=node.clock.now())
    headers = {"Location": f"/v1/cases/{case.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(answer, status=201, headers=headers)


async def list_cases(request: web.Request) -> web.Response:
    principal = principal_of(request)
    query = request.query
    limit_text = query.get("limit")
    if limit_text is not None and not (limit_text.isascii() and limit_text.isdigit()):
        raise InputError("limit is a positive integer", code="input.query")
    service = request.app[LINKS].cases.service
    answer = await asyncio.to_thread(
        lambda: service.listing(
            principal,
            box=query.get("box", "inbox"),
            state=query.get("state"),
            after=query.get("after"),
            limit=int(limit_text[:6]) if limit_text else None,
        )
    )
    return json_response(answer)


async def get_case(request: web.Request) -> web.Response:
    principal = principal_of(request)
    service = request.app[LINKS].cases.service
    answer = await asyncio.to_thread(service.read, principal, request.match_info["id"])
    return json_response(answer)


async def case_events(request: web.Request) -> web.Response:
    principal = principal_of(request)
    service = request.app[LINKS].cases.service
    events = await asyncio.to_thread(service.events, principal, request.match_info["id"])
    return json_response({"case": request.match_info["id"], "events": events})


async def case_result(request: web.Request) -> web.Response:
    """The decided case's result certificate: for the applicant (or the owner) at the owning
    node; elsewhere a 303 to the owning node."""
    principal = principal_of(request)
    service = request.app[LINKS].cases.service
    answer = await asyncio.to_thread(service.result, principal, request.match_info["id"])
    if "location" in answer:
        return json_response(answer, status=303, headers={"Location": answer["location"]})
    return json_response(answer)


async def case_action(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = _object(await _read_case_json(request))
    links = request.app[LINKS]
    case = await links.cases.act(principal, request.match_info["id"], body)
    answer = await asyncio.to_thread(links.cases.service.read, principal, case.id)
    return json_response(answer)


@public
async def case_exchange(request: web.Request) -> web.Response:
    """A case package or event from a peer node (hop proof; no user token)."""
    body = await request.read()
    answer = await request.app[LINKS].cases.relay(request.headers.get(HOP_HEADER), body)
    return json_response(answer)


async def subscribe(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = _object(await _read_case_json(request))
    url = body.get("url")
    if set(body) != {"url"} or not isinstance(url, str):
        raise InputError("a subscription is {url}", code="webhook.bad_url")
    service = request.app[LINKS].cases.service
    subscription = await asyncio.to_thread(service.subscribe, principal, url)
    return json_response(subscription.to_json(), status=201)


async def list_subscriptions(request: web.Request) -> web.Response:
    principal = principal_of(request)
    service = request.app[LINKS].cases.service
    found = await asyncio.to_thread(service.subscriptions_of, principal)
    return json_response({"subscriptions": [s.to_json() for s in found]})


async def unsubscribe(request: web.Request) -> web.Response:
    principal = principal_of(request)
    service = request.app[LINKS].cases.service
    await asyncio.to_thread(service.unsubscribe, principal, request.match_info["id"])
    return web.Response(status=204)


CASE_ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("POST", "/v1/cases", create_case),
    ("GET", "/v1/cases", list_cases),
    ("GET", "/v1/cases/{id}", get_case),
    ("GET", "/v1/cases/{id}/events", case_events),
    ("GET", "/v1/cases/{id}/result", case_result),
    ("POST", "/v1/cases/{id}/actions", case_action),
    ("POST", CASES_PATH, case_exchange),
    ("POST", "/v1/webhooks", subscribe),
    ("GET", "/v1/webhooks", list_subscriptions),
    ("DELETE", "/v1/webhooks/{id}", unsubscribe),
)
