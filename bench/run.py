"""``make bench``: figures A-E and the workers' scaling, measured side by side in one run.

Everything measured is started here as real processes on free loopback ports (the nodes of a
temporary federation, the bare reference server), pinned to other cores than the load
generator where the machine has two or more. Each measurement is warmed up, then taken in
``REPEATS`` rounds: a round measures the gateway and its reference (A, B), the three routes
(C) or the two registry sizes (D) back to back, so both sides of a ratio see the machine of
the same minutes, and a figure is the median of its rounds' ratios or differences. The
medians, the rounds' values and the ratios are printed, and the output ends with one line
per figure: ``A 0.63``, ``B 0.88``, ``C p50_ms 0.7 p99_ms 3.9``, ``D 1.08``,
``E replicas_2 1.35 postgresql 0.85``, and for figure F (B with SM2 seals, in a second
federation whose ``seal_alg`` is SM2) ``F 0.90 sm2_per_s … ed25519_per_s … p256_per_s …``.

``BENCH_QUICK=1`` seeds 200,000 certificates instead of 1,000,000 for figure D;
``BENCH_REPLICAS=N`` runs figure E's replicated node as N replicas (default 2);
``BENCH_FIGURES=E`` (any of ``ABCDEF``; A, B and C go together) runs only those figures;
``BENCH_ONLY=F`` measures figure F alone (about a minute and a half).
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
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import psycopg
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from nacl.bindings import crypto_sign_open
from tongsuopy.crypto import hashes as tongsuo_hashes
from tongsuopy.crypto.asymciphers import ec as tongsuo_ec

from bench.cluster import Cluster, Process, free_port, free_ports, split_cores, wait_http
from bench.load import (
    Request,
    ensure_wrk,
    open_loop,
    percentile,
    python_rate,
    sequential,
    wrk_rate,
)
from bench.pgserver import postgres_server
from gateway.clock import SystemClock
from gateway.crypto.keystore import KeyStore
from gateway.crypto.sm2 import Sm2PublicKey
from gateway.ids import DepartmentId, NodeId
from gateway.sso.consent import issue_consent
from gateway.sso.tokens import issue_access_token

REPEATS = 3
SMALL = 10_000
E_SEED = 1_000
"""Certificates seeded at the SM2 federation's zhuji for figure F (its batch needs 100 that
pass)."""
E_CONNECTIONS_PER_PROCESS = 32
"""Figure E offers each serving process (a replica) as many connections as figure A offers
its one: a replicated node's capacity is measured at the load it is built for. (With the
same 32 connections for two replicas, each request waits on both replicas' group commits
and the figure measures that wait: 1.27 at 32 against 1.40 at 96 in one run.)"""
D_SAMPLE = 4000
"""Fetches a run of figure D measures (its p99 is the 40th slowest): more than the pool
of a 10,000 registry holds (about 2,460), so a run fetches each of them once or twice."""
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
        self.issuer = self.federation.idp_issuer()
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
    return draw_pool(cluster.registry(node), limit, valid_only=True)


def passing_fetch(cluster: Cluster, minter: Minter, node: str) -> Request:
    """A fetch of one of ``node``'s seeded certificates whose report is PASSED (seeding also
    makes certificates that have expired), with its holder's consent."""
    return passing_fetch_from(cluster, minter, candidates(cluster, node, 50), node)


def passing_fetch_from(
    cluster: Cluster, minter: Minter, pool: Sequence[tuple[str, str]], node: str = "zhuji"
) -> Request:
    """The first fetch of ``pool`` (id, holder digest) at ``node`` whose report is PASSED."""
    for cert, digest in pool:
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
    _show(label, values, unit)
    return statistics.median(values)


def _show(label: str, values: Sequence[float], unit: str) -> None:
    shown = ", ".join(f"{v:,.1f}" for v in values)
    log(f"  {label:<44} median {statistics.median(values):>12,.1f} {unit}   runs: {shown}")


T = TypeVar("T")


