"""Webhook notifications: signed CloudEvents POSTed to a real HTTP server, verified against
the node's JWKS, retried with the same id, given up after MAX_ATTEMPTS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway._internal.wire import b64url_encode
from gateway.clock import FixedClock
from gateway.crypto.jwks import StaticKeyResolver
from gateway.crypto.seals import verify_compact
from gateway.errors import SealError
from gateway.federation.webhooks import (
    CONTENT_TYPE,
    MAX_ATTEMPTS,
    SIGNATURE_HEADER,
    WEBHOOK_TYP,
    WebhookSender,
    sign_delivery,
)
from gateway.ids import DepartmentId, NodeId
from gateway.services.cases import CaseService
from gateway.services.node import NodeService
from gateway.sso.auth import Principal
from gateway.storage.cases import SqliteCaseStore

WINDOW = Principal(
    subject="zhuji-datang-service",
    client_id="zhuji-datang-service",
    scopes=frozenset({"case:intake"}),
    department=DepartmentId("zhuji-datang-service"),
    node=NodeId("zhuji"),
)

RETRY_MAX_SECONDS = 30.0
"""The longest pause between two tries (the sender's second ``retry`` number)."""


def pension() -> dict[str, Any]:
    form = base64.urlsafe_b64encode(b"form").rstrip(b"=").decode()
    return {
        "matter": "flexible-pension-enrolment",
        "owner": {"node": "zhuji"},
        "channel": "window",
        "applicant": {"id_type": "111", "id": "31010419950312123X", "name": "陈思远"},
        "identity_checked_by": "dt-0007",
        "delivery": "window",
        "materials": {
            "application-form": {"content": form, "media_type": "application/pdf"},
            "resident-id": {"declared": True},
        },
    }


class Subscriber:
    """A departmental system: answers each POST with the next status of ``answers``."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.received: list[tuple[dict[str, str], bytes]] = []
        app = web.Application()
        app.router.add_post("/hooks", self.handle)
        app.router.add_post("/moved", self.moved)
        self.server = TestServer(app)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        status = self.answers.pop(0) if self.answers else 200
        return web.json_response({"ok": status < 300}, status=status)

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/hooks")

    def url(self, path: str = "/hooks") -> str:
        return str(self.server.make_url(path))


@pytest.fixture
def cases(service: NodeService, tmp_path: Path) -> Iterator[CaseService]:
    opened = CaseService(service, SqliteCaseStore(tmp_path / "cases.sqlite3"))
    yield opened
    opened.store.close()


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    hooks = Subscriber()
    await hooks.server.start_server()
    yield hooks
    await hooks.server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def sender(cases: CaseService, session: aiohttp.ClientSession, clock: FixedClock) -> WebhookSender:
    return WebhookSender(
        cases.store,
        session,
        node="zhuji",
        signer=cases.node.keys.signer,
        clock=clock,
        timeout=5.0,
        retry=(0.5, RETRY_MAX_SECONDS),
    )


def verify(cases: CaseService, url: str, headers: dict[str, str], body: bytes, now: float) -> Any:
    """What a subscriber checks: the signature by the node's published JWKS, its audience
    (this URL) and the digest of the body received."""
    jwks = orjson.loads(orjson.dumps(cases.node.jwks()))  # as served, as parsed
    keys = StaticKeyResolver.from_jwks(jwks, node=NodeId("zhuji"))
    verified = verify_compact(headers[SIGNATURE_HEADER], keys, typ=WEBHOOK_TYP, now=now)
    claims = verified.payload
    assert verified.node == "zhuji"
    assert claims["iss"] == "zhuji"
    assert claims["aud"] == url
    assert claims["digest"] == b64url_encode(hashlib.sha256(body).digest())
    return claims


async def test_a_transition_is_delivered_signed(
    cases: CaseService,
    subscriber: Subscriber,
    session: aiohttp.ClientSession,
    clock: FixedClock,
) -> None:
    cases.subscribe(WINDOW, subscriber.url())
    case, _ = cases.intake(WINDOW, pension(), idempotency_key=None)
    assert cases.store.delivery_count() == 1
    assert await sender(cases, session, clock).deliver_due() == 1
    assert cases.store.delivery_count() == 0
    ((headers, body),) = subscriber.received
    assert headers["Content-Type"] == CONTENT_TYPE
    event = orjson.loads(body)
    assert event["specversion"] == "1.0"
    assert event["type"] == "cn.gov.tongban.case.arrive"
    assert event["subject"] == case.id
    assert event["data"]["node"] == "zhuji"
    claims = verify(cases, subscriber.url(), headers, body, clock.now())
    assert claims["jti"] == event["id"]
    # a body changed on the way no longer matches the signed digest
    assert claims["digest"] != b64url_encode(hashlib.sha256(body + b" ").digest())


async def test_a_failed_delivery_is_retried_with_the_same_id(
    cases: CaseService,
    subscriber: Subscriber,
    session: aiohttp.ClientSession,
    clock: FixedClock,
) -> None:
    cases.subscribe(WINDOW, subscriber.url())
    cases.intake(WINDOW, pension(), idempotency_key=None)
    subscriber.answers = [500]
    webhooks = sender(cases, session, clock)
    assert await webhooks.deliver_due() == 0
    (pending,) = cases.store.due_deliveries(clock.now() + RETRY_MAX_SECONDS)
    assert pending.attempts == 1
    assert await webhooks.deliver_due() == 0  # not due yet: nothing sent
    assert len(subscriber.received) == 1
    clock.advance(RETRY_MAX_SECONDS)
    assert await webhooks.deliver_due() == 1
    first, second = subscriber.received
    assert first[1] == second[1]  # the same CloudEvent
    ids = [orjson.loads(body)["id"] for _, body in subscriber.received]
    assert ids[0] == ids[1]
    jtis = [verify(cases, subscriber.url(), h, b, clock.now())["jti"] for h, b in (first, second)]
    assert jtis == ids
    assert cases.store.delivery_count() == 0


async def test_a_delivery_is_given_up_after_max_attempts(
    cases: CaseService,
    subscriber: Subscriber,
    session: aiohttp.ClientSession,
    clock: FixedClock,
) -> None:
    cases.subscribe(WINDOW, subscriber.url())
    cases.intake(WINDOW, pension(), idempotency_key=None)
    subscriber.answers = [503] * (MAX_ATTEMPTS + 5)
    webhooks = sender(cases, session, clock)
    for _ in range(MAX_ATTEMPTS + 2):
        await webhooks.deliver_due()
        clock.advance(RETRY_MAX_SECONDS)
    assert len(subscriber.received) == MAX_ATTEMPTS
    assert cases.store.delivery_count() == 0


async def test_redirects_and_unreachable_subscribers_are_failures(
    cases: CaseService,
    subscriber: Subscriber,
    session: aiohttp.ClientSession,
    clock: FixedClock,
) -> None:
    cases.subscribe(WINDOW, subscriber.url("/moved"))
    cases.subscribe(WINDOW, "http://127.0.0.1:9/nobody-listens")
    cases.intake(WINDOW, pension(), idempotency_key=None)
    assert cases.store.delivery_count() == 2
    assert await sender(cases, session, clock).deliver_due() == 0
    assert subscriber.received == []  # the redirect was not followed
    assert [d.attempts for d in cases.store.due_deliveries(clock.now() + 10**6)] == [1, 1]


def test_a_signature_is_for_one_url(service: NodeService, clock: FixedClock) -> None:
    body = b'{"id": "e1"}'
    token = sign_delivery(
        service.keys.signer(),
        node="zhuji",
        url="https://a.example/h",
        event_id="e1",
        body=body,
        now=clock.now(),
    )
    keys = StaticKeyResolver(service.keys.verification_keys())
    claims = verify_compact(token, keys, typ=WEBHOOK_TYP, now=clock.now()).payload
    assert (claims["aud"], claims["jti"]) == ("https://a.example/h", "e1")
    # it is not a certificate seal, nor a case event
    with pytest.raises(SealError) as caught:
        verify_compact(token, keys, typ="case-event+jws", now=clock.now())
    assert caught.value.code == "seal.wrong_typ"


async def test_the_sender_stops_when_cancelled_just_after_being_woken(
    cases: CaseService, session: aiohttp.ClientSession, clock: FixedClock
) -> None:
    webhooks = sender(cases, session, clock)
    task = asyncio.create_task(webhooks.run())
    await asyncio.sleep(0.05)  # in its wait for something due
    webhooks.due()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    if not done:  # the bug: stop it for good before failing
        task.cancel()
        await asyncio.wait({task}, timeout=5)
    assert done
    assert task.cancelled()
