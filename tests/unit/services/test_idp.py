"""The identity provider service: keys, discovery, both grants, consent, rotation.

Everything runs against the default federation's demo clients and citizens at the fixed time
2026-11-24T08:00Z, with the IdP's key store in a temporary directory. Tokens are checked the
way a node checks them: :class:`TokenValidator` over the IdP's published JWKS.
"""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from typing import Any

import orjson
import pytest
from conftest import NOW

from gateway._internal.wire import b64url_decode
from gateway.certificates.holders import holder_digest
from gateway.clock import FixedClock
from gateway.config import Federation
from gateway.crypto.jwks import StaticKeyResolver
from gateway.errors import AuthError, ConfigError, Forbidden, InputError, NotFoundError
from gateway.ids import DepartmentId, NodeId
from gateway.scopes import Scope
from gateway.services.idp import (
    CLIENT_CREDENTIALS,
    HOLDER_CLIENT_ID,
    HOLDER_GRANT,
    MAX_CONSENT_SECONDS,
    MAX_CREDENTIAL_CHARS,
    MAX_FORM_FIELDS,
    RETIRED_KEY_PUBLISHED_SECONDS,
    IdpService,
    parse_basic,
    parse_consent_request,
    parse_form,
    parse_time,
)
from gateway.sso.consent import CONSENT_TYP, ConsentVerifier
from gateway.sso.tokens import ACCESS_TOKEN_TYP, AccessClaims, TokenValidator

ISSUER = "http://idp.test"
HOLDER_SECRET = bytes(range(32))
CLIENT = "zhuji-civil-affairs"
CLIENT_SECRET = "zhuji-civil-affairs-demo-secret"
CITIZEN = "31010419950312123X"
CITIZEN_PASSWORD = "demo-123X"
UNKNOWN_CITIZEN = "110101199003074477"  # a valid GB 11643 number, not in the federation
MATTER = "marriage-registration"
TYPES = ("resident_id", "household_register")
DEPARTMENT_SCOPES = ("cert:read", "cert:issue", "cert:status", "seal:verify")


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def idp(federation: Federation, clock: FixedClock) -> IdpService:
    return IdpService.open(federation, clock=clock, public_url=ISSUER, holder_secret=HOLDER_SECRET)


def validator(idp: IdpService) -> TokenValidator:
    """A node's view: only the published JWKS, the pinned issuer and audience."""
    keys = StaticKeyResolver.from_jwks(idp.jwks(), node=NodeId("idp"))
    return TokenValidator(keys, issuer=ISSUER, audience="tongban")


def header_of(token: str) -> dict[str, Any]:
    header: dict[str, Any] = orjson.loads(b64url_decode(token.split(".", maxsplit=1)[0]))
    return header


def states(idp: IdpService) -> dict[str, str]:
    return {key["kid"]: key["status"] for key in idp.jwks()["keys"]}


def holder_claims(idp: IdpService, holder_id: str = CITIZEN) -> AccessClaims:
    password = {CITIZEN: CITIZEN_PASSWORD, "341221199607082464": "demo-2464"}[holder_id]
    issued = idp.holder_login(holder_id, password)
    return idp.validate_access_token(issued.access_token)


def grant(idp: IdpService, claims: AccessClaims, **changes: Any) -> str:
    args: dict[str, Any] = {
        "department": CLIENT,
        "matter": MATTER,
        "types": TYPES,
        "until": NOW + 86_400,
    }
    args.update(changes)
    return idp.grant_consent(claims, **args)


def raises(kind: type[Exception], code: str) -> Any:
    """``pytest.raises`` for exactly ``kind`` (not a subclass) with ``code``."""

    class _Check:
        def __enter__(self) -> None:
            self._ctx = pytest.raises(kind)
            self._info = self._ctx.__enter__()

        def __exit__(self, *exc: Any) -> bool:
            handled = self._ctx.__exit__(*exc)
            assert type(self._info.value) is kind, repr(self._info.value)
            assert getattr(self._info.value, "code", None) == code, repr(self._info.value)
            return bool(handled)

    return _Check()


# --- keys ------------------------------------------------------------------------------------


def test_open_publishes_one_active_and_one_next_key(idp: IdpService) -> None:
    assert sorted(states(idp).values()) == ["active", "next"]
    assert idp.keys.directory.name == "idp"
    assert idp.next_key().kid in states(idp)


