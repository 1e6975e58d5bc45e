"""Shared fixtures: a federation in a temporary directory, a node service, an HTTP client."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from postgres import PostgresServer, postgres_server
from processes import free_ports

from gateway._internal.secret import Secret
from gateway._internal.wire import b64url_encode
from gateway.certificates.holders import holder_digest
from gateway.certificates.schemas import SchemaSet, default_schema_dir
from gateway.cli.commands import run_federation
from gateway.clock import FixedClock
from gateway.config import Federation, load_federation
from gateway.crypto.jwks import StaticKeyResolver
from gateway.crypto.keystore import KeyStore
from gateway.crypto.reports import VerificationReport
from gateway.http.app import create_app
from gateway.http.appkeys import LINKS, NODE
from gateway.ids import DepartmentId, NodeId
from gateway.server.node import open_node_service
from gateway.services.authority import TrustAuthority
from gateway.services.node import Fetched, NodeService
from gateway.sso.auth import Principal
from gateway.sso.consent import issue_consent
from gateway.sso.node_auth import NodeAuthenticator
from gateway.sso.tokens import issue_access_token
from gateway.trust.rootkey import RootKey

# 2026-11-24T08:00:00Z: fixed, so validity dates and signing times are reproducible.
NOW = 1_795_507_200.0
GROOM = {"name": "赵立新", "id": "330681199001010015", "id_type": "111"}
BRIDE = {"name": "王晓燕", "id": "341221199607082464", "id_type": "111"}


@pytest.fixture(scope="session")
def schemas() -> SchemaSet:
    return SchemaSet.load(default_schema_dir())


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def federation(tmp_path: Path) -> Federation:
    return load_federation(env={}).with_overrides(
        data_dir=tmp_path / "var", keys_dir=tmp_path / "keys"
    )


class Tokens:
    """Mints real RFC 9068 access tokens and consent grants with the test IdP's own keys."""

    def __init__(self, federation: Federation, clock: FixedClock) -> None:
        self.federation = federation
        self.clock = clock
        self.store = KeyStore.open(federation.keys_dir, NodeId("idp"), clock=clock)
        self.issuer = federation.idp_issuer()
        self.resolver = StaticKeyResolver(self.store.verification_keys())
        self._serial = 0

    def _jti(self) -> str:
        self._serial += 1
        return f"test-{self._serial}"

    def client(self, client_id: str = "zhuji-civil-affairs", scopes: Any = None) -> str:
        """An access token for a departmental client of the federation file."""
        entry = next(c for c in self.federation.clients if c.id == client_id)
        node, _ = self.federation.department(entry.department)
        return issue_access_token(
            self.store.signer(),
            issuer=self.issuer,
            audience=self.federation.audience,
            subject=client_id,
            client_id=client_id,
            scopes=tuple(entry.scopes if scopes is None else scopes),
            department=entry.department,
            region=node.region,
            now=self.clock.now(),
            jti=self._jti(),
        )

    def consent(
        self,
        holder_id: str = GROOM["id"],
        *,
        department: str = "zhuji-civil-affairs",
        matter: str = "marriage-registration",
        types: tuple[str, ...] = ("resident_id", "household_register"),
        until: float | None = None,
    ) -> str:
        """A holder's consent grant, as the IdP would issue it."""
        return issue_consent(
            self.store.signer(),
            issuer=self.issuer,
            holder_digest=holder_digest(self.store.holder_secret, "111", holder_id),
            department=DepartmentId(department),
            matter=matter,
            types=types,
            now=self.clock.now(),
            until=until if until is not None else self.clock.now() + 3600,
            jti=self._jti(),
        )

    def authenticator(self) -> NodeAuthenticator:
        return NodeAuthenticator.for_federation(
            self.federation, self.resolver, clock=self.clock, issuer=self.issuer
        )


@pytest.fixture
def tokens(federation: Federation, clock: FixedClock) -> Tokens:
    return Tokens(federation, clock)


@pytest.fixture
def service(
    federation: Federation, clock: FixedClock, schemas: SchemaSet, tokens: Tokens
) -> Iterator[NodeService]:
    node = open_node_service(
        federation,
        "zhuji",
        clock=clock,
        schemas=schemas,
        public_url="http://zhuji.test",
        idp_keys=tokens.resolver,
    )
    yield node
    node.close()


@pytest.fixture
async def client(
    federation: Federation, clock: FixedClock, schemas: SchemaSet, tokens: Tokens
) -> AsyncIterator[TestClient[Any, Any]]:
    node = open_node_service(
        federation,
        "zhuji",
        clock=clock,
        schemas=schemas,
        public_url="http://zhuji.test",
        idp_keys=tokens.resolver,
    )
    app = create_app(node, authenticator=tokens.authenticator())
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def marriage_request(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "type": "marriage",
        "holder": dict(GROOM),
        "valid_from": "2026-11-24",
        "valid_until": None,
        "data": {
            "registration_date": "2026-11-24",
            "spouse": dict(BRIDE),
            "registration_office": "诸暨市民政局婚姻登记处",
        },
    }
    request.update(changes)
    return request


def household_request(holder: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "type": "household_register",
        "holder": dict(holder or GROOM),
        "valid_from": "2008-05-12",
        "valid_until": None,
        "data": {
            "household_number": "330681081",
            "household_type": "家庭户",
            "relation_to_head": "户主",
            "address": "浙江省诸暨市暨阳街道人民路1号",
            "registration_office": "诸暨市公安局暨阳派出所",
        },
    }


