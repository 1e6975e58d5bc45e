"""``create_app``: one regional node as an aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import aiohttp
from aiohttp import web

from gateway.audit.records import AuditKind
from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.federation.exchange import Exchange
from gateway.federation.keyrotation import KeyLifecycle
from gateway.federation.partner_watch import PartnerWatch
from gateway.federation.remote_status import RemoteStatuses
from gateway.http.appkeys import (
    AUTHORITY,
    CATALOG,
    EXCHANGE,
    EXECUTOR,
    LIFECYCLE,
    NODE,
    OPENAPI,
    SESSION,
    TRUST,
)
from gateway.http.handlers import ROUTES
from gateway.http.middleware import (
    AUTHENTICATOR,
    auth_middleware,
    metrics_middleware,
    problem_middleware,
    request_id_middleware,
)
from gateway.http.openapi import build_openapi
from gateway.ids import NATIONAL, NodeId
from gateway.services.authority import TrustAuthority, collect
from gateway.services.catalog import CatalogService
from gateway.services.idp import idp_issuer
from gateway.services.node import NodeService
from gateway.sso.auth import Authenticator
from gateway.sso.idp_keys import RemoteKeySet
from gateway.sso.node_auth import NodeAuthenticator
from gateway.storage.catalog import SqliteCatalog
from gateway.storage.groupcommit import GroupCommit
from gateway.trust.rootkey import RootKey
from gateway.trust.sync import TrustSync

log = logging.getLogger("gateway.http")

AIOHTTP_MAX_FIELD_SIZE = 8190
"""aiohttp's default bound on one header line; its parser answers a bare 400 beyond it."""
HEADER_HEADROOM = 1024
"""Room above ``max_token_bytes`` so the gateway, not the HTTP parser, refuses a long token."""


def create_app(
    node: NodeService,
    *,
    authenticator: Authenticator | None = None,
    clock: Clock | None = None,
) -> web.Application:
    """The HTTP application of one node. The app owns ``node`` and closes it on cleanup.

    Without an ``authenticator`` the node validates the federation IdP's access tokens with a
    :class:`gateway.sso.idp_keys.RemoteKeySet` on one shared ``ClientSession``, both created at
    start-up and closed at shutdown; the same keys verify consent grants.
    """
    limits = node.federation.limits
    app = web.Application(
        client_max_size=limits.max_body_bytes,
        handler_args={
            "max_field_size": max(AIOHTTP_MAX_FIELD_SIZE, limits.max_token_bytes + HEADER_HEADROOM),
            # Compressed request bodies are refused (415), never inflated: no decompression
            # bombs, and no decoding failures answered by aiohttp's parser outside problem+json.
            "auto_decompress": False,
        },
        middlewares=[
            request_id_middleware,
            problem_middleware(node.metrics),
            metrics_middleware(node.metrics),
            auth_middleware(max_token_bytes=limits.max_token_bytes),
        ],
    )
    app[NODE] = node
    app[OPENAPI] = build_openapi(node)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.cleanup_ctx.append(_lifecycle)
    if authenticator is not None:
        app[AUTHENTICATOR] = authenticator
    app.cleanup_ctx.append(_network(clock or node.clock))
    return app