def test_reopening_keeps_the_same_keys(
    idp: IdpService, federation: Federation, clock: FixedClock
) -> None:
    again = IdpService.open(federation, clock=clock, public_url=ISSUER, holder_secret=HOLDER_SECRET)
    assert states(again) == states(idp)


def test_keys_follow_the_federation_algorithm(federation: Federation, clock: FixedClock) -> None:
    idp = IdpService.open(
        federation.with_overrides(seal_alg="ES256"),
        clock=clock,
        public_url=ISSUER,
        holder_secret=HOLDER_SECRET,
    )
    assert {key["alg"] for key in idp.jwks()["keys"]} == {"ES256"}
    assert idp.discovery()["id_token_signing_alg_values_supported"] == ["ES256"]
    token = idp.client_credentials(CLIENT, CLIENT_SECRET, None).access_token
    assert header_of(token)["alg"] == "ES256"
    assert validator(idp).validate(token, now=NOW).client_id == CLIENT


def test_the_jwks_holds_public_keys_only(idp: IdpService) -> None:
    for key in idp.jwks()["keys"]:
        assert "d" not in key
        assert key["use"] == "sig"
        assert key["node"] == "idp"


def test_the_issuer_defaults_to_the_federation_url(
    federation: Federation, clock: FixedClock
) -> None:
    idp = IdpService.open(federation, clock=clock, holder_secret=HOLDER_SECRET)
    assert idp.issuer == "http://127.0.0.1:8400" == federation.idp_issuer()


def test_a_regional_node_is_not_an_idp(federation: Federation, clock: FixedClock) -> None:
    nodes = tuple(n for n in federation.nodes if n.id != "idp")
    with raises(ConfigError, "config.invalid"):
        IdpService.open(
            federation.with_overrides(nodes=nodes), clock=clock, holder_secret=HOLDER_SECRET
        )


def test_the_idp_node_must_be_of_kind_idp(federation: Federation, clock: FixedClock) -> None:
    nodes = tuple(replace(n, kind="region") if n.id == "idp" else n for n in federation.nodes)
    with raises(ConfigError, "config.invalid"):
        IdpService.open(
            federation.with_overrides(nodes=nodes), clock=clock, holder_secret=HOLDER_SECRET
        )


def test_a_short_holder_secret_is_refused(federation: Federation, clock: FixedClock) -> None:
    with raises(ConfigError, "config.holder_secret"):
        IdpService.open(federation, clock=clock, holder_secret=b"short")


# --- discovery -------------------------------------------------------------------------------


def test_discovery(idp: IdpService) -> None:
    meta = idp.discovery()
    assert meta["issuer"] == ISSUER
    assert meta["jwks_uri"] == f"{ISSUER}/jwks"
    assert meta["token_endpoint"] == f"{ISSUER}/token"
    assert meta["consent_endpoint"] == f"{ISSUER}/consents"
    assert meta["grant_types_supported"] == ["client_credentials", HOLDER_GRANT]
    assert HOLDER_GRANT == "urn:tongban:params:oauth:grant-type:holder-login"
    assert meta["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert meta["id_token_signing_alg_values_supported"] == ["EdDSA"]
    assert meta["access_token_signing_alg_values_supported"] == ["EdDSA"]
    assert meta["scopes_supported"] == [s.value for s in Scope]


# --- client_credentials ----------------------------------------------------------------------


def test_client_credentials(idp: IdpService) -> None:
    issued = idp.client_credentials(CLIENT, CLIENT_SECRET, None)
    assert issued.to_json() == {
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": " ".join(DEPARTMENT_SCOPES),
    }
    assert header_of(issued.access_token)["typ"] == ACCESS_TOKEN_TYP
    assert header_of(issued.access_token)["kid"] == idp.keys.active().kid
    claims = validator(idp).validate(issued.access_token, now=NOW)
    assert claims.iss == ISSUER
    assert claims.sub == claims.client_id == CLIENT
    assert claims.aud == ("tongban",)
    assert claims.department == "zhuji-civil-affairs"
    assert claims.region == "330681"
    assert claims.scope == DEPARTMENT_SCOPES
    assert (claims.iat, claims.exp) == (NOW, NOW + 300)
    assert claims.holder is False


def test_each_token_has_its_own_jti(idp: IdpService) -> None:
    first = idp.client_credentials(CLIENT, CLIENT_SECRET, None).access_token
    second = idp.client_credentials(CLIENT, CLIENT_SECRET, None).access_token
    check = validator(idp)
    assert check.validate(first, now=NOW).jti != check.validate(second, now=NOW).jti


def test_a_client_may_ask_for_fewer_scopes(idp: IdpService) -> None:
    issued = idp.client_credentials(CLIENT, CLIENT_SECRET, "seal:verify cert:read")
    assert issued.scope == "cert:read seal:verify"
    assert validator(idp).validate(issued.access_token, now=NOW).scope == (
        "cert:read",
        "seal:verify",
    )


def test_region_is_the_department_node(idp: IdpService) -> None:
    token = idp.client_credentials(
        "linquan-public-security", "linquan-public-security-demo-secret", None
    ).access_token
    claims = validator(idp).validate(token, now=NOW)
    assert (claims.department, claims.region) == ("linquan-public-security", "341221")


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [
        (CLIENT, "wrong-secret"),
        (CLIENT, "zhuji-public-security-demo-secret"),  # another client's secret
        ("no-such-client", CLIENT_SECRET),
        (CLIENT, "x" * (MAX_CREDENTIAL_CHARS + 1)),
        ("x" * (MAX_CREDENTIAL_CHARS + 1), CLIENT_SECRET),
    ],
)
def test_bad_client_credentials(idp: IdpService, client_id: str, secret: str) -> None:
    with raises(AuthError, "oauth.invalid_client"):
        idp.client_credentials(client_id, secret, None)


