"""``make bench``: figures A-D and the workers' scaling, measured side by side in one run.

Everything measured is started here as real processes on free loopback ports (the nodes of a
temporary federation, the bare reference server), pinned to other cores than the load
generator where the machine has two or more. Each measurement is warmed up and repeated
(``REPEATS``); the medians and their ratios are printed, and the output ends with one line
per figure: ``A 0.63``, ``B 0.88``, ``C p50_ms 0.7 p99_ms 3.9``, ``D 1.08``.

``BENCH_QUICK=1`` seeds 200,000 certificates instead of 1,000,000 for figure D.
"""

from __future__ import annotations

import asyncio
import base64
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.bindings import crypto_sign_open

from bench.cluster import Cluster, Process, free_port, split_cores, wait_http
from bench.load import (
    Request,
    ensure_wrk,
    open_loop,
    percentile,
    python_rate,
    sequential,
    wrk_rate,
)
from gateway.clock import SystemClock
from gateway.consent import issue_consent
from gateway.idp import idp_issuer
from gateway.ids import DepartmentId, NodeId
from gateway.keys import KeyStore
from gateway.tokens import issue_access_token

REPEATS = 3
SMALL = 10_000
MATTER = "marriage-registration"
TYPES = ("resident_id", "household_register")
CLIENT = "zhuji-civil-affairs"


def log(line: str = "") -> None:
    print(line, flush=True)


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        loop = f"uvloop {version('uvloop')}"
    except PackageNotFoundError:
        loop = "asyncio (no uvloop)"
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "cryptography": version("cryptography"),
        "pynacl (libsodium)": version("pynacl"),
        "event loop": loop,
        "kernel": platform.release(),
    }


class Minter:
    """Access tokens and consent grants signed with the IdP's own key store, as the IdP would."""

    def __init__(self, cluster: Cluster) -> None:
        self.federation = cluster.federation
        self.clock = SystemClock()
        self.store = KeyStore.open(self.federation.keys_dir, NodeId("idp"), clock=self.clock)
        self.issuer = idp_issuer(self.federation)
        self.serial = 0

    def jti(self) -> str:
        self.serial += 1
        return f"bench-{os.getpid()}-{self.serial}"

    def token(self, client_id: str) -> str:
        entry = next(c for c in self.federation.clients if c.id == client_id)
        node, _ = self.federation.department(entry.department)
        return issue_access_token(
            self.store.signer(),
            issuer=self.issuer,
            audience=self.federation.audience,
            subject=client_id,
            client_id=client_id,
            scopes=tuple(entry.scopes),
            department=entry.department,
            region=node.region,
            now=self.clock.now(),
            jti=self.jti(),
        )

    def consent_for_digest(self, digest: str) -> str:
        return issue_consent(
            self.store.signer(),
            issuer=self.issuer,
            holder_digest=digest,
            department=DepartmentId(CLIENT),
            matter=MATTER,
            types=TYPES,
            now=self.clock.now(),
            until=self.clock.now() + 3 * 3600,
            jti=self.jti(),
        )


def fetch_request(cluster: Cluster, minter: Minter, cert_id: str, consent: str) -> Request:
    return Request(
        "GET",
        f"{cluster.url('zhuji')}/v1/certificates/{cert_id}?matter={MATTER}",
        {"Authorization": f"Bearer {minter.token(CLIENT)}", "Tongban-Consent": consent},
    )


def candidates(cluster: Cluster, node: str, limit: int) -> list[tuple[str, str]]:
    """(certificate id, holder digest) of valid seeded certificates of the matter's types."""
    with sqlite3.connect(f"file:{cluster.registry(node)}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT id, holder_digest FROM certificates WHERE type IN (?, ?) "
            "AND status = 'valid' ORDER BY random() LIMIT ?",
            (*TYPES, limit),
        ).fetchall()
    return [(str(cert), str(digest)) for cert, digest in rows]


