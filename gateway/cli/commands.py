"""What the CLI's sub-commands do, apart from argument parsing."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import orjson
from aiohttp import web

from gateway._internal.wire import b64url_encode, loads
from gateway.cases.case import check_case_number
from gateway.cases.documents import (
    RECEIPT_TYP,
    case_document_type,
    stored_claims,
    verify_case_document,
)
from gateway.certificates.revocation import (
    IssuanceProof,
    ProvenIssuances,
    RevocationSetAside,
    check_issuance_proof,
)
from gateway.certificates.schemas import SchemaSet, default_schema_dir
from gateway.certificates.verification import CertificateVerifier
from gateway.cli.console import table
from gateway.cli.idp_client import IdpClient
from gateway.clock import Clock, SystemClock, to_rfc3339
from gateway.config import Federation, NodeConfig
from gateway.crypto.jwks import KeyResolver, StaticKeyResolver, ed25519_name, key_alg
from gateway.crypto.seals import verify_seal
from gateway.errors import ConfigError, GatewayError, InputError, NetworkError
from gateway.federation.partner_watch import partners_of
from gateway.federation.routing import Topology
from gateway.http.appkeys import LINKS, NODE
from gateway.http.idp_app import create_idp_app
from gateway.ids import NATIONAL, KeyId, NodeId
from gateway.server.node import (
    open_audit_log,
    open_authority_store,
    open_case_store,
    open_catalog_store,
    open_idp_service,
    open_node_service,
    open_nonce_store,
)
from gateway.services.cases import CaseService
from gateway.storage.cases import SqlCaseStore
from gateway.trust.rootkey import load_root_public
from gateway.trust.trust_list import (
    TrustListResolver,
    read_trust_list_file,
    require_active_key,
    verify_trust_list,
)

if TYPE_CHECKING:
    from gateway.crypto.keystore import KeyStore
    from gateway.storage.audit_verify import AuditVerification


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def node_app(
    federation: Federation,
    node_id: str,
    *,
    clock: Clock,
    schemas: SchemaSet | None = None,
    recover: bool = True,
) -> web.Application:
    """The aiohttp application of one node of ``federation``: the IdP's or a region's.

    ``serve`` and ``up`` both build their nodes here, so one node behaves the same whether it
    runs alone or next to the others. ``recover``: first move what a crash left in the
    registry's audit outbox into the audit log (:meth:`NodeService.recover_audit`); worker
    processes leave that to their supervisor, which does it before they start.
    """
    from gateway.http.app import create_app

    node = federation.node(node_id)
    if node.kind == "idp":
        idp = open_idp_service(federation, clock=clock)
        return create_idp_app(idp)
    service = open_node_service(
        federation,
        node_id,
        clock=clock,
        schemas=schemas or SchemaSet.load(default_schema_dir()),
    )
    if recover:
        try:
            _report_recovery(node_id, service.recover_audit())
        except BaseException:
            service.close()
            raise
    return create_app(service)


def _report_recovery(node_id: str, appended: int, store: str = "registry") -> None:
    if appended:
        print(
            f"tongban: node {node_id}: {appended} audit records a crash left in the {store}'s"
            " outbox are now in the audit log",
            file=sys.stderr,
            flush=True,
        )


def _recover(federation: Federation, node_id: str) -> None:
    """What a node served by worker processes needs done once, before they start: the audit
    outbox recovered, and every store file created (workers open them, never create them
    side by side)."""
    if federation.node(node_id).kind == "idp":
        return
    service = open_node_service(federation, node_id, clock=SystemClock())
    try:
        _report_recovery(node_id, service.recover_audit())
        cases = CaseService(service, open_case_store(federation, node_id))
        try:
            _report_recovery(node_id, cases.recover_audit(), "case store")
        finally:
            cases.close()
    finally:
        service.close()
    open_nonce_store(federation, node_id).close()


def serve(
    federation: Federation,
    node_id: str,
    *,
    host: str | None,
    port: int | None,
    workers: int = 1,
) -> int:
    """Run one node until SIGINT/SIGTERM, from ``workers`` processes sharing its port.

    With more than one worker each is a forked process running its own event loop and its
    own copy of the node, all bound to the same port with ``SO_REUSEPORT`` (the kernel
    spreads connections over them). The parent only supervises: it forwards SIGTERM/SIGINT
    to the workers, and when one dies on its own it stops the others and fails.
    """
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    federation.node(node_id)  # an unknown node fails here, before any fork
    if workers > 1 and node_id == NATIONAL and federation.node(node_id).database is None:
        # its trust-list authority keeps the list's seq and every key's history in one
        # state file that its process rewrites: two processes would each reuse a seq (in
        # PostgreSQL the state has an author's lease, and national runs as replicas)
        raise ConfigError(
            f"{NATIONAL} signs the trust list from state one process owns: serve it with"
            " --workers 1, or give it a PostgreSQL --database (any other node scales out)",
            code="serve.workers",
        )
    if workers == 1:
        _serve_one(federation, node_id, host=host, port=port, reuse_port=False, recover=True)
        return 0
    _recover(federation, node_id)  # once, before any worker serves
    return _supervise(federation, node_id, host=host, port=port, workers=workers)


def _serve_one(
    federation: Federation,
    node_id: str,
    *,
    host: str | None,
    port: int | None,
    reuse_port: bool,
    recover: bool,
) -> None:
    node = federation.node(node_id)
    app = node_app(federation, node_id, clock=SystemClock(), recover=recover)
    app.on_startup.append(_freeze_heap)  # after the app's own start-up (appended before)
    _install_uvloop()
    web.run_app(
        app,
        host=host or federation.host,
        port=port if port is not None else node.port,
        access_log=None,
        print=lambda msg: print(f"tongban: node {node_id} {msg.strip()}", file=sys.stderr),
        handle_signals=True,
        reuse_port=reuse_port or None,
    )


async def _freeze_heap(_app: web.Application) -> None:
    """What exists once a serving process has started lives as long as it does: keep it out
    of the collector's full passes, which would walk it all again and again under load
    (pauses in the tail latency). Only in a serving process: tests build many apps."""
    gc.collect()
    gc.freeze()


def _supervise(
    federation: Federation, node_id: str, *, host: str | None, port: int | None, workers: int
) -> int:
    children: set[int] = set()
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    failed = False
    try:
        for _ in range(workers):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the worker process (covered by a process test)
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
                code = 0
                try:
                    _serve_one(
                        federation, node_id, host=host, port=port, reuse_port=True, recover=False
                    )
                except BaseException as exc:  # a worker reports anything, then exits
                    print(f"tongban: worker {os.getpid()}: {exc}", file=sys.stderr)
                    code = 1
                finally:
                    sys.stderr.flush()
                    os._exit(code)
            children.add(pid)
        print(
            f"tongban: node {node_id} serving from {workers} worker processes",
            file=sys.stderr,
            flush=True,
        )
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            children.discard(pid)
            if not stopping:  # a worker died on its own: take the node down, loudly
                failed = True
                print(
                    f"tongban: worker {pid} exited ({os.waitstatus_to_exitcode(status)});"
                    " stopping the node",
                    file=sys.stderr,
                    flush=True,
                )
                forward(signal.SIGTERM, None)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 1 if failed else 0


def start_order(federation: Federation) -> tuple[NodeConfig, ...]:
    """The IdP first (every node validates tokens with its keys), then the regions in file order."""
    return tuple(sorted(federation.nodes, key=lambda node: node.kind != "idp"))  # stable sort


async def run_federation(
    federation: Federation,
    *,
    clock: Clock,
    stop: asyncio.Event,
    ready: Callable[[dict[str, str]], None] | None = None,
    host: str | None = None,
) -> None:
    """Run every node of ``federation`` in this event loop until ``stop`` is set.

    Each node is its own aiohttp application on its own port (``host``, default the
    federation's, and the node's port from the file); the nodes still talk to each other only
    over HTTP, at their federation URLs. ``ready`` receives ``{node id: URL}`` once every node
    listens and every regional node holds a trust list that lists every regional node's
    active key (:func:`all_enrolled`): before that a node could not verify a peer. On the way
    out (``stop``, cancellation, or a node that cannot start) the nodes
    that did start are shut down in reverse order.

    Raises :class:`ConfigError` (``config.listen``) when a node cannot bind its port, and
    whatever opening a node raises (a bad key store, say), after shutting down the others.
    """
    bind = host or federation.host
    schemas = SchemaSet.load(default_schema_dir())
    runners: list[web.AppRunner] = []
    try:
        for node in start_order(federation):
            runner = web.AppRunner(
                node_app(federation, node.id, clock=clock, schemas=schemas), access_log=None
            )
            # Tracked before setup: a runner whose start-up failed half way still cleans up
            # what did start (its store, its executor, its client session).
            runners.append(runner)
            await runner.setup()
            try:
                await web.TCPSite(runner, bind, node.port).start()
            except OSError as exc:
                raise ConfigError(
                    f"node {node.id}: cannot listen on {bind}:{node.port}: {exc.strerror or exc}",
                    code="config.listen",
                ) from exc
        await _until_enrolled([runner.app for runner in runners], stop)
        if ready is not None and not stop.is_set():
            ready({node.id: federation.url(node.id) for node in start_order(federation)})
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


ENROLMENT_TIMEOUT = 120.0
"""How long ``up`` waits for every node to trust every other before it gives up."""


def all_enrolled(apps: Sequence[web.Application]) -> bool:
    """Every regional node's trust list lists every regional node's active key as active."""
    regions = [app for app in apps if NODE in app]
    for app in regions:
        if LINKS not in app:
            return False
        service = app[NODE]
        try:
            resolver = app[LINKS].trust.resolver(service.clock.now())
            for other in regions:
                require_active_key(resolver, other[NODE].node.id, other[NODE].keys.active().kid)
        except GatewayError:
            return False
    return True


async def _until_enrolled(apps: Sequence[web.Application], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ENROLMENT_TIMEOUT
    while not all_enrolled(apps):
        if stop.is_set():
            return
        if loop.time() > deadline:
            raise ConfigError(
                f"the nodes did not all trust each other's keys within {ENROLMENT_TIMEOUT:.0f} s",
                code="config.enrolment",
            )
        await asyncio.sleep(0.1)


def up(federation: Federation, *, host: str | None) -> int:
    """``tongban up``: every node of the federation in this process until SIGINT/SIGTERM."""
    _install_uvloop()
    return asyncio.run(_up(federation, host=host))


async def _up(federation: Federation, *, host: str | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)

    def announce(urls: dict[str, str]) -> None:
        width = max(len(node_id) for node_id in urls)
        for node_id, url in urls.items():
            node = federation.node(node_id)
            where = f"region {node.region}" if node.region else "identity provider"
            print(f"{node_id:<{width}}  {url}  {node.name} ({where})", flush=True)
        print(
            f"tongban: federation {federation.name} is up ({len(urls)} nodes); Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )

    try:
        await run_federation(federation, clock=SystemClock(), stop=stop, ready=announce, host=host)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    print(f"tongban: federation {federation.name} stopped", file=sys.stderr)
    return 0


def token(
    federation: Federation, *, client: str | None, holder: str | None, scope: str | None
) -> int:
    """``tongban token --client ID`` / ``--holder ID``: an access token from the running IdP."""
    return asyncio.run(_token(federation, client=client, holder=holder, scope=scope))


async def _token(
    federation: Federation, *, client: str | None, holder: str | None, scope: str | None
) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        idp = IdpClient(session, federation.idp_issuer())
        try:
            if client is not None:
                entry = next((c for c in federation.clients if c.id == client), None)
                if entry is None or entry.demo_secret is None:
                    raise ConfigError(
                        f"no demo credentials for client {client!r} in the federation file"
                    )
                print(await idp.client_credentials(client, entry.demo_secret.reveal(), scope=scope))
            else:
                person = next((c for c in federation.citizens if c.id == holder), None)
                if person is None or person.demo_password is None:
                    raise ConfigError(
                        f"no demo credentials for holder {holder!r} in the federation file"
                    )
                print(await idp.holder_login(person.id, person.demo_password.reveal()))
        except aiohttp.ClientError as exc:
            raise NetworkError(f"cannot reach the IdP at {idp.issuer}: {exc}") from exc
    return 0


def verify_offline(
    file: Path,
    *,
    jwks_file: Path | None = None,
    trust_list_file: Path | None = None,
    root_key: Path | None = None,
    node: str | None = None,
    as_json: bool = False,
    issuance_proof_file: Path | None = None,
    federation: Federation | None = None,
) -> int:
    """``tongban verify FILE --trust-list FILE [--root-key FILE] [--issuance-proof FILE]`` or
    ``--jwks FILE``.

    With a trust list, the seal is verified against every node's keys and their status
    history, the list itself against the pinned federation root key (``root.jwk.json``).
    A seal by a key revoked after it claims to be signed stays ``seal.revocation_unproven``
    unless an issuance proof is given whose head ``[witness] quorum`` of the issuing node's
    partners in ``federation`` cosigned before the revocation
    (:mod:`gateway.certificates.revocation`).
    Exit status 0 only when the seal passed.
    """
    try:
        token = file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from exc
    keys: KeyResolver
    if trust_list_file is not None:
        if root_key is None:
            raise ConfigError("--trust-list needs --root-key (the federation's root.jwk.json)")
        root = load_root_public(root_key)  # pinned out of band, never taken from the list
        trust_list = verify_trust_list(
            read_trust_list_file(trust_list_file), root, now=SystemClock().now()
        )
        keys = TrustListResolver(trust_list)
    elif jwks_file is not None:
        try:
            jwks = loads(jwks_file.read_bytes())  # strict: duplicate members refused
        except OSError as exc:
            raise ConfigError(f"cannot read {jwks_file}: {exc.strerror}") from exc
        except InputError as exc:
            raise ConfigError(f"{jwks_file}: not a strict JSON JWKS: {exc.detail}") from exc
        keys = StaticKeyResolver.from_jwks(jwks, node=NodeId(node) if node else None)
    else:
        raise ConfigError("name the keys: --trust-list FILE --root-key FILE, or --jwks FILE")
    if case_document_type(token) is not None:
        return _verify_case_document(token, keys, as_json=as_json)
    proven: ProvenIssuances = {}
    if issuance_proof_file is not None:
        if trust_list_file is None:
            raise ConfigError("--issuance-proof needs --trust-list (the keys' revocation times)")
        if federation is None:
            raise ConfigError("--issuance-proof needs the federation file (its [witness] quorum)")
        proven = _offline_issuance_proof(token, issuance_proof_file, keys, federation)
    verifier = CertificateVerifier(
        keys,
        SchemaSet.load(default_schema_dir()),
        clock=SystemClock(),
        statuses=None,
        proven=proven,
    )
    report, _ = verifier.report(token)
    if as_json:
        print(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_report(report.to_json()))
    return 0 if report.indication.value == "PASSED" else 1


def _offline_issuance_proof(
    token: str, file: Path, keys: KeyResolver, federation: Federation
) -> ProvenIssuances:
    """The proof in ``file``, checked for the seal ``token`` (its revoked key's node and
    revocation time from the trust list); nothing proven when it does not hold (the reason
    on stderr: the report then says ``seal.revocation_unproven``)."""
    try:
        raw = loads(file.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from exc
    except InputError as exc:
        raise ConfigError(f"{file}: not a strict JSON issuance proof: {exc.detail}") from exc
    now = SystemClock().now()
    witness = federation.witness
    try:
        seal = verify_seal(token, RevocationSetAside(keys), now=now)
        key = keys.key_for(KeyId(seal.kid))
        if key.revoked_at is None:
            return {}  # the seal's key is not revoked: there is nothing to prove
        cert_id = str(seal.payload.get("id"))
        proven = check_issuance_proof(
            IssuanceProof.from_json(raw, max_cosignatures=witness.max_cosignatures),
            keys=keys,
            node=key.node,
            certificate_id=cert_id,
            revoked_at=key.revoked_at,
            partners=partners_of(Topology.from_federation(federation), key.node),
            quorum=witness.quorum,
            now=now,
        )
    except GatewayError as exc:
        cause = exc.__cause__
        why = cause.code if isinstance(cause, GatewayError) else exc.code
        print(f"tongban: the issuance proof does not hold: {exc.detail} ({why})", file=sys.stderr)
        return {}
    return {cert_id: proven}


def _verify_case_document(token: str, keys: KeyResolver, *, as_json: bool) -> int:
    """A case's receipt or event: its seal by the node that made it, as for a seal."""
    typ = case_document_type(token)
    try:
        verified = verify_case_document(token, keys, now=SystemClock().now())
    except GatewayError as exc:
        print(f"result: FAILED ({exc.code})\n{typ}: {exc.detail}")
        return 1
    claims = dict(verified.payload)
    if as_json:
        body = {
            "indication": "PASSED",
            "typ": typ,
            "node": verified.node,
            "kid": verified.kid,
            "signed_at": verified.signed_at_text,
            "document": claims,
        }
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return 0
    lines = [
        f"result: PASSED ({typ})",
        f"node: {verified.node}",
        f"kid: {verified.kid}",
        f"signed_at: {verified.signed_at_text}",
        f"case: {claims.get('case')}",
    ]
    if typ == RECEIPT_TYP:
        lines.append(f"promised_by: {claims.get('promised_by')}")
        lines.append(
            table(
                ["material", "form", "level", "sha256"],
                [
                    [m["id"], m["form"], m["level"], m.get("sha256") or m.get("certificate_id", "")]
                    for m in claims.get("materials", [])
                ],
            )
        )
    else:
        lines.append(
            f"event: #{claims.get('seq')} {claims.get('action')} "
            f"{claims.get('from')} → {claims.get('to')}"
        )
    print("\n".join(lines))
    return 0