def _network(clock: Clock) -> Callable[[web.Application], AsyncIterator[None]]:
    """The node's links to the federation, on ONE ClientSession, started and stopped here.

    - the IdP's keys (unless an authenticator was given): token and consent validation;
    - the trust list: fetched from ``national`` and refreshed before expiry (``national``
      authors it: it enrols the nodes' keys and republishes on change or before expiry);
    - remote status lists and routed fetches (:class:`gateway.federation.exchange.Exchange`);
    - at ``national``, the catalog of which node holds which holder's certificates.
    """

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        node = app[NODE]
        federation = node.federation
        timeout = aiohttp.ClientTimeout(total=federation.limits.request_timeout_seconds)
        tasks: list[asyncio.Task[None]] = []
        closers: list[Callable[[], Awaitable[None]]] = []
        async with aiohttp.ClientSession(timeout=timeout) as session:
            app[SESSION] = session
            if AUTHENTICATOR not in app:
                issuer = idp_issuer(federation)
                keys = RemoteKeySet(issuer, session, clock=clock, node=NodeId("idp"))
                app[AUTHENTICATOR] = NodeAuthenticator.for_federation(
                    federation, keys, clock=clock, issuer=issuer
                )
                node.use_idp_keys(keys)
                # first load in the background loop: a node may start before its IdP
                tasks.append(asyncio.create_task(keys.run_background_refresh()))
                closers.append(keys.aclose)
            state = federation.data_dir / node.node.id
            root = (
                RootKey.open_or_create(
                    federation.keys_dir,
                    clock=clock,
                    passphrase=federation.key_passphrase,
                    alg="ES256" if federation.seal_alg == "ES256" else "EdDSA",
                )
                if node.node.id == NATIONAL
                else None
            )
            trust = TrustSync(
                federation,
                session,
                clock=clock,
                cache_path=state / "trust-list.jws",
                keys_dir=federation.keys_dir,
                national_url=federation.url(NATIONAL),
            )
            app[TRUST] = trust
            trust.on_change = lambda seq, before: node.record(
                AuditKind.TRUST_LIST, "national", None, {"seq": seq, "previous": before}
            )
            if root is not None:
                authority = TrustAuthority.open(
                    federation, clock=clock, root=root, state_path=state / "authority.json"
                )
                app[AUTHORITY] = authority
                catalog = SqliteCatalog(state / "catalog.sqlite3")
                closers.append(_closing(catalog.close))
                app[CATALOG] = CatalogService(
                    catalog, clock=clock, types=node.schemas.certificate_types()
                )
                tasks.append(asyncio.create_task(_author(authority, trust, node, session, clock)))
            else:
                tasks.append(asyncio.create_task(trust.run()))
            statuses = RemoteStatuses(session, trust.resolver, clock=clock)
            journal = GroupCommit(node.audit)
            exchange = Exchange(
                node,
                session,
                trust=trust.resolver,
                statuses=statuses,
                journal=journal,
                clock=clock,
                budget=federation.limits.request_timeout_seconds,
            )
            app[EXCHANGE] = exchange
            app[LIFECYCLE] = KeyLifecycle(
                node, exchange, session, clock=clock, window=federation.key_propagation_seconds
            )
            if node.node.id != NATIONAL:
                tasks.append(asyncio.create_task(exchange.run_registrations()))
            closers.append(statuses.aclose)
            closers.append(journal.aclose)  # commits what the last requests left waiting
            partners = PartnerWatch(
                node.node.id,
                exchange.topology,
                session,
                trust=trust.resolver,
                clock=clock,
                metrics=node.metrics,
                federation=federation,
            )
            tasks.append(asyncio.create_task(partners.run()))
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                for close in closers:
                    await close()

    return lifecycle


def _closing(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        close()

    return run


AUTHOR_INTERVAL = 2.0
"""How often ``national`` collects the nodes' keys (cheap: one JWKS GET per node)."""


async def _author(
    authority: TrustAuthority,
    trust: TrustSync,
    node: NodeService,
    session: aiohttp.ClientSession,
    clock: Clock,
) -> None:
    """``national``: enrol key changes, republish when needed, trust its own list."""
    while True:
        try:
            await collect(
                authority,
                node.federation,
                session,
                own=node.jwks(),
                node_id=node.node.id,
            )
            if authority.needs_publish(clock.now()):
                trust.offer_local(authority.publish())
            elif authority.token is not None and trust.token != authority.token:
                trust.offer_local(authority.token)
        except GatewayError as exc:
            log.warning("trust list authoring failed", extra={"code": exc.code})
        except Exception:  # a bug must not silently stop the federation's trust list
            log.exception("trust list authoring crashed; retrying")
        await asyncio.sleep(AUTHOR_INTERVAL)


HEAD_INTERVAL = 5.0
"""How often a node signs a tree head of its audit log when it grew: partners watch them,
and a head older than a key's revocation is what proves a seal predates it. The log's WAL
is checkpointed at the same pace."""


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tongban-writer")
    app[EXECUTOR] = executor
    heads = asyncio.create_task(_sign_heads(app[NODE], executor))
    yield
    heads.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await heads
    executor.shutdown(wait=True)
    app[NODE].close()


async def _sign_heads(node: NodeService, executor: ThreadPoolExecutor) -> None:
    loop = asyncio.get_running_loop()
    signed = -1
    while True:
        try:
            size = node.audit.size()
            if size != signed:
                await loop.run_in_executor(executor, node.audit.tree_head)
                # and the WAL into the database, here rather than inside a request's commit
                await loop.run_in_executor(executor, node.audit.checkpoint)
                signed = size
        except GatewayError as exc:
            log.warning("could not sign an audit tree head", extra={"code": exc.code})
        await asyncio.sleep(HEAD_INTERVAL)
