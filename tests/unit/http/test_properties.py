"""Property tests: whatever a caller sends, a node answers 2xx or a problem+json 4xx, never 500.

How hypothesis meets aiohttp here: hypothesis cannot drive an ``async def`` test, and a sync
``@given`` function called from inside an async test would block the very event loop the
server needs to answer. So the node runs on its *own* event loop in a background thread
(:class:`LiveNode`, one per module), and the tests are plain synchronous functions: each
runs a ``@given`` inner function whose every example submits one request to that loop with
``asyncio.run_coroutine_threadsafe`` and waits for the answer. Hypothesis keeps all of its
machinery (shrinking, health checks), and ``derandomize=True`` with no example database
makes every run draw the same examples. After each property, ``/healthz`` must still be 200.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import re
import threading
import zlib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import NOW, Tokens, household_request, marriage_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.certificates.schemas import SchemaSet
from gateway.clock import FixedClock
from gateway.config import load_federation
from gateway.crypto.jwks import StaticKeyResolver
from gateway.crypto.seals import verify_seal
from gateway.http.app import create_app
from gateway.ids import NodeId
from gateway.server.node import open_node_service
from gateway.services.node import NodeService
from gateway.sso.auth import Authenticator

T = TypeVar("T")
PROBLEM = "application/problem+json"
_CODE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
PROPERTY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=250,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- a node on its own event loop ------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    headers: CIMultiDict[str]

    def json(self) -> Any:
        return orjson.loads(self.body)


class LiveNode:
    """A zhuji node served from a private event loop in a background thread.

    ``tokens`` holds a real access token per department, minted by the test IdP whose keys
    ``authenticator`` trusts; ``auth`` is the civil-affairs bureau's (marriage certificates).
    """

    def __init__(
        self, node: NodeService, authenticator: Authenticator, tokens: dict[str, str]
    ) -> None:
        self.tokens = tokens
        self.auth = self.auth_of("zhuji-civil-affairs")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="live-node")
        self._thread.start()
        self._client: TestClient[Any, Any] = self._run(self._start(node, authenticator))

    def auth_of(self, department: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[department]}"}

    @staticmethod
    async def _start(node: NodeService, authenticator: Authenticator) -> TestClient[Any, Any]:
        app = create_app(node, authenticator=authenticator)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        return client

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        async def send() -> Answer:
            async with self._client.request(method, path, **kwargs) as response:
                return Answer(
                    response.status,
                    response.content_type,
                    await response.read(),
                    CIMultiDict(response.headers),
                )

        return self._run(send())

    def raw(self, request: bytes) -> Answer:
        """Send bytes the aiohttp client would not produce (e.g. non-UTF-8 headers)."""

        async def send() -> Answer:
            reader, writer = await asyncio.open_connection(self._client.host, self._client.port)
            try:
                writer.write(request)
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(), 30)
            finally:
                writer.close()
                await writer.wait_closed()
            head, _, body = answer.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers: CIMultiDict[str] = CIMultiDict()
            for line in lines:
                name, _, value = line.partition(": ")
                headers.add(name, value)
            content_type = headers.get("Content-Type", "").split(";")[0]
            return Answer(int(status_line.split()[1]), content_type, body, headers)

        return self._run(send())

    def post_json(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> Answer:
        headers = {**self.auth, "Content-Type": "application/json", **(headers or {})}
        return self.request("POST", path, data=body, headers=headers)

    def close(self) -> None:
        try:
            self._run(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, schemas: SchemaSet) -> Iterator[LiveNode]:
    tmp: Path = tmp_path_factory.mktemp("properties")
    federation = load_federation(env={}).with_overrides(data_dir=tmp / "var", keys_dir=tmp / "keys")
    clock = FixedClock(NOW)  # never advanced: the tokens stay valid for the whole module
    idp = Tokens(federation, clock)
    node = open_node_service(
        federation,
        "zhuji",
        clock=clock,
        schemas=schemas,
        public_url="http://zhuji.test",
        idp_keys=idp.resolver,
    )
    departments = (
        "zhuji-civil-affairs",
        "zhuji-public-security",
        "zhuji-service-center",
        "zhuji-human-resources",
    )
    server = LiveNode(node, idp.authenticator(), {d: idp.client(d) for d in departments})
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def genuine(live: LiveNode) -> dict[str, Any]:
    """One household register the live node issued (by public security): its id and seal."""
    owner = live.auth_of("zhuji-public-security")
    answer = live.post_json("/v1/certificates", orjson.dumps(household_request()), owner)
    assert answer.status == 201
    body: dict[str, Any] = answer.json()
    return body


@pytest.fixture(scope="module")
def node_keys(live: LiveNode) -> StaticKeyResolver:
    jwks = live.request("GET", "/.well-known/jwks.json").json()
    return StaticKeyResolver.from_jwks(jwks, node=NodeId("zhuji"))


# --- the invariant ---------------------------------------------------------------------------


def assert_answered(answer: Answer) -> None:
    """2xx, or a 4xx problem+json with a stable code. Never a 5xx."""
    assert answer.status < 500, answer
    if 200 <= answer.status < 300:
        return
    assert 400 <= answer.status < 500, answer
    assert answer.content_type == PROBLEM, answer
    problem = answer.json()
    assert problem["status"] == answer.status, problem
    assert _CODE.fullmatch(problem["code"]), problem


def check(live: LiveNode, strategy: st.SearchStrategy[T], send: Callable[[T], None]) -> None:
    """Run ``send`` on every example of ``strategy``; then the node must still be healthy."""

    @PROPERTY
    @given(strategy)
    def prop(value: T) -> None:
        send(value)

    prop()
    assert live.request("GET", "/healthz").status == 200


# --- strategies ------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(["111", "001", "2026-11-24", "330681199001010015", "marriage", ""])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["type", "holder", "data", "seals", "id", "action"])
            | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


def json_bytes(value: Any) -> bytes:
    """Encode like a sloppy client would: NaN and Infinity come out as bare words."""
    return json.dumps(value, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _locations(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from _locations(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*path, index)
            yield from _locations(value, (*path, index))


def _edit_string(text: str, draw: st.DrawFn) -> str:
    """One character changed, inserted or removed: near-misses of ids, dates and enums."""
    if not text:
        return draw(st.text(min_size=1, max_size=3))
    position = draw(st.integers(0, len(text) - 1))
    new = draw(st.sampled_from("0123456789" * 3 + "XAZ-. 中\x00"))
    how = draw(st.sampled_from(["replace", "insert", "delete"]))
    if how == "replace":
        return text[:position] + new + text[position + 1 :]
    if how == "insert":
        return text[:position] + new + text[position:]
    return text[:position] + text[position + 1 :]


def mutated_issue_requests() -> st.SearchStrategy[dict[str, Any]]:
    """A valid issue request with one to three mutations anywhere in it."""
    return mutated_documents([marriage_request, household_request])


@st.composite
def mutated_documents(
    draw: st.DrawFn, builders: list[Callable[[], dict[str, Any]]]
) -> dict[str, Any]:
    """A valid document of one of ``builders`` with one to three mutations anywhere in it."""
    build = draw(st.sampled_from(builders))
    document: dict[str, Any] = copy.deepcopy(build())
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        locations = list(_locations(document))
        if not locations:
            break
        *parent_path, key = draw(st.sampled_from(locations))
        parent: Any = document
        for step in parent_path:
            parent = parent[step]
        actions = ["delete", "replace"]
        # near-misses get past the schema more often, so strings are mostly edited
        actions += ["edit"] * 4 if isinstance(parent[key], str) else []
        actions += ["add"] if isinstance(parent, dict) else []
        action = draw(st.sampled_from(actions))
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(json_values)
        elif action == "edit":
            parent[key] = _edit_string(parent[key], draw)
        else:  # a member the schema does not know, beside an existing one
            parent[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return document


header_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from("\t "),
    max_size=120,
)
authorization_headers = (
    header_text
    | header_text.map(lambda token: f"Bearer {token}")
    | st.sampled_from(["Bearer", "Bearer ", "bearer x", "Basic dXNlcjpwYXNz", "Bearer a b"])
)
# Bytes an HTTP parser accepts in a field value (VCHAR, SP, HTAB, obs-text), UTF-8 or not.
raw_header_bytes = st.binary(max_size=80).map(
    lambda data: bytes(b for b in data if b == 0x09 or 0x20 <= b <= 0x7E or b >= 0x80)
)


# --- bodies ----------------------------------------------------------------------------------

BODY_PATHS = ("/v1/certificates", "/v1/seals/verify")


@pytest.mark.parametrize("path", BODY_PATHS)
def test_arbitrary_json_bodies(live: LiveNode, path: str) -> None:
    check(live, json_values, lambda value: assert_answered(live.post_json(path, json_bytes(value))))


@pytest.mark.parametrize("path", BODY_PATHS)
def test_arbitrary_byte_bodies(live: LiveNode, path: str) -> None:
    check(live, st.binary(max_size=400), lambda data: assert_answered(live.post_json(path, data)))


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_arbitrary_compressed_bodies(live: LiveNode, encoding: str) -> None:
    compress = gzip.compress if encoding == "gzip" else zlib.compress
    bodies = st.binary(max_size=200) | json_values.map(lambda v: compress(json_bytes(v)))

    def send(data: bytes) -> None:
        headers = {"Content-Encoding": encoding}
        assert_answered(live.post_json("/v1/seals/verify", data, headers))

    check(live, bodies, send)


def test_arbitrary_status_change_bodies(live: LiveNode, genuine: dict[str, Any]) -> None:
    # only "reason"-less or malformed actions: a valid revoke would end the fixture's life
    path = f"/v1/certificates/{genuine['certificate_id']}/status"
    owner = live.auth_of("zhuji-public-security")
    bodies = json_values.filter(lambda v: not (isinstance(v, dict) and v.get("action")))
    check(
        live,
        bodies,
        lambda value: assert_answered(live.post_json(path, json_bytes(value), owner)),
    )


def test_mutated_issue_requests(live: LiveNode, node_keys: StaticKeyResolver) -> None:
    issued_types: set[str] = set()

    def send(request: dict[str, Any]) -> None:
        # sent by the department that issues the type, so acceptable requests get issued
        issuer = "zhuji-public-security" if request.get("type") == "household_register" else None
        headers = live.auth_of(issuer) if issuer else None
        answer = live.post_json("/v1/certificates", json_bytes(request), headers)
        assert_answered(answer)
        if answer.status == 201:
            # whatever the node accepted, it sealed: the seal verifies with its JWKS
            issued = answer.json()
            verified = verify_seal(issued["seal"], node_keys, now=NOW)
            assert verified.payload["id"] == issued["certificate_id"]
            issued_types.add(issued["type"])

    check(live, mutated_issue_requests(), send)
    # the property reached the sealing path for both types, not only the refusals
    assert issued_types == {"marriage", "household_register"}


# --- cases -----------------------------------------------------------------------------------


def case_application() -> dict[str, Any]:
    """县域通办 at Zhuji: its window receives for its own human-resources bureau (no peer)."""
    return {
        "matter": "flexible-pension-enrolment",
        "owner": {"node": "zhuji"},
        "channel": "window",
        "applicant": {"id_type": "111", "id": "330681199001010015", "name": "赵立新"},
        "identity_checked_by": "zj-0001",
        "delivery": "window",
        "materials": {
            "application-form": {"content": "eyJhIjoxfQ", "media_type": "application/json"},
            "resident-id": {"content": "SUQ", "media_type": "image/png", "checked_original": True},
        },
    }


def test_arbitrary_case_applications(live: LiveNode) -> None:
    window = live.auth_of("zhuji-service-center")
    check(
        live,
        json_values,
        lambda value: assert_answered(live.post_json("/v1/cases", json_bytes(value), window)),
    )


def test_mutated_case_applications(live: LiveNode) -> None:
    window = live.auth_of("zhuji-service-center")
    received = 0

    def send(application: dict[str, Any]) -> None:
        nonlocal received
        answer = live.post_json("/v1/cases", json_bytes(application), window)
        assert_answered(answer)
        if answer.status == 201:
            received += 1
            case = answer.json()
            assert live.request("GET", f"/v1/cases/{case['id']}", headers=window).status == 200

    check(live, mutated_documents([case_application]), send)
    assert received  # the property reached intake, not only the refusals


def test_arbitrary_case_actions(live: LiveNode) -> None:
    window = live.auth_of("zhuji-service-center")
    created = live.post_json("/v1/cases", orjson.dumps(case_application()), window)
    assert created.status == 201
    path = f"/v1/cases/{created.json()['id']}/actions"
    bureau = live.auth_of("zhuji-human-resources")
    # malformed or reasonless actions only: a valid one would move the case on
    bodies = json_values.filter(lambda v: not (isinstance(v, dict) and "action" in v)) | (
        st.fixed_dictionaries(
            {"action": st.sampled_from(["not_accept", "refuse", "supplement", "suspend"])}
        )
    )
    for who in (window, bureau):

        def send(value: Any, headers: dict[str, str] = who) -> None:
            assert_answered(live.post_json(path, json_bytes(value), headers))

        check(live, bodies, send)


def test_arbitrary_case_ids_and_queries(live: LiveNode) -> None:
    window = live.auth_of("zhuji-service-center")

    def send(text: str) -> None:
        quoted = quote(text, safe="")
        for path in (
            f"/v1/cases/{quoted}",
            f"/v1/cases/{quoted}/events",
            f"/v1/cases?box={quoted}",
            f"/v1/cases?after={quoted}&limit={quoted}",
            f"/v1/cases?state={quoted}",
        ):
            assert_answered(live.request("GET", path, headers=window))

    check(live, st.text(max_size=40) | st.sampled_from(["330681-20261204-000001", "0" * 30]), send)


def test_arbitrary_case_exchange_bodies(live: LiveNode) -> None:
    check(
        live,
        st.binary(max_size=300) | json_values.map(json_bytes),
        lambda data: assert_answered(live.post_json("/v1/exchange/cases", data)),
    )


# --- seals -----------------------------------------------------------------------------------


def test_arbitrary_strings_as_seals(live: LiveNode) -> None:
    def send(seals: list[str]) -> None:
        answer = live.post_json("/v1/seals/verify", orjson.dumps({"seals": seals}))
        assert answer.status == 200, answer
        reports = answer.json()["reports"]
        assert len(reports) == len(seals)
        assert all(report["indication"] != "PASSED" for report in reports), reports

    check(live, st.lists(st.text(max_size=200), min_size=1, max_size=4), send)


def test_mutated_genuine_seals_never_pass(live: LiveNode, genuine: dict[str, Any]) -> None:
    seal: str = genuine["seal"]

    def send(position_and_char: tuple[int, str]) -> None:
        position, char = position_and_char
        if seal[position] == char:
            return
        forged = seal[:position] + char + seal[position + 1 :]
        answer = live.post_json("/v1/seals/verify", orjson.dumps({"seals": [seal, forged]}))
        assert answer.status == 200, answer
        genuine_report, forged_report = answer.json()["reports"]
        assert genuine_report["indication"] == "PASSED"
        assert forged_report["indication"] != "PASSED", (position, char)

    positions = st.tuples(
        st.integers(0, len(seal) - 1),
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/"),
    )
    check(live, positions, send)


# --- paths, queries and headers --------------------------------------------------------------


def test_arbitrary_certificate_ids_in_the_path(live: LiveNode) -> None:
    def send(id_and_matter: tuple[str, str]) -> None:
        cert_id, matter = id_and_matter
        path = f"/v1/certificates/{quote(cert_id, safe='')}"
        assert_answered(live.request("GET", path, params={"matter": matter}, headers=live.auth))
        status = live.post_json(f"{path}/status", b'{"action": "suspend", "reason": "x"}')
        assert_answered(status)

    ids = st.text(max_size=150) | st.builds(
        lambda tail: f"1.2.156.3005.2.{tail}", st.text(max_size=100)
    )
    matters = st.sampled_from(["marriage-registration", "no-such-matter", ""]) | st.text(
        max_size=40
    )
    check(live, st.tuples(ids, matters), send)


def test_arbitrary_status_list_ids(live: LiveNode) -> None:
    # digit-like characters of every script (Nd, No: "١", "²", "Ⅻ"...) beside any text
    digits = st.text(st.characters(whitelist_categories=("Nd", "No", "Nl")), min_size=1)
    check(
        live,
        st.text(min_size=1, max_size=40) | digits,
        lambda raw: assert_answered(live.request("GET", f"/v1/status-lists/{quote(raw, safe='')}")),
    )


def test_arbitrary_authorization_headers(live: LiveNode) -> None:
    def send(header: str) -> None:
        answer = live.request(
            "POST",
            "/v1/seals/verify",
            data=b'{"seals": ["x"]}',
            headers={"Authorization": header, "Content-Type": "application/json"},
        )
        assert_answered(answer)
        assert answer.status == 401, answer
        assert answer.json()["code"].split(".")[0] in {"auth", "token"}

    check(live, authorization_headers, send)


def test_arbitrary_authorization_bytes(live: LiveNode) -> None:
    def send(header: bytes) -> None:
        answer = live.raw(
            b"POST /v1/seals/verify HTTP/1.1\r\nHost: zhuji.test\r\nAuthorization: "
            + header
            + b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n{}"
        )
        assert_answered(answer)
        assert answer.status == 401, answer

    check(live, raw_header_bytes | raw_header_bytes.map(lambda t: b"Bearer " + t), send)


def test_arbitrary_request_ids(live: LiveNode) -> None:
    def send(request_id: str) -> None:
        answer = live.request("GET", "/healthz", headers={"X-Request-Id": request_id})
        assert answer.status == 200
        echoed = answer.headers["X-Request-Id"]
        assert echoed == request_id or re.fullmatch(r"[0-9a-f]{16}", echoed)

    check(live, header_text, send)
