"""The ``tongban`` command line (also ``python -m gateway``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.config import DEFAULT_FEDERATION_FILE, Federation, load_federation
from gateway.errors import ConfigError, GatewayError


def _federation(args: argparse.Namespace) -> Federation:
    federation = load_federation(args.federation, env=os.environ)
    changes = {}
    if getattr(args, "data_dir", None):
        changes["data_dir"] = Path(args.data_dir)
    if getattr(args, "keys_dir", None):
        changes["keys_dir"] = Path(args.keys_dir)
    if changes:
        federation = federation.with_overrides(**changes)
    if getattr(args, "database", None):
        node = getattr(args, "node", None)
        if node is None:
            raise ConfigError("--database names one node's database: use it with --node")
        federation = federation.with_database(node, args.database)
    return federation


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tongban",
        description="Tongban (通办): certificate mutual-recognition gateway.",
    )
    parser.add_argument(
        "--federation",
        type=Path,
        default=None,
        help=f"federation file (default: the embedded {DEFAULT_FEDERATION_FILE.name})",
    )
    parser.add_argument("--data-dir", help="override the federation file's data_dir")
    parser.add_argument("--keys-dir", help="override the federation file's keys_dir")
    parser.add_argument(
        "--database",
        help="postgresql://… : the --node's stores in this PostgreSQL database (its replicas"
        " share it); default: the federation file's, else SQLite under data_dir",
    )
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run every node of the federation in this process")
    up.add_argument("--host", default=None, help="bind address (default: the federation's)")

    serve = sub.add_parser("serve", help="run one node")
    serve.add_argument("--node", required=True)
    serve.add_argument("--host", default=None, help="bind address (default: the federation's)")
    serve.add_argument("--port", type=int, default=None, help="port (default: the federation's)")
    serve.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )

    sub.add_parser("demo", help="run the guided tour")

    token = sub.add_parser("token", help="print an access token from the running IdP")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--client", help="a departmental client (its demo secret)")
    who.add_argument("--holder", help="a citizen's resident ID number (their demo password)")
    token.add_argument("--scope", default=None, help="request fewer scopes (clients only)")

    verify = sub.add_parser("verify", help="verify a sealed document offline")
    verify.add_argument("file", type=Path, help="file holding one compact JWS")
    key_source = verify.add_mutually_exclusive_group(required=True)
    key_source.add_argument("--trust-list", type=Path, help="the federation trust list (JWS)")
    key_source.add_argument("--jwks", type=Path, help="the issuing node's JWKS file")
    verify.add_argument(
        "--root-key",
        type=Path,
        help="the federation root public key (default: <keys_dir>/_federation/root.jwk.json)",
    )
    verify.add_argument("--node", default=None, help="the issuing node (default: from the JWKS)")
    verify.add_argument(
        "--issuance-proof",
        type=Path,
        default=None,
        help="the issuing node's proof of issuance (GET /v1/audit/issuance-proof) for a seal"
        " by a key revoked since: it counts only with a head its partners witnessed before"
        " the revocation ([witness] quorum of the federation file; needs --trust-list)",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")

    seed = sub.add_parser("seed", help="generate realistic certificates into a node's registry")
    seed.add_argument("--node", required=True)
    seed.add_argument("--count", type=int, required=True)
    seed.add_argument("--seed", type=int, default=None, help="random seed (reproducible runs)")

    export = sub.add_parser("export", help="write a node's sealed certificates, one JWS a line")
    export.add_argument("--node", required=True)
    export.add_argument("--output", "-o", type=Path, default=None, help="default: stdout")

    audit = sub.add_parser("audit", help="a node's tamper-evident audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    audit_verify = audit_sub.add_parser(
        "verify", help="check a node's log end to end (altered, removed or reordered entries)"
    )
    audit_verify.add_argument("--node", required=True)

    cases = sub.add_parser("cases", help="a node's cases (办件), read from its case store")
    cases_sub = cases.add_subparsers(dest="cases_command", required=True, metavar="ACTION")
    cases_list = cases_sub.add_parser("list", help="the node's cases, newest last")
    cases_list.add_argument("--node", required=True)
    cases_list.add_argument("--state", default=None, help="only cases in this state")
    cases_list.add_argument("--limit", type=int, default=50, help="at most this many (last)")
    cases_list.add_argument("--json", action="store_true")
    cases_show = cases_sub.add_parser("show", help="one case and its sealed events")
    cases_show.add_argument("--node", required=True)
    cases_show.add_argument("case", help="the case number, e.g. 330681-20261204-000001")
    cases_show.add_argument("--json", action="store_true")

    db = sub.add_parser("db", help="a node's stores (SQLite files or a PostgreSQL database)")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_migrate = db_sub.add_parser(
        "migrate", help="create or upgrade every store of a node to this gateway's schema"
    )
    db_migrate.add_argument("--node", required=True)

    keys = sub.add_parser("keys", help="seal keys of a node")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_list = keys_sub.add_parser("list", help="list a node's seal keys")
    keys_list.add_argument("--node", required=True)
    keys_list.add_argument(
        "--offline", action="store_true", help="read the local key store, not the running node"
    )
    keys_rotate = keys_sub.add_parser("rotate", help="rotate a running node's seal key")
    keys_rotate.add_argument("--node", required=True)
    keys_rotate.add_argument(
        "--alg",
        choices=["EdDSA", "Ed25519", "ES256", "SM2"],
        default=None,
        help="the new key's algorithm (default: the federation file's seal_alg)",
    )
    keys_retire = keys_sub.add_parser("retire", help="retire a key (it keeps verifying)")
    keys_retire.add_argument("--node", required=True)
    keys_retire.add_argument("kid")
    keys_revoke = keys_sub.add_parser("revoke", help="revoke a key from a time")
    keys_revoke.add_argument("--node", required=True)
    keys_revoke.add_argument("kid")
    keys_revoke.add_argument("--at", type=int, default=None, help="NumericDate (default: now)")
    keys_revoke.add_argument(
        "--reseal",
        action="store_true",
        help="then re-seal the node's live certificates with its active key (resumable)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except GatewayError as exc:
        print(f"tongban: {exc.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from gateway import logs
    from gateway.cli import commands

    if args.command == "up":
        logs.configure(args.log_level)
        return commands.up(_federation(args), host=args.host)
    if args.command == "serve":
        logs.configure(args.log_level)
        return commands.serve(
            _federation(args), args.node, host=args.host, port=args.port, workers=args.workers
        )
    if args.command == "demo":
        from gateway.cli.demo import run_demo

        logs.configure("ERROR")  # the tour prints what a newcomer needs; the logs only errors
        return asyncio.run(run_demo())
    if args.command == "token":
        return commands.token(
            _federation(args), client=args.client, holder=args.holder, scope=args.scope
        )
    if args.command == "verify":
        root_key = args.root_key
        if args.trust_list is not None and root_key is None:
            # the federation's pinned root key, where this machine's key store keeps it
            root_key = _federation(args).keys_dir / "_federation" / "root.jwk.json"
        return commands.verify_offline(
            args.file,
            jwks_file=args.jwks,
            trust_list_file=args.trust_list,
            root_key=root_key,
            node=args.node,
            as_json=args.json,
            issuance_proof_file=args.issuance_proof,
            federation=_federation(args) if args.issuance_proof is not None else None,
        )
    if args.command == "seed":
        return commands.seed(_federation(args), args.node, args.count, seed=args.seed)
    if args.command == "export":
        return commands.export(_federation(args), args.node, args.output)
    if args.command == "audit":
        return commands.audit_verify(_federation(args), args.node)
    if args.command == "cases":
        if args.cases_command == "list":
            return commands.cases_list(
                _federation(args), args.node, state=args.state, limit=args.limit, as_json=args.json
            )
        return commands.cases_show(_federation(args), args.node, args.case, as_json=args.json)
    if args.command == "db":
        return commands.db_migrate(_federation(args), args.node)
    if args.command == "keys":
        federation = _federation(args)
        if args.keys_command == "list" and args.offline:
            return commands.keys_list(federation, args.node)
        status = commands.keys_admin(
            federation,
            args.node,
            args.keys_command,
            kid=getattr(args, "kid", None),
            at=getattr(args, "at", None),
            alg=getattr(args, "alg", None),
        )
        if status == 0 and getattr(args, "reseal", False):
            return commands.reseal(federation, args.node, args.kid)
        return status
    raise AssertionError(args.command)  # pragma: no cover - argparse restricts commands