def in_turn(items: Sequence[T], round_: int) -> list[T]:
    """``items`` in the order round ``round_`` measures them: as given in even rounds,
    reversed in odd ones, so no item always goes first (or right after another)."""
    return list(items) if round_ % 2 == 0 else list(reversed(items))


def side_by_side(
    measures: Sequence[tuple[str, Callable[[], float]]], unit: str
) -> list[list[float]]:
    """``REPEATS`` rounds; each measures every one of ``measures`` back to back, in the
    order :func:`in_turn` gives. Returns each measure's values, by round.

    The machine's speed drifts: on a shared VM by as much as 20 % over a few minutes. Two
    things measured in the same round see the same machine, so the ratio of a round is
    the figure's estimate, and the figure is the median of the rounds' ratios (three runs
    of one side, then three of the other, would put the drift into the ratio)."""
    values: list[list[float]] = [[] for _ in measures]
    for round_ in range(REPEATS):
        for at, (_, measure) in in_turn(list(enumerate(measures)), round_):
            values[at].append(measure())
    for (label, _), runs in zip(measures, values, strict=True):
        _show(label, runs, unit)
    return values


def ratio_by_round(subject: Sequence[float], reference: Sequence[float]) -> tuple[float, str]:
    """The median of the rounds' ratios ``subject / reference``, and the ratios shown."""
    ratios = [s / r for s, r in zip(subject, reference, strict=True)]
    return statistics.median(ratios), _rounds(ratios)


def _hop_by_round(
    q: Mapping[str, Sequence[float]], longer: str, shorter: str, hops: int
) -> list[float]:
    """``(longer − shorter) / hops`` in each round."""
    return [(a - b) / hops for a, b in zip(q[longer], q[shorter], strict=True)]


def per_hop(q: Mapping[str, Sequence[float]], longer: str, shorter: str, hops: int) -> float:
    """The median over the rounds of ``(longer − shorter) / hops``, each taken in one round."""
    return statistics.median(_hop_by_round(q, longer, shorter, hops))


def share_per_hop(
    q: Mapping[str, Sequence[float]],
    route: tuple[str, str],
    reference: tuple[str, str],
    hops: int,
) -> float:
    """What a route adds per hop over a reference route of as many hops: the median over the
    rounds of the two per-hop differences' difference, all four taken in one round."""
    ours, theirs = _hop_by_round(q, *route, hops), _hop_by_round(q, *reference, hops)
    return statistics.median(a - b for a, b in zip(ours, theirs, strict=True))


