"""The bench's bookkeeping: rounds, their order, and the ratios taken within a round.

Nothing here times anything: the measures are counters, so what is checked is which
measurement ran when, and how a figure is formed from the rounds' values.
"""

from __future__ import annotations

import os
import statistics
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bench import bare
from bench.cluster import Cluster
from bench.run import (
    REPEATS,
    in_turn,
    per_hop,
    ratio_by_round,
    raw_verifiers_by_alg,
    share_per_hop,
    side_by_side,
)
from gateway.errors import SealError


def test_in_turn_alternates_the_order_between_rounds() -> None:
    assert in_turn(["gateway", "reference"], 0) == ["gateway", "reference"]
    assert in_turn(["gateway", "reference"], 1) == ["reference", "gateway"]
    assert in_turn(["local", "one", "four"], 2) == ["local", "one", "four"]
    assert in_turn(["local", "one", "four"], 3) == ["four", "one", "local"]


def test_side_by_side_measures_every_side_in_each_round_before_the_next() -> None:
    ran: list[str] = []

    def measure(name: str, value: float) -> tuple[str, Callable[[], float]]:
        def run() -> float:
            ran.append(name)
            return value + len(ran)

        return name, run

    values = side_by_side([measure("g", 100.0), measure("r", 1000.0)], "req/s")

    assert REPEATS == 3
    assert ran == ["g", "r", "r", "g", "g", "r"]
    # each side's values are its own, in round order
    assert values == [[101.0, 104.0, 105.0], [1002.0, 1003.0, 1006.0]]


def test_the_ratio_is_the_median_of_the_rounds_ratios_not_of_the_medians() -> None:
    # a machine that slows down between rounds: the sides' medians come from different
    # rounds, the rounds' ratios do not
    gateway = [100.0, 50.0, 80.0]
    reference = [1000.0, 500.0, 400.0]

    ratio, shown = ratio_by_round(gateway, reference)

    assert ratio == pytest.approx(0.1)
    assert shown == "0.10, 0.10, 0.20"
    assert statistics.median(gateway) / statistics.median(reference) == pytest.approx(0.16)


def test_ratio_by_round_refuses_sides_of_different_lengths() -> None:
    with pytest.raises(ValueError, match=r"shorter|longer"):
        ratio_by_round([1.0, 2.0], [1.0])


def test_a_node_state_is_copied_and_moved_only_while_the_node_is_stopped(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, {0})
    home = cluster.home("zhuji")
    home.mkdir(parents=True)
    (home / "registry.sqlite3").write_bytes(b"small")

    small = cluster.keep_copy("zhuji", "zhuji-small")
    (home / "registry.sqlite3").write_bytes(b"big")
    big = cluster.set_aside("zhuji", "zhuji-big")

    assert (small / "registry.sqlite3").read_bytes() == b"small"
    assert (big / "registry.sqlite3").read_bytes() == b"big"
    assert not home.exists()

    cluster.procs["zhuji"] = None  # type: ignore[assignment]  # stands for a running node
    with pytest.raises(RuntimeError, match="running"):
        cluster.keep_copy("zhuji", "again")
    with pytest.raises(RuntimeError, match="running"):
        cluster.set_aside("zhuji", "again")


def test_a_node_is_served_from_a_kept_state_and_its_state_moved_back(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, set(os.sched_getaffinity(0)))
    state = tmp_path / "zhuji-kept"
    state.mkdir()

    with cluster.serving_from("zhuji", state):
        assert not state.exists()
        assert cluster.home("zhuji").is_dir()
        with urllib.request.urlopen(cluster.url("zhuji") + "/healthz", timeout=5) as answer:
            assert answer.status == 200
        process = cluster.procs["zhuji"]

    assert process.returncode is not None  # stopped
    assert "zhuji" not in cluster.procs
    assert not cluster.home("zhuji").exists()
    assert (state / "registry.sqlite3").is_file()  # what the node wrote went back with it


def test_a_node_that_cannot_start_fails_at_once_and_its_state_goes_back(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, set(os.sched_getaffinity(0)))
    state = tmp_path / "zhuji-broken"
    state.mkdir()
    (state / "registry.sqlite3").write_bytes(b"not a database" * 100)

    with (
        pytest.raises(RuntimeError, match="exited with"),
        cluster.serving_from("zhuji", state),
    ):
        pytest.fail("the node started from a broken registry")

    assert "zhuji" not in cluster.procs
    assert (state / "registry.sqlite3").read_bytes().startswith(b"not a database")
    assert not cluster.home("zhuji").exists()


