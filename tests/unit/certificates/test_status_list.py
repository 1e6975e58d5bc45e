from __future__ import annotations

import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway._internal.wire import b64url_encode
from gateway.certificates import status_list
from gateway.certificates.status import CertStatus
from gateway.certificates.status_list import (
    BITS,
    MAX_DECOMPRESSED,
    STATUS_LIST_TYP,
    StatusCode,
    StatusList,
    decode_list,
    encode_list,
    pack,
    pack_values,
    parse_status_list,
    status_claim,
    status_code,
    status_list_claims,
)
from gateway.errors import Indication, InputError, SealError, SealIndeterminate

URI = "https://zhuji.tongban.test/v1/status-lists/0"
NOW = 1_800_000_000.0

# The draft's own examples (draft-ietf-oauth-status-list, "Status List" section).
DRAFT_1BIT = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]
DRAFT_2BIT = [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3]


def claims_for(lst: str, *, bits: int = BITS, **overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": URI,
        "iat": int(NOW) - 60,
        "exp": int(NOW) + 3600,
        "ttl": 300,
        "status_list": {"bits": bits, "lst": lst},
    }
    claims.update(overrides)
    return claims


def expect_code(code: str, claims: dict[str, Any]) -> SealIndeterminate:
    with pytest.raises(SealIndeterminate) as info:
        parse_status_list(claims, uri=URI, now=NOW)
    assert info.value.code == code
    return info.value


# --- the draft's examples --------------------------------------------------------------------


def test_draft_one_bit_example() -> None:
    packed = pack_values(DRAFT_1BIT, bits=1)
    assert packed == bytes([0xB9, 0xA3])
    assert encode_list(packed) == "eNrbuRgAAhcBXQ"
    parsed = parse_status_list(claims_for("eNrbuRgAAhcBXQ", bits=1), uri=URI, now=NOW)
    assert [parsed.value(i) for i in range(len(DRAFT_1BIT))] == DRAFT_1BIT
    assert parsed.status(0) is CertStatus.REVOKED
    assert parsed.status(1) is CertStatus.VALID


def test_draft_two_bit_example() -> None:
    packed = pack_values(DRAFT_2BIT, bits=2)
    assert packed == bytes([0xC9, 0x44, 0xF9])
    assert encode_list(packed) == "eNo76fITAAPfAgc"
    parsed = parse_status_list(claims_for("eNo76fITAAPfAgc", bits=2), uri=URI, now=NOW)
    assert [parsed.value(i) for i in range(len(DRAFT_2BIT))] == DRAFT_2BIT
    assert parsed.status(0) is CertStatus.REVOKED
    assert parsed.status(1) is CertStatus.SUSPENDED
    assert parsed.status(2) is CertStatus.VALID


def test_application_specific_value_is_indeterminate() -> None:
    parsed = parse_status_list(claims_for("eNo76fITAAPfAgc", bits=2), uri=URI, now=NOW)
    with pytest.raises(SealIndeterminate) as info:
        parsed.status(3)
    assert info.value.code == "status.unknown_value"


def test_status_codes_follow_the_draft() -> None:
    assert status_code(CertStatus.VALID) is StatusCode.VALID
    assert status_code(CertStatus.REVOKED) is StatusCode.INVALID
    assert status_code(CertStatus.SUSPENDED) is StatusCode.SUSPENDED
    assert [int(code) for code in StatusCode] == [0x00, 0x01, 0x02]
    assert STATUS_LIST_TYP == "statuslist+jwt"


# --- round trips -----------------------------------------------------------------------------


