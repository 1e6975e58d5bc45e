"""Strict wire formats: base64url (RFC 7515 §2) and JSON (RFC 8259 + RFC 7493 I-JSON).

Everything that arrives from a network is parsed here, and parsing refuses what a lenient
parser would silently accept:

- base64url with padding, with characters outside the alphabet, or non-canonical (trailing
  bits set, so two encodings would decode to the same bytes);
- JSON that is not UTF-8, has duplicate member names, ``NaN``/``Infinity``, lone surrogates,
  numbers that overflow, strings longer than the limit, or nesting deeper than the limit.

Errors are :class:`gateway.errors.InputError` subclasses; callers that need their own codes
(seals, tokens) catch them and re-raise with ``from``.

:func:`loads` has two parsers. The reference parser (the standard library's, with a
duplicate-member hook and a walk of the result) decides every document that is refused, and
every document the fast parser cannot prove it agrees on. The fast parser (orjson, which
already refuses invalid UTF-8, lone surrogates, ``NaN``/``Infinity``, overflowing floats and
control characters) answers only when its value is the reference parser's, duplicates and
limits included: see :func:`_fast_loads`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import orjson

from gateway.errors import DuplicateMember, InputError, MalformedJSON, TooDeep, TooLarge

_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64URL_BYTES = _B64URL_ALPHABET.encode("ascii")
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNDECIDED: Final = object()
"""What :func:`_fast_loads` returns when the reference parser must decide."""
_ESCAPED_COLON: Final = b"\\u003"
"""The prefix of ``\\u003a`` / ``\\u003A``: a colon inside a string the raw text does not show."""
_DIGITS_AS_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
_LONG_INTEGER: Final = b"0" * 19
"""19 digits in a row (with every digit read as 0): an integer orjson might read as a float
(beyond 64 bits), where the reference parser reads an ``int``."""


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """Bounds on a parsed JSON document. Every field is a named, enforced limit."""

    max_depth: int = 16
    max_string: int = 65_536
    max_members: int = 10_000


DEFAULT_JSON_LIMITS = JsonLimits()


class Base64Error(InputError):
    code = "input.base64"
    title = "Invalid base64url"


def is_int(value: object) -> TypeGuard[int]:
    """A JSON integer: an ``int`` that is not a ``bool`` (``True`` is an ``int`` in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, max_length: int | None = None) -> bytes:
    """Decode unpadded, canonical base64url. Raises :class:`Base64Error` or :class:`TooLarge`."""
    if max_length is not None and len(text) > max_length:
        raise TooLarge(f"base64url segment longer than {max_length} characters")
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise Base64Error("base64url segment has characters outside the alphabet") from exc
    # Only the URL alphabet: what is left once its 64 characters are deleted is anything
    # else (padding, +, /, whitespace), so a2b_base64 never gets to skip a character.
    if raw.translate(None, _B64URL_BYTES):
        raise Base64Error("base64url segment has padding or characters outside the alphabet")
    rest = len(raw) % 4
    if rest == 1:
        raise Base64Error("base64url segment has an impossible length")
    try:
        data = binascii.a2b_base64(raw.translate(_TO_STANDARD) + _PADDING[rest])
    except binascii.Error as exc:  # pragma: no cover - the alphabet and length are checked
        raise Base64Error("base64url segment is not valid") from exc
    # canonical: the bits of the last character beyond the data are zero
    if rest and _B64URL_ALPHABET.index(text[-1]) & (0x0F if rest == 2 else 0x03):
        raise Base64Error("base64url segment is not canonical (trailing bits set)")
    return data


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise DuplicateMember(f"duplicate member name {name[:64]!r}")
            seen.add(name)
    return obj


def _reject_constant(name: str) -> Any:
    raise MalformedJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedJSON("number out of range")
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=_reject_duplicates,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
)


def loads(data: bytes | str, limits: JsonLimits = DEFAULT_JSON_LIMITS) -> Any:
    """Parse strict JSON. Raises an :class:`InputError` subclass naming the problem."""
    value = _fast_loads(data, limits)
    if value is _UNDECIDED:
        return _reference_loads(data, limits)
    return value


