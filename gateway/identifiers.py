"""Chinese identifier formats: resident ID numbers, credit codes, certificate identifiers.

- GB 11643-1999 resident ID number (公民身份号码): 18 characters, check character by
  ISO 7064 MOD 11-2.
- GB 32100-2015 unified social credit code (统一社会信用代码): 18 characters over a 31-symbol
  alphabet, with an embedded GB 11714 organisation code (its own MOD 11 check) and a final
  MOD 31 check character.
- GB/T 36904 electronic certificate identifier (电子证照标识):
  ``1.2.156.3005.2.<type code>.<issuer credit code>.<serial>.<version>.<check>``, check
  character by ISO 7064 MOD 37,36.

Every function here is pure. Validation returns a frozen, typed value or raises
:class:`gateway.errors.InvalidIdentifier` with one of three codes:

- ``input.identifier.format``: wrong length, alphabet or structure;
- ``input.identifier.check``: a check character does not match;
- ``input.identifier.date``: a resident ID number's birth date is not a real date.

Characters are matched against explicit ASCII alphabets, never ``str.isdigit`` or ``int``
(which accept full-width and other Unicode digits), and nothing is upper-cased for the
caller: ``x`` is not ``X``. Error details never echo the input (an ID number is personal
data); ``log_detail`` names the offending position at most.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from operator import mul
from typing import Final, Literal

from gateway.errors import InvalidIdentifier
from gateway.ids import CertificateId, RegionCode

REGION_CODE: Final = re.compile(r"[0-9]{6}")
"""A GB/T 2260 administrative region code: six ASCII digits."""
HOLDER_DIGEST: Final = re.compile(r"[0-9a-f]{64}")
"""A holder as the gateway knows it: the lower-case hex HMAC-SHA256 of its id
(:func:`gateway.certificates.holders.holder_digest`), never the id in clear."""

FORMAT = "input.identifier.format"
CHECK = "input.identifier.check"
DATE = "input.identifier.date"

DIGITS = "0123456789"
ALNUM36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""Alphabet of ISO 7064 MOD 37,36 and of GB 11714 organisation codes (values 0..35)."""

CREDIT_CODE_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""GB 32100 alphabet: 0-9 and A-Z without I, O, S, V, Z (values 0..30)."""

CERTIFICATE_ROOT = "1.2.156.3005.2"
"""GB/T 36904 root arc of every electronic certificate identifier."""

MAX_CERTIFICATE_ID_LENGTH = 128
PARSED_IDS = 65_536
"""Valid certificate identifiers :func:`parse_certificate_id` remembers (LRU)."""
MAX_SERIAL_LENGTH = 32

_RESIDENT_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)  # 2^(17-i) mod 11
_CREDIT_CODE_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)  # 3^i
_ORG_CODE_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_RESIDENT_ID_SUM = sum(_RESIDENT_ID_WEIGHTS)
_MIN_BIRTH_YEAR = 1900

_DIGIT_SET = frozenset(DIGITS)
_ALNUM36_SET = frozenset(ALNUM36)
_CREDIT_SET = frozenset(CREDIT_CODE_ALPHABET)
_CREDIT_VALUES = {ch: i for i, ch in enumerate(CREDIT_CODE_ALPHABET)}
_ALNUM36_VALUES = {ch: i for i, ch in enumerate(ALNUM36)}

Sex = Literal["male", "female"]


def _format_error(detail: str, log_detail: str | None = None) -> InvalidIdentifier:
    return InvalidIdentifier(detail, code=FORMAT, log_detail=log_detail)


def _require_str(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise _format_error(f"{what} must be a string")
    return text


def _first_outside(text: str, allowed: frozenset[str]) -> int | None:
    if allowed.issuperset(text):
        return None
    for i, ch in enumerate(text):
        if ch not in allowed:
            return i
    return None  # pragma: no cover - issuperset said otherwise


# --- ISO 7064 hybrid systems (MOD M+1,M) ----------------------------------------------------

_OUTSIDE: Final = 255


class _Hybrid:
    """ISO 7064 MOD M+1,M over one ASCII alphabet, as two tables: each byte's value
    (:data:`_OUTSIDE` if not in the alphabet), and each step's next ``p`` by (``p``, value)."""

    __slots__ = ("_steps", "_values", "alphabet", "m")

    def __init__(self, alphabet: str) -> None:
        if not alphabet or not alphabet.isascii():
            raise ValueError("an ISO 7064 alphabet is ASCII and not empty")
        self.alphabet = alphabet
        self.m = m = len(alphabet)
        values = bytearray([_OUTSIDE]) * 256
        for i, ch in reversed(list(enumerate(alphabet))):  # the first occurrence, as find()
            values[ord(ch)] = i
        self._values = bytes(values)
        self._steps = tuple(
            tuple(2 * ((p + v) % m or m) % (m + 1) for v in range(m)) for p in range(m + 1)
        )

    def values(self, text: str) -> bytes:
        """Each character's value; ``input.identifier.format`` naming the first outside."""
        if text.isascii():
            values = text.encode("ascii").translate(self._values)
            if _OUTSIDE not in values:
                return values
        i = next(i for i, ch in enumerate(text) if self.alphabet.find(ch) < 0)
        raise _format_error("character outside the check alphabet", log_detail=f"position {i + 1}")

    def run(self, values: bytes) -> int:
        p = self.m
        steps = self._steps
        for v in values:
            p = steps[p][v]
        return p


