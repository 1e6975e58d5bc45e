"""The composition root: a node built from its config, in one place (Synapse's ``HomeServer``).

Two steps, because a node's stores are opened before it serves and its links to the
federation need a running event loop:

1. :func:`open_node_service` (a regional node) or :func:`open_idp_service` (the identity
   provider) opens the key store and the stores under the federation's data directory and
   returns the synchronous service: the CLI's offline commands stop here;
2. :func:`linked` opens the node's one ``ClientSession`` and builds everything that talks
   to other nodes: the IdP's keys (token and consent validation), the trust list and its
   refresh (or, at ``national``, the trust-list authority and the catalog), the one outbound
   peer client, the hop gate, the federated verifier, routed fetches, lookups, catalog
   registrations, key rotation and the partners' audit watch, with their background tasks;
   they stop, and the session closes, when the context ends.

Every policy number comes from the federation file (:class:`gateway.config.Network`,
:class:`gateway.config.Limits`); nothing else in the gateway wires objects together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from gateway.audit.records import AuditKind
from gateway.certificates.schemas import SchemaSet, default_schema_dir
from gateway.clock import Clock
from gateway.config import Federation
from gateway.crypto.jwks import KeyResolver, ed25519_name, key_alg
from gateway.crypto.keystore import KeyStore, federation_holder_secret
from gateway.crypto.seals import Signer
from gateway.errors import GatewayError, InputError
from gateway.federation.cases import CaseExchange
from gateway.federation.enrolment import run_enrolment
from gateway.federation.fetch import RoutedFetch
from gateway.federation.hops import HopGate
from gateway.federation.keyrotation import KeyRotation
from gateway.federation.lookups import Lookups
from gateway.federation.partner_watch import PartnerWatch
from gateway.federation.peers import PeerClient
from gateway.federation.registrations import Registrations
from gateway.federation.remote_status import RemoteStatuses
from gateway.federation.routing import Topology
from gateway.federation.verifier import FederatedVerifier
from gateway.federation.webhooks import WebhookSender
from gateway.ids import IDP, NATIONAL
from gateway.metrics import Metrics
from gateway.services.authority import TrustAuthority
from gateway.services.cases import CaseService
from gateway.services.catalog import CatalogService
from gateway.services.idp import IdpService
from gateway.services.node import NodeService
from gateway.sso.auth import Authenticator
from gateway.sso.idp_keys import RemoteKeySet
from gateway.sso.node_auth import NodeAuthenticator
from gateway.storage.audit_log import AuditLog, PostgresAuditLog, SqliteAuditLog
from gateway.storage.authority_state import AuthorityStore, PostgresAuthorityStore
from gateway.storage.cases import PostgresCaseStore, SqlCaseStore, SqliteCaseStore
from gateway.storage.catalog import PostgresCatalog, SqlCatalog, SqliteCatalog
from gateway.storage.cosignatures import (
    PostgresCosignatures,
    SqlCosignatures,
    SqliteCosignatures,
)
from gateway.storage.groupcommit import GroupCommit
from gateway.storage.nonces import Nonces, PostgresNonces, SqliteNonces
from gateway.storage.registry import PostgresRegistry, SqliteRegistry, SqlRegistry
from gateway.trust.rootkey import RootKey
from gateway.trust.sync import TrustSync

log = logging.getLogger("gateway.server")

HEAD_INTERVAL: Final = 5.0
"""How often a node signs a tree head of its audit log when it grew: partners watch (and
cosign) them, and a head older than a key's revocation, cosigned by partners before it, is
what proves a seal predates it. The log's WAL is checkpointed at the same pace."""