def _rounds(values: Sequence[float]) -> str:
    """A figure's values, round by round, as the output shows them."""
    return ", ".join(f"{v:.2f}" for v in values)


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
            wait_http(f"http://127.0.0.1:{port}/healthz", proc=bare.proc)
            bare_request = Request(
                "GET",
                request.url.replace(self.cluster.url("zhuji"), f"http://127.0.0.1:{port}"),
                request.headers,
            )
            self.rate(request, 2)  # warm-up
            self.rate(bare_request, 2)
            gateway, reference = side_by_side(
                [
                    ("gateway (1 worker)", lambda: self.rate(request)),
                    ("bare aiohttp, same bytes", lambda: self.rate(bare_request)),
                ],
                "req/s",
            )
        finally:
            bare.stop()
        ratio, rounds = ratio_by_round(gateway, reference)
        log(f"  ratio gateway/bare: {ratio:.2f}   (rounds: {rounds}; {len(body)} bytes a response)")
        self.a_request = request
        return statistics.median(gateway), ratio

    # -- B ------------------------------------------------------------------------------------

    def figure_b(self) -> float:
        log("\nB  POST /v1/seals/verify, batches of 100 seals")
        request = passing_batch(self.cluster, self.minter)
        seals = orjson.loads(request.body)["seals"]
        raw = raw_verifiers(seals, self.jwks())
        self.rate(request, 2, connections=4)
        gateway, reference, sodium = side_by_side(
            [
                ("gateway, seals/s", lambda: 100 * self.rate(request, connections=4)),
                ("raw cryptography verify loop, seals/s", raw["cryptography"]),
                ("raw libsodium verify loop, seals/s", raw["libsodium"]),
            ],
            "seals/s",
        )
        ratio, rounds = ratio_by_round(gateway, reference)
        log(f"  ratio gateway/raw cryptography loop (the figure): {ratio:.2f}   (rounds: {rounds})")
        ratio_sodium, rounds = ratio_by_round(gateway, sodium)
        log(
            "  ratio gateway/raw libsodium loop (what the gateway calls):"
            f" {ratio_sodium:.2f}   (rounds: {rounds})"
        )
        return ratio

    # -- E ------------------------------------------------------------------------------------

    def figure_f(self) -> tuple[float, dict[str, float]]:
        """B with SM2 seals: the gateway's batch verification against a raw Tongsuo loop on the
        same seals and keys (the library the gateway calls), and the three algorithms' raw
        verify/s over the same signing inputs."""
        log("\nF  POST /v1/seals/verify, batches of 100 SM2 seals (seal_alg = SM2)")
        request = passing_batch(self.cluster, self.minter)
        seals = orjson.loads(request.body)["seals"]
        raw = raw_verifiers_by_alg(seals, self.jwks())
        self.rate(request, 2, connections=4)
        gateway, tongsuo, tables, ed25519, sodium, p256 = side_by_side(
            [
                ("gateway, SM2 seals/s", lambda: 100 * self.rate(request, connections=4)),
                ("raw tongsuopy SM2 verify loop, seals/s", raw["sm2"]),
                ("raw loop of the gateway's SM2 verifier", raw["sm2_tables"]),
                ("raw cryptography Ed25519 loop, same inputs", raw["ed25519"]),
                ("raw libsodium Ed25519 loop, same inputs", raw["libsodium"]),
                ("raw cryptography P-256 loop, same inputs", raw["p256"]),
            ],
            "verify/s",
        )
        ratio, rounds = ratio_by_round(gateway, tongsuo)
        log(f"  ratio gateway/raw tongsuopy loop (the figure): {ratio:.2f}   (rounds: {rounds})")
        own, rounds = ratio_by_round(gateway, tables)
        log(
            "  ratio gateway/raw loop of its own SM2 verifier (precomputed tables):"
            f" {own:.2f}   (rounds: {rounds})"
        )
        speeds = {
            "sm2": statistics.median(tongsuo),
            "sm2_tables": statistics.median(tables),
            "ed25519": statistics.median(ed25519),
            "ed25519_libsodium": statistics.median(sodium),
            "p256": statistics.median(p256),
        }
        return ratio, speeds

    def jwks(self) -> dict[str, Any]:
        status, body = asyncio.run(
            get(Request("GET", self.cluster.url("zhuji") + "/.well-known/jwks.json", {}))
        )
        assert status == 200
        keys: dict[str, Any] = orjson.loads(body)
        return keys

    # -- C ------------------------------------------------------------------------------------

    def bare_chain(self, links: int, body: bytes) -> tuple[str, str, list[Process]]:
        """Figure C's reference: ``links`` + 1 bare aiohttp servers on the server cores, each
        forwarding to the next, the last answering ``body``; the chain's first and last URL."""
        (self.base / "c.json").write_bytes(body)
        ports = free_ports(links + 1)
        command = [sys.executable, "-m", "bench.bare"]
        procs: list[Process] = []
        try:
            for i, port in enumerate(ports):
                nxt = [f"http://127.0.0.1:{ports[i + 1]}/v1/relay"] if i < links else []
                procs.append(
                    Process(
                        [*command, str(port), str(self.base / "c.json"), *nxt],
                        self.cluster.server_cores,
                        self.base / f"bare-chain-{i}.log",
                    )
                )
                wait_http(f"http://127.0.0.1:{port}/healthz", proc=procs[-1].proc)
        except BaseException:
            for proc in procs:
                proc.stop()
            raise
        return f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[-1]}", procs

    def figure_c(self, local: Request, direct: Request, far: Request) -> tuple[float, float]:
        log("\nC  latency added per routed hop (open loop at half the saturation rate)")
        paths = {
            "local (0 hops)": local,
            "zhuji→linquan (1 hop)": direct,
            "zhuji→…→shanghai (4 hops)": far,
        }
        answers: dict[str, bytes] = {}
        for name, request in paths.items():
            status, answers[name] = asyncio.run(get(request))
            if status != 200:
                raise RuntimeError(f"{name}: {status} {answers[name][:300]!r}")
            log(f"  {name}: route {orjson.loads(answers[name]).get('route', ['zhuji'])}")
        # The framework's own floor, measured alongside: a chain of as many bare aiohttp
        # processes as the 4-hop route has nodes, forwarding the same request (same headers,
        # same answer bytes) with aiohttp's client and doing nothing else.
        body = answers["zhuji→…→shanghai (4 hops)"]
        first, last, chain = self.bare_chain(4, body)
        try:
            zhuji = self.cluster.url("zhuji")
            references = {
                "bare aiohttp (0 hops)": Request("GET", far.url.replace(zhuji, last), far.headers),
                "bare aiohttp chain (4 hops)": Request(
                    "GET", far.url.replace(zhuji, first), far.headers
                ),
            }
            for name, request in references.items():
                status, answer = asyncio.run(get(request))
                if status != 200 or answer != body:
                    raise RuntimeError(f"{name}: {status} {answer[:300]!r}")
            return self._figure_c({**paths, **references})
        finally:
            for proc in chain:
                proc.stop()

    def _figure_c(self, paths: dict[str, Request]) -> tuple[float, float]:
        zero, one, four, bare_zero, bare_four = paths  # the names, in that order
        saturation = self.rate(paths[four], 3, connections=16)
        rate = saturation / 2
        log(
            f"  4-hop saturation {saturation:,.0f} req/s;"
            f" fixed rate {rate:,.0f} req/s for every path"
        )
        for request in paths.values():
            asyncio.run(open_loop([request], rate=rate, seconds=1))  # warm-up
        # at least ~600 samples a run, so a p99 is not just the worst two
        seconds = max(4.0, 600 / rate)
        # Each round runs every path (side by side, as in A and B); a hop's figures are the
        # median of the rounds' differences, each taken within one round.
        p50: dict[str, list[float]] = {name: [] for name in paths}
        p99: dict[str, list[float]] = {name: [] for name in paths}
        for round_ in range(REPEATS):
            for name, request in in_turn(list(paths.items()), round_):
                latencies = asyncio.run(open_loop([request], rate=rate, seconds=seconds))
                p50[name].append(percentile(latencies, 0.50) * 1000)
                p99[name].append(percentile(latencies, 0.99) * 1000)
        for name in paths:
            log(
                f"  {name:<28} p50 {statistics.median(p50[name]):7.2f} ms"
                f"   p99 {statistics.median(p99[name]):7.2f} ms"
                f"   (rounds: p50 {_rounds(p50[name])}; p99 {_rounds(p99[name])})"
            )

        log(
            "  first hop (1 hop − local, incl. verifying a foreign seal):"
            f" p50 {per_hop(p50, one, zero, 1):.2f} ms, p99 {per_hop(p99, one, zero, 1):.2f} ms"
        )
        log(
            "  each further hop ((4 hops − 1 hop) / 3):                   "
            f" p50 {per_hop(p50, four, one, 3):.2f} ms, p99 {per_hop(p99, four, one, 3):.2f} ms"
        )
        log(
            "  bare aiohttp chain, per hop (the framework's floor):       "
            f" p50 {per_hop(p50, bare_four, bare_zero, 4):.2f} ms,"
            f" p99 {per_hop(p99, bare_four, bare_zero, 4):.2f} ms"
        )
        log(
            "  per hop, the gateway's share (over the bare chain's):      "
            f" p50 {share_per_hop(p50, (four, zero), (bare_four, bare_zero), 4):.2f} ms,"
            f" p99 {share_per_hop(p99, (four, zero), (bare_four, bare_zero), 4):.2f} ms"
        )
        per50, per99 = per_hop(p50, four, zero, 4), per_hop(p99, four, zero, 4)
        log(
            "  per hop, averaged ((4 hops − local) / 4, the summary line):"
            f" p50 {per50:.2f} ms, p99 {per99:.2f} ms"
        )
        return per50, per99

    # -- D ------------------------------------------------------------------------------------

    def figure_d(self, states: dict[int, Path]) -> float:
        """p99 of zhuji's local fetch served from each of ``states`` (registry size: the
        node's state directory), in rounds; the median of the rounds' ratios, largest
        registry over smallest.

        Each round serves zhuji from every state in turn (:func:`in_turn`), restarting it
        for each, so both sizes see the machine of the same minutes, as A's and B's two
        sides do. Each run fetches ``D_SAMPLE`` random certificates of the matter's types,
        drawn from a pool of the same size for both states (a fresh slice each round, when
        the pool is larger than a run), each fetched once beforehand: a node remembers
        the signatures of its stored seals that verified, so a certificate fetched again
        costs less than the first time. Equal pools, equally warm, leave the registry's
        size as the only difference.
        """
        pools = {
            size: draw_pool(data / "registry.sqlite3", D_SAMPLE * REPEATS)
            for size, data in states.items()
        }
        pool = min(len(rows) for rows in pools.values())
        if not pool:
            raise RuntimeError("no seeded certificate of the matter's types")
        p99: dict[int, list[float]] = {size: [] for size in states}
        p50: dict[int, list[float]] = {size: [] for size in states}
        for round_ in range(REPEATS):
            for size in in_turn(sorted(states), round_):
                rows = [pools[size][(round_ * D_SAMPLE + k) % pool] for k in range(D_SAMPLE)]
                with self.cluster.serving_from("zhuji", states[size]):
                    requests = {
                        (cert, digest): fetch_request(
                            self.cluster, self.minter, cert, self.minter.consent_for_digest(digest)
                        )
                        for cert, digest in rows
                    }
                    # warm-up: every certificate of the run once
                    asyncio.run(sequential(list(requests.values()), connections=2))
                    run = [requests[row] for row in rows]
                    latencies = asyncio.run(sequential(run, connections=2))
                p99[size].append(percentile(latencies, 0.99) * 1000)
                p50[size].append(percentile(latencies, 0.50) * 1000)
        for size in sorted(states):
            label = f"{size:,} certificates"
            log(
                f"  {label:<28} p99 median {statistics.median(p99[size]):6.2f} ms   rounds: "
                + _rounds(p99[size])
                + f"   (p50 {statistics.median(p50[size]):.2f} ms; pool of {pool:,})"
            )
        small, big = min(states), max(states)
        ratio, rounds = ratio_by_round(p99[big], p99[small])
        log(f"  ratio p99 {big:,} / {small:,}: {ratio:.2f}   (rounds: {rounds})")
        return ratio