_MOD37_36: Final = _Hybrid(ALNUM36)
_MOD11_10: Final = _Hybrid(DIGITS)


def _hybrid(alphabet: str) -> _Hybrid:
    if alphabet == ALNUM36:
        return _MOD37_36
    if alphabet == DIGITS:
        return _MOD11_10
    return _Hybrid(alphabet)


def iso7064_hybrid_check(payload: str, alphabet: str) -> str:
    """The ISO 7064 hybrid (MOD M+1,M) check character of ``payload``, M = len(alphabet).

    ``alphabet`` maps characters to values 0..M-1: :data:`ALNUM36` gives MOD 37,36 and
    :data:`DIGITS` gives MOD 11,10. Raises ``input.identifier.format`` for a character
    outside the alphabet.
    """
    system = _hybrid(alphabet)
    p = system.run(system.values(payload))
    return alphabet[(system.m + 1 - p) % system.m]


def iso7064_hybrid_verify(text: str, alphabet: str, *, what: str = "identifier") -> None:
    """Verify ``text`` (payload followed by its check character) in MOD len(alphabet)+1,len.

    Raises ``input.identifier.format`` for an empty text or a character outside the
    alphabet, ``input.identifier.check`` when the check character does not match; ``what``
    names the identifier in the error detail.
    """
    if not text:
        raise _format_error(f"{what} is empty")
    system = _hybrid(alphabet)
    values = system.values(text)
    p = system.run(values[:-1])
    if (p + values[-1]) % system.m != 1:
        raise InvalidIdentifier(f"{what} check character is wrong", code=CHECK)


def mod37_36_check(payload: str) -> str:
    """ISO 7064 MOD 37,36 check character over 0-9A-Z."""
    return iso7064_hybrid_check(payload, ALNUM36)


# --- GB 11643 resident ID number -------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class ResidentId:
    """A GB 11643-1999 resident ID number that passed :func:`validate_resident_id`."""

    value: str
    region: RegionCode
    birth_date: dt.date
    sequence: str
    sex: Sex

    def __repr__(self) -> str:
        # Personal data: never print the number in full (logs, tracebacks).
        masked = f"{self.value[:6]}********{self.value[14:]}"
        return f"ResidentId(region={self.region!r}, value={masked!r})"

    def __str__(self) -> str:
        return self.value