@pytest.mark.parametrize("scope", ["keys:admin", "cert:read audit:read", "root", "cert:read  "])
def test_scope_escalation(idp: IdpService, scope: str) -> None:
    with raises(Forbidden, "oauth.invalid_scope"):
        idp.client_credentials(CLIENT, CLIENT_SECRET, scope)


# --- holder login ----------------------------------------------------------------------------


def test_holder_login(idp: IdpService) -> None:
    issued = idp.holder_login(CITIZEN, CITIZEN_PASSWORD)
    assert (issued.token_type, issued.expires_in, issued.scope) == ("Bearer", 300, "")
    claims = validator(idp).validate(issued.access_token, now=NOW)
    assert re.fullmatch(r"[0-9a-f]{64}", claims.sub)
    assert claims.sub == holder_digest(HOLDER_SECRET, "111", CITIZEN)
    assert CITIZEN not in issued.access_token
    assert (
        CITIZEN not in base64.urlsafe_b64decode(issued.access_token.split(".")[1] + "==").decode()
    )
    assert claims.holder is True
    assert claims.client_id == HOLDER_CLIENT_ID == "citizen-portal"
    assert claims.scope == ()
    assert (claims.department, claims.region) == (None, None)


@pytest.mark.parametrize(
    ("holder_id", "password"),
    [
        (CITIZEN, "wrong-password"),
        (CITIZEN, "demo-2464"),  # another citizen's password
        (CITIZEN, "x" * (MAX_CREDENTIAL_CHARS + 1)),
        (UNKNOWN_CITIZEN, "demo-123X"),
        ("31010419950312123x", CITIZEN_PASSWORD),  # lower-case check character
        ("310104199503121230", CITIZEN_PASSWORD),  # wrong check character
        ("3101041995031212", CITIZEN_PASSWORD),  # too short
        ("", CITIZEN_PASSWORD),
    ],
)
def test_bad_holder_login(idp: IdpService, holder_id: str, password: str) -> None:
    with raises(AuthError, "oauth.invalid_grant"):
        idp.holder_login(holder_id, password)


# --- the token endpoint's dispatch -----------------------------------------------------------


def test_token_client_secret_post(idp: IdpService) -> None:
    issued = idp.token(
        {"grant_type": CLIENT_CREDENTIALS, "client_id": CLIENT, "client_secret": CLIENT_SECRET}
    )
    assert validator(idp).validate(issued.access_token, now=NOW).client_id == CLIENT


def test_token_client_secret_basic(idp: IdpService) -> None:
    issued = idp.token(
        {"grant_type": CLIENT_CREDENTIALS, "scope": "cert:read"}, basic=(CLIENT, CLIENT_SECRET)
    )
    assert issued.scope == "cert:read"


def test_token_basic_with_a_matching_client_id(idp: IdpService) -> None:
    issued = idp.token(
        {"grant_type": CLIENT_CREDENTIALS, "client_id": CLIENT}, basic=(CLIENT, CLIENT_SECRET)
    )
    assert issued.expires_in == 300


