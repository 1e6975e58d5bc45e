"""A node's trust list sync, against a real aiohttp server playing ``national``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.clock import FixedClock
from gateway.config import Federation, load_federation
from gateway.errors import KeyStoreError, SealError, SealIndeterminate
from gateway.trust.rootkey import RootKey
from gateway.trust.sync import LONG_INTERVAL, SHORT_INTERVAL, TrustSync
from gateway.trust.trust_list import build_trust_list, sign_trust_list

NOW = 1_795_507_200.0  # 2026-11-24T08:00:00Z
FED: Federation = load_federation(env={})


class National:
    """Serves ``/v1/trust-list``: a token, or a failure, as the test says; counts requests."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.content_type = "text/plain"
        self.hits = 0

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            self.hits += 1
            if self.token is None:
                return web.Response(status=503, text="not yet")
            return web.Response(text=self.token, content_type=self.content_type)

        app = web.Application()
        app.router.add_get("/v1/trust-list", handler)
        return app


@pytest.fixture
async def national() -> AsyncIterator[tuple[National, str]]:
    fake = National()
    server = TestServer(fake.app())
    await server.start_server()
    yield fake, str(server.make_url("/")).rstrip("/")
    await server.close()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def root(keys_dir: Path, clock: FixedClock) -> RootKey:
    return RootKey.open_or_create(keys_dir, clock=clock)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def signed(root: RootKey, seq: int, now: float = NOW) -> str:
    return sign_trust_list(build_trust_list(FED, {}, seq=seq, now=now), root.signer(), now=now)


def make_sync(
    session: aiohttp.ClientSession,
    clock: FixedClock,
    keys_dir: Path,
    url: str,
    cache_path: Path,
) -> TrustSync:
    return TrustSync(
        FED,
        session,
        clock=clock,
        cache_path=cache_path,
        keys_dir=keys_dir,
        national_url=url,
        fetch_timeout=5.0,
    )


@pytest.fixture
def sync(
    session: aiohttp.ClientSession,
    clock: FixedClock,
    keys_dir: Path,
    root: RootKey,
    national: tuple[National, str],
    tmp_path: Path,
) -> TrustSync:
    return make_sync(session, clock, keys_dir, national[1], tmp_path / "trust-list.jws")


async def test_loads_the_list_and_serves_it(
    sync: TrustSync, national: tuple[National, str], root: RootKey
) -> None:
    fake, _ = national
    fake.token = signed(root, 1)
    assert sync.token is None
    assert await sync.refresh()
    assert sync.token == fake.token
    assert sync.resolver(NOW).node("zhuji").region == "330681"
    assert not sync.needs_refresh(NOW)


async def test_accepts_application_jwt(
    sync: TrustSync, national: tuple[National, str], root: RootKey
) -> None:
    fake, _ = national
    fake.token, fake.content_type = signed(root, 1), "application/jwt"
    assert await sync.refresh()


async def test_picks_up_a_newer_list(
    sync: TrustSync, national: tuple[National, str], root: RootKey, clock: FixedClock
) -> None:
    fake, _ = national
    fake.token = signed(root, 1)
    await sync.refresh()
    assert not await sync.refresh()  # the same list again: no change
    clock.advance(60)
    fake.token = signed(root, 2, NOW + 60)
    assert await sync.refresh()
    assert sync.cache is not None
    assert sync.cache.seq == 2


@pytest.mark.parametrize("bad", ["tampered", "older", "other_root", "garbage", "wrong_type"])
async def test_a_bad_list_never_replaces_a_good_one(
    sync: TrustSync, national: tuple[National, str], root: RootKey, tmp_path: Path, bad: str
) -> None:
    fake, _ = national
    good = signed(root, 2)
    fake.token = good
    await sync.refresh()
    if bad == "tampered":
        head, payload, signature = signed(root, 3).split(".")
        fake.token = f"{head}.{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    elif bad == "older":
        fake.token = signed(root, 1)
    elif bad == "other_root":
        other = RootKey.open_or_create(tmp_path / "other-keys", clock=FixedClock(NOW))
        fake.token = signed(other, 3)
    elif bad == "garbage":
        fake.token = "not a jws"
    else:
        fake.token, fake.content_type = signed(root, 3), "text/html"
    assert not await sync.refresh()
    assert fake.hits == 2
    assert sync.token == good
    assert sync.cache is not None
    assert sync.cache.seq == 2