def resident_id_check(first17: str) -> str:
    """The GB 11643 (ISO 7064 MOD 11-2) check character of the first 17 digits."""
    text = _require_str(first17, "resident ID number body")
    if len(text) != 17:
        raise _format_error("resident ID number body must be 17 digits")
    bad = _first_outside(text, _DIGIT_SET)
    if bad is not None:
        raise _format_error(
            "resident ID number body must be 17 digits", log_detail=f"position {bad + 1}"
        )
    return _resident_id_check(text)


def _resident_id_check(first17: str) -> str:
    total = sum(map(mul, first17.encode("ascii"), _RESIDENT_ID_WEIGHTS)) - 48 * _RESIDENT_ID_SUM
    value = (12 - total % 11) % 11
    return "X" if value == 10 else DIGITS[value]


def validate_resident_id(text: str) -> ResidentId:
    """Validate a GB 11643-1999 resident ID number (uppercase ``X`` only).

    1. 18 characters: 17 ASCII digits then a digit or ``X`` (``input.identifier.format``);
    2. the MOD 11-2 check character matches (``input.identifier.check``);
    3. the birth date is a real calendar date, year 1900 or later (``input.identifier.date``).
    """
    text = _require_str(text, "resident ID number")
    # 1. Structure.
    if len(text) != 18:
        raise _format_error("resident ID number must be 18 characters")
    bad = _first_outside(text[:17], _DIGIT_SET)
    if bad is None and text[17] not in _DIGIT_SET and text[17] != "X":
        bad = 17
    if bad is not None:
        raise _format_error(
            "resident ID number must be 17 digits followed by a digit or X",
            log_detail=f"position {bad + 1}",
        )
    # 2. Check character.
    if text[17] != _resident_id_check(text[:17]):
        raise InvalidIdentifier("resident ID number check character is wrong", code=CHECK)
    # 3. Birth date.
    year, month, day = int(text[6:10]), int(text[10:12]), int(text[12:14])
    if year < _MIN_BIRTH_YEAR:
        raise InvalidIdentifier(
            f"resident ID number birth year is before {_MIN_BIRTH_YEAR}", code=DATE
        )
    try:
        birth_date = dt.date(year, month, day)
    except ValueError as exc:
        raise InvalidIdentifier(
            "resident ID number birth date is not a real calendar date", code=DATE
        ) from exc
    sequence = text[14:17]
    sex: Sex = "male" if int(sequence) % 2 == 1 else "female"
    return ResidentId(
        value=text,
        region=RegionCode(text[:6]),
        birth_date=birth_date,
        sequence=sequence,
        sex=sex,
    )


# --- GB 32100 unified social credit code ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreditCode:
    """A GB 32100 unified social credit code that passed :func:`validate_credit_code`."""

    value: str
    authority: str
    """Registration authority (登记管理部门), e.g. ``1`` 机构编制, ``5`` 民政, ``9`` 市场监管."""
    kind: str
    """Organisation type (机构类别) within the authority, e.g. ``1`` 机关 under ``1``."""
    region: RegionCode
    org_code: str
    """The 9-character GB 11714 organisation code (主体标识码), its check included."""

    def __str__(self) -> str:
        return self.value


def _org_code_check(org8: str) -> str:
    total = sum(map(mul, map(_ALNUM36_VALUES.__getitem__, org8), _ORG_CODE_WEIGHTS))
    value = 11 - total % 11
    return "X" if value == 10 else "0" if value == 11 else DIGITS[value]


def _credit_code_check(first17: str) -> str:
    total = sum(map(mul, map(_CREDIT_VALUES.__getitem__, first17), _CREDIT_CODE_WEIGHTS))
    return CREDIT_CODE_ALPHABET[(31 - total % 31) % 31]


def credit_code_check(first17: str) -> str:
    """The GB 32100 MOD 31 check character of the first 17 characters of a credit code."""
    text = _require_str(first17, "credit code body")
    if len(text) != 17:
        raise _format_error("credit code body must be 17 characters")
    bad = _first_outside(text, _CREDIT_SET)
    if bad is not None:
        raise _format_error(
            "credit code body has a character outside 0-9 and A-Z without I, O, S, V, Z",
            log_detail=f"position {bad + 1}",
        )
    return _credit_code_check(text)