def open_node_service(
    federation: Federation,
    node_id: str,
    *,
    clock: Clock,
    schemas: SchemaSet | None = None,
    metrics: Metrics | None = None,
    public_url: str | None = None,
    data_dir: Path | None = None,
    idp_keys: KeyResolver | None = None,
) -> NodeService:
    """A regional node's service over its key store, registry and audit log (opened here,
    closed by :meth:`NodeService.close`)."""
    node = federation.node(node_id)
    if node.kind != "region":
        raise InputError(f"node {node_id!r} is not a regional node", code="config.node_kind")
    keys = KeyStore.open(
        federation.keys_dir,
        node.id,
        clock=clock,
        passphrase=federation.key_passphrase,
        default_alg=key_alg(federation.seal_alg),
        validity_days=federation.key_validity_days,
        ed25519_name=ed25519_name(federation.ed25519_alg),
    )
    directory = (data_dir or federation.data_dir) / node.id
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    registry: SqlRegistry
    if node.database is not None:  # every replica of the node shares these stores
        registry = PostgresRegistry(node.database)
    else:
        registry = SqliteRegistry(directory / "registry.sqlite3")
    try:
        audit = open_audit_log(federation, node.id, signer=keys.current_signer(), clock=clock)
    except BaseException:
        registry.close()
        raise
    cosignatures: SqlCosignatures
    try:
        if node.database is not None:
            cosignatures = PostgresCosignatures(node.database)
        else:
            cosignatures = SqliteCosignatures(directory / "cosignatures.sqlite3")
    except BaseException:
        audit.close()
        registry.close()
        raise
    return NodeService(
        federation,
        node,
        clock=clock,
        keys=keys,
        registry=registry,
        schemas=schemas or SchemaSet.load(default_schema_dir()),
        metrics=metrics or Metrics(node.id),
        public_url=public_url or federation.url(node.id),
        idp_keys=idp_keys,
        audit=audit,
        cosignatures=cosignatures,
    )


def open_case_store(federation: Federation, node_id: str) -> SqlCaseStore:
    """The node's case store, shared by all its processes and replicas: in its PostgreSQL
    database when it names one, else ``cases.sqlite3`` under its data directory (created
    once, before worker processes start: two creating one file side by side could fail to
    set up its WAL)."""
    database = federation.node(node_id).database
    if database is not None:
        return PostgresCaseStore(database)
    directory = federation.data_dir / node_id
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SqliteCaseStore(directory / "cases.sqlite3")


def open_audit_log(
    federation: Federation, node_id: str, *, signer: Signer, clock: Clock
) -> AuditLog:
    """The node's audit log: in its PostgreSQL database (the one log every replica appends
    to) when it names one, else ``audit.sqlite3`` under its data directory."""
    node = federation.node(node_id)
    if node.database is not None:
        return PostgresAuditLog(node.database, node=node.id, signer=signer, clock=clock)
    directory = federation.data_dir / node.id
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SqliteAuditLog(directory / "audit.sqlite3", node=node.id, signer=signer, clock=clock)


def open_nonce_store(federation: Federation, node_id: str) -> Nonces:
    """The hop-proof nonces every process and replica of ``node_id`` shares (created on first
    use: a node served by worker processes creates it once, before they start)."""
    network = federation.network
    database = federation.node(node_id).database
    if database is not None:
        return PostgresNonces(
            database,
            max_entries=network.nonce_cache_entries,
            ttl=network.nonce_ttl_seconds,
        )
    directory = federation.data_dir / node_id
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SqliteNonces(
        directory / "nonces.sqlite3",
        max_entries=network.nonce_cache_entries,
        ttl=network.nonce_ttl_seconds,
    )


def open_catalog_store(federation: Federation) -> SqlCatalog:
    """National's catalog: in its PostgreSQL database when it names one, else a SQLite file."""
    database = federation.node(NATIONAL).database
    if database is not None:
        return PostgresCatalog(database)
    directory = federation.data_dir / NATIONAL
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SqliteCatalog(directory / "catalog.sqlite3")


def open_authority_store(federation: Federation) -> AuthorityStore | None:
    """National's trust authority state in its PostgreSQL database, with the author's lease
    (national as replicas); None: the state file one process owns (SQLite deployments)."""
    database = federation.node(NATIONAL).database
    return None if database is None else PostgresAuthorityStore(database)


def open_idp_service(federation: Federation, *, clock: Clock) -> IdpService:
    """The identity provider's service (its signing keys, clients and citizens)."""
    return IdpService.open(
        federation, clock=clock, holder_secret=federation_holder_secret(federation.keys_dir)
    )