def passing_fetch(cluster: Cluster, minter: Minter, node: str) -> Request:
    """A fetch of one of ``node``'s seeded certificates whose report is PASSED (seeding also
    makes certificates that have expired), with its holder's consent."""
    for cert, digest in candidates(cluster, node, 50):
        request = fetch_request(cluster, minter, cert, minter.consent_for_digest(digest))
        status, body = asyncio.run(get(request))
        if status != 200:
            raise RuntimeError(f"fetch of {cert} from {node}: {status} {body[:300]!r}")
        if orjson.loads(body)["report"]["indication"] == "PASSED":
            return request
    raise RuntimeError(f"no seeded certificate of {node} passes")


def passing_batch(cluster: Cluster, minter: Minter) -> Request:
    """``POST /v1/seals/verify`` of 100 of zhuji's seeded seals whose every check passes
    (seeding also makes expired and revoked ones)."""
    with sqlite3.connect(f"file:{cluster.registry('zhuji')}?mode=ro", uri=True) as db:
        candidates = [
            row[0]
            for row in db.execute("SELECT seal FROM certificates WHERE status = 'valid' LIMIT 500")
        ]
    token = minter.token(CLIENT)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    url = cluster.url("zhuji") + "/v1/seals/verify"
    status, answer = asyncio.run(
        get(Request("POST", url, headers, orjson.dumps({"seals": candidates})))
    )
    if status != 200:
        raise RuntimeError(f"batch verification failed: {status} {answer[:300]!r}")
    reports = orjson.loads(answer)["reports"]
    seals = [s for s, r in zip(candidates, reports, strict=True) if r["indication"] == "PASSED"]
    if len(seals) < 100:
        raise RuntimeError(f"only {len(seals)} of {len(candidates)} seeded seals pass")
    return Request("POST", url, headers, orjson.dumps({"seals": seals[:100]}))


async def get(request: Request) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            request.method, request.url, headers=request.headers, data=request.body
        ) as r,
    ):
        return r.status, await r.read()


def wait_enrolled(cluster: Cluster) -> None:
    """Every region node trusts a list naming every region node's keys (a routed fetch needs
    each hop to know the previous hop's key)."""
    regions = {n.id for n in cluster.federation.nodes if n.kind == "region"}
    pending = set(regions)
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for node in sorted(pending):
            request = Request("GET", cluster.url(node) + "/v1/trust-list", {})
            status, body = asyncio.run(get(request))
            if status != 200:
                continue
            payload = body.split(b".")[1]
            claims = orjson.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
            if regions <= {n["id"] for n in claims["nodes"] if n["keys"]}:
                pending.discard(node)
        time.sleep(0.3)
    if pending:
        raise RuntimeError(f"no complete trust list at {sorted(pending)}")


def repeat(label: str, measure: Callable[[], float], unit: str) -> float:
    values = [measure() for _ in range(REPEATS)]
    shown = ", ".join(f"{v:,.1f}" for v in values)
    log(f"  {label:<44} median {statistics.median(values):>12,.1f} {unit}   runs: {shown}")
    return statistics.median(values)