def _validate_credit_code(text: object, what: str) -> CreditCode:
    code = _check_credit_code(text, what)
    return CreditCode(
        value=code,
        authority=code[0],
        kind=code[1],
        region=RegionCode(code[2:8]),
        org_code=code[8:17],
    )


def _check_credit_code(text: object, what: str) -> str:
    code = _require_str(text, what)
    # 1. Length and alphabet; the region (characters 3-8) is six digits.
    if len(code) != 18:
        raise _format_error(f"{what} must be 18 characters")
    bad = _first_outside(code, _CREDIT_SET)
    if bad is not None:
        raise _format_error(
            f"{what} has a character outside 0-9 and A-Z without I, O, S, V, Z",
            log_detail=f"position {bad + 1}",
        )
    bad = _first_outside(code[2:8], _DIGIT_SET)
    if bad is not None:
        raise _format_error(
            f"{what} region (characters 3 to 8) must be 6 digits",
            log_detail=f"position {bad + 3}",
        )
    # 2. The embedded GB 11714 organisation code carries its own check character.
    if code[16] != _org_code_check(code[8:16]):
        raise InvalidIdentifier(f"{what} organisation code check character is wrong", code=CHECK)
    # 3. The MOD 31 check character over the first 17.
    if code[17] != _credit_code_check(code[:17]):
        raise InvalidIdentifier(f"{what} check character is wrong", code=CHECK)
    return code


def validate_credit_code(text: str) -> CreditCode:
    """Validate a GB 32100 unified social credit code.

    1. 18 characters of the 31-symbol alphabet, characters 3-8 digits
       (``input.identifier.format``);
    2. the organisation code's GB 11714 check character matches (``input.identifier.check``);
    3. the MOD 31 check character matches (``input.identifier.check``).
    """
    return _validate_credit_code(text, "unified social credit code")


def make_credit_code(authority: str, kind: str, region: str, org8: str) -> str:
    """Assemble a credit code from its parts, filling both check characters.

    ``org8`` is the 8-character organisation code body, over the credit-code alphabet.
    """
    parts = (
        (authority, 1, "registration authority"),
        (kind, 1, "organisation type"),
        (org8, 8, "organisation code body"),
    )
    for value, length, what in parts:
        text = _require_str(value, what)
        if len(text) != length or _first_outside(text, _CREDIT_SET) is not None:
            raise _format_error(
                f"{what} must be {length} character(s) of 0-9 and A-Z without I, O, S, V, Z"
            )
    region_text = _require_str(region, "region")
    if len(region_text) != 6 or _first_outside(region_text, _DIGIT_SET) is not None:
        raise _format_error("region must be 6 digits")
    first17 = authority + kind + region_text + org8 + _org_code_check(org8)
    return first17 + _credit_code_check(first17)


# --- GB/T 36904 certificate identifier --------------------------------------------------------


def _validate_type_code(text: object) -> None:
    code = _require_str(text, "certificate type code")
    if len(code) != 21:
        raise _format_error(
            "certificate type code must be 21 characters: a credit code and a 3-digit number"
        )
    _check_credit_code(code[:18], "certificate type code's credit code")
    if _first_outside(code[18:], _DIGIT_SET) is not None:
        raise _format_error("certificate type code must end with a 3-digit number")


def _validate_serial(text: object) -> None:
    serial = _require_str(text, "certificate serial")
    if (
        not 1 <= len(serial) <= MAX_SERIAL_LENGTH
        or _first_outside(serial, _ALNUM36_SET) is not None
    ):
        raise _format_error(
            f"certificate serial must be 1 to {MAX_SERIAL_LENGTH} characters of 0-9 and A-Z"
        )


def _validate_version(text: object) -> None:
    version = _require_str(text, "certificate version")
    if len(version) != 3 or _first_outside(version, _DIGIT_SET) is not None:
        raise _format_error("certificate version must be 3 digits")


