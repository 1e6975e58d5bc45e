"""Principals and scopes, and the Authorization header (RFC 6750 §2.1)."""

from __future__ import annotations

import pytest

from gateway.errors import AuthError, Forbidden, TokenError
from gateway.ids import DepartmentId
from gateway.sso.auth import Principal, Scope, parse_authorization

# --- principals ------------------------------------------------------------------------------


def test_a_principal_with_the_scope_passes() -> None:
    caller = Principal(
        "zhuji-civil-affairs",
        "zhuji-civil-affairs",
        frozenset({"cert:read"}),
        department=DepartmentId("zhuji-civil-affairs"),
    )
    caller.require(Scope.CERT_READ)
    assert caller.holder is False
    assert caller.node is None


@pytest.mark.parametrize("scope", list(Scope))
def test_a_principal_without_the_scope_is_forbidden(scope: Scope) -> None:
    others = frozenset(s.value for s in Scope if s is not scope)
    with pytest.raises(Forbidden) as caught:
        Principal("x", "x", others).require(scope)
    assert caught.value.code == "auth.scope"
    assert caught.value.status == 403
    assert scope.value in caught.value.detail


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


@pytest.mark.parametrize(
    "token",
    [
        "abc!",  # outside the b64token alphabet
        "a,b",
        'a"b',
        "a=b",  # "=" only as trailing padding
        "==",  # padding alone
        "a\tb",  # a tab is not a separator of the scheme, nor a token character
        "令牌",  # non-ASCII
        "\udcff\udcfe",  # what aiohttp hands over for header bytes that are not UTF-8
        "abc\x00",
    ],
)
def test_a_token_outside_the_b64token_alphabet_is_invalid(token: str) -> None:
    with pytest.raises(TokenError) as caught:
        parse_authorization(f"Bearer {token}", max_bytes=64)
    assert caught.value.code == "token.invalid"
    assert caught.value.status == 401


@pytest.mark.parametrize("token", ["a-b.c_d~e+f/g", "abc=", "abc==", "A.B.C", "0"])
def test_every_b64token_character_is_admitted(token: str) -> None:
    assert parse_authorization(f"Bearer {token}", max_bytes=64) == token


def test_a_holder_principal_carries_no_department() -> None:
    holder = Principal("hd-digest", "citizen-portal", frozenset(), holder=True)
    assert (holder.holder, holder.department, holder.node) == (True, None, None)
    with pytest.raises(Forbidden) as caught:
        holder.require(Scope.CERT_READ)
    assert caught.value.code == "auth.scope"
