"""Principals and scopes, the development authenticator, and the Authorization header."""

from __future__ import annotations

import hmac

import pytest

from gateway import auth
from gateway.auth import DevelopmentAuthenticator, Principal, Scope, parse_authorization
from gateway.config import DevelopmentToken, Federation, Secret
from gateway.errors import AuthError, Forbidden, TokenError
from gateway.ids import DepartmentId, NodeId

TOKEN = "tongban-test-token-0123456789"
ZHUJI = NodeId("zhuji")


def authenticator(token: str = TOKEN, *, enabled: bool = True) -> DevelopmentAuthenticator:
    return DevelopmentAuthenticator(DevelopmentToken(Secret(token), enabled), ZHUJI)


# --- principals ------------------------------------------------------------------------------


def test_a_principal_with_the_scope_passes() -> None:
    caller = Principal(
        "zhuji-civil-affairs",
        "zhuji-civil-affairs",
        frozenset({"cert:read"}),
        department=DepartmentId("zhuji-civil-affairs"),
    )
    caller.require(Scope.CERT_READ)


@pytest.mark.parametrize("scope", list(Scope))
def test_a_principal_without_the_scope_is_forbidden(scope: Scope) -> None:
    others = frozenset(s.value for s in Scope if s is not scope)
    with pytest.raises(Forbidden) as caught:
        Principal("x", "x", others).require(scope)
    assert caught.value.code == "auth.scope"
    assert caught.value.status == 403
    assert scope.value in caught.value.detail


# --- the development authenticator -----------------------------------------------------------


def test_the_configured_token_is_the_development_principal() -> None:
    principal = authenticator().authenticate(TOKEN)
    assert principal.development
    assert principal.node == "zhuji"
    assert principal.department is None
    assert principal.scopes == frozenset(s.value for s in Scope)


def test_the_default_federation_token_is_accepted(federation: Federation) -> None:
    dev = DevelopmentAuthenticator(federation.development, ZHUJI)
    assert dev.authenticate(federation.development.token.reveal()).development


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "wrong",
        TOKEN[:-1],  # a prefix
        TOKEN + "0",  # an extension
        TOKEN.upper(),
        f" {TOKEN}",
        "令牌" + TOKEN,  # non-ASCII: refused, not a crash
    ],
)
def test_any_other_token_is_invalid(presented: str) -> None:
    with pytest.raises(TokenError) as caught:
        authenticator().authenticate(presented)
    assert caught.value.code == "token.invalid"
    assert caught.value.status == 401


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    compare_digest = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    with pytest.raises(TokenError):
        authenticator().authenticate("wrong")
    assert authenticator().authenticate(TOKEN).development
    assert calls == [(b"wrong", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


@pytest.mark.parametrize(("token", "enabled"), [(TOKEN, False), ("", True), ("", False)])
def test_a_disabled_or_empty_configuration_accepts_nothing(token: str, enabled: bool) -> None:
    for presented in (TOKEN, ""):
        with pytest.raises(AuthError) as caught:
            authenticator(token, enabled=enabled).authenticate(presented)
        assert type(caught.value) is AuthError
        assert caught.value.code == "auth.not_configured"
        assert caught.value.status == 401


# --- the Authorization header ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def-ghi_", "abc.def-ghi_"),
        ("bearer abc", "abc"),  # the scheme is case-insensitive (RFC 7235 §2.1)
        ("BEARER abc", "abc"),
        ("Bearer  abc ", "abc"),
    ],
)
def test_a_bearer_token_is_extracted(header: str, token: str) -> None:
    assert parse_authorization(header, max_bytes=64) == token


def test_a_missing_header_requires_authentication() -> None:
    with pytest.raises(AuthError) as caught:
        parse_authorization(None, max_bytes=64)
    assert caught.value.code == "auth.required"
    assert caught.value.status == 401


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Basic YWxhZGRpbjpvcGVu",
        "Bearerabc",
        "Bearer a b",
    ],
)
def test_anything_but_one_bearer_token_is_the_wrong_scheme(header: str) -> None:
    with pytest.raises(AuthError) as caught:
        parse_authorization(header, max_bytes=64)
    assert caught.value.code == "auth.scheme"


def test_the_token_size_is_bounded() -> None:
    assert parse_authorization("Bearer " + "a" * 64, max_bytes=64) == "a" * 64
    with pytest.raises(TokenError) as caught:
        parse_authorization("Bearer " + "a" * 65, max_bytes=64)
    assert caught.value.code == "token.too_large"
    assert caught.value.status == 401
