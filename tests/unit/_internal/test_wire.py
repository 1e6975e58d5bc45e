"""Strict wire formats: :func:`loads` refuses what a lenient parser accepts, on its fast path
(orjson) exactly as on its reference path (the standard library with a duplicate hook)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway._internal import wire
from gateway._internal.wire import (
    Base64Error,
    JsonLimits,
    b64url_decode,
    b64url_encode,
    loads,
)
from gateway.errors import DuplicateMember, InputError, MalformedJSON, TooDeep, TooLarge

HYPOTHESIS = settings(derandomize=True, database=None, deadline=None, max_examples=400)
SMALL = JsonLimits(max_depth=4, max_string=16, max_members=8)
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def outcome(parse: Any, data: bytes | str, limits: JsonLimits) -> tuple[str, str]:
    """What a parse gives: the value's repr (so 1, 1.0 and True differ) or the error."""
    try:
        return "value", repr(parse(data, limits))
    except InputError as exc:
        return type(exc).__name__, exc.code


def same_as_reference(data: bytes | str, limits: JsonLimits = wire.DEFAULT_JSON_LIMITS) -> None:
    assert outcome(loads, data, limits) == outcome(wire._reference_loads, data, limits)


# -- base64url ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("QQ==", id="padding"),
        pytest.param("QQ=", id="short-padding"),
        pytest.param("Q=Q=", id="inner-padding"),
        pytest.param("ab+/", id="standard-alphabet"),
        pytest.param("ab/c", id="slash"),
        pytest.param("ab c", id="space"),
        pytest.param("abc\n", id="newline"),
        pytest.param("ab.c", id="dot"),
        pytest.param("abcé", id="non-ascii"),
        pytest.param("ab\x00c", id="nul"),
        pytest.param("abcde", id="impossible-length"),
        pytest.param("QR", id="trailing-bits-2"),
        pytest.param("QUJ", id="trailing-bits-3"),
    ],
)
def test_b64url_refusals(text: str) -> None:
    with pytest.raises(Base64Error):
        b64url_decode(text)


def test_b64url_length_limit() -> None:
    assert b64url_decode("QUJD", max_length=4) == b"ABC"
    with pytest.raises(TooLarge):
        b64url_decode("QUJDRA", max_length=4)


@given(st.binary(max_size=80))
@HYPOTHESIS
def test_b64url_round_trip(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data)) == data


@given(st.text(alphabet=st.sampled_from(B64URL_ALPHABET + "=+/ .\n\x00é"), max_size=12))
@HYPOTHESIS
def test_b64url_accepts_exactly_the_canonical_encodings(text: str) -> None:
    try:
        data = b64url_decode(text)
    except Base64Error:
        return
    assert b64url_encode(data) == text


# -- what the fast path takes --------------------------------------------------------------------


def test_a_plain_document_takes_the_fast_path() -> None:
    data = '{"iss":"zhuji","iat":1795560268,"holder":{"name":"钱明"},"valid_until":null}'
    value = wire._fast_loads(data.encode(), wire.DEFAULT_JSON_LIMITS)
    assert value == {
        "iss": "zhuji",
        "iat": 1795560268,
        "holder": {"name": "钱明"},
        "valid_until": None,
    }
    same_as_reference(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"a":1,"a":2}', id="duplicate"),
        pytest.param(b'{"a":"\\u003a","a":1}', id="duplicate-masked-by-an-escaped-colon"),
        pytest.param(b'{"a":1,"b":3e1000}', id="float-overflow"),
        pytest.param(b'{"a":123456789012345678901234567890}', id="integer-beyond-64-bits"),
        pytest.param(b'["\\ud800"]', id="lone-surrogate"),
        pytest.param(b"[NaN]", id="nan"),
        pytest.param(b"\xff", id="not-utf-8"),
        pytest.param(b"", id="empty"),
        pytest.param("[1]\ud800", id="str-with-a-surrogate"),
    ],
)
def test_what_the_fast_path_leaves_to_the_reference(data: bytes | str) -> None:
    assert wire._fast_loads(data, wire.DEFAULT_JSON_LIMITS) is wire._UNDECIDED


