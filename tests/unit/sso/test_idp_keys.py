"""The IdP key cache, against a real aiohttp server playing the IdP.

The fake IdP serves discovery and a JWKS, counts every GET, and can be switched to fail:
500, a stall (an Event never set, against a 0.2 s fetch timeout), garbage, oversized bodies,
wrong content types, redirects, JWKS the strict parser refuses. Time is a FixedClock; the
background loop's waits go through an injected sleep the test steps by hand.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.clock import FixedClock
from gateway.crypto.jwks import KeyState, VerificationKey, public_jwk
from gateway.crypto.seals import PrivateKeySigner
from gateway.errors import ConfigError, NetworkError, SealIndeterminate, TokenError, UpstreamTimeout
from gateway.ids import DepartmentId, KeyId, NodeId, RegionCode
from gateway.sso.idp_keys import MIN_REFRESH_INTERVAL, RemoteKeySet, validate_with_refresh
from gateway.sso.tokens import TokenValidator, issue_access_token

NOW = 1_795_507_200.0  # 2026-11-24T08:00:00Z
IDP = NodeId("idp")
AUDIENCE = "tongban"
FETCH_TIMEOUT = 0.2
MAX_BYTES = 4000
PEER_SECRET = "traceback: secret internals of the IdP"
GUARD = 5.0  # a lost fetch timeout fails the test instead of hanging it (not a timing check)

KEY_A = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
KEY_B = PrivateKeySigner(ec.derive_private_key(0x1D_9B, ec.SECP256R1()))
KEY_ENC = PrivateKeySigner(Ed25519PrivateKey.from_private_bytes(bytes(range(7, 39))))


def jwk(signer: PrivateKeySigner, **changes: Any) -> dict[str, Any]:
    key = VerificationKey(
        node=IDP,
        kid=signer.kid,
        alg=signer.alg,
        public_key=signer.public_key,
        state=KeyState.ACTIVE,
        not_before=NOW - 86_400,
        not_after=NOW + 86_400,
        revoked_at=None,
        verify_allowed=True,
    )
    out = public_jwk(key)
    out.update(changes)
    return out


class FakeIdP:
    """Discovery + JWKS with hit counters and failure switches, all set by the test."""

    def __init__(self) -> None:
        self.issuer = ""  # known once the server listens
        self.keys: list[dict[str, Any]] = [jwk(KEY_A)]
        self.discovery_hits = 0
        self.jwks_hits = 0
        self.discovery_mode = "ok"
        self.discovery_issuer: str | None = None
        self.jwks_uri: str | None = None
        self.mode = "ok"
        self.cache_control: str | None = None
        self.jwks_entered = asyncio.Event()
        self.gate = asyncio.Event()  # a JWKS answer waits for it; open unless a test closes it
        self.gate.set()
        self.never = asyncio.Event()  # set only at teardown, to release stalled handlers

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        return app

    def jwks_body(self) -> bytes:
        return orjson.dumps({"keys": self.keys})

    async def discovery(self, request: web.Request) -> web.StreamResponse:
        self.discovery_hits += 1
        if self.discovery_mode == "500":
            return web.Response(status=500, text=PEER_SECRET)
        if self.discovery_mode == "stall":
            await self.never.wait()
        if self.discovery_mode == "array":
            return web.json_response([self.issuer])
        return web.json_response(
            {
                "issuer": self.discovery_issuer or self.issuer,
                "jwks_uri": self.jwks_uri or f"{self.issuer}/jwks",
                "id_token_signing_alg_values_supported": ["EdDSA", "ES256"],
            }
        )

    async def jwks(self, request: web.Request) -> web.StreamResponse:
        self.jwks_hits += 1
        self.jwks_entered.set()
        await self.gate.wait()
        headers = {} if self.cache_control is None else {"Cache-Control": self.cache_control}
        body = self.jwks_body()
        match self.mode:
            case "ok":
                return web.Response(body=body, content_type="application/json", headers=headers)
            case "jwk-set+json":
                return web.Response(body=body, content_type="application/jwk-set+json")
            case "500":
                return web.Response(status=500, text=PEER_SECRET)
            case "stall":
                await self.never.wait()
                return web.Response(body=body, content_type="application/json")
            case "garbage":
                return web.Response(
                    body=b"{keys: [" + PEER_SECRET.encode(), content_type="application/json"
                )
            case "html":
                return web.Response(text=f"<html>{PEER_SECRET}</html>", content_type="text/html")
            case "redirect":
                raise web.HTTPFound(f"{self.issuer}/elsewhere")
            case "oversized":  # a valid JWKS, padded past the cap, with a Content-Length
                padded = body + b" " * MAX_BYTES
                return web.Response(body=padded, content_type="application/json")
            case "oversized-chunked":  # the same without a Content-Length: the read is capped
                response = web.StreamResponse(headers={"Content-Type": "application/json"})
                response.enable_chunked_encoding()
                await response.prepare(request)
                await response.write(body)
                for _ in range(4):
                    await response.write(b" " * (MAX_BYTES // 2))
                await response.write_eof()
                return response
            case "duplicate-member":
                raw = b'{"keys": [], "keys": ' + orjson.dumps(self.keys) + b"}"
                return web.Response(body=raw, content_type="application/json")
            case "kid-mismatch":
                bad = {"keys": [jwk(KEY_A, kid=KEY_B.kid)]}
                return web.Response(body=orjson.dumps(bad), content_type="application/json")
            case "private-key":
                bad = {"keys": [jwk(KEY_A, d="AAAA")]}
                return web.Response(body=orjson.dumps(bad), content_type="application/json")
            case "empty":
                return web.json_response({"keys": []})
            case _:  # pragma: no cover - a typo in a test
                raise AssertionError(self.mode)


@pytest.fixture
async def idp() -> AsyncIterator[FakeIdP]:
    fake = FakeIdP()
    server = TestServer(fake.app())
    await server.start_server()
    fake.issuer = f"http://{server.host}:{server.port}"
    yield fake
    fake.gate.set()
    fake.never.set()
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


MakeKeys = Callable[..., RemoteKeySet]


@pytest.fixture
def make_keys(idp: FakeIdP, session: aiohttp.ClientSession, clock: FixedClock) -> MakeKeys:
    def make(**kwargs: Any) -> RemoteKeySet:
        options: dict[str, Any] = {
            "clock": clock,
            "node": IDP,
            "fetch_timeout": FETCH_TIMEOUT,
            "max_bytes": MAX_BYTES,
        }
        options.update(kwargs)
        return RemoteKeySet(idp.issuer, session, **options)

    return make


def token(idp: FakeIdP, signer: PrivateKeySigner = KEY_A, **changes: Any) -> str:
    args: dict[str, Any] = {
        "issuer": idp.issuer,
        "audience": AUDIENCE,
        "subject": "zhuji-civil-affairs",
        "client_id": "zhuji-civil-affairs",
        "scopes": ("cert:read",),
        "department": DepartmentId("zhuji-civil-affairs"),
        "region": RegionCode("330681"),
        "now": NOW,
        "jti": "t-1",
    }
    args.update(changes)
    return issue_access_token(signer, **args)


def validator(idp: FakeIdP, keys: RemoteKeySet) -> TokenValidator:
    return TokenValidator(keys, issuer=idp.issuer, audience=AUDIENCE)


# --- loading --------------------------------------------------------------------------------


async def test_first_load_discovers_the_jwks_and_serves_its_keys(
    idp: FakeIdP, make_keys: MakeKeys
) -> None:
    keys = make_keys()
    with pytest.raises(SealIndeterminate) as before:
        keys.key_for(KEY_A.kid)
    assert before.value.code == "seal.unknown_kid"
    assert keys.last_refreshed is None

    await keys.ensure_loaded()
    await keys.ensure_loaded()  # loaded once: no second fetch

    assert keys.snapshot_kids() == {KEY_A.kid}
    key = keys.key_for(KEY_A.kid)
    assert (key.node, key.alg, key.state, key.verify_allowed) == (
        IDP,
        "EdDSA",
        KeyState.ACTIVE,
        True,
    )
    assert keys.last_refreshed == NOW
    assert keys.failures == 0
    assert (idp.discovery_hits, idp.jwks_hits) == (1, 1)
    claims = validator(idp, keys).validate(token(idp), now=NOW)
    assert claims.sub == "zhuji-civil-affairs"


async def test_jwk_set_media_type_is_accepted(idp: FakeIdP, make_keys: MakeKeys) -> None:
    idp.mode = "jwk-set+json"
    keys = make_keys()
    await keys.ensure_loaded()
    assert keys.snapshot_kids() == {KEY_A.kid}


async def test_discovery_is_reused_until_a_fetch_fails(idp: FakeIdP, make_keys: MakeKeys) -> None:
    keys = make_keys()
    await keys.ensure_loaded()
    assert await keys.refresh(reason="test") is False  # same set: unchanged
    assert (idp.discovery_hits, idp.jwks_hits) == (1, 2)
    idp.mode = "500"
    with pytest.raises(NetworkError):
        await keys.refresh(reason="test")
    idp.mode = "ok"
    await keys.refresh(reason="test")
    assert (idp.discovery_hits, idp.jwks_hits) == (2, 4)  # re-discovered after the failure


@pytest.mark.parametrize(
    "announced",
    [
        "https://idp.attacker.example",
        "{issuer}/",  # exact match: a trailing slash is another issuer
        "{issuer}/tenant",
    ],
)
async def test_discovery_naming_another_issuer_is_refused(
    idp: FakeIdP, make_keys: MakeKeys, announced: str
) -> None:
    idp.discovery_issuer = announced.format(issuer=idp.issuer)
    keys = make_keys()
    with pytest.raises(NetworkError) as caught:
        await keys.ensure_loaded()
    assert type(caught.value) is NetworkError
    assert caught.value.code == "keys.discovery_mismatch"
    assert caught.value.status == 502
    assert idp.jwks_hits == 0  # the keys of an unconfirmed issuer are never fetched
    assert keys.snapshot_kids() == frozenset()
    assert keys.last_refreshed is None
    assert keys.failures == 1


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"jwks_uri": "file:///etc/passwd"}, "bad jwks_uri"),
        ({"jwks_uri": "/jwks"}, "bad jwks_uri"),
        ({"discovery_mode": "array"}, "not a JSON object"),
        ({"discovery_mode": "500"}, "HTTP 500"),
    ],
)
async def test_a_bad_discovery_document_fails_the_first_load(
    idp: FakeIdP, make_keys: MakeKeys, change: dict[str, str], detail: str
) -> None:
    for name, value in change.items():
        setattr(idp, name, value)
    keys = make_keys()
    with pytest.raises(NetworkError) as caught:
        await keys.ensure_loaded()
    assert caught.value.code == "keys.fetch_failed"
    assert detail in (caught.value.log_detail or "")
    assert PEER_SECRET not in caught.value.detail
    assert keys.snapshot_kids() == frozenset()
    assert idp.jwks_hits == 0


async def test_a_stalled_discovery_times_out(idp: FakeIdP, make_keys: MakeKeys) -> None:
    idp.discovery_mode = "stall"
    keys = make_keys()
    with pytest.raises(UpstreamTimeout) as caught:
        async with asyncio.timeout(GUARD):
            await keys.ensure_loaded()
    assert caught.value.code == "keys.fetch_timeout"
    assert caught.value.status == 504
    assert keys.snapshot_kids() == frozenset()


# --- single flight --------------------------------------------------------------------------


async def test_concurrent_refreshes_share_one_fetch(idp: FakeIdP, make_keys: MakeKeys) -> None:
    keys = make_keys()
    idp.gate.clear()
    first = asyncio.gather(*(keys.refresh(reason="test") for _ in range(10)))
    await idp.jwks_entered.wait()  # the one fetch is at the IdP now
    later = asyncio.gather(*(keys.refresh(reason="test") for _ in range(10)))
    await asyncio.sleep(0)  # let the later callers reach the shared fetch
    idp.gate.set()

    results = await first + await later

    assert results == [True] * 20  # every caller sees the one change
    assert (idp.discovery_hits, idp.jwks_hits) == (1, 1)
    assert await keys.refresh(reason="test") is False  # finished flights are not reused
    assert idp.jwks_hits == 2


async def test_concurrent_first_loads_share_one_failure(idp: FakeIdP, make_keys: MakeKeys) -> None:
    idp.mode = "500"
    keys = make_keys()
    results = await asyncio.gather(
        *(keys.ensure_loaded() for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, NetworkError) and r.code == "keys.fetch_failed" for r in results)
    assert idp.jwks_hits == 1
    assert keys.failures == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    idp: FakeIdP, make_keys: MakeKeys
) -> None:
    keys = make_keys()
    idp.gate.clear()
    impatient = asyncio.create_task(keys.refresh(reason="test"))
    patient = asyncio.create_task(keys.refresh(reason="test"))
    await idp.jwks_entered.wait()
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    idp.gate.set()
    assert await patient is True
    assert keys.snapshot_kids() == {KEY_A.kid}
    assert idp.jwks_hits == 1


async def test_aclose_cancels_the_fetch_in_flight(idp: FakeIdP, make_keys: MakeKeys) -> None:
    keys = make_keys()
    idp.gate.clear()
    waiting = asyncio.create_task(keys.refresh(reason="test"))
    await idp.jwks_entered.wait()
    await keys.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert keys.snapshot_kids() == frozenset()
    idp.gate.set()
    assert await keys.refresh(reason="test") is True  # a new flight, not the cancelled one


# --- unknown kid and its cooldown -----------------------------------------------------------


async def test_an_unknown_kid_refreshes_once_and_finds_the_new_key(
    idp: FakeIdP, make_keys: MakeKeys
) -> None:
    keys = make_keys()
    await keys.ensure_loaded()
    idp.keys.append(jwk(KEY_B))  # the IdP pre-published a key this node has not seen yet
    new_token = token(idp, KEY_B)
    with pytest.raises(TokenError) as plain:
        validator(idp, keys).validate(new_token, now=NOW)
    assert plain.value.code == "token.unknown_kid"

    claims = await validate_with_refresh(validator(idp, keys), keys, new_token, now=NOW)

    assert claims.client_id == "zhuji-civil-affairs"
    assert keys.snapshot_kids() == {KEY_A.kid, KEY_B.kid}
    assert idp.jwks_hits == 2
    # known now: validating again does not fetch
    await validate_with_refresh(validator(idp, keys), keys, new_token, now=NOW)
    assert idp.jwks_hits == 2


async def test_unknown_kid_refreshes_are_limited_by_the_cooldown(
    idp: FakeIdP, make_keys: MakeKeys, clock: FixedClock
) -> None:
    keys = make_keys(unknown_kid_cooldown=30.0)
    await keys.ensure_loaded()
    stranger = KeyId("k" * 43)

    assert await keys.refresh_for_unknown_kid(stranger) is False  # fetched, still unknown
    assert idp.jwks_hits == 2
    # a second miss within the cooldown, for this kid or any other, does not fetch
    idp.keys.append(jwk(KEY_B))
    assert await keys.refresh_for_unknown_kid(stranger) is False
    assert await keys.refresh_for_unknown_kid(KEY_B.kid) is False
    with pytest.raises(TokenError) as caught:
        await validate_with_refresh(validator(idp, keys), keys, token(idp, KEY_B), now=NOW)
    assert caught.value.code == "token.unknown_kid"
    clock.advance(29.0)
    assert await keys.refresh_for_unknown_kid(KEY_B.kid) is False
    assert idp.jwks_hits == 2

    clock.advance(1.5)  # past the cooldown: one more fetch, which finds KEY_B
    claims = await validate_with_refresh(validator(idp, keys), keys, token(idp, KEY_B), now=NOW)
    assert claims.sub == "zhuji-civil-affairs"
    assert idp.jwks_hits == 3


async def test_an_unknown_kid_while_the_idp_is_down_is_a_token_error(
    idp: FakeIdP, make_keys: MakeKeys
) -> None:
    keys = make_keys()
    await keys.ensure_loaded()
    idp.keys.append(jwk(KEY_B))
    idp.mode = "500"
    with pytest.raises(TokenError) as caught:
        await validate_with_refresh(validator(idp, keys), keys, token(idp, KEY_B), now=NOW)
    assert caught.value.code == "token.unknown_kid"
    assert caught.value.status == 401
    assert keys.failures == 1
    assert keys.snapshot_kids() == {KEY_A.kid}
    # the direct call reports the network failure itself
    fresh = make_keys()
    with pytest.raises(NetworkError) as direct:
        await fresh.refresh_for_unknown_kid(KEY_B.kid)
    assert direct.value.code == "keys.fetch_failed"


async def test_other_token_errors_are_raised_without_a_fetch(
    idp: FakeIdP, make_keys: MakeKeys
) -> None:
    keys = make_keys()
    await keys.ensure_loaded()
    expired = token(idp, now=NOW - 3600)
    with pytest.raises(TokenError) as caught:
        await validate_with_refresh(validator(idp, keys), keys, expired, now=NOW)
    assert caught.value.code == "token.expired"
    assert idp.jwks_hits == 1


# --- failures keep the last good set --------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "error", "code", "cause"),
    [
        ("500", NetworkError, "keys.fetch_failed", "HTTP 500"),
        ("redirect", NetworkError, "keys.fetch_failed", "HTTP 302"),
        ("stall", UpstreamTimeout, "keys.fetch_timeout", "no answer within"),
        ("garbage", NetworkError, "keys.fetch_failed", "input.malformed_json"),
        ("duplicate-member", NetworkError, "keys.fetch_failed", "input.duplicate_member"),
        ("html", NetworkError, "keys.fetch_failed", "content type 'text/html'"),
        ("oversized", NetworkError, "keys.fetch_failed", "Content-Length"),
        ("oversized-chunked", NetworkError, "keys.fetch_failed", f"over {MAX_BYTES} bytes"),
        ("kid-mismatch", NetworkError, "keys.fetch_failed", "jwk.kid_mismatch"),
        ("private-key", NetworkError, "keys.fetch_failed", "jwk.private_key"),
        ("empty", NetworkError, "keys.fetch_failed", "no keys"),
    ],
)
async def test_a_failed_refresh_keeps_serving_the_last_good_set(
    idp: FakeIdP,
    make_keys: MakeKeys,
    clock: FixedClock,
    mode: str,
    error: type[NetworkError],
    code: str,
    cause: str,
) -> None:
    keys = make_keys()
    await keys.ensure_loaded()
    good_token = token(idp)
    clock.advance(60.0)
    idp.mode = mode

    with pytest.raises(NetworkError) as caught:
        async with asyncio.timeout(GUARD):
            await keys.refresh(reason="test")

    assert type(caught.value) is error
    assert caught.value.code == code
    assert cause in (caught.value.log_detail or "")
    assert PEER_SECRET not in caught.value.detail  # a peer's body is never relayed
    assert keys.snapshot_kids() == {KEY_A.kid}
    assert keys.last_refreshed == NOW  # the last success, not the failure
    assert keys.failures == 1
    assert validator(idp, keys).validate(good_token, now=NOW).sub == "zhuji-civil-affairs"

    idp.mode = "ok"
    assert await keys.refresh(reason="test") is False
    assert keys.failures == 0
    assert keys.last_refreshed == NOW + 60.0


async def test_the_first_load_failing_leaves_the_set_empty(
    idp: FakeIdP, make_keys: MakeKeys
) -> None:
    idp.mode = "stall"
    keys = make_keys()
    with pytest.raises(UpstreamTimeout) as caught:
        async with asyncio.timeout(GUARD):
            await keys.ensure_loaded()
    assert caught.value.code == "keys.fetch_timeout"
    assert keys.snapshot_kids() == frozenset()
    assert keys.last_refreshed is None
    with pytest.raises(TokenError) as rejected:
        validator(idp, keys).validate(token(idp), now=NOW)
    assert rejected.value.code == "token.unknown_kid"


async def test_a_key_the_idp_removes_is_dropped(idp: FakeIdP, make_keys: MakeKeys) -> None:
    idp.keys = [jwk(KEY_A), jwk(KEY_B)]
    keys = make_keys()
    await keys.ensure_loaded()
    idp.keys = [jwk(KEY_B)]
    assert await keys.refresh(reason="test") is True
    assert keys.snapshot_kids() == {KEY_B.kid}
    with pytest.raises(TokenError) as caught:
        validator(idp, keys).validate(token(idp), now=NOW)
    assert caught.value.code == "token.unknown_kid"


async def test_a_status_change_counts_as_a_change(idp: FakeIdP, make_keys: MakeKeys) -> None:
    idp.keys = [jwk(KEY_A), jwk(KEY_B, status="next")]
    keys = make_keys()
    await keys.ensure_loaded()
    with pytest.raises(TokenError) as caught:
        validator(idp, keys).validate(token(idp, KEY_B), now=NOW)
    assert caught.value.code == "token.key_not_active"
    idp.keys = [jwk(KEY_A, status="retired"), jwk(KEY_B)]
    assert await keys.refresh(reason="rotation") is True
    assert keys.key_for(KEY_B.kid).state is KeyState.ACTIVE
    assert validator(idp, keys).validate(token(idp, KEY_B), now=NOW).sub == "zhuji-civil-affairs"


async def test_an_encryption_key_loads_but_cannot_verify(idp: FakeIdP, make_keys: MakeKeys) -> None:
    idp.keys = [jwk(KEY_A), jwk(KEY_ENC, use="enc")]
    keys = make_keys()
    await keys.ensure_loaded()
    assert keys.snapshot_kids() == {KEY_A.kid, KEY_ENC.kid}
    assert keys.key_for(KEY_ENC.kid).verify_allowed is False
    with pytest.raises(TokenError) as caught:
        await validate_with_refresh(validator(idp, keys), keys, token(idp, KEY_ENC), now=NOW)
    assert caught.value.code == "token.key_use"
    assert idp.jwks_hits == 1  # a known key is not a reason to refresh


# --- the background loop --------------------------------------------------------------------


class SteppedSleep:
    """An injected sleep: records each wait, lets the test release it, then moves the clock."""

    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock
        self.waits: asyncio.Queue[float] = asyncio.Queue()
        self._release: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self, seconds: float) -> None:
        self.waits.put_nowait(seconds)
        await self._release.get()
        self.clock.advance(seconds)

    async def step(self) -> float:
        """Release the pending wait; return the next one the loop asks for."""
        self._release.put_nowait(None)
        return await self.waits.get()


class LowJitter(random.Random):
    def random(self) -> float:
        return 0.0


async def test_background_refresh_picks_up_a_new_key_and_backs_off_on_failure(
    idp: FakeIdP, make_keys: MakeKeys, clock: FixedClock
) -> None:
    sleep = SteppedSleep(clock)
    keys = make_keys(refresh_interval=4.0, sleep=sleep, rng=LowJitter())
    loop = asyncio.create_task(keys.run_background_refresh())
    try:
        assert await sleep.waits.get() == 0.0  # nothing loaded yet: load at once
        assert await sleep.step() == 4.0  # loaded; next refresh after the interval
        assert keys.snapshot_kids() == {KEY_A.kid}

        idp.keys.append(jwk(KEY_B))
        assert await sleep.step() == 4.0
        assert keys.snapshot_kids() == {KEY_A.kid, KEY_B.kid}
        assert idp.jwks_hits == 2

        # the IdP fails: backoff 1, 2, 4, 4 (x 0.5 jitter here), capped at the interval
        idp.mode = "500"
        assert [await sleep.step() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
        assert keys.failures == 4
        assert keys.snapshot_kids() == {KEY_A.kid, KEY_B.kid}  # still served

        idp.mode = "ok"
        assert await sleep.step() == 4.0
        assert keys.failures == 0
        assert idp.jwks_hits == 7
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


async def test_background_refresh_counts_from_the_last_refresh(
    idp: FakeIdP, make_keys: MakeKeys, clock: FixedClock
) -> None:
    sleep = SteppedSleep(clock)
    keys = make_keys(refresh_interval=300.0, sleep=sleep)
    await keys.ensure_loaded()
    clock.advance(100.0)
    loop = asyncio.create_task(keys.run_background_refresh())
    try:
        assert await sleep.waits.get() == 200.0
        assert await sleep.step() == 300.0
        assert idp.jwks_hits == 2
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


@pytest.mark.parametrize(
    ("cache_control", "wait"),
    [
        (None, 300.0),
        ("public, max-age=60", 60.0),
        ("max-age=1", MIN_REFRESH_INTERVAL),  # bounded below
        ("no-store", MIN_REFRESH_INTERVAL),
        ("max-age=86400", 300.0),  # bounded above by the refresh interval
        ("max-age=junk", 300.0),
    ],
)
async def test_background_refresh_follows_cache_control_within_bounds(
    idp: FakeIdP, make_keys: MakeKeys, clock: FixedClock, cache_control: str | None, wait: float
) -> None:
    idp.cache_control = cache_control
    sleep = SteppedSleep(clock)
    keys = make_keys(refresh_interval=300.0, sleep=sleep)
    await keys.ensure_loaded()
    loop = asyncio.create_task(keys.run_background_refresh())
    try:
        assert await sleep.waits.get() == wait
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "options"),
    [
        ("idp.test", {}),
        ("ftp://idp.test", {}),
        ("http://idp.test", {"fetch_timeout": 0}),
        ("http://idp.test", {"refresh_interval": -1}),
        ("http://idp.test", {"unknown_kid_cooldown": -1}),
        ("http://idp.test", {"max_bytes": 0}),
    ],
)
async def test_bad_settings_fail_at_construction(
    session: aiohttp.ClientSession, clock: FixedClock, issuer: str, options: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError) as caught:
        RemoteKeySet(issuer, session, clock=clock, node=IDP, **options)
    assert caught.value.code == "config.invalid"
