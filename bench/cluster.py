"""The processes a benchmark measures: nodes of a temporary federation, pinned to cores."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from gateway.config import DEFAULT_FEDERATION_FILE, Federation, load_federation

STARTUP_TIMEOUT = 90.0


def free_port() -> int:
    (port,) = free_ports(1)
    return port


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports: all bound at once, so none is handed out twice
    (ports bound and released one by one may repeat)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def split_cores() -> tuple[set[int], set[int]]:
    """(server cores, load generator cores): disjoint halves when there are two or more."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return set(cores), set(cores)
    half = len(cores) // 2
    return set(cores[half:]), set(cores[:half])


def pin_command(cores: set[int]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, sorted(cores)))] if _has_taskset() else []


def _has_taskset() -> bool:
    return any(
        os.access(os.path.join(d, "taskset"), os.X_OK)
        for d in os.environ.get("PATH", "").split(":")
    )


def wait_http(
    url: str, timeout: float = STARTUP_TIMEOUT, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait for ``url`` to answer 200. Raises if it does not within ``timeout``, or as soon
    as ``proc`` (the server expected to answer) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


class Cluster:
    """The default federation on free loopback ports, state in ``base``, one process a node."""

    def __init__(self, base: Path, server_cores: set[int], *, seal_alg: str = "EdDSA") -> None:
        self.base = base
        self.server_cores = server_cores
        default = load_federation(env={})
        self.ports = dict(
            zip((node.id for node in default.nodes), free_ports(len(default.nodes)), strict=True)
        )
        text = DEFAULT_FEDERATION_FILE.read_text(encoding="utf-8")
        for node, port in self.ports.items():
            text = re.sub(
                rf'(id = "{node}"\n(?:[^\[]*?\n)*?port = )\d+', rf"\g<1>{port}", text, count=1
            )
        text = text.replace('data_dir = "var"', f'data_dir = "{base / "var"}"')
        text = text.replace('keys_dir = "keys"', f'keys_dir = "{base / "keys"}"')
        text = text.replace('seal_alg = "EdDSA"', f'seal_alg = "{seal_alg}"')
        self.file = base / "federation.toml"
        self.file.write_text(text, encoding="utf-8")
        self.federation: Federation = load_federation(self.file, env={})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gateway",
            "--federation",
            str(self.file),
            "--log-level",
            "WARNING",
            *args,
        ]

    def run(self, *args: str) -> None:
        """A one-shot ``tongban`` command (``seed``), on the server cores."""
        subprocess.run(
            [*pin_command(self.server_cores), *self.command(*args)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(
        self,
        node: str,
        *,
        workers: int = 1,
        cores: set[int] | None = None,
        database: str | None = None,
    ) -> None:
        """``node`` served by ``workers`` processes (with a PostgreSQL ``database``: as that
        many replicas of the node, sharing only the database and its keys)."""
        pin = pin_command(cores or self.server_cores)
        on = ("--database", database) if database else ()
        with (self.base / f"{node}.log").open("ab") as log:
            self.procs[node] = subprocess.Popen(
                [*pin, *self.command(*on, "serve", "--node", node, "--workers", str(workers))],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        wait_http(self.url(node) + "/healthz", proc=self.procs[node])

    def stop(self, node: str) -> None:
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for node in list(self.procs):
            self.stop(node)

    def home(self, node: str) -> Path:
        """``node``'s state directory (registry, audit log, trust list)."""
        return self.federation.data_dir / node

    def keep_copy(self, node: str, name: str) -> Path:
        """A copy of stopped ``node``'s state, beside the federation's, as ``name``."""
        if node in self.procs:
            raise RuntimeError(f"{node} is running: its state cannot be copied whole")
        copy = self.base / name
        shutil.copytree(self.home(node), copy)
        return copy

    def set_aside(self, node: str, name: str) -> Path:
        """Stopped ``node``'s state moved out of its place, to ``name`` beside it."""
        if node in self.procs:
            raise RuntimeError(f"{node} is running: its state cannot be moved")
        aside = self.base / name
        self.home(node).rename(aside)
        return aside

    @contextlib.contextmanager
    def serving_from(self, node: str, state: Path) -> Iterator[None]:
        """``node`` started from ``state`` (a directory :meth:`keep_copy` or
        :meth:`set_aside` made), and stopped, its state moved back, on leaving: one node
        measured in several states, each in turn."""
        self.home(node).parent.mkdir(parents=True, exist_ok=True)
        state.rename(self.home(node))
        try:
            self.start(node)
            yield
        finally:
            if node in self.procs:  # also when it never answered: stopped before the move
                self.stop(node)
            self.home(node).rename(state)

    def url(self, node: str) -> str:
        return self.federation.url(node)

    def registry(self, node: str) -> Path:
        return self.home(node) / "registry.sqlite3"


class Process:
    """Any other server process (the bare reference), pinned, stopped with SIGTERM."""

    def __init__(self, args: list[str], cores: set[int], log: Path) -> None:
        with log.open("ab") as out:
            self.proc = subprocess.Popen([*pin_command(cores), *args], stdout=out, stderr=out)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
