"""``tongban up``: every node of the federation in one process, each on its own port."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import orjson
import pytest
from conftest import HANG_GUARD, Up
from processes import free_ports

import gateway
from gateway.cli.commands import start_order
from gateway.cli.main import _parser
from gateway.clock import FixedClock
from gateway.config import DEFAULT_FEDERATION_FILE, Federation
from gateway.errors import ConfigError

pytestmark = pytest.mark.slow  # real processes or a whole federation

REPO = Path(gateway.__file__).resolve().parents[1]


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with session.get(url) as response:
        return response.status, orjson.loads(await response.read())


async def refused(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url):
            return False
    except aiohttp.ClientConnectorError:
        return True


async def test_every_node_answers_on_its_own_port_until_stopped(
    moved: Federation, clock: FixedClock
) -> None:
    up = Up(moved, clock)
    urls = await up.ready()
    try:
        assert urls == {node.id: f"http://127.0.0.1:{node.port}" for node in moved.nodes}
        assert list(urls) == ["idp", *(n.id for n in moved.nodes if n.kind == "region")]
        async with aiohttp.ClientSession() as session:
            for node_id, url in urls.items():
                status, body = await get(session, f"{url}/healthz")
                assert (status, body) == (200, {"status": "ok", "node": node_id})
            status, discovery = await get(
                session, f"{urls['idp']}/.well-known/openid-configuration"
            )
            assert status == 200
            assert discovery["issuer"] == urls["idp"]
            # a region node is a region node, not the IdP answering on every port
            status, jwks = await get(session, f"{urls['zhuji']}/.well-known/jwks.json")
            assert status == 200
            assert isinstance(jwks["keys"], list)
            assert len(jwks["keys"]) >= 1
    finally:
        await up.stopped()
    assert up.task.result() is None
    async with aiohttp.ClientSession() as session:
        for url in urls.values():
            assert await refused(session, f"{url}/healthz"), f"{url} still listens after stop"


@pytest.fixture
def taken_port() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


async def test_a_node_that_cannot_listen_stops_the_ones_already_up(
    moved: Federation, clock: FixedClock, taken_port: socket.socket
) -> None:
    port = taken_port.getsockname()[1]
    federation = moved.with_ports({"zhejiang": port})
    up = Up(federation, clock)
    with pytest.raises(ConfigError) as raised:
        await asyncio.wait_for(up.task, HANG_GUARD)
    assert raised.value.code == "config.listen"
    assert f"node zhejiang: cannot listen on 127.0.0.1:{port}" in raised.value.detail
    assert not up.urls.done(), "ready must not be reported for a federation that failed"
    # idp and national had started (national opened its registry) and were shut down again
    assert (federation.data_dir / "national" / "registry.sqlite3").exists()
    async with aiohttp.ClientSession() as session:
        for node_id in ("idp", "national"):
            assert await refused(session, f"{federation.url(node_id)}/healthz")


async def test_cancelling_shuts_the_nodes_down(moved: Federation, clock: FixedClock) -> None:
    up = Up(moved, clock)
    urls = await up.ready()
    up.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(up.task, HANG_GUARD)
    async with aiohttp.ClientSession() as session:
        for url in urls.values():
            assert await refused(session, f"{url}/healthz")


def test_the_idp_starts_first_then_the_regions_in_file_order(federation: Federation) -> None:
    backwards = replace(federation, nodes=tuple(reversed(federation.nodes)))
    regions = [n.id for n in reversed(federation.nodes) if n.kind == "region"]
    assert [n.id for n in start_order(backwards)] == ["idp", *regions]


def test_up_takes_a_bind_address() -> None:
    args = _parser().parse_args(["up", "--host", "0.0.0.0"])
    assert (args.command, args.host) == ("up", "0.0.0.0")
    assert _parser().parse_args(["up"]).host is None


# -- the command itself, in a real process ----------------------------------------------------


def federation_file(directory: Path, ports: dict[str, int]) -> Path:
    """The default federation file with every node moved to ``ports``."""
    text = DEFAULT_FEDERATION_FILE.read_text(encoding="utf-8")

    def move(match: re.Match[str]) -> str:
        return f'id = "{match[1]}"{match[2]}port = {ports[match[1]]}'

    text, count = re.subn(r'id = "([a-z-]+)"((?:\n(?!\[\[)[^\n]*)*?\n)port = \d+', move, text)
    assert count == len(ports)
    path = directory / "federation.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_tongban_up_prints_every_node_and_stops_on_a_signal(
    tmp_path: Path, federation: Federation, signum: signal.Signals
) -> None:
    ports: dict[str, int] = dict(
        zip((n.id for n in federation.nodes), free_ports(len(federation.nodes)), strict=True)
    )  # all bound at once: none handed out twice
    path = federation_file(tmp_path, ports)
    argv = [sys.executable, "-m", "gateway", "--federation", str(path)]
    argv += ["--data-dir", str(tmp_path / "var"), "--keys-dir", str(tmp_path / "keys"), "up"]
    with (tmp_path / "stderr").open("w+", encoding="utf-8") as stderr:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in ports]  # one line a node, once all listen
            for line, (node_id, port) in zip(lines, ports.items(), strict=True):
                assert line.split()[:2] == [node_id, f"http://127.0.0.1:{port}"], lines
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['linquan']}/healthz") as r:
                assert orjson.loads(r.read()) == {"status": "ok", "node": "linquan"}
            proc.send_signal(signum)
            assert proc.wait(timeout=HANG_GUARD) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
        stderr.seek(0)
        assert "federation tongban-demo stopped" in stderr.read()