def cases_list(
    federation: Federation, node_id: str, *, state: str | None, limit: int, as_json: bool
) -> int:
    """``tongban cases list --node N``: the node's cases, read from its case store."""
    store = _case_store(federation, node_id)
    now = SystemClock().now()
    try:
        cases = [c for c in store.all_cases(after=None, limit=100_000) if state in (None, c.state)]
    finally:
        store.close()
    cases = cases[-limit:]
    if as_json:
        print(
            orjson.dumps([c.to_json(now=now) for c in cases], option=orjson.OPT_INDENT_2).decode()
        )
        return 0
    rows = [
        [
            c.id,
            c.matter,
            c.state.value,
            f"{c.window.node}/{c.window.department or 'online'}",
            f"{c.owner.node}/{c.owner.department}",
            to_rfc3339(c.due_at)[:10],
            "OVERDUE" if c.overdue(now) else "",
        ]
        for c in cases
    ]
    print(table(["case", "matter", "state", "window", "owner", "due", ""], rows))
    print(f"{len(rows)} case(s) at {node_id}")
    return 0


def cases_show(federation: Federation, node_id: str, case_id: str, *, as_json: bool) -> int:
    """``tongban cases show --node N CASE``: one case and its sealed events."""
    store = _case_store(federation, node_id)
    try:
        case = store.get(check_case_number(case_id))
        events = store.events(case.id)
    finally:
        store.close()
    now = SystemClock().now()
    document = case.to_json(now=now)
    claims = [stored_claims(e.token) for e in events]
    if as_json:
        document["events"] = claims
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(
        f"case {case.id}: {case.matter} — {case.state.value}"
        + (f" ({case.outcome})" if case.outcome else "")
    )
    print(
        f"window {case.window.node}/{case.window.department or 'online'} → "
        f"owner {case.owner.node}/{case.owner.department}"
    )
    print(f"due {to_rfc3339(case.due_at)}" + (" OVERDUE" if case.overdue(now) else ""))
    rows = [
        [
            c["seq"],
            c["action"],
            f"{c['from']} → {c['to']}",
            c["iss"],
            c["actor"],
            c["at"],
            c.get("reason") or "",
        ]
        for c in claims
    ]
    print(table(["#", "action", "state", "node", "actor", "at", "reason"], rows))
    return 0


