"""What the CLI's sub-commands do, apart from argument parsing."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from gateway._internal.console import table
from gateway._internal.wire import loads
from gateway.clock import SystemClock, to_rfc3339
from gateway.config import Federation
from gateway.errors import ConfigError, GatewayError, InputError, NetworkError
from gateway.http.idp_app import create_idp_app
from gateway.idp import IdpService, idp_issuer
from gateway.idp_client import IdpClient
from gateway.jwks import StaticKeyResolver
from gateway.keys import federation_holder_secret
from gateway.node import NodeService
from gateway.schemas import SchemaCatalog, default_schema_dir
from gateway.verification import CertificateVerifier


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(federation: Federation, node_id: str, *, host: str | None, port: int | None) -> int:
    """Run one regional node until SIGINT/SIGTERM."""
    from gateway.http.app import create_app

    node = federation.node(node_id)
    app: web.Application
    if node.kind == "idp":
        idp = IdpService.open(
            federation,
            clock=SystemClock(),
            holder_secret=federation_holder_secret(federation.keys_dir),
        )
        app = create_idp_app(idp)
    else:
        service = NodeService.open(
            federation,
            node_id,
            clock=SystemClock(),
            schemas=SchemaCatalog.load(default_schema_dir()),
        )
        app = create_app(service)
    _install_uvloop()
    web.run_app(
        app,
        host=host or federation.host,
        port=port if port is not None else node.port,
        access_log=None,
        print=lambda msg: print(f"tongban: node {node_id} {msg.strip()}", file=sys.stderr),
        handle_signals=True,
    )
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
        idp = IdpClient(session, idp_issuer(federation))
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


def verify_offline(file: Path, jwks_file: Path, *, node: str | None, as_json: bool) -> int:
    """``tongban verify FILE --jwks FILE``: exit 0 only when the seal passed."""
    from gateway.ids import NodeId

    try:
        token = file.read_text(encoding="ascii").strip()
        jwks_bytes = jwks_file.read_bytes()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the input: {exc}") from exc
    try:
        jwks = loads(jwks_bytes)  # strict: a duplicate "keys" or "kid" is refused, not merged
    except InputError as exc:
        raise ConfigError(f"{jwks_file}: not a strict JSON JWKS: {exc.detail}") from exc
    keys = StaticKeyResolver.from_jwks(jwks, node=NodeId(node) if node else None)
    verifier = CertificateVerifier(
        keys, SchemaCatalog.load(default_schema_dir()), clock=SystemClock(), statuses=None
    )
    report, _ = verifier.report(token)
    if as_json:
        print(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_report(report.to_json()))
    return 0 if report.indication.value == "PASSED" else 1


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
    from gateway.seed import seed_node

    if count <= 0:
        raise ConfigError("--count must be positive")
    service = NodeService.open(
        federation, node_id, clock=SystemClock(), schemas=SchemaCatalog.load(default_schema_dir())
    )
    try:
        written = seed_node(service, count, rng_seed=seed, progress=True)
    finally:
        service.close()
    print(f"tongban: seeded {written} certificates into node {node_id}", file=sys.stderr)
    return 0


def export(federation: Federation, node_id: str, output: Path | None) -> int:
    service = NodeService.open(
        federation, node_id, clock=SystemClock(), schemas=SchemaCatalog.load(default_schema_dir())
    )
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


def keys_list(federation: Federation, node_id: str) -> int:
    from gateway.keys import KeyStore

    node = federation.node(node_id)
    # The same settings as NodeService.open: a first key made here is the one the node uses.
    store = KeyStore.open(
        federation.keys_dir,
        node.id,
        clock=SystemClock(),
        passphrase=federation.key_passphrase,
        default_alg="ES256" if federation.seal_alg == "ES256" else "EdDSA",
        validity_days=federation.key_validity_days,
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
    print(table(["state", "kid", "alg", "created", "activates", "expires"], rows))
    return 0


__all__ = ["export", "format_report", "keys_list", "seed", "serve", "token", "verify_offline"]
