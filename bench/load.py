"""Load generators: ``wrk`` for closed-loop throughput when present, else aiohttp; aiohttp
open loop (sends on a timer, latency from the scheduled send) for latency at a fixed rate."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson


def ensure_wrk() -> str | None:
    """``wrk``'s path; installed from Debian packages when that works non-interactively."""
    found = shutil.which("wrk")
    if found is None and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"],
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=300,
        )
        found = shutil.which("wrk")
    return found


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes = b""


def _lua(request: Request, path: Path) -> Path:
    lines = [f"wrk.method = {orjson.dumps(request.method).decode()}"]
    if request.body:
        lines.append(f"wrk.body = {orjson.dumps(request.body.decode()).decode()}")
    for name, value in request.headers.items():
        lines.append(f"wrk.headers[{orjson.dumps(name).decode()}] = {orjson.dumps(value).decode()}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def wrk_rate(
    wrk: str,
    request: Request,
    *,
    seconds: float,
    connections: int,
    cores: Sequence[int],
    scratch: Path,
) -> float:
    """Requests per second, closed loop; every answer must be 2xx."""
    script = _lua(request, scratch / "wrk.lua")
    pin = ["taskset", "-c", ",".join(map(str, cores))] if shutil.which("taskset") else []
    out = subprocess.run(
        [
            *pin,
            wrk,
            f"-t{max(1, len(cores))}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "-s",
            str(script),
            request.url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw failures:\n{out}")
    found = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if found is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return float(found.group(1))


async def _check(response: aiohttp.ClientResponse) -> None:
    await response.read()
    if response.status >= 300:
        raise RuntimeError(f"{response.url}: HTTP {response.status}")


async def python_rate(requests: Sequence[Request], *, seconds: float, connections: int) -> float:
    """Requests per second, closed loop (``connections`` workers), cycling ``requests``."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as s:
        stop = time.perf_counter() + seconds
        done = 0

        async def worker(offset: int) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < stop:
                r = requests[i % len(requests)]
                async with s.request(r.method, r.url, headers=r.headers, data=r.body or None) as a:
                    await _check(a)
                done += 1
                i += connections

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(connections)))
        return done / (time.perf_counter() - started)


async def open_loop(requests: Sequence[Request], *, rate: float, seconds: float) -> list[float]:
    """Latencies (seconds) of ``rate`` requests per second sent on a timer for ``seconds``.

    Each latency runs from the request's scheduled send time, so a server that falls behind
    shows its queueing instead of slowing the generator down (no coordinated omission).
    """
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()

        async def one(r: Request, scheduled: float) -> None:
            async with session.request(r.method, r.url, headers=r.headers) as answer:
                await _check(answer)
            latencies.append(loop.time() - scheduled)

        total = int(rate * seconds)
        start = loop.time() + 0.05
        tasks = []
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(requests[i % len(requests)], scheduled)))
        await asyncio.gather(*tasks)
    return latencies


async def sequential(requests: Sequence[Request], *, connections: int) -> list[float]:
    """Latency of each request, ``connections`` at a time (closed loop), seconds."""
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as s:

        async def worker(offset: int) -> None:
            for r in requests[offset::connections]:
                started = time.perf_counter()
                async with s.request(r.method, r.url, headers=r.headers) as answer:
                    await _check(answer)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker(k) for k in range(connections)))
    return latencies


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