def draw_pool(registry: Path, limit: int, *, valid_only: bool = False) -> list[tuple[str, str]]:
    """(certificate id, holder digest) of up to ``limit`` random certificates of the
    matter's types in ``registry`` (a node's registry file; the node may be stopped)."""
    valid = " AND status = 'valid'" if valid_only else ""
    with sqlite3.connect(f"file:{registry}?mode=ro", uri=True) as db:
        rows = db.execute(
            f"SELECT id, holder_digest FROM certificates WHERE type IN (?, ?){valid} "
            "ORDER BY random() LIMIT ?",
            (*TYPES, limit),
        ).fetchall()
    return [(str(cert), str(digest)) for cert, digest in rows]


def loop_rate(one_pass: Callable[[], None], per_pass: int) -> Callable[[], float]:
    """A measure of verifications per second: ``one_pass`` (``per_pass`` of them) run again
    and again for two seconds."""

    def rate() -> float:
        done = 0
        started = time.perf_counter()
        while time.perf_counter() - started < 2.0:
            one_pass()
            done += per_pass
        return done / (time.perf_counter() - started)

    return rate


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

    def with_openssl() -> None:
        for key, sig, data in openssl:
            key.verify(sig, data)

    def with_libsodium() -> None:
        for key, signed in sodium:
            crypto_sign_open(signed, key)

    per_pass = len(prepared)
    return {
        "cryptography": loop_rate(with_openssl, per_pass),
        "libsodium": loop_rate(with_libsodium, per_pass),
    }