class Bench:
    def __init__(self, base: Path, cluster: Cluster, load_cores: set[int]) -> None:
        self.base = base
        self.cluster = cluster
        self.load_cores = sorted(load_cores)
        self.wrk = ensure_wrk()
        self.minter = Minter(cluster)
        log(
            "load generator: "
            + (f"wrk ({self.wrk}) for throughput" if self.wrk else "Python aiohttp (closed loop)")
            + "; Python aiohttp open loop for latency at a fixed rate"
        )

    def rate(self, request: Request, seconds: float = 4.0, connections: int = 32) -> float:
        if self.wrk:
            return wrk_rate(
                self.wrk,
                request,
                seconds=seconds,
                connections=connections,
                cores=self.load_cores,
                scratch=self.base,
            )
        return asyncio.run(python_rate([request], seconds=seconds, connections=connections))

    # -- A ------------------------------------------------------------------------------------

    def figure_a(self, request: Request) -> tuple[float, float]:
        log("\nA  local GET /v1/certificates/{id}?matter=… (token + matter + consent checked)")
        status, body = asyncio.run(get(request))
        if status != 200 or orjson.loads(body)["report"]["indication"] != "PASSED":
            raise RuntimeError(f"the local fetch failed: {status} {body[:300]!r}")
        (self.base / "a.json").write_bytes(body)
        port = free_port()
        bare = Process(
            [sys.executable, "-m", "bench.bare", str(port), str(self.base / "a.json")],
            self.cluster.server_cores,
            self.base / "bare.log",
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz")
            bare_request = Request(
                "GET",
                request.url.replace(self.cluster.url("zhuji"), f"http://127.0.0.1:{port}"),
                request.headers,
            )
            self.rate(request, 2)  # warm-up
            self.rate(bare_request, 2)
            gateway = repeat("gateway (1 worker)", lambda: self.rate(request), "req/s")
            reference = repeat("bare aiohttp, same bytes", lambda: self.rate(bare_request), "req/s")
        finally:
            bare.stop()
        log(f"  ratio gateway/bare: {gateway / reference:.2f}   ({len(body)} bytes a response)")
        self.a_request = request
        return gateway, gateway / reference

    # -- B ------------------------------------------------------------------------------------

    def figure_b(self) -> float:
        log("\nB  POST /v1/seals/verify, batches of 100 seals")
        request = passing_batch(self.cluster, self.minter)
        seals = orjson.loads(request.body)["seals"]
        raw = raw_verifiers(seals, self.jwks())
        self.rate(request, 2, connections=4)
        gateway = repeat(
            "gateway, seals/s", lambda: 100 * self.rate(request, connections=4), "seals/s"
        )
        reference = repeat("raw cryptography verify loop, seals/s", raw["cryptography"], "seals/s")
        sodium = repeat("raw libsodium verify loop, seals/s", raw["libsodium"], "seals/s")
        log(f"  ratio gateway/raw cryptography loop (the figure): {gateway / reference:.2f}")
        log(f"  ratio gateway/raw libsodium loop (what the gateway calls): {gateway / sodium:.2f}")
        return gateway / reference

    def jwks(self) -> dict[str, Any]:
        status, body = asyncio.run(
            get(Request("GET", self.cluster.url("zhuji") + "/.well-known/jwks.json", {}))
        )
        assert status == 200
        keys: dict[str, Any] = orjson.loads(body)
        return keys

    # -- C ------------------------------------------------------------------------------------

    def figure_c(self, local: Request, direct: Request, far: Request) -> tuple[float, float]:
        log("\nC  latency added per routed hop (open loop at half the saturation rate)")
        paths = {
            "local (0 hops)": local,
            "zhuji→linquan (1 hop)": direct,
            "zhuji→…→shanghai (4 hops)": far,
        }
        for name, request in paths.items():
            status, body = asyncio.run(get(request))
            if status != 200:
                raise RuntimeError(f"{name}: {status} {body[:300]!r}")
            log(f"  {name}: route {orjson.loads(body).get('route', ['zhuji'])}")
        far_request = paths["zhuji→…→shanghai (4 hops)"]
        saturation = self.rate(far_request, 3, connections=16)
        rate = saturation / 2
        log(
            f"  4-hop saturation {saturation:,.0f} req/s;"
            f" fixed rate {rate:,.0f} req/s for every path"
        )
        p50: dict[str, float] = {}
        p99: dict[str, float] = {}
        for name, request in paths.items():
            asyncio.run(open_loop([request], rate=rate, seconds=1))  # warm-up
            # at least ~600 samples a run, so a p99 is not just the worst two
            seconds = max(4.0, 600 / rate)
            runs = [
                asyncio.run(open_loop([request], rate=rate, seconds=seconds))
                for _ in range(REPEATS)
            ]
            p50[name] = statistics.median(percentile(r, 0.50) for r in runs) * 1000
            p99[name] = statistics.median(percentile(r, 0.99) for r in runs) * 1000
            log(f"  {name:<28} p50 {p50[name]:7.2f} ms   p99 {p99[name]:7.2f} ms")
        one, four = p50["zhuji→linquan (1 hop)"], p50["zhuji→…→shanghai (4 hops)"]
        one99, four99 = p99["zhuji→linquan (1 hop)"], p99["zhuji→…→shanghai (4 hops)"]
        base, base99 = p50["local (0 hops)"], p99["local (0 hops)"]
        log(
            "  first hop (1 hop − local, incl. verifying a foreign seal):"
            f" p50 {one - base:.2f} ms, p99 {one99 - base99:.2f} ms"
        )
        further50, further99 = (four - one) / 3, (four99 - one99) / 3
        log(
            "  each further hop ((4 hops − 1 hop) / 3):                   "
            f" p50 {further50:.2f} ms, p99 {further99:.2f} ms"
        )
        per50, per99 = (four - base) / 4, (four99 - base99) / 4
        log(
            "  per hop, averaged ((4 hops − local) / 4, the summary line):"
            f" p50 {per50:.2f} ms, p99 {per99:.2f} ms"
        )
        return per50, per99

    # -- D ------------------------------------------------------------------------------------

    def fetch_p99(self, label: str, pool: int, sample: int = 2000) -> tuple[float, int]:
        """p99 of fetches of random certificates, drawn from a pool of at most ``pool``
        distinct ones, each fetched once beforehand; returns it and the pool's size.

        Both sizes of figure D use pools of the same size, all of it warmed up: a node
        remembers the signatures of its stored seals that verified, so fetching one
        certificate again costs less than the first time. Equal pools, equally warm, leave
        the registry's size as the only difference (before, the 10,000 side cycled over
        its few certificates of the matter's types while the 1,000,000 side never fetched
        one twice).
        """
        with sqlite3.connect(f"file:{self.cluster.registry('zhuji')}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT id, holder_digest FROM certificates WHERE type IN (?, ?) "
                "ORDER BY random() LIMIT ?",
                (*TYPES, pool),
            ).fetchall()
        if not rows:
            raise RuntimeError("no seeded certificate of the matter's types")
        requests = [
            fetch_request(self.cluster, self.minter, cert, self.minter.consent_for_digest(digest))
            for cert, digest in rows
        ]
        asyncio.run(sequential(requests, connections=2))  # warm-up: every one once
        runs = [
            asyncio.run(
                sequential(
                    [requests[(i * sample + k) % len(requests)] for k in range(sample)],
                    connections=2,
                )
            )
            for i in range(REPEATS)
        ]
        values = [percentile(r, 0.99) * 1000 for r in runs]
        p50s = [percentile(r, 0.50) * 1000 for r in runs]
        log(
            f"  {label:<28} p99 median {statistics.median(values):6.2f} ms   runs: "
            + ", ".join(f"{v:.2f}" for v in values)
            + f"   (p50 {statistics.median(p50s):.2f} ms; pool of {len(requests):,})"
        )
        return statistics.median(values), len(requests)


def raw_verifiers(seals: Sequence[str], jwks: dict[str, Any]) -> dict[str, Callable[[], float]]:
    """Seals per second of bare Ed25519 verify loops over ``seals`` (signatures pre-decoded:
    the pure cost of the arithmetic), with ``cryptography`` (OpenSSL: the reference of figure
    B) and with libsodium (what the gateway itself calls)."""
    keys = {}
    for jwk in jwks["keys"]:
        if jwk.get("kty") != "OKP":
            raise RuntimeError("the raw loops handle Ed25519 (EdDSA) seal keys")
        x = jwk["x"]
        keys[jwk["kid"]] = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
    prepared = []
    for token in seals:
        head, payload, sig = token.split(".")
        header = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        prepared.append(
            (
                keys[header["kid"]],
                base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)),
                f"{head}.{payload}".encode(),
            )
        )
    openssl = [(Ed25519PublicKey.from_public_bytes(k), s, d) for k, s, d in prepared]
    sodium = [(k, s + d) for k, s, d in prepared]

    def measure(one_pass: Callable[[], None]) -> Callable[[], float]:
        def rate() -> float:
            done = 0
            started = time.perf_counter()
            while time.perf_counter() - started < 2.0:
                one_pass()
                done += len(prepared)
            return done / (time.perf_counter() - started)

        return rate

    def with_openssl() -> None:
        for key, sig, data in openssl:
            key.verify(sig, data)

    def with_libsodium() -> None:
        for key, signed in sodium:
            crypto_sign_open(signed, key)

    return {"cryptography": measure(with_openssl), "libsodium": measure(with_libsodium)}


