"""``python -m bench.profile [a|b|far] [seconds]``: where a node spends its time under load.

Starts the federation as ``make bench`` does, drives the chosen request with the closed-loop
load generator, and samples the serving node with ``py-spy`` (``--native`` off, idle frames
off) meanwhile. Prints the functions with the most samples on their own (self) and under
them (total), and leaves the raw collapsed stacks (``profile-<figure>.txt``, for flamegraph
tools) in the working directory.

- ``a``: figure A's local fetch at zhuji;
- ``b``: figure B's batch of 100 seals at zhuji;
- ``far``: figure C's 4-hop fetch, sampling the middle hop (zhejiang) by default
  (``BENCH_PROFILE_NODE`` names another).
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.cluster import Cluster, split_cores
from bench.load import ensure_wrk, python_rate, wrk_rate
from bench.run import SMALL, Minter, get, passing_batch, passing_fetch, wait_enrolled


def summarise(raw: Path, top: int = 40) -> None:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    print(f"\n{samples} samples")
    for title, counter in (("self", own), ("total", total)):
        print(f"\n-- {title} --")
        for frame, n in counter.most_common(top):
            print(f"{100 * n / samples:6.1f}%  {frame}")


def main() -> int:
    which = sys.argv[1] if len(sys.argv) > 1 else "a"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    server_cores, load_cores = split_cores()
    os.sched_setaffinity(0, load_cores)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory(prefix="tongban-profile-") as tmp:
        base = Path(tmp)
        cluster = Cluster(base, server_cores)
        try:
            cluster.run("seed", "--node", "zhuji", "--count", str(SMALL), "--seed", "1")
            for holder in ("linquan", "shanghai"):
                cluster.run("seed", "--node", holder, "--count", "300", "--seed", "1")
            for node in sorted(cluster.federation.nodes, key=lambda n: n.kind != "idp"):
                cluster.start(node.id)
            wait_enrolled(cluster)
            minter = Minter(cluster)
            target = "zhuji"
            if which == "a":
                request = passing_fetch(cluster, minter, "zhuji")
            elif which == "b":
                request = passing_batch(cluster, minter)
            else:
                request = passing_fetch(cluster, minter, "shanghai")
                target = os.environ.get("BENCH_PROFILE_NODE", "zhejiang")
            status, body = asyncio.run(get(request))
            print(f"probe: {status} {len(body)} bytes")
            pid = cluster.procs[target].pid
            wrk = ensure_wrk()

            def load() -> None:
                if wrk:
                    rate = wrk_rate(
                        wrk,
                        request,
                        seconds=seconds + 2,
                        connections=32,
                        cores=sorted(load_cores),
                        scratch=base,
                    )
                else:
                    rate = asyncio.run(python_rate([request], seconds=seconds + 2, connections=32))
                print(f"load: {rate:,.1f} req/s")

            driver = threading.Thread(target=load)
            driver.start()
            raw = Path(f"profile-{which}.txt").resolve()
            subprocess.run(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    f"{seconds:g}",
                    "--rate",
                    "500",
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                    "--nonblocking",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            driver.join()
            summarise(raw)
        finally:
            cluster.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