def _case_store(federation: Federation, node_id: str) -> SqlCaseStore:
    """The node's case store, opened as the node opens it (PostgreSQL or its SQLite file);
    a SQLite node that never ran has none (nothing is created here)."""
    node = federation.node(node_id)
    path = federation.data_dir / node.id / "cases.sqlite3"
    if node.database is None and not path.is_file():
        raise ConfigError(f"node {node.id!r} has no case store at {path} (has it run?)")
    return open_case_store(federation, node.id)


def format_report(report: dict[str, object]) -> str:
    lines = [f"result: {report['indication']} ({report['code']})"]
    for key in ("certificate_id", "node", "kid", "signed_at"):
        if report.get(key):
            lines.append(f"{key}: {report[key]}")
    checks = report.get("checks")
    if isinstance(checks, list):
        lines.append(
            table(
                ["check", "result", "detail"],
                [[c["name"], c["result"], c.get("detail", "")] for c in checks],
            )
        )
    return "\n".join(lines)


def seed(federation: Federation, node_id: str, count: int, *, seed: int | None) -> int:
    from gateway.cli.seed import seed_node

    if count <= 0:
        raise ConfigError("--count must be positive")
    service = open_node_service(federation, node_id, clock=SystemClock())
    try:
        written = seed_node(service, count, rng_seed=seed, progress=True)
    finally:
        service.close()
    print(f"tongban: seeded {written} certificates into node {node_id}", file=sys.stderr)
    return 0