def raw_verifiers_by_alg(
    seals: Sequence[str], jwks: dict[str, Any]
) -> dict[str, Callable[[], float]]:
    """Verify/s of bare loops over the signing inputs of ``seals``: SM2 with ``tongsuopy``
    on the seals' own signatures and keys (signatures pre-encoded as the DER Tongsuo takes:
    the figure's reference), SM2 with the gateway's own verifier (Tongsuo with precomputed
    tables, :mod:`gateway.crypto.sm2`: what the gateway calls), and Ed25519 (``cryptography``
    and libsodium) and P-256 (``cryptography``) on signatures of the same inputs by keys
    made here."""
    keys = {}
    own_keys = {}
    for jwk in jwks["keys"]:
        if jwk.get("crv") != "SM2":
            raise RuntimeError("figure F's node seals with SM2")
        point = b"\x04" + _b64(jwk["x"]) + _b64(jwk["y"])
        keys[jwk["kid"]] = tongsuo_ec.EllipticCurvePublicKey.from_encoded_point(
            tongsuo_ec.SM2(), point
        )
        own_keys[jwk["kid"]] = Sm2PublicKey.from_coordinates(_b64(jwk["x"]), _b64(jwk["y"]))
    scheme = tongsuo_ec.ECDSA(tongsuo_hashes.SM3())
    sm2 = []
    tables = []
    for token in seals:
        head, payload, sig = token.split(".")
        raw = _b64(sig)
        der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
        kid, data = orjson.loads(_b64(head))["kid"], f"{head}.{payload}".encode()
        sm2.append((keys[kid], der, data))
        tables.append((own_keys[kid], raw, data))
    inputs = [data for _, _, data in sm2]
    ed_key = Ed25519PrivateKey.generate()
    ed_public = ed_key.public_key()
    ed = [(ed_key.sign(data), data) for data in inputs]
    ed_raw = ed_public.public_bytes_raw()
    sodium = [sig + data for sig, data in ed]
    p256_key = ec.generate_private_key(ec.SECP256R1())
    p256_public = p256_key.public_key()
    p256 = [(p256_key.sign(data, ec.ECDSA(hashes.SHA256())), data) for data in inputs]

    def with_tongsuo() -> None:
        for key, der, data in sm2:
            key.verify(der, data, scheme)

    def with_tables() -> None:
        for key, raw, data in tables:
            key.verify(raw, data)

    def with_cryptography_ed25519() -> None:
        for sig, data in ed:
            ed_public.verify(sig, data)

    def with_libsodium() -> None:
        for signed in sodium:
            crypto_sign_open(signed, ed_raw)

    def with_p256() -> None:
        for sig, data in p256:
            p256_public.verify(sig, data, ec.ECDSA(hashes.SHA256()))

    return {
        "sm2": loop_rate(with_tongsuo, len(inputs)),
        "sm2_tables": loop_rate(with_tables, len(inputs)),
        "ed25519": loop_rate(with_cryptography_ed25519, len(inputs)),
        "libsodium": loop_rate(with_libsodium, len(inputs)),
        "p256": loop_rate(with_p256, len(inputs)),
    }


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def run_f(base: Path, server_cores: set[int], load_cores: set[int]) -> tuple[float, str]:
    """Figure F in a federation of its own whose ``seal_alg`` is SM2: (ratio, summary line)."""
    base.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(base, server_cores, seal_alg="SM2")
    try:
        log(f"\nseeding the SM2 federation's zhuji with {E_SEED:,} certificates …")
        cluster.run("seed", "--node", "zhuji", "--count", str(E_SEED), "--seed", "1")
        for node in sorted(cluster.federation.nodes, key=lambda n: n.kind != "idp"):
            cluster.start(node.id)
        wait_enrolled(cluster)
        ratio, speeds = Bench(base, cluster, load_cores).figure_f()
    finally:
        cluster.stop_all()
    line = (
        f"F {ratio:.2f} sm2_per_s {speeds['sm2']:.0f}"
        f" sm2_tables_per_s {speeds['sm2_tables']:.0f} ed25519_per_s {speeds['ed25519']:.0f}"
        f" ed25519_libsodium_per_s {speeds['ed25519_libsodium']:.0f}"
        f" p256_per_s {speeds['p256']:.0f}"
    )
    return ratio, line


