"""Cases across regions on a real federation (``up``: every node in this process on its own
loopback port, real HTTP and hop proofs between them): 受办分离 · 代收代办 from Zhuji's window
to Shanghai's healthcare-security bureau, and 县域通办 inside Zhuji."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import aiohttp
import pytest
from conftest import APPLICANT, HANG_GUARD, INVOICES, Tokens, Up, maternity_application

from gateway._internal.wire import b64url_encode
from gateway.certificates.documents import certificate_date
from gateway.cli.idp_client import IdpClient
from gateway.clock import FixedClock
from gateway.config import Federation

pytestmark = pytest.mark.slow  # a whole federation


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session = session
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        async with self.session.request(
            method, self.url + path, json=body, headers={**self.headers, **headers}
        ) as response:
            return response.status, await response.json(content_type=None), response.headers


async def until_state(client: Client, case_id: str, state: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_GUARD
    while True:
        status, body, _ = await client.call("GET", f"/v1/cases/{case_id}")
        if status == 200 and body["state"] == state:
            return dict(body)
        assert loop.time() < deadline, f"{case_id} never became {state}: {status} {body}"
        await asyncio.sleep(0.02)


async def test_a_case_received_at_zhuji_is_decided_in_shanghai(
    moved: Federation, clock: FixedClock
) -> None:
    tokens = Tokens(moved, clock)
    up = Up(moved, clock)
    urls = await up.ready()
    try:
        async with aiohttp.ClientSession() as session:
            window = Client(session, urls["zhuji"], tokens.client("zhuji-service-center"))
            owner = Client(session, urls["shanghai"], tokens.client("shanghai-healthcare-security"))
            # 1. 受理 at Zhuji's window, for Shanghai's bureau
            status, case, headers = await window.call(
                "POST", "/v1/cases", maternity_application(), **{"Idempotency-Key": "k-1"}
            )
            assert status == 201, case
            case_id = case["id"]
            assert headers["Location"] == f"/v1/cases/{case_id}"
            assert case_id.startswith("330681-")
            levels = {m["id"]: m["level"] for m in case["materials"]}
            assert levels == {
                "application-form": "C",
                "birth-medical-certificate": "B",
                "medical-invoices": "C",
                "resident-id": "B",
            }
            # the same key again: the same case, nothing written twice
            again = await window.call(
                "POST", "/v1/cases", maternity_application(), **{"Idempotency-Key": "k-1"}
            )
            assert again[0] == 201
            assert again[1]["id"] == case_id
            assert again[2]["Idempotent-Replayed"] == "true"
            # 2. it arrives in Shanghai, and Zhuji learns it did
            await until_state(owner, case_id, "pending_acceptance")
            await until_state(window, case_id, "pending_acceptance")
            # 3. Shanghai asks for one correction; only the owner decides
            status, refused, _ = await window.call(
                "POST", f"/v1/cases/{case_id}/actions", {"action": "accept"}
            )
            assert (status, refused["code"]) == (403, "case.wrong_owner")
            status, body, _ = await owner.call(
                "POST",
                f"/v1/cases/{case_id}/actions",
                {
                    "action": "request_correction",
                    "items": [{"material": "medical-invoices", "reason": "发票不清晰，请重新扫描"}],
                },
            )
            assert status == 200, body
            await until_state(window, case_id, "awaiting_correction")
            # 4. Zhuji supplements (pushed to the owner at once)
            status, body, _ = await window.call(
                "POST",
                f"/v1/cases/{case_id}/actions",
                {
                    "action": "supplement",
                    "materials": {
                        "medical-invoices": {
                            "content": b64url_encode(INVOICES + b" rescanned"),
                            "media_type": "application/pdf",
                        }
                    },
                },
            )
            assert status == 200, body
            assert body["state"] == "pending_acceptance"
            await until_state(owner, case_id, "pending_acceptance")
            # 5. accept, then approve: the result certificate is issued in Shanghai
            today = certificate_date(clock.now()).isoformat()
            status, body, _ = await owner.call(
                "POST", f"/v1/cases/{case_id}/actions", {"action": "accept"}
            )
            assert status == 200, body
            status, body, _ = await owner.call(
                "POST", f"/v1/cases/{case_id}/actions", {"action": "accept"}
            )
            assert (status, body["code"]) == (409, "case.bad_transition")
            assert "approve" in body["allowed"]
            status, body, _ = await owner.call(
                "POST",
                f"/v1/cases/{case_id}/actions",
                {
                    "action": "approve",
                    "result": {
                        "valid_from": today,
                        "valid_until": None,
                        "data": {
                            "decision_date": today,
                            "medical_expenses": 5230.0,
                            "allowance_days": 128,
                            "allowance_amount": 42150.4,
                        },
                    },
                },
            )
            assert status == 200, body
            certificate_id = body["result"]["certificate_id"]
            status, body, _ = await owner.call(
                "POST",
                f"/v1/cases/{case_id}/actions",
                {"action": "deliver", "delivery": {"method": "online"}},
            )
            assert status == 200, body
            at_window = await until_state(window, case_id, "delivered")
            assert at_window["result"] == {"certificate_id": certificate_id}
            # 6. both ends hold the same sealed events, in order
            _, here, _ = await window.call("GET", f"/v1/cases/{case_id}/events")
            _, there, _ = await owner.call("GET", f"/v1/cases/{case_id}/events")
            assert [e["event"] for e in here["events"]] == [e["event"] for e in there["events"]]
            actions = [e["action"] for e in there["events"]]
            assert actions == [
                "forward",
                "arrive",
                "request_correction",
                "supplement",
                "accept",
                "approve",
                "deliver",
            ]
            # 7. the applicant, with their own token: the case, and the result where it is held
            idp = IdpClient(session, moved.idp_issuer())
            citizen = next(c for c in moved.citizens if c.id == APPLICANT["id"])
            assert citizen.demo_password is not None
            holder = await idp.holder_login(citizen.id, citizen.demo_password.reveal())
            mine = Client(session, urls["zhuji"], holder)
            status, body, _ = await mine.call("GET", f"/v1/cases/{case_id}")
            assert (status, body["state"]) == (200, "delivered")
            status, body, _ = await mine.call("GET", "/v1/cases")
            assert [c["id"] for c in body["cases"]] == [case_id]
            async with session.get(
                f"{urls['zhuji']}/v1/cases/{case_id}/result",
                headers=mine.headers,
                allow_redirects=False,
            ) as response:
                assert response.status == 303
                location = response.headers["Location"]
            assert location == f"{urls['shanghai']}/v1/cases/{case_id}/result"
            status, body, _ = await Client(session, urls["shanghai"], holder).call(
                "GET", f"/v1/cases/{case_id}/result"
            )
            assert status == 200, body
            assert body["certificate_id"] == certificate_id
            assert body["report"]["indication"] == "PASSED", body["report"]
            assert body["certificate"]["holder"]["id"] == APPLICANT["id"]
            status, body, _ = await window.call("GET", f"/v1/cases/{case_id}/result")
            assert (status, body["code"]) == (403, "consent.required")
            # 8. nobody else sees the case
            other = Client(session, urls["zhuji"], tokens.client("zhuji-civil-affairs"))
            status, body, _ = await other.call("GET", f"/v1/cases/{case_id}")
            assert (status, body["code"]) == (404, "case.not_found")
    finally:
        await up.stopped()


async def test_a_township_window_receives_for_the_city_bureau_without_the_network(
    moved: Federation, clock: FixedClock
) -> None:
    """县域通办: Datang's 便民服务中心 receives for Zhuji's human-resources bureau, on the same
    node: the same receipt, lifecycle and events, and no message for another node."""
    tokens = Tokens(moved, clock)
    up = Up(moved, clock)
    urls = await up.ready()
    try:
        async with aiohttp.ClientSession() as session:
            township = Client(session, urls["zhuji"], tokens.client("zhuji-datang-service"))
            bureau = Client(session, urls["zhuji"], tokens.client("zhuji-human-resources"))
            body = {
                "matter": "flexible-pension-enrolment",
                "owner": {"node": "zhuji"},
                "channel": "window",
                "applicant": {"id_type": "111", "id": "330681199001010015", "name": "赵立新"},
                "identity_checked_by": "dt-0007",
                "delivery": "window",
                "materials": {
                    "application-form": {
                        "content": b64url_encode(b"form"),
                        "media_type": "text/plain",
                    },
                    "resident-id": {
                        "content": b64url_encode(b"ID card"),
                        "media_type": "image/png",
                        "checked_original": True,
                    },
                },
            }
            status, case, _ = await township.call("POST", "/v1/cases", body)
            assert status == 201, case
            assert case["state"] == "pending_acceptance"  # arrived at once: nothing to send
            assert case["owner"] == {"node": "zhuji", "department": "zhuji-human-resources"}
            status, inbox, _ = await bureau.call("GET", "/v1/cases?box=inbox")
            assert [c["id"] for c in inbox["cases"]] == [case["id"]]
            status, body, _ = await bureau.call(
                "POST", f"/v1/cases/{case['id']}/actions", {"action": "accept"}
            )
            assert (status, body["state"]) == (200, "accepted")
            _, events, _ = await township.call("GET", f"/v1/cases/{case['id']}/events")
            assert [e["action"] for e in events["events"]] == ["arrive", "accept"]
            assert {e["iss"] for e in events["events"]} == {"zhuji"}
    finally:
        await up.stopped()
    outbox = moved.data_dir / "zhuji" / "cases.sqlite3"
    with sqlite3.connect(f"{outbox.as_uri()}?mode=ro", uri=True) as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