def export(federation: Federation, node_id: str, output: Path | None) -> int:
    service = open_node_service(federation, node_id, clock=SystemClock())
    count = 0
    try:
        with (
            output.open("w", encoding="ascii") if output else contextlib.nullcontext(sys.stdout)
        ) as out:
            for token in service.registry.iter_seals():
                out.write(token)
                out.write("\n")
                count += 1
    except OSError as exc:
        raise GatewayError(f"cannot write the export: {exc.strerror}") from exc
    finally:
        service.close()
    print(f"tongban: exported {count} sealed certificates from node {node_id}", file=sys.stderr)
    return 0


def audit_verify(federation: Federation, node_id: str) -> int:
    """``tongban audit verify --node N``: re-read the node's whole log, recompute every leaf
    and every signed tree head; exit 0 only when nothing was altered, removed or reordered."""
    from gateway.crypto.keystore import KeyStore
    from gateway.storage.audit_verify import verify_log

    node = federation.node(node_id)
    store = KeyStore.open(
        federation.keys_dir, node.id, clock=SystemClock(), passphrase=federation.key_passphrase
    )
    try:
        if node.database is not None:  # the one log every replica appends to
            summary = _verify_database_log(federation, node_id, store)
        else:
            path = federation.data_dir / node.id / "audit.sqlite3"
            if not path.exists():
                raise ConfigError(f"node {node_id!r} has no audit log at {path}")
            summary = verify_log(path, store, node=node.id, now=SystemClock().now())
    except ConfigError:
        raise
    except GatewayError as exc:
        print(f"tongban: audit log of {node_id} FAILED: {exc.code}: {exc.detail}", file=sys.stderr)
        return 1
    print(
        f"audit log of {node_id}: {summary.size} entries, {summary.heads_checked} signed tree "
        f"heads checked, root {b64url_encode(summary.root_hash)}: OK"
    )
    return 0