def main() -> int:
    quick = os.environ.get("BENCH_QUICK") == "1"
    only = os.environ.get("BENCH_ONLY", "")
    if only not in ("", "F"):
        raise SystemExit("BENCH_ONLY takes F (figure F alone)")
    figures = "F" if only else os.environ.get("BENCH_FIGURES", "ABCDEF").upper()
    if not figures or set(figures) - set("ABCDEF"):
        raise SystemExit("BENCH_FIGURES takes letters of ABCDEF")
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
        status = 0
        if set(figures) - {"F"}:
            cluster = Cluster(base, server_cores)
            try:
                status = run(base, cluster, load_cores, big, figures)
            finally:
                cluster.stop_all()
        if "F" in figures:
            _, line = run_f(base / "sm2", server_cores, load_cores)
            log(line)
        return status


def run(base: Path, cluster: Cluster, load_cores: set[int], big: int, figures: str) -> int:
    replicas = int(os.environ.get("BENCH_REPLICAS", "2"))
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
    results: list[str] = []
    if "A" in figures or "B" in figures or "C" in figures:
        direct = passing_fetch(cluster, minter, "linquan")
        far = passing_fetch(cluster, minter, "shanghai")
        one_worker, a = bench.figure_a(local)
        b = bench.figure_b()
        c50, c99 = bench.figure_c(local, direct, far)
        results += [f"A {a:.2f}", f"B {b:.2f}", f"C p50_ms {c50:.2f} p99_ms {c99:.2f}"]
        workers_scaling(bench, cluster, load_cores, one_worker)
    if "E" in figures:
        e_replicas, e_postgresql = figure_e(bench, cluster, local, load_cores, replicas)
        results.append(f"E replicas_{replicas} {e_replicas:.2f} postgresql {e_postgresql:.2f}")
    if "D" in figures:
        d = figure_d_run(bench, cluster, big)
        results.append(f"D {d:.2f}")
    log(f"\nbench took {time.monotonic() - started:.0f} s")
    for line in results:
        log(line)
    return 0