def test_token_holder_grant(idp: IdpService) -> None:
    issued = idp.token(
        {"grant_type": HOLDER_GRANT, "username": CITIZEN, "password": CITIZEN_PASSWORD}
    )
    assert idp.validate_access_token(issued.access_token).holder is True


def test_token_ignores_unknown_parameters(idp: IdpService) -> None:
    params = {
        "grant_type": CLIENT_CREDENTIALS,
        "client_id": CLIENT,
        "client_secret": CLIENT_SECRET,
        "audience": "elsewhere",
    }
    assert validator(idp).validate(idp.token(params).access_token, now=NOW).aud == ("tongban",)


@pytest.mark.parametrize(
    ("params", "basic"),
    [
        ({}, None),  # no grant_type
        ({"grant_type": HOLDER_GRANT, "username": CITIZEN}, None),
        ({"grant_type": HOLDER_GRANT, "password": CITIZEN_PASSWORD}, None),
        (  # two client authentication methods
            {"grant_type": CLIENT_CREDENTIALS, "client_secret": CLIENT_SECRET},
            (CLIENT, CLIENT_SECRET),
        ),
        (  # a client_id that is not the Basic one
            {"grant_type": CLIENT_CREDENTIALS, "client_id": "zhuji-public-security"},
            (CLIENT, CLIENT_SECRET),
        ),
        (  # the holder grant is for a public client
            {"grant_type": HOLDER_GRANT, "username": CITIZEN, "password": CITIZEN_PASSWORD},
            (CLIENT, CLIENT_SECRET),
        ),
    ],
)
def test_token_invalid_request(
    idp: IdpService, params: dict[str, str], basic: tuple[str, str] | None
) -> None:
    with raises(InputError, "oauth.invalid_request"):
        idp.token(params, basic=basic)


@pytest.mark.parametrize(
    "params",
    [
        {"grant_type": CLIENT_CREDENTIALS},
        {"grant_type": CLIENT_CREDENTIALS, "client_id": CLIENT},
        {"grant_type": CLIENT_CREDENTIALS, "client_secret": CLIENT_SECRET},
    ],
)
def test_token_without_client_authentication(idp: IdpService, params: dict[str, str]) -> None:
    with raises(AuthError, "oauth.invalid_client"):
        idp.token(params)


@pytest.mark.parametrize(
    "grant_type", ["password", "authorization_code", "CLIENT_CREDENTIALS", HOLDER_GRANT + "x"]
)
def test_token_unsupported_grant_type(idp: IdpService, grant_type: str) -> None:
    with raises(InputError, "oauth.unsupported_grant_type"):
        idp.token({"grant_type": grant_type, "client_id": CLIENT, "client_secret": CLIENT_SECRET})


def test_holder_grant_with_a_scope(idp: IdpService) -> None:
    params = {
        "grant_type": HOLDER_GRANT,
        "username": CITIZEN,
        "password": CITIZEN_PASSWORD,
        "scope": "cert:read",
    }
    with raises(Forbidden, "oauth.invalid_scope"):
        idp.token(params)


# --- form and Basic parsing ------------------------------------------------------------------


def test_parse_form() -> None:
    assert parse_form(b"grant_type=client_credentials&scope=cert%3Aread+seal%3Averify") == {
        "grant_type": "client_credentials",
        "scope": "cert:read seal:verify",
    }
    assert parse_form(b"") == {}


def test_parse_form_drops_empty_parameters() -> None:
    assert parse_form(b"grant_type=client_credentials&scope=") == {
        "grant_type": "client_credentials"
    }


@pytest.mark.parametrize(
    "body",
    [
        b"grant_type=a&grant_type=b",  # twice
        b"scope=&scope=cert%3Aread",  # twice, once empty
        b"grant_type",  # no '='
        b"a=1&&b=2",  # an empty field
        b"a=%FF",  # not UTF-8 once decoded
        b"a=%ED%A0%80",  # an encoded surrogate
        "a=é".encode(),  # not percent-encoded
        b"&".join(b"f%d=1" % i for i in range(MAX_FORM_FIELDS + 1)),
    ],
)
def test_parse_form_refuses(body: bytes) -> None:
    with raises(InputError, "oauth.invalid_request"):
        parse_form(body)


def basic(raw: str) -> str:
    return "Basic " + base64.b64encode(raw.encode()).decode()