APPLICANT = {"id_type": "111", "id": "31010419950312123X", "name": "陈思远"}
FORM = b'{"form": "maternity-benefit", "births": 1}'
BIRTH = b"%PDF-1.7 birth medical certificate"
INVOICES = b"%PDF-1.7 invoices"


def maternity_application(**changes: Any) -> dict[str, Any]:
    """An application for 生育保险待遇 (maternity benefit) received at Zhuji's window for
    Shanghai, every material attached; ``changes`` replace top-level members."""
    body: dict[str, Any] = {
        "matter": "maternity-benefit",
        "owner": {"node": "shanghai"},
        "channel": "window",
        "applicant": dict(APPLICANT),
        "identity_checked_by": "zj-window-0421",
        "delivery": "online",
        "materials": {
            "application-form": {"content": b64url_encode(FORM), "media_type": "application/json"},
            "birth-medical-certificate": {
                "content": b64url_encode(BIRTH),
                "media_type": "application/pdf",
                "checked_original": True,
            },
            "medical-invoices": {
                "content": b64url_encode(INVOICES),
                "media_type": "application/pdf",
            },
            "resident-id": {
                "content": b64url_encode(b"ID card, both sides"),
                "media_type": "image/png",
                "checked_original": True,
            },
        },
    }
    body.update(changes)
    return body


HANG_GUARD = 60.0
"""Seconds before a broken test fails instead of hanging; never a timing assertion."""


@pytest.fixture
def moved(federation: Federation) -> Federation:
    """The default federation in a temporary directory, every node on a free port."""
    ports = free_ports(len(federation.nodes))  # all bound at once: none handed out twice
    return federation.with_ports(dict(zip((n.id for n in federation.nodes), ports, strict=True)))


class Up:
    """``tongban up`` in this process (:func:`~gateway.cli.commands.run_federation`) as a task,
    with its ``stop`` event and what ``ready`` reported."""

    def __init__(self, federation: Federation, clock: FixedClock) -> None:
        self.stop = asyncio.Event()
        self.urls: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(
            run_federation(federation, clock=clock, stop=self.stop, ready=self.urls.set_result)
        )

    async def ready(self) -> dict[str, str]:
        either: set[asyncio.Future[Any]] = {self.task, self.urls}
        done, _ = await asyncio.wait(
            either, timeout=HANG_GUARD, return_when=asyncio.FIRST_COMPLETED
        )
        assert done, "the federation neither came up nor failed"
        if self.task in done:
            self.task.result()  # raises what stopped it
            pytest.fail("run_federation returned before it was ready")
        return self.urls.result()

    async def stopped(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, HANG_GUARD)


def outbox_entries(registry_file: Path) -> list[str]:
    """The catalog entries a node's registry still owes national (certificate ids)."""
    conn = sqlite3.connect(f"{registry_file.as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT record FROM outbox WHERE topic = 'catalog'").fetchall()
    finally:
        conn.close()
    return [str(orjson.loads(record)["certificate_id"]) for (record,) in rows]


def catalogued(catalog_file: Path, cert_id: str, column: str = "node") -> str | None:
    """What national's catalog says of ``cert_id``: the node that holds it, or another
    ``column`` (``status``)."""
    conn = sqlite3.connect(f"{catalog_file.as_uri()}?mode=ro", uri=True)
    try:
        row = conn.execute(
            f"SELECT {column} FROM entries WHERE certificate_id = ?",
            (cert_id,),
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


def fetch_now(
    service: NodeService,
    principal: Principal,
    cert_id: str,
    matter: str,
    *,
    consent: str | None = None,
) -> Fetched:
    """A local fetch as a serving node makes it, without HTTP: the service's release, its
    audit records committed before the answer (the node commits them in groups)."""
    fetched, records = service.release(principal, cert_id, matter, consent=consent)
    service.audit.append_many(records)
    return fetched


def verify_now(
    service: NodeService, principal: Principal, request: Any
) -> list[VerificationReport]:
    """``POST /v1/seals/verify`` at a node without a trust list (its own keys and registry),
    without HTTP: the request checked, each seal reported, the tally audited."""
    reports = service.verifier.reports(service.verify_request(principal, request))
    service.audit.append_many([service.verification_record(reports)])
    return reports


async def trust_itself(client: TestClient[Any, Any]) -> str:
    """Make the node behind ``client`` hold a trust list that lists its own key, as national
    would publish it (the federation's root key created in its keys directory); the token."""
    app = client.app
    assert app is not None
    service = app[NODE]
    root = RootKey.open_or_create(service.federation.keys_dir, clock=service.clock)
    authority = TrustAuthority.open(
        service.federation,
        clock=service.clock,
        root=root,
        state_path=service.federation.data_dir / "authority.json",
    )
    authority.observe(service.node.id, service.jwks())
    token = authority.publish()
    await app[LINKS].trust.offer_local(token)
    return token


# --- PostgreSQL: one real server per session, a fresh database per test ---------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> Iterator[Secret]:
    """The DSN of a new, empty PostgreSQL database for this test."""
    with pg_server.database() as dsn:
        yield dsn