# -- every refusal, with its code, on both paths ---------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(b'{"a":1,"a":2}', DuplicateMember, id="duplicate"),
        pytest.param(b'{"x":{"a":1,"b":2,"a":3}}', DuplicateMember, id="nested-duplicate"),
        pytest.param(b'[{"a":1},{"a":1,"a":1}]', DuplicateMember, id="duplicate-in-a-list"),
        pytest.param(b'{"a":"x","a":"y:z"}', DuplicateMember, id="duplicate-with-a-colon"),
        pytest.param(b'{"a":"p:q:r","a":1}', DuplicateMember, id="dropped-duplicate-has-colons"),
        pytest.param(b'{"a":"\\u003a","a":1}', DuplicateMember, id="escaped-colon"),
        pytest.param(b'{"a":"\\u003A","a":"\\u003A"}', DuplicateMember, id="escaped-colon-upper"),
        pytest.param(b'{"a":1,"\\u0061":2}', DuplicateMember, id="duplicate-once-decoded"),
        pytest.param(b'{"":1,"":2}', DuplicateMember, id="duplicate-empty-name"),
        pytest.param(b"[" * 17 + b"]" * 17, TooDeep, id="arrays-too-deep"),
        pytest.param(b'{"a":' * 17 + b"1" + b"}" * 17, TooDeep, id="objects-too-deep"),
        pytest.param(b"[" * 5000 + b"]" * 5000, TooDeep, id="past-the-recursion-limit"),
        pytest.param(b'["\\ud800"]', MalformedJSON, id="lone-high-surrogate"),
        pytest.param(b'["\\udc00"]', MalformedJSON, id="lone-low-surrogate"),
        pytest.param(b'["\xed\xa0\x80"]', MalformedJSON, id="surrogate-in-utf-8"),
        pytest.param("[\ud800]", MalformedJSON, id="surrogate-in-a-str"),
        pytest.param('["\ud800"]', MalformedJSON, id="surrogate-in-a-str-string"),
        pytest.param(b"[NaN]", MalformedJSON, id="nan"),
        pytest.param(b"[Infinity]", MalformedJSON, id="infinity"),
        pytest.param(b"[1e400]", MalformedJSON, id="float-overflow"),
        pytest.param(b"[-1e400]", MalformedJSON, id="negative-float-overflow"),
        pytest.param(b"[" + b"9" * 5000 + b"]", MalformedJSON, id="integer-too-long"),
        pytest.param(b"\xef\xbb\xbf{}", MalformedJSON, id="bom"),
        pytest.param(b'{"a":"\xff"}', MalformedJSON, id="not-utf-8"),
        pytest.param(b'{"a":"\x01"}', MalformedJSON, id="control-character"),
        pytest.param(b'{"a":1}{"b":2}', MalformedJSON, id="trailing-data"),
        pytest.param(b"[1,]", MalformedJSON, id="trailing-comma"),
        pytest.param(b"[01]", MalformedJSON, id="leading-zero"),
        pytest.param(b'{"a":1,}', MalformedJSON, id="trailing-comma-in-object"),
        pytest.param(b"\x0c{}", MalformedJSON, id="form-feed-is-not-whitespace"),
        pytest.param(b"", MalformedJSON, id="empty"),
        pytest.param(b'"' + b"x" * 65_537 + b'"', TooLarge, id="string-too-long"),
        pytest.param(b'{"' + b"x" * 65_537 + b'":1}', TooLarge, id="name-too-long"),
        pytest.param(b"[" + b"0," * 10_000 + b"0]", TooLarge, id="too-many-members"),
    ],
)
def test_refusals(data: bytes | str, error: type[InputError]) -> None:
    with pytest.raises(error):
        loads(data)
    same_as_reference(data)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(b"[[[[[]]]]]", TooDeep, id="depth"),
        pytest.param(b'{"a":{"b":{"c":{"d":{}}}}}', TooDeep, id="object-depth"),
        pytest.param(b'["' + b"x" * 17 + b'"]', TooLarge, id="string"),
        pytest.param(b'{"' + b"x" * 17 + b'":1}', TooLarge, id="name"),
        pytest.param(b'"' + b"x" * 17 + b'"', TooLarge, id="top-level-string"),
        pytest.param(b"[1,2,3,4,5,6,7,8,9]", TooLarge, id="members"),
        pytest.param(b'{"a":[1,2,3],"b":[4,5,6,7]}', TooLarge, id="members-across-containers"),
    ],
)
def test_refusals_at_small_limits(data: bytes, error: type[InputError]) -> None:
    with pytest.raises(error):
        loads(data, SMALL)
    same_as_reference(data, SMALL)