def _verify_database_log(federation: Federation, node_id: str, keys: KeyStore) -> AuditVerification:
    from gateway.storage.audit_verify import verify_log

    node = federation.node(node_id)
    clock = SystemClock()
    with open_audit_log(federation, node_id, signer=keys.current_signer(), clock=clock) as log:
        return verify_log(log, keys, node=node.id, now=clock.now())


def db_migrate(federation: Federation, node_id: str) -> int:
    """``tongban db migrate --node N``: bring every store of the node to this gateway's schema
    (what a node also does when it starts); a store of a newer schema is refused."""
    node = federation.node(node_id)
    if node.kind == "idp":
        print(f"tongban: node {node_id} keeps no database", file=sys.stderr)
        return 0
    service = open_node_service(federation, node_id, clock=SystemClock())
    service.close()
    open_case_store(federation, node_id).close()
    open_nonce_store(federation, node_id).close()
    if node_id == NATIONAL:
        open_catalog_store(federation).close()
        authority_store = open_authority_store(federation)
        if authority_store is not None:
            authority_store.close()
    where = "PostgreSQL" if node.database is not None else str(federation.data_dir / node.id)
    print(f"tongban: node {node_id}: every store is at this gateway's schema ({where})")
    return 0


def reseal(federation: Federation, node_id: str, kid: str) -> int:
    """Re-seal a node's live certificates away from ``kid`` (resumes after a crash)."""
    from gateway.federation.keyrotation import reseal as reseal_node
    from gateway.ids import KeyId

    service = open_node_service(federation, node_id, clock=SystemClock())
    try:
        done = reseal_node(service, KeyId(kid), progress=True)
    finally:
        service.close()
    print(
        f"tongban: re-sealed {done} certificates of node {node_id} away from {kid}", file=sys.stderr
    )
    return 0


