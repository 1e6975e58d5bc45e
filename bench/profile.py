"""``python -m bench.profile [a|b|e|f|far] [seconds]``: where a node spends its time under load.

Starts the federation as ``make bench`` does, drives the chosen request with the closed-loop
load generator, and samples the serving node with ``py-spy`` (``--native`` off, idle frames
off) meanwhile. Prints the functions with the most samples on their own (self) and under
them (total), and leaves the raw collapsed stacks (``profile-<figure>.txt``, for flamegraph
tools) in the working directory.

- ``a``: figure A's local fetch at zhuji;
- ``b``: figure B's batch of 100 seals at zhuji;
- ``e``: figure E's request (A's local fetch) at zhuji served from PostgreSQL, one replica,
  on every core as figure E runs it (also reports the server's CPU per request);
- ``f``: figure F's batch of 100 SM2 seals at zhuji, in a federation whose ``seal_alg`` is SM2;
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
from contextlib import ExitStack
from pathlib import Path

from bench.cluster import Cluster, split_cores
from bench.load import ensure_wrk, python_rate, wrk_rate
from bench.pgserver import postgres_server
from bench.run import (
    E_SEED,
    SMALL,
    Minter,
    get,
    passing_batch,
    passing_fetch,
    passing_fetch_from,
    postgres_candidates,
    shared_cores,
    wait_enrolled,
)


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


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) used so far by the processes of each command name."""
    used: dict[str, float] = collections.defaultdict(float)
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text(encoding="utf-8")
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        used[name] += (int(fields[11]) + int(fields[12])) / tick
    return dict(used)


def main() -> int:
    which = sys.argv[1] if len(sys.argv) > 1 else "a"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    server_cores, load_cores = split_cores()
    os.sched_setaffinity(0, load_cores)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory(prefix="tongban-profile-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        sm2 = which == "f"
        cluster = Cluster(base, server_cores, seal_alg="SM2" if sm2 else "EdDSA")
        try:
            count = E_SEED if sm2 else SMALL
            cluster.run("seed", "--node", "zhuji", "--count", str(count), "--seed", "1")
            for holder in () if sm2 else ("linquan", "shanghai"):
                cluster.run("seed", "--node", holder, "--count", "300", "--seed", "1")
            for node in sorted(cluster.federation.nodes, key=lambda n: n.kind != "idp"):
                cluster.start(node.id)
            wait_enrolled(cluster)
            minter = Minter(cluster)
            target = "zhuji"
            if which == "a":
                request = passing_fetch(cluster, minter, "zhuji")
            elif which in ("b", "f"):
                request = passing_batch(cluster, minter)
            elif which == "e":
                cluster.stop("zhuji")
                server = stack.enter_context(postgres_server(durable=True))
                dsn = server.dsn(server.create_database())
                cluster.run(
                    "--database",
                    dsn,
                    "seed",
                    "--node",
                    "zhuji",
                    "--count",
                    str(SMALL),
                    "--seed",
                    "1",
                )
                cluster.start("zhuji", cores=shared_cores(cluster, load_cores, 2), database=dsn)
                request = passing_fetch_from(cluster, minter, postgres_candidates(dsn, 50))
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
            before = cpu_seconds()
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
            used = {
                name: seconds_ - before.get(name, 0.0) for name, seconds_ in cpu_seconds().items()
            }
            print(
                "CPU seconds during the run: "
                + ", ".join(f"{k} {v:.1f}" for k, v in sorted(used.items()))
            )
            summarise(raw)
        finally:
            cluster.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