@dataclass(frozen=True, slots=True)
class NodeLinks:
    """What a serving regional node holds beside its service: built once by :func:`linked`."""

    authenticator: Authenticator
    writer: ThreadPoolExecutor
    """The node's one store-writer thread (issuance, status changes, catalog entries)."""
    journal: GroupCommit
    """Audit records of requests, committed in groups before each request is answered."""
    trust: TrustSync
    peers: PeerClient
    hops: HopGate
    verifier: FederatedVerifier
    fetches: RoutedFetch
    lookups: Lookups
    registrations: Registrations | None
    """Catalog entries to national (None at national itself)."""
    keys: KeyRotation
    authority: TrustAuthority | None
    """National only: the trust-list authority."""
    catalog: CatalogService | None
    """National only: the catalog of which node holds which holder's certificates."""
    cases: CaseExchange
    """Cases (办件): intake, actions, the peers' packages and events, the outbox sender."""
    webhooks: WebhookSender
    """CloudEvents notifications of case transitions to subscribed departmental systems."""


@contextlib.asynccontextmanager
async def linked(
    service: NodeService, *, clock: Clock, authenticator: Authenticator | None = None
) -> AsyncIterator[NodeLinks]:
    """The node's links to the federation on ONE ``ClientSession``, started and stopped here.

    Without an ``authenticator`` the node validates the federation IdP's access tokens with a
    :class:`~gateway.sso.idp_keys.RemoteKeySet` (loaded in the background: a node may start
    before its IdP); the same keys verify consent grants.
    """
    federation = service.federation
    network = federation.network
    me = service.node.id
    state = federation.data_dir / me
    timeout = aiohttp.ClientTimeout(total=federation.limits.request_timeout_seconds)
    tasks: list[asyncio.Task[None]] = []
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tongban-writer")
    journal = GroupCommit(service.audit)
    catalog_store: SqlCatalog | None = None
    authority_store: AuthorityStore | None = None
    nonces: Nonces | None = None
    case_store: SqlCaseStore | None = None

    def start(work: Coroutine[Any, Any, None]) -> None:
        tasks.append(asyncio.create_task(work))

    try:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=network.max_connections_per_peer)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            idp_keys: RemoteKeySet | None = None
            statuses: RemoteStatuses | None = None
            try:  # whatever was started is stopped, even when building a later part fails
                if authenticator is None:
                    issuer = federation.idp_issuer()
                    idp_keys = RemoteKeySet(
                        issuer,
                        session,
                        clock=clock,
                        node=IDP,
                        fetch_timeout=network.fetch_timeout_seconds,
                    )
                    authenticator = NodeAuthenticator.for_federation(
                        federation, idp_keys, clock=clock, issuer=issuer
                    )
                    service.use_idp_keys(idp_keys)
                    start(idp_keys.run_background_refresh())
                trust = TrustSync(
                    federation,
                    session,
                    clock=clock,
                    cache_path=state / "trust-list.jws",
                    keys_dir=federation.keys_dir,
                    national_url=federation.url(NATIONAL),
                    fetch_timeout=network.fetch_timeout_seconds,
                )

                async def trust_list_changed(seq: int, before: int | None) -> None:
                    await journal.append(
                        [(AuditKind.TRUST_LIST, "national", None, {"seq": seq, "previous": before})]
                    )

                trust.on_change = trust_list_changed
                peers = PeerClient(me, federation, session, signer=service.keys.signer, clock=clock)
                topology = Topology.from_federation(federation)
                # one nonce store for every process of this node: a hop proof replayed to
                # another worker is refused as surely as one replayed to the same worker
                nonces = open_nonce_store(federation, me)
                hops = HopGate(me, trust=trust.resolver, nonces=nonces, clock=clock)
                statuses = RemoteStatuses(
                    session,
                    trust.resolver,
                    clock=clock,
                    fetch_timeout=network.fetch_timeout_seconds,
                )
                verifier = FederatedVerifier(
                    service,
                    trust=trust.resolver,
                    statuses=statuses,
                    peers=peers,
                    journal=journal,
                    clock=clock,
                    topology=topology,
                )
                fetches = RoutedFetch(
                    service,
                    topology=topology,
                    trust=trust.resolver,
                    peers=peers,
                    hops=hops,
                    verifier=verifier,
                    journal=journal,
                    clock=clock,
                )
                authority: TrustAuthority | None = None
                catalog: CatalogService | None = None
                registrations: Registrations | None = None
                if me == NATIONAL:
                    root = RootKey.open_or_create(
                        federation.keys_dir,
                        clock=clock,
                        passphrase=federation.key_passphrase,
                        alg="ES256" if federation.seal_alg == "ES256" else "EdDSA",
                    )
                    authority_store = open_authority_store(federation)
                    authority = TrustAuthority.open(
                        federation,
                        clock=clock,
                        root=root,
                        state_path=state / "authority.json",
                        store=authority_store,
                        holder=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}",
                        lease_seconds=network.authority_lease_seconds,
                    )
                    catalog_store = open_catalog_store(federation)
                    catalog = CatalogService(
                        catalog_store, clock=clock, types=service.schemas.certificate_types()
                    )
                    start(run_enrolment(authority, trust, service, peers, clock=clock))
                else:
                    start(trust.run())
                    registrations = Registrations(service, peers=peers)
                    start(registrations.run())
                partners = PartnerWatch(
                    me,
                    topology,
                    session,
                    trust=trust.resolver,
                    clock=clock,
                    metrics=service.metrics,
                    federation=federation,
                    fetch_timeout=network.fetch_timeout_seconds,
                    ledger=service,  # a witness: cosigns partners' heads, gathers theirs
                    writer=writer,
                )
                start(partners.run(federation.witness.check_interval_seconds))
                case_store = open_case_store(federation, me)
                case_service = CaseService(service, case_store)
                await asyncio.get_running_loop().run_in_executor(
                    writer, case_service.recover_audit
                )  # what a crash left owed to the audit log, once
                webhooks = WebhookSender(
                    case_store,
                    session,
                    node=me,
                    signer=service.keys.signer,
                    clock=clock,
                    timeout=network.fetch_timeout_seconds,
                    retry=(network.outbox_retry_base_seconds, network.outbox_retry_max_seconds),
                )
                cases = CaseExchange(
                    case_service,
                    topology=topology,
                    trust=trust.resolver,
                    peers=peers,
                    hops=hops,
                    writer=writer,
                    clock=clock,
                    notify=webhooks.due,
                )
                start(cases.run())
                start(cases.run_clock())
                start(webhooks.run())
                start(_sign_heads(service, writer))
                start(_checkpoint_nonces(nonces, writer))
                yield NodeLinks(
                    authenticator=authenticator,
                    writer=writer,
                    journal=journal,
                    trust=trust,
                    peers=peers,
                    hops=hops,
                    verifier=verifier,
                    fetches=fetches,
                    lookups=Lookups(service, peers=peers, fetches=fetches),
                    registrations=registrations,
                    keys=KeyRotation(
                        service, peers=peers, journal=journal, trust=trust.resolver, clock=clock
                    ),
                    authority=authority,
                    catalog=catalog,
                    cases=cases,
                    webhooks=webhooks,
                )
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if statuses is not None:
                    await statuses.aclose()
                await journal.aclose()  # commits what the last requests left waiting
                if idp_keys is not None:
                    await idp_keys.aclose()
    finally:
        writer.shutdown(wait=True)
        if catalog_store is not None:
            catalog_store.close()
        if authority_store is not None:
            authority_store.close()
        if nonces is not None:
            nonces.close()
        if case_store is not None:
            case_store.close()


async def _sign_heads(service: NodeService, writer: ThreadPoolExecutor) -> None:
    """Every :data:`HEAD_INTERVAL`: a signed tree head when the log grew, and a WAL
    checkpoint, both on the writer thread (never on the event loop)."""
    loop = asyncio.get_running_loop()
    signed = -1
    while True:
        try:
            size = service.audit.size()
            if size != signed:
                await loop.run_in_executor(writer, service.audit.tree_head)
                # and the WAL into the database, here rather than inside a request's commit
                await loop.run_in_executor(writer, service.audit.checkpoint)
                signed = size
        except GatewayError as exc:
            log.warning("could not sign an audit tree head", extra={"code": exc.code})
        await asyncio.sleep(HEAD_INTERVAL)


async def _checkpoint_nonces(nonces: Nonces, writer: ThreadPoolExecutor) -> None:
    """Every :data:`HEAD_INTERVAL`: the nonce store's WAL into its file, on the writer thread."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            await loop.run_in_executor(writer, nonces.checkpoint)
        except GatewayError as exc:
            log.warning("could not checkpoint the nonce store", extra={"code": exc.code})
        await asyncio.sleep(HEAD_INTERVAL)