@given(st.lists(st.sampled_from(list(CertStatus)), min_size=1, max_size=600))
def test_pack_parse_round_trip(statuses: list[CertStatus]) -> None:
    claims = status_list_claims(
        uri=URI, bits_bytes=pack(statuses), iat=int(NOW), exp=int(NOW) + 60, ttl=30
    )
    parsed = parse_status_list(claims, uri=URI, now=NOW)
    assert [parsed.status(i) for i in range(len(statuses))] == statuses
    # Padding up to a whole byte reads as VALID, and the list ends there.
    assert all(parsed.status(i) is CertStatus.VALID for i in range(len(statuses), len(parsed)))
    assert len(parsed) == -(-len(statuses) // 4) * 4


@given(
    st.sampled_from([1, 2, 4, 8]).flatmap(
        lambda bits: st.tuples(
            st.just(bits), st.lists(st.integers(0, (1 << bits) - 1), min_size=1, max_size=300)
        )
    )
)
def test_pack_values_round_trip_for_every_width(case: tuple[int, list[int]]) -> None:
    bits, values = case
    parsed = parse_status_list(
        claims_for(encode_list(pack_values(values, bits=bits)), bits=bits), uri=URI, now=NOW
    )
    assert parsed.bits == bits
    assert [parsed.value(i) for i in range(len(values))] == values


def test_claims_shape() -> None:
    claims = status_list_claims(uri=URI, bits_bytes=b"\x00\x06", iat=100, exp=200, ttl=50)
    assert claims == {
        "sub": URI,
        "iat": 100,
        "exp": 200,
        "ttl": 50,
        "status_list": {"bits": 2, "lst": encode_list(b"\x00\x06")},
    }


def test_status_claim_shape() -> None:
    assert status_claim(URI, 7) == {"status_list": {"idx": 7, "uri": URI}}


def test_parsed_list_keeps_its_times() -> None:
    parsed = parse_status_list(claims_for(encode_list(b"\x00")), uri=URI, now=NOW)
    assert parsed == StatusList(
        uri=URI, bits=2, data=b"\x00", iat=int(NOW) - 60, exp=int(NOW) + 3600, ttl=300
    )


def test_ttl_is_optional() -> None:
    claims = claims_for(encode_list(b"\x00"))
    del claims["ttl"]
    assert parse_status_list(claims, uri=URI, now=NOW).ttl is None


def test_aggregation_uri_is_accepted() -> None:
    claims = claims_for(encode_list(b"\x00"))
    claims["status_list"]["aggregation_uri"] = "https://zhuji.tongban.test/v1/status-lists"
    assert parse_status_list(claims, uri=URI, now=NOW).status(0) is CertStatus.VALID


# --- encoding refusals -----------------------------------------------------------------------


def test_pack_values_refuses_an_unknown_width() -> None:
    with pytest.raises(InputError):
        pack_values([0], bits=3)


def test_pack_values_refuses_a_value_too_wide() -> None:
    with pytest.raises(InputError):
        pack_values([0, 2], bits=1)


@pytest.mark.parametrize(("iat", "exp", "ttl"), [(100, 100, 10), (200, 100, 10), (100, 200, 0)])
def test_claims_refuse_inconsistent_times(iat: int, exp: int, ttl: int) -> None:
    with pytest.raises(InputError):
        status_list_claims(uri=URI, bits_bytes=b"\x00", iat=iat, exp=exp, ttl=ttl)


# --- parse failures --------------------------------------------------------------------------

GOOD = encode_list(b"\x00\x01")


@pytest.mark.parametrize(
    "overrides",
    [
        {"sub": "https://shanghai.tongban.test/v1/status-lists/0"},
        {"sub": None},
        {"iat": None},
        {"iat": "1800000000"},
        {"iat": True},
        {"exp": None},
        {"exp": str(int(NOW) + 60)},
        {"exp": NOW + 60.5},
        {"exp": True},
        {"ttl": 0},
        {"ttl": -5},
        {"ttl": "300"},
        {"ttl": 1.5},
        {"status_list": None},
        {"status_list": [2, GOOD]},
        {"status_list": {"bits": 2}},
        {"status_list": {"lst": GOOD}},
        {"status_list": {"bits": 2, "lst": 7}},
        {"status_list": {"bits": 3, "lst": GOOD}},
        {"status_list": {"bits": 0, "lst": GOOD}},
        {"status_list": {"bits": 16, "lst": GOOD}},
        {"status_list": {"bits": "2", "lst": GOOD}},
        {"status_list": {"bits": True, "lst": GOOD}},
        {"status_list": {"bits": 2.0, "lst": GOOD}},
        {"status_list": {"bits": 2, "lst": GOOD, "extra": 1}},
        {"status_list": {"bits": 2, "lst": GOOD, "aggregation_uri": 5}},
    ],
)
def test_malformed_claims_are_invalid(overrides: dict[str, Any]) -> None:
    claims = claims_for(GOOD, **overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    expect_code("status.invalid", claims)


@pytest.mark.parametrize("exp", [int(NOW), int(NOW) - 1])
def test_expired_list_is_refused(exp: int) -> None:
    error = expect_code("status.expired", claims_for(GOOD, exp=exp))
    assert isinstance(error, SealError)
    assert error.indication is Indication.INDETERMINATE


@pytest.mark.parametrize(
    ("lst", "why"),
    [
        (GOOD + "=", "padding"),
        (GOOD.replace("e", "+", 1), "standard base64 alphabet"),
        ("eNrbuRgAAhcBXQ"[:-1] + "R", "trailing bits set (non-canonical)"),
        ("", "empty"),
        (b64url_encode(b"not zlib at all"), "not zlib"),
        (b64url_encode(zlib.compress(b"\x00\x01")[2:-4]), "raw deflate without zlib header"),
        (b64url_encode(zlib.compress(b"\x00" * 100)[:-3]), "truncated stream"),
        (b64url_encode(zlib.compress(b"\x00\x01") + b"junk"), "data after the stream"),
        (b64url_encode(zlib.compress(b"")), "empty list"),
    ],
)
def test_bad_lst_is_invalid(lst: str, why: str) -> None:
    expect_code("status.invalid", claims_for(lst))


def test_zlib_bomb_is_refused_without_inflating_it() -> None:
    bomb = encode_list(b"\x00" * (MAX_DECOMPRESSED + 1))
    assert len(bomb) < 100_000  # a small token...
    error = expect_code("status.invalid", claims_for(bomb))  # ...that would inflate past 16 MiB
    assert "more than" in error.detail


def test_list_of_exactly_the_maximum_size_is_accepted() -> None:
    assert len(decode_list(encode_list(b"\x00" * MAX_DECOMPRESSED))) == MAX_DECOMPRESSED


def test_overlong_lst_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_list, "MAX_LST_CHARS", len(GOOD) - 1)
    expect_code("status.invalid", claims_for(GOOD))


@pytest.mark.parametrize("index", [-1, 8, 10_000, True])
def test_index_outside_the_list_is_unknown(index: int) -> None:
    parsed = parse_status_list(claims_for(encode_list(b"\x00\x00")), uri=URI, now=NOW)
    assert len(parsed) == 8
    with pytest.raises(SealIndeterminate) as info:
        parsed.status(index)
    assert info.value.code == "status.unknown_index"


def test_local_list_from_registry_bits() -> None:
    local = StatusList.from_bits(pack([CertStatus.VALID, CertStatus.SUSPENDED, CertStatus.REVOKED]))
    assert [local.status(i) for i in range(3)] == [
        CertStatus.VALID,
        CertStatus.SUSPENDED,
        CertStatus.REVOKED,
    ]
    assert local.exp is None
    with pytest.raises(InputError):
        StatusList.from_bits(b"\x00", bits=3)