KEY_COLUMNS = ["state", "kid", "alg", "created", "activates", "expires"]
EXPIRY_WARNING_DAYS = 30


def keys_admin(
    federation: Federation,
    node_id: str,
    action: str,
    *,
    kid: str | None = None,
    at: int | None = None,
    alg: str | None = None,
) -> int:
    """``tongban keys list|rotate|retire|revoke --node N``: the running node's admin API,
    called with the node's ops client's demo credentials (scope ``keys:admin``).
    ``rotate --alg SM2`` rotates to a key of another algorithm."""
    return asyncio.run(_keys_admin(federation, node_id, action, kid=kid, at=at, alg=alg))


async def _keys_admin(
    federation: Federation,
    node_id: str,
    action: str,
    *,
    kid: str | None,
    at: int | None,
    alg: str | None = None,
) -> int:
    node = federation.node(node_id)
    operator = "national" if node.kind == "idp" else node.id  # national operates the IdP
    ops = next(
        (
            c
            for c in federation.clients
            if "keys:admin" in c.scopes and c.node == operator and c.demo_secret is not None
        ),
        None,
    )
    if ops is None or ops.demo_secret is None:
        raise ConfigError(
            f"the federation file has no ops client with demo credentials for {node_id!r}"
        )
    base = federation.url(node.id) + "/v1/admin/keys"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        try:
            token = await IdpClient(session, federation.idp_issuer()).client_credentials(
                ops.id, ops.demo_secret.reveal()
            )
            headers = {"Authorization": f"Bearer {token}"}
            if action == "list":
                request = session.get(base, headers=headers)
            elif action == "rotate":
                request = session.post(
                    f"{base}/rotate", headers=headers, json={"alg": alg} if alg else None
                )
                print(
                    f"tongban: rotating {node_id}'s seal key (waits for the trust list "
                    "to reach every node)…",
                    file=sys.stderr,
                )
            else:
                body = {"at": at} if at is not None else None
                request = session.post(f"{base}/{kid}/{action}", headers=headers, json=body)
            async with request as response:
                answer = await response.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise NetworkError(f"cannot reach node {node_id}: {exc}") from exc
    if response.status >= 400:
        raise GatewayError(f"{answer.get('code')}: {answer.get('detail')}")
    if action == "list":
        rows = [
            [
                k["state"],
                k["kid"],
                k["alg"],
                k["created"],
                k["activates"],
                k["expires"]
                + (
                    f"  ⚠ in {k['expires_in_days']} d"
                    if k["expires_in_days"] < EXPIRY_WARNING_DAYS
                    else ""
                ),
            ]
            for k in answer["keys"]
        ]
        print(table(KEY_COLUMNS, rows))
    else:
        print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
    return 0


def keys_list(federation: Federation, node_id: str) -> int:
    """``tongban keys list --node N --offline``: read the local key store directly."""
    from gateway.crypto.keystore import KeyStore

    node = federation.node(node_id)
    # The same settings as open_node_service: a first key made here is the one the node uses.
    store = KeyStore.open(
        federation.keys_dir,
        node.id,
        clock=SystemClock(),
        passphrase=federation.key_passphrase,
        default_alg=key_alg(federation.seal_alg),
        validity_days=federation.key_validity_days,
        ed25519_name=ed25519_name(federation.ed25519_alg),
    )
    rows = [
        [
            r.state.value,
            r.kid,
            r.alg,
            to_rfc3339(r.created),
            to_rfc3339(r.not_before),
            to_rfc3339(r.not_after),
        ]
        for r in store.records()
    ]
    print(table(KEY_COLUMNS, rows))
    return 0


__all__ = [
    "audit_verify",
    "cases_list",
    "cases_show",
    "export",
    "format_report",
    "keys_admin",
    "keys_list",
    "node_app",
    "reseal",
    "run_federation",
    "seed",
    "serve",
    "start_order",
    "token",
    "up",
    "verify_offline",
]
