"""Single sign-on at a node: :class:`NodeAuthenticator`, and the node's consent check (用证授权).

Tokens and grants are real: minted by the test IdP's own key store (``tokens`` in
``tests/conftest.py``), validated against its keys, at the fixed time 2026-11-24T08:00Z.
The HTTP side (every refusal as problem+json, the attack classes, a real IdP and a key
rotation) is in ``tests/unit/http/test_sso_http.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import BRIDE, GROOM, NOW, Tokens, fetch_now, household_request

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.certificates.matters import ALL_LEVELS, MATTERS, Matter, MatterSet
from gateway.certificates.schemas import SchemaSet
from gateway.clock import FixedClock
from gateway.config import Department, Federation
from gateway.crypto.jwks import VerificationKey
from gateway.crypto.reports import VerificationReport
from gateway.errors import Forbidden, TokenError
from gateway.identifiers import make_credit_code
from gateway.ids import CertificateId, DepartmentId, KeyId, NodeId, RegionCode
from gateway.server.node import open_node_service
from gateway.services.node import NodeService
from gateway.sso.auth import Principal, Scope
from gateway.sso.node_auth import NodeAuthenticator
from gateway.sso.tokens import (
    CLOCK_SKEW,
    DEFAULT_LIFETIME,
    CachedTokenValidator,
    TokenCache,
    TokenValidator,
    issue_access_token,
)
from gateway.storage.registry import StoredCertificate

ALL_SCOPES = frozenset(scope.value for scope in Scope)
MARRIAGE = "marriage-registration"


def caller(dept: str | None, scopes: frozenset[str] = ALL_SCOPES) -> Principal:
    """A departmental caller of zhuji, as :class:`NodeAuthenticator` produces it."""
    return Principal(
        subject=dept or "nobody",
        client_id=dept or "nobody",
        scopes=scopes,
        department=DepartmentId(dept) if dept else None,
        node=NodeId("zhuji"),
    )


def holder_token(tokens: Tokens, holder_id: str = GROOM["id"]) -> str:
    """A citizen's access token, as the IdP's holder login issues it."""
    return issue_access_token(
        tokens.store.signer(),
        issuer=tokens.issuer,
        audience=tokens.federation.audience,
        subject=f"hd-{holder_id[-4:]}",
        client_id="citizen-portal",
        scopes=(),
        department=None,
        region=None,
        now=tokens.clock.now(),
        jti="holder-1",
        holder=True,
    )


async def authenticate(tokens: Tokens, token: str) -> Principal:
    return await tokens.authenticator().authenticate(token)


async def refused(authenticator: NodeAuthenticator, token: str, code: str) -> TokenError:
    with pytest.raises(TokenError) as caught:
        await authenticator.authenticate(token)
    assert caught.value.code == code
    assert caught.value.status == 401
    return caught.value


# --- NodeAuthenticator -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_id", "node"),
    [
        ("zhuji-civil-affairs", "zhuji"),
        ("zhuji-public-security", "zhuji"),
        ("shanghai-public-security", "shanghai"),
        ("linquan-public-security", "linquan"),
        ("anhui-human-resources", "anhui"),
    ],
)
async def test_a_client_token_is_its_department_at_its_node(
    tokens: Tokens, client_id: str, node: str
) -> None:
    principal = await authenticate(tokens, tokens.client(client_id))
    assert principal == Principal(
        subject=client_id,
        client_id=client_id,
        scopes=frozenset({"cert:read", "cert:issue", "cert:status", "seal:verify"}),
        department=DepartmentId(client_id),
        node=NodeId(node),
        holder=False,
    )


async def test_the_scopes_are_the_tokens_own(tokens: Tokens) -> None:
    token = tokens.client("zhuji-civil-affairs", scopes=["seal:verify"])
    principal = await authenticate(tokens, token)
    assert principal.scopes == frozenset({"seal:verify"})
    with pytest.raises(Forbidden) as caught:
        principal.require(Scope.CERT_ISSUE)
    assert caught.value.code == "auth.scope"


async def test_a_holder_token_is_a_holder_without_department_or_node(tokens: Tokens) -> None:
    principal = await authenticate(tokens, holder_token(tokens))
    assert (principal.holder, principal.department, principal.node) == (True, None, None)
    assert principal.scopes == frozenset()
    assert principal.client_id == "citizen-portal"


async def test_a_department_the_federation_does_not_know_has_no_node(
    tokens: Tokens, service: NodeService
) -> None:
    token = issue_access_token(
        tokens.store.signer(),
        issuer=tokens.issuer,
        audience=tokens.federation.audience,
        subject="rogue",
        client_id="rogue",
        scopes=("cert:issue",),
        department=DepartmentId("rogue-department"),
        region=RegionCode("330681"),
        now=NOW,
        jti="rogue-1",
    )
    principal = await authenticate(tokens, token)
    assert (principal.department, principal.node) == ("rogue-department", None)
    # ...and it issues nothing anywhere
    with pytest.raises(Forbidden) as caught:
        service.issuing_department(principal, "marriage")
    assert caught.value.code == "cert.foreign_department"


async def test_the_authenticator_uses_its_clock(tokens: Tokens, clock: FixedClock) -> None:
    authenticator = tokens.authenticator()
    token = tokens.client()
    assert (await authenticator.authenticate(token)).subject == "zhuji-civil-affairs"
    clock.advance(DEFAULT_LIFETIME + CLOCK_SKEW)
    assert (await authenticator.authenticate(token)).subject == "zhuji-civil-affairs"
    clock.advance(1)
    await refused(authenticator, token, "token.expired")


async def test_the_issuer_is_pinned_to_the_federations_idp(
    tokens: Tokens, federation: Federation, clock: FixedClock
) -> None:
    elsewhere = NodeAuthenticator.for_federation(
        federation, tokens.resolver, clock=clock, issuer="http://127.0.0.1:1"
    )
    await refused(elsewhere, tokens.client(), "token.wrong_issuer")
    assert (await tokens.authenticator().authenticate(tokens.client())).node == "zhuji"


async def test_the_audience_is_the_federations(tokens: Tokens, clock: FixedClock) -> None:
    other = tokens.federation.with_overrides(audience="another-federation")
    authenticator = NodeAuthenticator.for_federation(
        other, tokens.resolver, clock=clock, issuer=tokens.issuer
    )
    await refused(authenticator, tokens.client(), "token.wrong_audience")


async def test_the_token_size_is_the_federations_limit(tokens: Tokens, clock: FixedClock) -> None:
    token = tokens.client()
    small = tokens.federation.with_overrides(
        limits=replace(tokens.federation.limits, max_token_bytes=len(token) - 1)
    )
    authenticator = NodeAuthenticator.for_federation(
        small, tokens.resolver, clock=clock, issuer=tokens.issuer
    )
    await refused(authenticator, token, "token.too_large")


class CountingResolver:
    def __init__(self, tokens: Tokens) -> None:
        self.inner = tokens.resolver
        self.calls = 0

    def key_for(self, kid: KeyId) -> VerificationKey:
        self.calls += 1
        return self.inner.key_for(kid)


def counting_authenticator(tokens: Tokens) -> tuple[NodeAuthenticator, CountingResolver]:
    keys = CountingResolver(tokens)
    validator = TokenValidator(keys, issuer=tokens.issuer, audience=tokens.federation.audience)
    departments = {d.id: n.id for n in tokens.federation.nodes for d in n.departments}
    authenticator = NodeAuthenticator(
        CachedTokenValidator(validator, TokenCache(16)),
        keys,
        clock=tokens.clock,
        departments=departments,
    )
    return authenticator, keys


async def test_a_verified_token_is_served_from_the_cache(tokens: Tokens) -> None:
    authenticator, keys = counting_authenticator(tokens)
    token = tokens.client()
    first = await authenticator.authenticate(token)
    for _ in range(5):
        assert await authenticator.authenticate(token) == first
    assert keys.calls == 1


async def test_a_refused_token_is_never_cached(tokens: Tokens) -> None:
    authenticator, keys = counting_authenticator(tokens)
    header, _, signature = tokens.client().split(".")
    forged = f"{header}.{b64url_encode(b'{}')}.{signature}"
    for _ in range(3):
        await refused(authenticator, forged, "token.bad_signature")
    assert keys.calls == 3


# --- consent at the node (NodeService.release / check_consent) ----------------------------


def issue_household(service: NodeService, holder: dict[str, str] | None = None) -> str:
    issued = service.issue(caller("zhuji-public-security"), household_request(holder))
    return str(issued.certificate.id)


def test_a_personal_certificate_needs_the_holders_grant(service: NodeService) -> None:
    cert_id = issue_household(service)
    with pytest.raises(Forbidden) as caught:
        fetch_now(service, caller("zhuji-civil-affairs"), cert_id, MARRIAGE)
    assert caught.value.code == "consent.required"
    assert caught.value.status == 403


def test_the_holders_grant_releases_it(service: NodeService, tokens: Tokens) -> None:
    cert_id = issue_household(service)
    consent = tokens.consent(GROOM["id"], types=("household_register",))
    fetched = fetch_now(service, caller("zhuji-civil-affairs"), cert_id, MARRIAGE, consent=consent)
    assert fetched.certificate.id == cert_id
    assert fetched.report.to_json()["indication"] == "PASSED"


@pytest.mark.parametrize(
    ("dept", "grant", "code"),
    [
        ("zhuji-civil-affairs", {"holder_id": BRIDE["id"]}, "consent.wrong_holder"),
        ("zhuji-public-security", {}, "consent.wrong_department"),
        ("zhuji-civil-affairs", {"matter": "household-transfer"}, "consent.wrong_matter"),
        ("zhuji-civil-affairs", {"types": ("resident_id",)}, "consent.type_not_granted"),
    ],
)
def test_a_grant_for_something_else_is_refused(
    service: NodeService, tokens: Tokens, dept: str, grant: dict[str, Any], code: str
) -> None:
    cert_id = issue_household(service)
    consent = tokens.consent(
        grant.get("holder_id", GROOM["id"]),
        matter=grant.get("matter", MARRIAGE),
        types=grant.get("types", ("household_register",)),
    )
    with pytest.raises(Forbidden) as caught:
        fetch_now(service, caller(dept), cert_id, MARRIAGE, consent=consent)
    assert caught.value.code == code


def test_purpose_limitation_comes_before_consent(service: NodeService, tokens: Tokens) -> None:
    cert_id = issue_household(service)
    consent = tokens.consent(GROOM["id"], types=("household_register",))
    with pytest.raises(Forbidden) as caught:
        fetch_now(
            service,
            caller("zhuji-civil-affairs"),
            cert_id,
            "business-registration",
            consent=consent,
        )
    assert caught.value.code == "matter.type_not_allowed"


def test_a_node_without_the_idps_keys_releases_nothing(
    federation: Federation,
    clock: FixedClock,
    schemas: SchemaSet,
    tokens: Tokens,
    tmp_path: Path,
) -> None:
    node = open_node_service(
        federation.with_overrides(data_dir=tmp_path / "bare"),
        "zhuji",
        clock=clock,
        schemas=schemas,
        public_url="http://zhuji.test",
    )
    try:
        cert_id = issue_household(node)
        consent = tokens.consent(GROOM["id"], types=("household_register",))
        with pytest.raises(Forbidden) as caught:
            fetch_now(node, caller("zhuji-civil-affairs"), cert_id, MARRIAGE, consent=consent)
        assert caught.value.code == "consent.invalid"
        # once it has them (as create_app gives it the IdP's key set) the grant is honoured
        node.use_idp_keys(tokens.resolver)
        fetched = fetch_now(node, caller("zhuji-civil-affairs"), cert_id, MARRIAGE, consent=consent)
        assert fetched.certificate.id == cert_id
    finally:
        node.close()


def test_a_caller_without_a_department_cannot_present_a_grant(
    service: NodeService, tokens: Tokens
) -> None:
    cert_id = issue_household(service)
    consent = tokens.consent(GROOM["id"], types=("household_register",))
    with pytest.raises(Forbidden) as caught:
        fetch_now(service, caller(None), cert_id, MARRIAGE, consent=consent)
    assert caught.value.code == "consent.invalid"


def test_a_tampered_grant_is_invalid(service: NodeService, tokens: Tokens) -> None:
    cert_id = issue_household(service)
    header, payload, signature = tokens.consent(GROOM["id"], types=("resident_id",)).split(".")
    claims = orjson.loads(b64url_decode(payload))
    claims["types"] = ["resident_id", "household_register"]
    forged = f"{header}.{b64url_encode(orjson.dumps(claims))}.{signature}"
    with pytest.raises(Forbidden) as caught:
        fetch_now(service, caller("zhuji-civil-affairs"), cert_id, MARRIAGE, consent=forged)
    assert caught.value.code == "consent.invalid"


def test_an_expired_grant_is_refused(
    service: NodeService, tokens: Tokens, clock: FixedClock
) -> None:
    cert_id = issue_household(service)
    consent = tokens.consent(GROOM["id"], types=("household_register",), until=NOW + 600)
    clock.advance(600 + CLOCK_SKEW)
    assert fetch_now(service, caller("zhuji-civil-affairs"), cert_id, MARRIAGE, consent=consent)
    clock.advance(1)
    with pytest.raises(Forbidden) as caught:
        fetch_now(service, caller("zhuji-civil-affairs"), cert_id, MARRIAGE, consent=consent)
    assert caught.value.code == "consent.expired"


# --- what needs no consent -------------------------------------------------------------------

CONSENT_FREE = Matter(
    "household-register-check",
    "户籍信息核验",
    "公安局",
    ("household_register",),
    False,
    ALL_LEVELS,
    "a matter marked as not needing the holder's consent",
)


def test_a_consent_free_matter_releases_a_personal_certificate(service: NodeService) -> None:
    cert_id = issue_household(service)
    service.matters = MatterSet((*MATTERS, CONSENT_FREE))
    fetched = fetch_now(service, caller("zhuji-civil-affairs"), cert_id, CONSENT_FREE.id)
    assert fetched.certificate.id == cert_id
    # the same certificate for a matter that needs consent still needs it
    with pytest.raises(Forbidden) as caught:
        fetch_now(service, caller("zhuji-civil-affairs"), cert_id, MARRIAGE)
    assert caught.value.code == "consent.required"


def test_check_consent_passes_a_consent_free_matter_without_a_grant(
    service: NodeService,
) -> None:
    cert_id = issue_household(service)
    stored: StoredCertificate = service.registry.get(CertificateId(cert_id))
    assert service.check_consent(caller("zhuji-civil-affairs"), stored, CONSENT_FREE, None) is None
    with pytest.raises(Forbidden) as caught:
        service.check_consent(
            caller("zhuji-civil-affairs"),
            stored,
            replace(CONSENT_FREE, consent_required=True),
            None,
        )
    assert caught.value.code == "consent.required"


MARKET_REGULATION = Department(
    id=DepartmentId("zhuji-market-regulation"),
    name="诸暨市市场监督管理局",
    credit_code=make_credit_code("1", "1", "330681", "00252177"),
    issues=("business_licence",),
)


def business_licence_request() -> dict[str, Any]:
    return {
        "type": "business_licence",
        "holder": {
            "name": "诸暨市暨阳纺织有限公司",
            "id": make_credit_code("9", "1", "330681", "MA2D0K5Q"),
            "id_type": "001",
        },
        "valid_from": "2020-03-01",
        "valid_until": None,
        "data": {
            "entity_type": "有限责任公司（自然人投资或控股）",
            "legal_representative": "赵立新",
            "registered_capital": "100万元人民币",
            "established": "2020-03-01",
            "business_scope": "纺织品、服装的生产与销售",
            "address": "浙江省诸暨市暨阳街道人民路1号",
        },
    }


@pytest.fixture
def with_market_regulation(
    federation: Federation,
    clock: FixedClock,
    schemas: SchemaSet,
    tokens: Tokens,
    tmp_path: Path,
) -> Iterator[NodeService]:
    """A zhuji node that also has a market-regulation bureau (so it issues business licences)."""
    nodes = tuple(
        replace(node, departments=(*node.departments, MARKET_REGULATION))
        if node.id == "zhuji"
        else node
        for node in federation.nodes
    )
    node = open_node_service(
        federation.with_overrides(nodes=nodes, data_dir=tmp_path / "market"),
        "zhuji",
        clock=clock,
        schemas=schemas,
        public_url="http://zhuji.test",
        idp_keys=tokens.resolver,
    )
    yield node
    node.close()


def test_an_organisations_certificate_needs_no_consent(with_market_regulation: NodeService) -> None:
    node = with_market_regulation
    issued = node.issue(caller("zhuji-market-regulation"), business_licence_request())
    # business registration is consent-free, and a licence is not personal data anyway
    fetched = fetch_now(
        node, caller("zhuji-civil-affairs"), issued.certificate.id, "business-registration"
    )
    report: VerificationReport = fetched.report
    assert (report.to_json()["indication"], fetched.certificate.id) == (
        "PASSED",
        issued.certificate.id,
    )
    # even for a matter that does need consent, an organisation's licence is released
    strict = Matter(
        "licence-check", "营业执照核验", "市场监管局", ("business_licence",), True, ALL_LEVELS, ""
    )
    stored = node.registry.get(issued.certificate.id)
    assert node.check_consent(caller("zhuji-civil-affairs"), stored, strict, None) is None