def workers_scaling(
    bench: Bench, cluster: Cluster, load_cores: set[int], one_worker: float
) -> None:
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


def shared_cores(cluster: Cluster, load_cores: set[int], processes: int) -> set[int]:
    """The server cores, or every core when there are fewer server cores than processes
    (then the load generator shares them: say so)."""
    every = set(os.sched_getaffinity(0)) | cluster.server_cores | set(load_cores)
    if len(cluster.server_cores) >= processes:
        return cluster.server_cores
    log("  (too few cores to keep the load generator apart: servers and wrk share them all)")
    return every


def figure_e(
    bench: Bench, cluster: Cluster, sqlite_request: Request, load_cores: set[int], replicas: int
) -> tuple[float, float]:
    """E: the figure-A request at zhuji on SQLite (one process), on PostgreSQL as one replica
    and as ``replicas`` replicas (``BENCH_REPLICAS``), side by side in every round, all on
    the same cores; the ratios ``replicas / one replica`` and ``PostgreSQL / SQLite`` at one.
    The PostgreSQL server (its durable defaults: ``fsync``, ``synchronous_commit``) is this
    run's own, on the same machine."""
    log(f"\nE  the figure A request: SQLite vs PostgreSQL, 1 vs {replicas} replicas")
    log(
        f"  ({E_CONNECTIONS_PER_PROCESS} connections a process: {E_CONNECTIONS_PER_PROCESS}"
        f" for one, {E_CONNECTIONS_PER_PROCESS * replicas} for {replicas} replicas)"
    )
    if "zhuji" in cluster.procs:
        cluster.stop("zhuji")
    cores = shared_cores(cluster, load_cores, replicas)
    with postgres_server(durable=True) as server:
        dsn = server.dsn(server.create_database())
        log(f"  seeding zhuji's PostgreSQL database with {SMALL:,} certificates …")
        cluster.run(
            "--database", dsn, "seed", "--node", "zhuji", "--count", str(SMALL), "--seed", "1"
        )
        cluster.start("zhuji", cores=cores, database=dsn)
        try:
            pg_request = passing_fetch_from(cluster, bench.minter, postgres_candidates(dsn, 50))
        finally:
            cluster.stop("zhuji")

        def measure(
            request: Request, workers: int, database: str | None, connections: int | None = None
        ) -> Callable[[], float]:
            connections = connections or E_CONNECTIONS_PER_PROCESS * workers

            def rate() -> float:
                cluster.start("zhuji", workers=workers, cores=cores, database=database)
                try:
                    bench.rate(request, 1, connections=connections)  # warm-up
                    return bench.rate(request, connections=connections)
                finally:
                    cluster.stop("zhuji")

            return rate

        same = E_CONNECTIONS_PER_PROCESS
        sqlite, one, many, many_same = side_by_side(
            [
                ("SQLite, 1 process", measure(sqlite_request, 1, None)),
                ("PostgreSQL, 1 replica", measure(pg_request, 1, dsn)),
                (f"PostgreSQL, {replicas} replicas", measure(pg_request, replicas, dsn)),
                (
                    f"PostgreSQL, {replicas} replicas, {same} connections",
                    measure(pg_request, replicas, dsn, same),
                ),
            ],
            "req/s",
        )
    scaling, scaling_rounds = ratio_by_round(many, one)
    backend, backend_rounds = ratio_by_round(one, sqlite)
    log(f"  {replicas} replicas / 1 replica: {scaling:.2f}   (rounds: {scaling_rounds})")
    if replicas > 1:
        at_same, same_rounds = ratio_by_round(many_same, one)
        log(
            f"  {replicas} replicas / 1 replica, both at {same} connections:"
            f" {at_same:.2f}   (rounds: {same_rounds})"
        )
    log(f"  PostgreSQL / SQLite at 1: {backend:.2f}   (rounds: {backend_rounds})")
    return scaling, backend