async def test_national_down_keeps_the_current_list(
    sync: TrustSync, national: tuple[National, str], root: RootKey
) -> None:
    fake, _ = national
    fake.token = signed(root, 1)
    await sync.refresh()
    fake.token = None
    assert not await sync.refresh()
    assert sync.cache is not None
    assert sync.cache.seq == 1


async def test_an_expired_list_is_not_trusted(
    sync: TrustSync, national: tuple[National, str], root: RootKey, clock: FixedClock
) -> None:
    fake, _ = national
    fake.token = signed(root, 1)
    await sync.refresh()
    clock.advance(3600)
    with pytest.raises(SealIndeterminate) as caught:
        sync.resolver(clock.now())
    assert caught.value.code == "trust.expired"
    assert sync.needs_refresh(clock.now())


async def test_without_a_root_key_there_is_no_cache_and_no_fetch(
    session: aiohttp.ClientSession,
    clock: FixedClock,
    keys_dir: Path,
    national: tuple[National, str],
    tmp_path: Path,
) -> None:
    fake, url = national
    sync = make_sync(session, clock, keys_dir, url, tmp_path / "trust-list.jws")
    assert sync.cache is None
    assert sync.token is None
    assert not await sync.refresh()
    assert fake.hits == 0
    with pytest.raises(SealIndeterminate) as caught:
        sync.resolver(NOW)
    assert caught.value.code == "trust.unavailable"
    with pytest.raises(KeyStoreError) as missing:
        await sync.offer_local("x.y.z")
    assert missing.value.code == "keys.root_missing"
    # national creates the root key: the next refresh finds it and loads the list
    root = RootKey.open_or_create(keys_dir, clock=clock)
    fake.token = signed(root, 1)
    assert await sync.refresh()
    assert sync.cache is not None


async def test_offer_local_makes_national_s_own_list_current(
    sync: TrustSync, national: tuple[National, str], root: RootKey
) -> None:
    token = signed(root, 4)
    assert (await sync.offer_local(token)).seq == 4
    assert sync.token == token
    assert national[0].hits == 0
    with pytest.raises(SealError) as caught:
        await sync.offer_local(signed(root, 3))
    assert caught.value.code == "trust.rollback"


async def test_the_list_survives_a_restart(
    sync: TrustSync,
    national: tuple[National, str],
    root: RootKey,
    session: aiohttp.ClientSession,
    clock: FixedClock,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    fake, url = national
    fake.token = signed(root, 1)
    await sync.refresh()
    again = make_sync(session, clock, keys_dir, url, tmp_path / "trust-list.jws")
    assert again.token == fake.token
    assert fake.hits == 1


async def test_an_unusable_saved_list_is_set_aside(
    session: aiohttp.ClientSession,
    clock: FixedClock,
    keys_dir: Path,
    root: RootKey,
    national: tuple[National, str],
    tmp_path: Path,
) -> None:
    cache_path = tmp_path / "trust-list.jws"
    other = RootKey.open_or_create(tmp_path / "other-keys", clock=clock)
    cache_path.write_text(signed(other, 9))
    sync = make_sync(session, clock, keys_dir, national[1], cache_path)
    assert sync.cache is not None
    assert sync.cache.seq is None
    assert (tmp_path / "trust-list.jws.rejected").exists()
    national[0].token = signed(root, 1)
    assert await sync.refresh()  # seq 1 accepted: the set-aside seq 9 does not block it


class Stop(Exception):
    pass


async def test_run_polls_fast_until_there_is_a_list_then_slowly(
    sync: TrustSync, national: tuple[National, str], root: RootKey
) -> None:
    fake, _ = national
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            fake.token = signed(root, 1)
        if len(waits) == 3:
            raise Stop

    with pytest.raises(Stop):
        await sync.run(sleep)
    assert waits == [SHORT_INTERVAL, SHORT_INTERVAL, LONG_INTERVAL]
    assert fake.hits == 3