def test_parse_basic() -> None:
    assert parse_basic(basic("zhuji-civil-affairs:s3cret")) == ("zhuji-civil-affairs", "s3cret")
    # RFC 6749 §2.3.1: both parts are form-urlencoded first
    assert parse_basic(basic("a%3Ab:c+d%25")) == ("a:b", "c d%")
    assert parse_basic("basic " + basic("a:b")[6:]) == ("a", "b")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer abc",
        "Basic",
        "Basic !!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b":secret").decode(),
        "Basic " + base64.b64encode(b"client:").decode(),
        "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
        basic("a:%FF"),
        "Basic " + "QQ" * (2 * MAX_CREDENTIAL_CHARS + 1),
        "Basic QUJD\udcff",
    ],
)
def test_parse_basic_refuses(header: str) -> None:
    with raises(AuthError, "oauth.invalid_client"):
        parse_basic(header)


# --- consent ---------------------------------------------------------------------------------


def test_consent(idp: IdpService) -> None:
    claims = holder_claims(idp)
    consent = grant(idp, claims)
    assert header_of(consent)["typ"] == CONSENT_TYP
    verifier = ConsentVerifier(
        StaticKeyResolver.from_jwks(idp.jwks(), node=NodeId("idp")), issuer=ISSUER
    )
    verified = verifier.verify(
        consent,
        holder_digest=holder_digest(HOLDER_SECRET, "111", CITIZEN),
        department=DepartmentId(CLIENT),
        matter=MATTER,
        cert_type="household_register",
        now=NOW + 3600,
    )
    assert verified.holder_digest == claims.sub
    assert verified.types == TYPES
    assert (verified.issued_at, verified.expires_at) == (NOW, NOW + 86_400)
    assert verified.issuer == ISSUER


def test_consent_for_the_longest_time(idp: IdpService) -> None:
    consent = grant(idp, holder_claims(idp), until=NOW + MAX_CONSENT_SECONDS)
    assert orjson.loads(b64url_decode(consent.split(".")[1]))["exp"] == NOW + MAX_CONSENT_SECONDS


def test_a_department_token_cannot_grant(idp: IdpService) -> None:
    token = idp.client_credentials(CLIENT, CLIENT_SECRET, None).access_token
    with raises(Forbidden, "consent.not_holder"):
        grant(idp, idp.validate_access_token(token))


def test_consent_for_an_unknown_department(idp: IdpService) -> None:
    with raises(NotFoundError, "consent.unknown_department"):
        grant(idp, holder_claims(idp), department="atlantis-civil-affairs")


def test_consent_for_an_unknown_matter(idp: IdpService) -> None:
    with raises(NotFoundError, "matter.unknown"):
        grant(idp, holder_claims(idp), matter="moon-landing")


def test_consent_for_a_type_outside_the_matter(idp: IdpService) -> None:
    with raises(Forbidden, "matter.type_not_allowed"):
        grant(idp, holder_claims(idp), types=("resident_id", "business_licence"))


@pytest.mark.parametrize(
    "until",
    [NOW + MAX_CONSENT_SECONDS + 1, NOW, NOW - 1, NOW + 0.5],
    ids=["too-far", "now", "past", "same-second"],
)
def test_consent_until_out_of_range(idp: IdpService, until: float) -> None:
    with raises(InputError, "consent.bad_request"):
        grant(idp, holder_claims(idp), until=until)


def test_consent_with_no_types(idp: IdpService) -> None:
    with raises(InputError, "consent.bad_request"):
        grant(idp, holder_claims(idp), types=())


def test_consent_request_parsing() -> None:
    parsed = parse_consent_request(
        {
            "department": CLIENT,
            "matter": MATTER,
            "types": list(TYPES),
            "until": "2026-11-25T16:00:00+08:00",
        }
    )
    assert (parsed.department, parsed.matter, parsed.types) == (CLIENT, MATTER, TYPES)
    assert parsed.until == NOW + 86_400


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-25T08:00:00Z", NOW + 86_400),
        ("2026-11-25T08:00:00.5Z", NOW + 86_400.5),
        ("2026-11-25T16:00:00+08:00", NOW + 86_400),
        (1_795_593_600, NOW + 86_400),
    ],
)
def test_parse_time(value: object, expected: float) -> None:
    assert parse_time(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-25T08:00:00",  # no zone
        "2026-11-25 08:00:00Z",
        "2026-11-25t08:00:00z",
        "2026-02-30T08:00:00Z",  # not a date
        "2026-11-25T08:00:60Z",
        "２０２６-11-25T08:00:00Z",  # full-width digits
        1_795_593_600.5,
        True,
        None,
        "1795593600",
    ],
)
def test_parse_time_refuses(value: object) -> None:
    with raises(InputError, "consent.bad_request"):
        parse_time(value)


