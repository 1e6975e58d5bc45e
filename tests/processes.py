"""Test support: a federation as real ``tongban serve --node`` processes on free ports."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from gateway.config import DEFAULT_FEDERATION_FILE, Federation, load_federation
from gateway.ids import NodeId

STARTUP_TIMEOUT = 60.0


def free_ports(n: int, *, avoid: frozenset[int] = frozenset()) -> list[int]:
    """``n`` distinct free loopback ports (all bound at once, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        ports: list[int] = []
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        if avoid & set(ports):
            return free_ports(n, avoid=avoid)
        return ports
    finally:
        for sock in socks:
            sock.close()


def federation_file(
    path: Path,
    ports: Mapping[NodeId, int],
    base: Path,
    *,
    request_timeout: float | None = None,
    hop_margin: float | None = None,
    urls: dict[str, str] | None = None,
    witness_interval: float | None = None,
) -> Path:
    """The default federation on ``ports``, state under ``base``; ``urls`` override nodes'."""
    text = DEFAULT_FEDERATION_FILE.read_text(encoding="utf-8")
    for node, port in ports.items():
        text = re.sub(
            rf'(id = "{node}"\n(?:[^\[]*?\n)*?port = )\d+', rf"\g<1>{port}", text, count=1
        )
    for named, url in (urls or {}).items():
        text = text.replace(f'id = "{named}"\n', f'id = "{named}"\nurl = "{url}"\n', 1)
    text = text.replace('data_dir = "var"', f'data_dir = "{base / "var"}"')
    text = text.replace('keys_dir = "keys"', f'keys_dir = "{base / "keys"}"')
    if request_timeout is not None:
        text = text.replace(
            "request_timeout_seconds = 10.0", f"request_timeout_seconds = {request_timeout}"
        )
    if hop_margin is not None:
        text = text.replace("hop_margin_seconds = 0.5", f"hop_margin_seconds = {hop_margin}")
    if witness_interval is not None:
        text = text.replace(
            "check_interval_seconds = 10.0", f"check_interval_seconds = {witness_interval}"
        )
    path.write_text(text, encoding="utf-8")
    return path


class Processes:
    """One process per node of a federation file (a node may get its own file)."""

    def __init__(self, base: Path, file: Path, *, files: dict[str, Path] | None = None) -> None:
        self.base = base
        self.file = file
        self.files = files or {}
        self.federation: Federation = load_federation(file, env={})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node: str) -> None:
        file = self.files.get(node, self.file)
        command = [sys.executable, "-m", "gateway", "--federation", str(file)]
        with (self.base / f"{node}.log").open("ab") as log:  # the child keeps its own fd
            self.procs[node] = subprocess.Popen(
                [*command, "serve", "--node", node],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def freeze(self, node: str) -> None:
        """SIGSTOP: the process stops as a GC pause, a full disk or a hung kernel would stop
        it; its socket still accepts connections, nothing answers."""
        self.procs[node].send_signal(signal.SIGSTOP)

    def thaw(self, node: str) -> None:
        self.procs[node].send_signal(signal.SIGCONT)

    def kill(self, node: str) -> None:
        """SIGKILL: no shutdown path runs."""
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def url(self, node: str) -> str:
        return self.federation.url(node)


async def wait_healthy(session: aiohttp.ClientSession, url: str) -> None:
    """Poll ``/healthz`` until it answers 200 (never a fixed sleep), within a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT
    while loop.time() < deadline:
        try:
            async with session.get(url + "/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not come up")