@pytest.mark.parametrize(
    "data",
    [
        b"[[[[]]]]",
        b'{"a":{"b":{"c":{}}}}',
        b'["' + b"x" * 16 + b'"]',
        '["钱明钱明钱明钱明钱明钱明钱明钱明"]'.encode(),  # 16 characters, 48 bytes
        b"[1,2,3,4,5,6,7,8]",
        b'{"a":[1,2,3],"b":[4,5]}',
        b"[" * 4 + b"]" * 4 + b" " * 40,
    ],
)
def test_at_the_small_limits(data: bytes) -> None:
    loads(data, SMALL)
    same_as_reference(data, SMALL)


def test_integers_beyond_64_bits_stay_integers() -> None:
    big = 2**64 + 1
    assert loads(f'{{"n":{big},"m":-{big}}}') == {"n": big, "m": -big}
    assert type(loads(b"[18446744073709551615]")[0]) is int


@pytest.mark.parametrize("walked", [False, True], ids=["counted", "walked"])
def test_integers_beyond_64_bits_stay_integers_in_any_document(walked: bool) -> None:
    limits = JsonLimits(max_depth=4, max_string=64, max_members=4 if walked else 1000)
    data = b'{"pad":"' + b"x" * 40 + b'","n":[1.5,' + str(2**70).encode() + b"]}"
    # 4 members; the text's ':' + ',' + '[' (5) bound them above the limit only when walked
    assert (sum(map(data.count, (b":", b",", b"["))) > limits.max_members) is walked
    value = loads(data, limits)
    assert value["n"] == [1.5, 2**70]
    assert type(value["n"][1]) is int
    same_as_reference(data, limits)


def test_a_depth_limit_beyond_what_orjson_writes() -> None:
    deep = JsonLimits(max_depth=400, max_members=1000)
    data = b"[" * 300 + b"]" * 300
    value = loads(data, deep)
    for _ in range(299):
        value = value[0]
    assert value == []
    same_as_reference(data, deep)


# -- the fast path agrees with the reference on anything -------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab:"\\\x01\u00e9钱\U0001f600'), max_size=6)
)
_NAMES = st.sampled_from(
    ['"a"', '"b"', '""', '"\\u0061"', '"a:"', '":"', '"\\u003a"', '"a\\u003Ab"', '"钱"']
)
"""Member names as JSON text: some equal once decoded, some with plain or escaped colons."""


def _raw_object(pairs: list[tuple[str, str]]) -> str:
    """An object as text, so duplicate names survive."""
    return "{" + ",".join(f"{name}:{value}" for name, value in pairs) + "}"


_DOCUMENTS: st.SearchStrategy[str] = st.recursive(
    st.builds(lambda v, ascii: json.dumps(v, ensure_ascii=ascii), _SCALARS, st.booleans()),
    lambda children: (
        st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
        | st.lists(st.tuples(_NAMES, children), max_size=4).map(_raw_object)
    ),
    max_leaves=12,
)


@given(_DOCUMENTS)
@HYPOTHESIS
def test_fast_path_agrees_with_the_reference(document: str) -> None:
    same_as_reference(document.encode("utf-8"))
    same_as_reference(document.encode("utf-8"), SMALL)
    same_as_reference(document)


@given(_DOCUMENTS, st.integers(min_value=0), st.binary(min_size=1, max_size=3))
@HYPOTHESIS
def test_fast_path_agrees_on_damaged_documents(document: str, at: int, junk: bytes) -> None:
    data = document.encode("utf-8")
    at %= len(data) + 1
    damaged = data[:at] + junk + data[at:]
    same_as_reference(damaged)
    same_as_reference(damaged, SMALL)