@pytest.mark.parametrize(
    "body",
    [
        [],
        "consent",
        {"department": CLIENT, "matter": MATTER, "types": ["resident_id"]},  # no until
        {"department": CLIENT, "matter": MATTER, "types": ["resident_id"], "until": 1, "x": 1},
        {"department": "", "matter": MATTER, "types": ["resident_id"], "until": 1},
        {"department": CLIENT, "matter": 7, "types": ["resident_id"], "until": 1},
        {"department": CLIENT, "matter": MATTER, "types": [], "until": 1},
        {"department": CLIENT, "matter": MATTER, "types": "resident_id", "until": 1},
        {"department": CLIENT, "matter": MATTER, "types": [""], "until": 1},
        {"department": CLIENT, "matter": MATTER, "types": ["resident_id"] * 2, "until": 1},
        {"department": CLIENT, "matter": MATTER, "types": ["a"] * 65, "until": 1},
        {"department": CLIENT, "matter": MATTER, "types": ["resident_id"], "until": "tomorrow"},
    ],
)
def test_consent_request_refuses(body: Any) -> None:
    with raises(InputError, "consent.bad_request"):
        parse_consent_request(body)


# --- rotation --------------------------------------------------------------------------------


def test_rotation_loses_no_token(idp: IdpService, clock: FixedClock) -> None:
    before_jwks = states(idp)
    old_kid, next_kid = idp.keys.active().kid, idp.next_key().kid
    old_token = idp.client_credentials(CLIENT, CLIENT_SECRET, None).access_token
    old_consent = grant(idp, holder_claims(idp))

    clock.advance(60)
    promoted = idp.rotate()

    # pre-publication: the key that signs now was in the JWKS, as next, before the rotation
    assert promoted.kid == next_kid
    assert before_jwks[next_kid] == "next"
    after = states(idp)
    assert after[old_kid] == "retired"
    assert after[next_kid] == "active"
    assert sorted(after.values()) == ["active", "next", "retired"]
    assert idp.next_key().kid not in before_jwks
    # a token issued before the rotation still validates, over the new JWKS
    assert validator(idp).validate(old_token, now=clock.now()).client_id == CLIENT
    ConsentVerifier(
        StaticKeyResolver.from_jwks(idp.jwks(), node=NodeId("idp")), issuer=ISSUER
    ).verify(
        old_consent,
        holder_digest=holder_digest(HOLDER_SECRET, "111", CITIZEN),
        department=DepartmentId(CLIENT),
        matter=MATTER,
        cert_type="resident_id",
        now=clock.now(),
    )
    # new tokens use the new key
    new_token = idp.client_credentials(CLIENT, CLIENT_SECRET, None).access_token
    assert header_of(new_token)["kid"] == next_kid
    assert validator(idp).validate(new_token, now=clock.now()).client_id == CLIENT


def test_rotation_survives_a_restart(
    idp: IdpService, federation: Federation, clock: FixedClock
) -> None:
    idp.rotate()
    again = IdpService.open(federation, clock=clock, public_url=ISSUER, holder_secret=HOLDER_SECRET)
    assert states(again) == states(idp)
    assert again.keys.active().kid == idp.keys.active().kid


def test_retired_keys_leave_the_jwks_when_nothing_they_signed_is_valid(
    idp: IdpService, clock: FixedClock
) -> None:
    old_kid = idp.keys.active().kid
    idp.rotate()
    clock.advance(RETIRED_KEY_PUBLISHED_SECONDS)
    assert states(idp)[old_kid] == "retired"
    clock.advance(1)
    assert old_kid not in states(idp)
    assert sorted(states(idp).values()) == ["active", "next"]


def test_two_rotations(idp: IdpService) -> None:
    first, second = idp.rotate(), idp.rotate()
    assert states(idp)[first.kid] == "retired"
    assert states(idp)[second.kid] == "active"
    assert list(states(idp).values()).count("active") == 1
    assert list(states(idp).values()).count("next") == 1