def _fast_loads(data: bytes | str, limits: JsonLimits) -> Any:
    """orjson's value of ``data`` when it is provably the reference parser's, else
    :data:`_UNDECIDED` (never an error: refusals, and their codes, are the reference's).

    1. ``str`` input encodes to UTF-8 (no lone surrogates); no ``\\u003`` escape, so every
       colon inside a string is a colon in the raw text.
    2. orjson accepts it: well-formed, UTF-8, no lone surrogate, no ``NaN``, finite numbers.
    3. The limits, from the raw text where it bounds the value (a value nests no deeper
       than it has ``{`` and ``[``; no string is longer than the text; there are no more
       members than characters, nor than ``:`` (one per object member) plus ``,`` and ``[``
       (an array of k items has k - 1 commas), strings' own characters only adding to
       both counts), else by walking the value.
    4. orjson read every integer as an ``int``, as the reference does: it reads one as a
       ``float`` only beyond 64 bits, so it is enough that the text has no run of 19
       digits, or (when walked) that the value holds no float.
    5. No duplicate member names: re-serialised, the value has as many colons as the raw
       text. Both count each member once plus the colons inside strings; a duplicate is a
       member (and the strings in it) that the value lost, so its count would be lower.
       A text with fewer than two colons has no two members to be duplicates.
    """
    # 1.
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            return _UNDECIDED
    else:
        raw = data
    if b"\\" in raw and _ESCAPED_COLON in raw:
        return _UNDECIDED
    # 2.
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _UNDECIDED
    # 3.
    strings = len(raw) > limits.max_string
    arrays = raw.count(b"[")
    if (
        strings
        or raw.count(b"{") + arrays > limits.max_depth
        or (
            len(raw) > limits.max_members
            and raw.count(b":") + raw.count(b",") + arrays > limits.max_members
        )
    ):
        within, floats = _walk(value, limits, strings=strings)
        if not within:
            return _UNDECIDED
    else:
        floats = True  # not walked: the text must show there are no long integers
    # 4.
    if floats and _LONG_INTEGER in raw.translate(_DIGITS_AS_ZERO):
        return _UNDECIDED
    # 5.
    first = raw.find(b":")
    if first >= 0 and raw.find(b":", first + 1) >= 0:
        try:
            if orjson.dumps(value).count(b":") != raw.count(b":"):
                return _UNDECIDED
        except orjson.JSONEncodeError:  # nested deeper than orjson writes (a limit above 255)
            return _UNDECIDED
    return value


def _walk(value: Any, limits: JsonLimits, *, strings: bool) -> tuple[bool, bool]:
    """(within the limits, holds a float) for orjson's values: :func:`check_limits` without
    lone surrogates (orjson has none), string lengths only if ``strings`` (the text was
    longer than any string may be)."""
    if type(value) not in _CONTAINERS:
        within = type(value) is not str or not strings or len(value) <= limits.max_string
        return within, type(value) is float
    walked = _CONTAINERS_STRINGS_FLOATS if strings else _CONTAINERS_FLOATS
    stack: list[tuple[Any, int]] = [(value, 1)]
    members = 0
    floats = False
    while stack:
        node, depth = stack.pop()
        if type(node) is str:
            if len(node) > limits.max_string:
                return False, floats
            continue
        if type(node) is float:
            floats = True
            continue
        if depth > limits.max_depth:
            return False, floats
        members += len(node)
        if members > limits.max_members:
            return False, floats
        if type(node) is dict:
            if strings and any(len(name) > limits.max_string for name in node):
                return False, floats
            node = node.values()
        stack.extend((child, depth + 1) for child in node if type(child) in walked)
    return True, floats


_CONTAINERS: Final = (dict, list)
_CONTAINERS_FLOATS: Final = (dict, list, float)
_CONTAINERS_STRINGS_FLOATS: Final = (dict, list, str, float)


def _reference_loads(data: bytes | str, limits: JsonLimits) -> Any:
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedJSON("body is not UTF-8") from exc
    else:
        text = data
    start = len(text) - len(text.lstrip(" \t\n\r"))
    try:
        value, end = _DECODER.raw_decode(text, start)
    except RecursionError as exc:
        raise TooDeep(f"JSON nested deeper than {limits.max_depth} levels") from exc
    except json.JSONDecodeError as exc:
        raise MalformedJSON(f"not well-formed JSON at position {exc.pos}") from exc
    except ValueError as exc:  # int too long for conversion, float overflow
        raise MalformedJSON("number out of range") from exc
    if text[end:].strip(" \t\n\r"):
        raise MalformedJSON("trailing data after the JSON value")
    check_limits(value, limits)
    return value


def check_limits(value: Any, limits: JsonLimits) -> None:
    """Walk a parsed value once: depth, string lengths, member counts, lone surrogates."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    members = 0
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > limits.max_depth:
                raise TooDeep(f"JSON nested deeper than {limits.max_depth} levels")
            members += len(node)
            for name, child in node.items():
                _check_string(name, limits)
                stack.append((child, depth + 1))
        elif isinstance(node, list):
            if depth > limits.max_depth:
                raise TooDeep(f"JSON nested deeper than {limits.max_depth} levels")
            members += len(node)
            stack.extend((child, depth + 1) for child in node)
        elif isinstance(node, str):
            _check_string(node, limits)
        if members > limits.max_members:
            raise TooLarge(f"JSON document has more than {limits.max_members} members")


def _check_string(text: str, limits: JsonLimits) -> None:
    if len(text) > limits.max_string:
        raise TooLarge(f"JSON string longer than {limits.max_string} characters")
    if _SURROGATE.search(text):
        raise MalformedJSON("JSON string contains a lone surrogate")