@dataclass(frozen=True, slots=True)
class CertificateIdentifier:
    """A GB/T 36904 electronic certificate identifier.

    Constructing one validates every part and the check character, so an instance is
    always a valid identifier; use :func:`build_certificate_id` to compute the check and
    :func:`parse_certificate_id` to read the dotted form.
    """

    type_code: str
    """证照类型代码: the defining ministry's credit code and a 3-digit number (21 chars)."""
    issuer_code: str
    """The issuing authority's unified social credit code."""
    serial: str
    version: str
    check: str

    def __post_init__(self) -> None:
        # 1. Each part on its own (format, and the embedded credit codes' checks).
        _validate_type_code(self.type_code)
        _check_credit_code(self.issuer_code, "certificate issuer credit code")
        _validate_serial(self.serial)
        _validate_version(self.version)
        check = _require_str(self.check, "certificate identifier check character")
        if len(check) != 1 or check not in _ALNUM36_SET:
            raise _format_error("certificate identifier check character must be 0-9 or A-Z")
        # 2. The MOD 37,36 check over type + issuer + serial + version, without dots.
        iso7064_hybrid_verify(self._payload() + check, ALNUM36, what="certificate identifier")

    def _payload(self) -> str:
        return self.type_code + self.issuer_code + self.serial + self.version

    @property
    def certificate_id(self) -> CertificateId:
        """The dotted form, typed."""
        return CertificateId(
            f"{CERTIFICATE_ROOT}.{self.type_code}.{self.issuer_code}"
            f".{self.serial}.{self.version}.{self.check}"
        )

    def __str__(self) -> CertificateId:
        return self.certificate_id


def build_certificate_id(
    type_code: str, issuer_code: str, serial: str, version: str = "001"
) -> CertificateIdentifier:
    """Build an identifier from its parts, computing the MOD 37,36 check character."""
    # Validate the parts before computing over them so errors name the right part.
    _validate_type_code(type_code)
    _check_credit_code(issuer_code, "certificate issuer credit code")
    _validate_serial(serial)
    _validate_version(version)
    check = mod37_36_check(type_code + issuer_code + serial + version)
    return CertificateIdentifier(type_code, issuer_code, serial, version, check)


def parse_certificate_id(text: str) -> CertificateIdentifier:
    """Parse and validate the dotted form of a GB/T 36904 certificate identifier.

    1. At most 128 characters, checked before anything else;
    2. the root ``1.2.156.3005.2.`` and exactly five dot-separated parts;
    3. each part and the check character (see :class:`CertificateIdentifier`).

    Identifiers that parsed are remembered (an exchange reads the same one several times:
    routing, the fetch, the sealed document, the audit record); failures never are.
    """
    if type(text) is str and len(text) <= MAX_CERTIFICATE_ID_LENGTH:
        return _parse_remembered(text)
    return _parse_certificate_id(text)


@functools.lru_cache(maxsize=PARSED_IDS)
def _parse_remembered(text: str) -> CertificateIdentifier:
    return _parse_certificate_id(text)


def _parse_certificate_id(text: str) -> CertificateIdentifier:
    raw = _require_str(text, "certificate identifier")
    # 1. Bound the work.
    if len(raw) > MAX_CERTIFICATE_ID_LENGTH:
        raise _format_error(
            f"certificate identifier is longer than {MAX_CERTIFICATE_ID_LENGTH} characters"
        )
    # 2. Structure.
    prefix = CERTIFICATE_ROOT + "."
    if not raw.startswith(prefix):
        raise _format_error(f"certificate identifier must start with {prefix}")
    parts = raw[len(prefix) :].split(".")
    if len(parts) != 5:
        raise _format_error(
            "certificate identifier must have five parts after the root: "
            "type code, issuer credit code, serial, version, check"
        )
    # 3. Parts and check.
    type_code, issuer_code, serial, version, check = parts
    return CertificateIdentifier(type_code, issuer_code, serial, version, check)