def postgres_candidates(dsn: str, limit: int) -> list[tuple[str, str]]:
    """As :func:`draw_pool`, from a node's registry in PostgreSQL."""
    with psycopg.connect(dsn) as db:
        rows = db.execute(
            "SELECT id, holder_digest FROM registry.certificates"
            " WHERE type IN (%s, %s) AND status = 'valid' ORDER BY random() LIMIT %s",
            (*TYPES, limit),
        ).fetchall()
    return [(str(cert), str(digest)) for cert, digest in rows]


def figure_d_run(bench: Bench, cluster: Cluster, big: int) -> float:
    if "zhuji" in cluster.procs:  # D serves zhuji from copies of its state
        cluster.stop("zhuji")
    log(f"\nD  fetch p99, {big:,} certificates vs {SMALL:,} (closed loop, 2 connections)")
    small = cluster.keep_copy("zhuji", f"zhuji-{SMALL}")
    log(f"  seeding zhuji up to {big:,} certificates …")
    seeding = time.monotonic()
    cluster.run("seed", "--node", "zhuji", "--count", str(big - SMALL), "--seed", "2")
    log(f"  seeded in {time.monotonic() - seeding:.0f} s")
    return bench.figure_d({SMALL: small, big: cluster.set_aside("zhuji", f"zhuji-{big}")})