async def test_a_bare_chain_forwards_the_callers_headers_and_returns_the_last_answer() -> None:
    """Figure C's reference: each link forwards (a GET turned into a POST naming it, as a
    node's first hop does), passes the token and consent on, and relays the bytes unchanged."""
    seen: list[tuple[str, str, bytes, dict[str, str]]] = []

    async def last(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, await request.read(), dict(request.headers)))
        return web.Response(body=b'{"seal": "x"}', status=200, content_type="application/json")

    end = web.Application()
    end.router.add_post("/v1/relay", last)
    async with TestServer(end) as final:
        link = bare.app(b"unused", str(final.make_url("/v1/relay")))
        async with TestClient(TestServer(link)) as client:
            answer = await client.get(
                "/v1/certificates/c1?matter=m",
                headers={"Authorization": "Bearer t", "Tongban-Consent": "g", "X-Other": "no"},
            )
            assert answer.status == 200
            assert await answer.read() == b'{"seal": "x"}'
    [(method, path, body, headers)] = seen
    assert (method, path) == ("POST", "/v1/relay")
    assert orjson.loads(body) == {"path": "/v1/certificates/c1?matter=m"}
    assert headers["Authorization"] == "Bearer t"
    assert headers["Tongban-Consent"] == "g"
    assert "X-Other" not in headers


async def test_the_end_of_a_bare_chain_answers_its_bytes_to_any_route() -> None:
    async with TestClient(TestServer(bare.app(b'{"a": 1}'))) as client:
        for answer in (
            await client.get("/v1/certificates/c1"),
            await client.post("/v1/relay", data=b"{}"),
            await client.get("/healthz"),
        ):
            assert answer.status == 200
            assert await answer.read() == b'{"a": 1}'


def test_a_hop_figure_is_the_median_of_differences_taken_within_each_round() -> None:
    # round 2 is slow for both routes alike: a difference within the round cancels it
    q = {"far": [9.0, 29.0, 10.0], "local": [1.0, 21.0, 1.0]}
    assert per_hop(q, "far", "local", 4) == 2.0  # rounds: 2.0, 2.0, 2.25
    # the median of the medians would mix the rounds: (10 - 1) / 4
    assert (
        per_hop(q, "far", "local", 4)
        != (statistics.median(q["far"]) - statistics.median(q["local"])) / 4
    )


def test_the_gateways_share_is_its_hop_less_the_bare_chains_hop_in_the_same_round() -> None:
    q = {
        "far": [9.0, 17.0, 13.0],
        "local": [1.0, 1.0, 1.0],
        "bare far": [5.0, 13.0, 5.0],
        "bare local": [1.0, 1.0, 1.0],
    }
    # per round: (8 - 4) / 4 = 1, (16 - 12) / 4 = 1, (12 - 4) / 4 = 2
    assert share_per_hop(q, ("far", "local"), ("bare far", "bare local"), 4) == 1.0


def test_a_share_needs_every_round_on_every_path() -> None:
    q = {"far": [2.0, 3.0], "local": [1.0, 1.0], "bare far": [2.0, 3.0], "bare local": [1.0]}
    with pytest.raises(ValueError, match="shorter"):
        share_per_hop(q, ("far", "local"), ("bare far", "bare local"), 1)


def test_figure_fs_federation_seals_with_sm2(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, {0}, seal_alg="SM2")
    assert cluster.federation.seal_alg == "SM2"
    (tmp_path / "b").mkdir()
    assert Cluster(tmp_path / "b", {0}).federation.seal_alg == "EdDSA"


def test_the_raw_loops_of_figure_f_verify_the_seals_they_are_given() -> None:
    from gateway.crypto.jwks import KeyState, VerificationKey, public_jwk
    from gateway.crypto.seals import PrivateKeySigner, seal
    from gateway.crypto.sm2 import Sm2PrivateKey
    from gateway.ids import NodeId

    signer = PrivateKeySigner(Sm2PrivateKey.generate())
    key = VerificationKey(
        node=NodeId("zhuji"),
        kid=signer.kid,
        alg="SM2",
        public_key=signer.public_key,
        state=KeyState.ACTIVE,
        not_before=None,
        not_after=None,
        revoked_at=None,
        verify_allowed=True,
    )
    seals = [seal(signer, b'{"iss":"zhuji","iat":1}', signed_at=1.0) for _ in range(2)]
    loops = raw_verifiers_by_alg(seals, {"keys": [public_jwk(key)]})
    assert set(loops) == {"sm2", "sm2_tables", "ed25519", "libsodium", "p256"}
    head, payload, signature = seals[0].split(".")
    forged = f"{head}.{payload}x.{signature}"
    from tongsuopy.crypto.exceptions import InvalidSignature

    with pytest.raises(InvalidSignature):
        raw_verifiers_by_alg([forged], {"keys": [public_jwk(key)]})["sm2"]()
    with pytest.raises(SealError) as info:
        raw_verifiers_by_alg([forged], {"keys": [public_jwk(key)]})["sm2_tables"]()
    assert info.value.code == "seal.bad_signature"