def main() -> int:
    quick = os.environ.get("BENCH_QUICK") == "1"
    big = int(os.environ.get("BENCH_D_COUNT", "200000" if quick else "1000000"))
    server_cores, load_cores = split_cores()
    info = machine()
    log(
        "Tongban benchmark"
        + ("  (BENCH_QUICK=1: figure D with 200,000 certificates)" if quick else "")
    )
    for key, value in info.items():
        log(f"  {key}: {value}")
    log(f"  server cores {sorted(server_cores)}, load generator cores {sorted(load_cores)}")
    os.sched_setaffinity(0, load_cores)
    with tempfile.TemporaryDirectory(prefix="tongban-bench-") as tmp:
        base = Path(tmp)
        cluster = Cluster(base, server_cores)
        try:
            return run(base, cluster, load_cores, big)
        finally:
            cluster.stop_all()


def run(base: Path, cluster: Cluster, load_cores: set[int], big: int) -> int:
    started = time.monotonic()
    log(f"\nseeding zhuji with {SMALL:,} certificates …")
    cluster.run("seed", "--node", "zhuji", "--count", str(SMALL), "--seed", "1")
    for holder in ("linquan", "shanghai"):  # certificates to fetch over routes
        cluster.run("seed", "--node", holder, "--count", "300", "--seed", "1")
    for node in sorted(cluster.federation.nodes, key=lambda n: n.kind != "idp"):
        cluster.start(node.id)
    wait_enrolled(cluster)
    bench = Bench(base, cluster, load_cores)
    minter = bench.minter
    local = passing_fetch(cluster, minter, "zhuji")
    direct = passing_fetch(cluster, minter, "linquan")
    far = passing_fetch(cluster, minter, "shanghai")

    one_worker, a = bench.figure_a(local)
    b = bench.figure_b()
    c50, c99 = bench.figure_c(local, direct, far)

    log(f"\nD  fetch p99, {big:,} certificates vs {SMALL:,} (closed loop, 2 connections)")
    small_p99, pool = bench.fetch_p99(f"{SMALL:,} certificates", pool=2000 * REPEATS)

    workers = max(2, len(cluster.server_cores))
    log(f"\nscaling: serve --workers {workers} (the figure A request)")
    cluster.stop("zhuji")
    every = set(os.sched_getaffinity(0)) | cluster.server_cores | set(load_cores)
    cores = cluster.server_cores if len(cluster.server_cores) >= workers else every
    baseline = one_worker
    if cores is every:
        log("  (too few cores to keep the load generator apart: workers and wrk share them all)")
        cluster.start("zhuji", cores=cores)
        baseline = repeat(
            "gateway (1 worker, same cores)", lambda: bench.rate(bench.a_request), "req/s"
        )
        cluster.stop("zhuji")
    cluster.start("zhuji", workers=workers, cores=cores)
    scaled = repeat(f"gateway ({workers} workers)", lambda: bench.rate(bench.a_request), "req/s")
    log(f"  scaling {workers} workers / 1 worker: {scaled / baseline:.2f}")
    cluster.stop("zhuji")

    log(f"\nseeding zhuji up to {big:,} certificates …")
    seeding = time.monotonic()
    cluster.run("seed", "--node", "zhuji", "--count", str(big - SMALL), "--seed", "2")
    log(f"  seeded in {time.monotonic() - seeding:.0f} s")
    cluster.start("zhuji")
    large_p99, _ = bench.fetch_p99(f"{big:,} certificates", pool=pool)
    d = large_p99 / small_p99
    log(f"  ratio p99 {big:,} / {SMALL:,}: {d:.2f}")
    log(f"\nbench took {time.monotonic() - started:.0f} s")
    log(f"A {a:.2f}")
    log(f"B {b:.2f}")
    log(f"C p50_ms {c50:.2f} p99_ms {c99:.2f}")
    log(f"D {d:.2f}")
    return 0
