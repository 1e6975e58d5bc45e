"""Tests for gateway.identifiers: GB 11643, GB 32100, ISO 7064 hybrid, GB/T 36904."""

from __future__ import annotations

import datetime as dt
import string
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import InputError, InvalidIdentifier
from gateway.identifiers import (
    ALNUM36,
    CERTIFICATE_ROOT,
    CHECK,
    CREDIT_CODE_ALPHABET,
    DATE,
    DIGITS,
    FORMAT,
    CertificateIdentifier,
    CreditCode,
    ResidentId,
    build_certificate_id,
    credit_code_check,
    iso7064_hybrid_check,
    iso7064_hybrid_verify,
    make_credit_code,
    mod37_36_check,
    parse_certificate_id,
    resident_id_check,
    validate_credit_code,
    validate_resident_id,
)
from gateway.ids import RegionCode

# Published examples.
MPS_CREDIT_CODE = "11100000000013338W"  # Ministry of Public Security (公安部)
XIAMEN_COMPANY = "91350200MA2YJ1XR9G"
BEIJING_COMPANY = "91110000600037341L"
GB11643_EXAMPLE = "11010519491231002X"  # the example printed in GB 11643-1999

TYPE_CODE = MPS_CREDIT_CODE + "001"

# Every replacement tried at every position: the full 0-9A-Z alphabet, a lowercase letter,
# a non-ASCII digit (full-width 1, which int() would accept) and a CJK character.
REPLACEMENTS = ALNUM36 + "x" + "\uff11" + "证"

_CREDIT = frozenset(CREDIT_CODE_ALPHABET)
_DIGITS = frozenset(DIGITS)
_ALNUM = frozenset(ALNUM36)

HYPOTHESIS = settings(derandomize=True, database=None, deadline=None, max_examples=300)


def with_check(first17: str) -> str:
    return first17 + resident_id_check(first17)


def assert_rejected(fn: Callable[[str], object], text: str, code: str) -> InvalidIdentifier:
    with pytest.raises(InvalidIdentifier) as info:
        fn(text)
    assert info.value.code == code, (text, info.value.detail)
    assert info.value.status == 400
    return info.value


def corruptions(text: str) -> list[tuple[int, str, str]]:
    """(position, replacement, corrupted text) for every single-character substitution."""
    return [
        (i, ch, text[:i] + ch + text[i + 1 :])
        for i in range(len(text))
        for ch in REPLACEMENTS
        if ch != text[i]
    ]


def check_all_corruptions(
    fn: Callable[[str], object], text: str, expected: Callable[[int, str], str]
) -> int:
    """Every substitution must raise InvalidIdentifier with the predicted code."""
    wrong = []
    for i, ch, corrupted in corruptions(text):
        try:
            fn(corrupted)
        except InvalidIdentifier as exc:
            if exc.code != expected(i, ch):
                wrong.append((i, ch, exc.code, expected(i, ch)))
        else:
            wrong.append((i, ch, "accepted", expected(i, ch)))
    assert wrong == []
    return len(corruptions(text))


# --- error class -----------------------------------------------------------------------------


def test_invalid_identifier_is_a_400_input_error() -> None:
    exc = assert_rejected(validate_credit_code, "", FORMAT)
    assert isinstance(exc, InputError)


# --- ISO 7064 hybrid systems -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "alphabet", "check"),
    [
        # ISO 7064 MOD 37,36 and MOD 11,10 examples (as published with python-stdnum).
        ("A12425GABC1234002", ALNUM36, "M"),
        ("79462", DIGITS, "3"),
        ("00200667308", DIGITS, "5"),
    ],
)
def test_hybrid_check_known_examples(payload: str, alphabet: str, check: str) -> None:
    assert iso7064_hybrid_check(payload, alphabet) == check
    iso7064_hybrid_verify(payload + check, alphabet)


def test_mod37_36_check_is_the_hybrid_over_alnum36() -> None:
    assert mod37_36_check("A12425GABC1234002") == "M"


def test_hybrid_verify_rejects_every_other_check_character() -> None:
    for ch in ALNUM36.replace("M", ""):
        assert_rejected(
            lambda t: iso7064_hybrid_verify(t, ALNUM36), "A12425GABC1234002" + ch, CHECK
        )
    for ch in DIGITS.replace("3", ""):
        assert_rejected(lambda t: iso7064_hybrid_verify(t, DIGITS), "79462" + ch, CHECK)


def test_hybrid_rejects_characters_outside_the_alphabet() -> None:
    assert_rejected(lambda t: iso7064_hybrid_check(t, DIGITS), "79A62", FORMAT)
    assert_rejected(lambda t: iso7064_hybrid_check(t, ALNUM36), "a12425", FORMAT)
    assert_rejected(lambda t: iso7064_hybrid_verify(t, DIGITS), "794623x", FORMAT)


def test_hybrid_names_the_first_character_outside_the_alphabet() -> None:
    for text, position in (("79A62", 3), ("79\uff1962", 3), ("\u0664\u0664x", 1), ("7946x", 5)):
        exc = assert_rejected(lambda t: iso7064_hybrid_check(t, DIGITS), text, FORMAT)
        assert exc.log_detail == f"position {position}"


def _textbook_hybrid_check(payload: str, alphabet: str) -> str:
    """ISO 7064 hybrid MOD M+1,M as the standard writes it, for comparison."""
    m = len(alphabet)
    p = m
    for ch in payload:
        s = (p + alphabet.index(ch)) % m
        p = (2 * (s if s else m)) % (m + 1)
    return alphabet[(m + 1 - p) % m]


@HYPOTHESIS
@given(st.text(alphabet=ALNUM36, max_size=80), st.sampled_from([ALNUM36, DIGITS]))
def test_hybrid_check_is_the_textbook_one(payload: str, alphabet: str) -> None:
    payload = "".join(ch for ch in payload if ch in alphabet)
    assert iso7064_hybrid_check(payload, alphabet) == _textbook_hybrid_check(payload, alphabet)


def test_hybrid_verify_rejects_empty_text() -> None:
    exc = assert_rejected(lambda t: iso7064_hybrid_verify(t, DIGITS, what="number"), "", FORMAT)
    assert exc.detail == "number is empty"


@HYPOTHESIS
@given(st.text(alphabet=ALNUM36, max_size=40), st.sampled_from([ALNUM36, DIGITS]))
def test_hybrid_check_then_verify_agree(payload: str, alphabet: str) -> None:
    payload = "".join(ch for ch in payload if ch in alphabet)
    check = iso7064_hybrid_check(payload, alphabet)
    iso7064_hybrid_verify(payload + check, alphabet)
    for other in alphabet.replace(check, ""):
        with pytest.raises(InvalidIdentifier) as info:
            iso7064_hybrid_verify(payload + other, alphabet)
        assert info.value.code == CHECK


# --- GB 11643 resident ID number ---------------------------------------------------------------


def test_gb11643_example_is_valid() -> None:
    rid = validate_resident_id(GB11643_EXAMPLE)
    assert rid == ResidentId(
        value=GB11643_EXAMPLE,
        region=RegionCode("110105"),
        birth_date=dt.date(1949, 12, 31),
        sequence="002",
        sex="female",
    )
    assert str(rid) == GB11643_EXAMPLE
    assert resident_id_check(GB11643_EXAMPLE[:17]) == "X"


def test_resident_id_male_and_female_from_sequence() -> None:
    male = validate_resident_id(with_check("33068119900307001"))
    female = validate_resident_id(with_check("34122120000229008"))  # leap day
    assert (male.sex, male.sequence, male.birth_date) == ("male", "001", dt.date(1990, 3, 7))
    assert (female.sex, female.birth_date) == ("female", dt.date(2000, 2, 29))
    assert female.region == "341221"


def test_resident_id_check_tells_apart_every_last_body_digit() -> None:
    checks = {resident_id_check(f"3306811990030700{d}") for d in DIGITS}
    assert len(checks) == 10


def test_resident_id_repr_masks_the_number() -> None:
    rid = validate_resident_id(GB11643_EXAMPLE)
    assert GB11643_EXAMPLE not in repr(rid)
    assert "19491231" not in repr(rid)


@pytest.mark.parametrize(
    "example",
    [GB11643_EXAMPLE, with_check("33068119900307001"), with_check("34122120000229008")],
)
def test_resident_id_every_single_substitution_is_rejected(example: str) -> None:
    def expected(i: int, ch: str) -> str:
        if i < 17:
            return CHECK if ch in _DIGITS else FORMAT
        return CHECK if ch in _DIGITS or ch == "X" else FORMAT

    assert check_all_corruptions(validate_resident_id, example, expected) > 600


def test_resident_id_lowercase_x_is_rejected() -> None:
    assert_rejected(validate_resident_id, GB11643_EXAMPLE.lower(), FORMAT)


@pytest.mark.parametrize("text", [GB11643_EXAMPLE[:17], GB11643_EXAMPLE + "0", ""])
def test_resident_id_wrong_length(text: str) -> None:
    exc = assert_rejected(validate_resident_id, text, FORMAT)
    assert "18 characters" in exc.detail


def test_resident_id_x_only_in_last_position() -> None:
    exc = assert_rejected(validate_resident_id, "X1010519491231002X", FORMAT)
    assert exc.log_detail == "position 1"


def test_resident_id_full_width_digits_rejected() -> None:
    assert_rejected(validate_resident_id, "\uff11" + GB11643_EXAMPLE[1:], FORMAT)


@pytest.mark.parametrize(
    "birth",
    ["19490230", "19000229", "19491301", "19490001", "19490100", "19490132", "18991231"],
)
def test_resident_id_invalid_birth_date_with_valid_check(birth: str) -> None:
    exc = assert_rejected(validate_resident_id, with_check("110105" + birth + "002"), DATE)
    assert "birth" in exc.detail


def test_resident_id_year_1900_is_accepted() -> None:
    assert validate_resident_id(with_check("11010519000101001")).birth_date == dt.date(1900, 1, 1)


def test_resident_id_check_error_names_the_check_character() -> None:
    exc = assert_rejected(validate_resident_id, GB11643_EXAMPLE[:17] + "0", CHECK)
    assert exc.detail == "resident ID number check character is wrong"
    assert GB11643_EXAMPLE[:17] not in exc.detail


@pytest.mark.parametrize("body", ["1101051949123100", "110105194912310021", "1101051949123100X"])
def test_resident_id_check_rejects_bad_body(body: str) -> None:
    assert_rejected(resident_id_check, body, FORMAT)


def test_resident_id_rejects_non_string() -> None:
    assert_rejected(validate_resident_id, 110105194912310021, FORMAT)  # type: ignore[arg-type]


# --- GB 32100 unified social credit code -------------------------------------------------------


@pytest.mark.parametrize("code", [MPS_CREDIT_CODE, XIAMEN_COMPANY, BEIJING_COMPANY])
def test_published_credit_codes_are_valid(code: str) -> None:
    cc = validate_credit_code(code)
    assert str(cc) == code
    assert credit_code_check(code[:17]) == code[17]


def test_credit_code_parts() -> None:
    assert validate_credit_code(XIAMEN_COMPANY) == CreditCode(
        value=XIAMEN_COMPANY,
        authority="9",
        kind="1",
        region=RegionCode("350200"),
        org_code="MA2YJ1XR9",
    )
    mps = validate_credit_code(MPS_CREDIT_CODE)
    assert (mps.authority, mps.kind, mps.region, mps.org_code) == ("1", "1", "100000", "000013338")


def _credit_expected(i: int, ch: str) -> str:
    if ch not in _CREDIT or (2 <= i < 8 and ch not in _DIGITS):
        return FORMAT
    return CHECK


@pytest.mark.parametrize("code", [MPS_CREDIT_CODE, XIAMEN_COMPANY, BEIJING_COMPANY])
def test_credit_code_every_single_substitution_is_rejected(code: str) -> None:
    assert check_all_corruptions(validate_credit_code, code, _credit_expected) > 600


@pytest.mark.parametrize("letter", "IOSVZ")
def test_credit_code_excluded_letters_are_format_errors(letter: str) -> None:
    exc = assert_rejected(
        validate_credit_code, XIAMEN_COMPANY[:9] + letter + XIAMEN_COMPANY[10:], FORMAT
    )
    assert exc.log_detail == "position 10"


def test_credit_code_region_must_be_digits() -> None:
    exc = assert_rejected(validate_credit_code, "91A50200MA2YJ1XR9G", FORMAT)
    assert "region" in exc.detail


def test_credit_code_org_code_check_is_enforced() -> None:
    # Fix the MOD 31 check so only the organisation code check is wrong.
    body = XIAMEN_COMPANY[:16] + "8"
    exc = assert_rejected(validate_credit_code, body + credit_code_check(body), CHECK)
    assert "organisation code" in exc.detail


def test_credit_code_mod31_check_is_enforced() -> None:
    exc = assert_rejected(validate_credit_code, XIAMEN_COMPANY[:17] + "H", CHECK)
    assert exc.detail == "unified social credit code check character is wrong"


@pytest.mark.parametrize("text", [MPS_CREDIT_CODE[:17], MPS_CREDIT_CODE + "0", ""])
def test_credit_code_wrong_length(text: str) -> None:
    assert_rejected(validate_credit_code, text, FORMAT)


def test_credit_code_lowercase_rejected() -> None:
    assert_rejected(validate_credit_code, XIAMEN_COMPANY.lower(), FORMAT)


@pytest.mark.parametrize("body", [MPS_CREDIT_CODE[:16], MPS_CREDIT_CODE, "1110000000001333I"])
def test_credit_code_check_rejects_bad_body(body: str) -> None:
    assert_rejected(credit_code_check, body, FORMAT)


def test_make_credit_code_reproduces_published_codes() -> None:
    assert make_credit_code("1", "1", "100000", "00001333") == MPS_CREDIT_CODE
    assert make_credit_code("9", "1", "350200", "MA2YJ1XR") == XIAMEN_COMPANY
    assert make_credit_code("9", "1", "110000", "60003734") == BEIJING_COMPANY


def test_make_credit_code_org_check_values_x_and_0() -> None:
    # Org code check 10 -> X and 11 -> 0 (GB 11714); both codes still validate.
    made = {make_credit_code("1", "1", "100000", f"0000000{d}")[16] for d in DIGITS}
    made |= {make_credit_code("1", "1", "100000", f"000000{d}0")[16] for d in DIGITS}
    assert {"X", "0"} <= made
    for d in DIGITS:
        validate_credit_code(make_credit_code("1", "1", "100000", f"0000000{d}"))


@pytest.mark.parametrize(
    ("authority", "kind", "region", "org8"),
    [
        ("", "1", "100000", "00001333"),
        ("1", "11", "100000", "00001333"),
        ("I", "1", "100000", "00001333"),
        ("1", "1", "10000", "00001333"),
        ("1", "1", "10000A", "00001333"),
        ("1", "1", "100000", "0000133"),
        ("1", "1", "100000", "0000133O"),
        ("1", "1", "100000", "0000133a"),
    ],
)
def test_make_credit_code_rejects_bad_parts(
    authority: str, kind: str, region: str, org8: str
) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        make_credit_code(authority, kind, region, org8)
    assert info.value.code == FORMAT


# --- GB/T 36904 certificate identifier ---------------------------------------------------------


def _built() -> CertificateIdentifier:
    return build_certificate_id(TYPE_CODE, XIAMEN_COMPANY, "2024ZJ0001")


def test_build_and_parse_round_trip() -> None:
    cid = _built()
    text = str(cid)
    assert text == f"{CERTIFICATE_ROOT}.{TYPE_CODE}.{XIAMEN_COMPANY}.2024ZJ0001.001.{cid.check}"
    assert cid.certificate_id == text
    assert cid.check == mod37_36_check(TYPE_CODE + XIAMEN_COMPANY + "2024ZJ0001001")
    assert parse_certificate_id(text) == cid


def test_parsing_remembers_only_what_parsed() -> None:
    text = str(_built())
    assert parse_certificate_id(text) is parse_certificate_id(text)
    wrong = text[:-1] + ("0" if text[-1] != "0" else "1")
    for _ in range(2):  # a failure is never remembered: it fails again, whole
        with pytest.raises(InvalidIdentifier) as info:
            parse_certificate_id(wrong)
        assert info.value.code == CHECK
    with pytest.raises(InvalidIdentifier):
        parse_certificate_id(["not", "hashable"])  # type: ignore[arg-type]


def _reference_mod37_36(payload: str) -> str:
    """An independent formulation of ISO 7064 MOD 37,36 (the recurrence folded differently)."""
    check = 18
    for ch in payload:
        check = (((check or 36) * 2) % 37 + ALNUM36.index(ch)) % 36
    return ALNUM36[(1 - ((check or 36) * 2) % 37) % 36]


def test_built_identifier_check_matches_an_independent_implementation() -> None:
    payload = TYPE_CODE + XIAMEN_COMPANY + "2024ZJ0001001"
    assert _reference_mod37_36("A12425GABC1234002") == "M"
    assert _built().check == _reference_mod37_36(payload) == "V"


@HYPOTHESIS
@given(st.text(alphabet=ALNUM36, max_size=60))
def test_mod37_36_matches_the_independent_implementation(payload: str) -> None:
    assert mod37_36_check(payload) == _reference_mod37_36(payload)


def test_certificate_identifier_every_single_substitution_is_rejected() -> None:
    text = str(_built())
    prefix = len(CERTIFICATE_ROOT) + 1
    type_start, issuer_start = prefix, prefix + 22
    serial_start = issuer_start + 19
    version_start = serial_start + len("2024ZJ0001") + 1
    check_pos = version_start + 4

    def expected(i: int, ch: str) -> str:
        if i < prefix or text[i] == ".":
            return FORMAT  # the root or a separator is broken
        if type_start <= i < type_start + 18:
            return _credit_expected(i - type_start, ch)
        if type_start + 18 <= i < type_start + 21 or version_start <= i < check_pos:
            return CHECK if ch in _DIGITS else FORMAT
        if issuer_start <= i < issuer_start + 18:
            return _credit_expected(i - issuer_start, ch)
        assert serial_start <= i < version_start or i == check_pos
        return CHECK if ch in _ALNUM else FORMAT

    assert check_all_corruptions(parse_certificate_id, text, expected) > 2700


def test_certificate_identifier_has_every_part_in_place() -> None:
    cid = parse_certificate_id(str(_built()))
    assert (cid.type_code, cid.issuer_code, cid.serial, cid.version) == (
        TYPE_CODE,
        XIAMEN_COMPANY,
        "2024ZJ0001",
        "001",
    )


def test_certificate_identifier_too_long_rejected_first() -> None:
    text = str(_built())
    padded = text[:-2] + "0" * (129 - len(text) + 2)
    exc = assert_rejected(parse_certificate_id, padded, FORMAT)
    assert "128" in exc.detail
    exc = assert_rejected(parse_certificate_id, "x" * 1_000_000, FORMAT)
    assert "128" in exc.detail


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda t: t.replace("1.2.156.3005.2.", "1.2.156.3005.1.", 1), "start with"),
        (lambda t: t.rsplit(".", 1)[0], "five parts"),
        (lambda t: t + ".0", "five parts"),
        (lambda t: t.replace("W001.", "W01.", 1), "21 characters"),
        (lambda t: t.replace("W001.", "W0001.", 1), "21 characters"),
        (lambda t: t.replace("W001.", "W0A1.", 1), "3-digit number"),
        (lambda t: t.replace(".2024ZJ0001.", "..", 1), "serial"),
        (lambda t: t.replace(".2024ZJ0001.", "." + "1" * 33 + ".", 1), "serial"),
        (lambda t: t.replace(".001.", ".01.", 1), "version"),
        (lambda t: t.replace(".001.", ".0001.", 1), "version"),
        (lambda t: t[:-1] + "v", "check character"),
        (lambda t: t[:-1], "check character"),
        (lambda t: t + "V", "check character"),
        (lambda t: t.lower(), "outside"),
        (lambda t: t.replace(XIAMEN_COMPANY, XIAMEN_COMPANY[:17], 1), "issuer"),
    ],
)
def test_certificate_identifier_format_errors(mutate: Callable[[str], str], fragment: str) -> None:
    exc = assert_rejected(parse_certificate_id, mutate(str(_built())), FORMAT)
    assert fragment in exc.detail


@pytest.mark.parametrize("serial", ["2024zj0001", "a2024", "\uff112024", "2024-1"])
def test_certificate_identifier_bad_serial_rejected(serial: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        build_certificate_id(TYPE_CODE, XIAMEN_COMPANY, serial)
    assert info.value.code == FORMAT
    assert "serial" in info.value.detail


def test_certificate_identifier_wrong_check_names_the_identifier() -> None:
    text = str(_built())[:-1] + "W"
    exc = assert_rejected(parse_certificate_id, text, CHECK)
    assert exc.detail == "certificate identifier check character is wrong"


def test_certificate_identifier_bad_embedded_codes_name_their_role() -> None:
    bad_type = TYPE_CODE[:17] + "X" + TYPE_CODE[18:]
    exc = assert_rejected(lambda t: build_certificate_id(t, XIAMEN_COMPANY, "1"), bad_type, CHECK)
    assert "type code" in exc.detail
    exc = assert_rejected(
        lambda t: build_certificate_id(TYPE_CODE, t, "1"), XIAMEN_COMPANY[:17] + "H", CHECK
    )
    assert "issuer" in exc.detail


def test_constructing_with_a_wrong_check_is_impossible() -> None:
    cid = _built()
    with pytest.raises(InvalidIdentifier) as info:
        CertificateIdentifier(cid.type_code, cid.issuer_code, cid.serial, cid.version, "0")
    assert info.value.code == CHECK
    with pytest.raises(InvalidIdentifier) as info:
        CertificateIdentifier(cid.type_code, cid.issuer_code, cid.serial, cid.version, "")
    assert info.value.code == FORMAT


@pytest.mark.parametrize("version", ["1", "0001", "00A", ""])
def test_build_rejects_bad_version(version: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        build_certificate_id(TYPE_CODE, XIAMEN_COMPANY, "1", version)
    assert info.value.code == FORMAT


def test_build_accepts_serial_bounds() -> None:
    for serial in ("0", "Z" * 32):
        cid = build_certificate_id(TYPE_CODE, MPS_CREDIT_CODE, serial, "999")
        assert parse_certificate_id(str(cid)) == cid


def test_parse_rejects_non_string() -> None:
    assert_rejected(parse_certificate_id, None, FORMAT)  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------------

_credit_chars = st.sampled_from(CREDIT_CODE_ALPHABET)
credit_codes = st.builds(
    make_credit_code,
    _credit_chars,
    _credit_chars,
    st.text(alphabet=DIGITS, min_size=6, max_size=6),
    st.text(alphabet=CREDIT_CODE_ALPHABET, min_size=8, max_size=8),
)
type_codes = st.builds(
    lambda code, n: code + n, credit_codes, st.text(alphabet=DIGITS, min_size=3, max_size=3)
)
serials = st.text(alphabet=ALNUM36, min_size=1, max_size=32)
versions = st.text(alphabet=DIGITS, min_size=3, max_size=3)


@HYPOTHESIS
@given(type_codes, credit_codes, serials, versions)
def test_build_then_parse_is_identity(
    type_code: str, issuer: str, serial: str, version: str
) -> None:
    cid = build_certificate_id(type_code, issuer, serial, version)
    assert parse_certificate_id(str(cid)) == cid
    assert str(parse_certificate_id(str(cid))) == str(cid)


@HYPOTHESIS
@given(credit_codes)
def test_made_credit_codes_validate(code: str) -> None:
    assert validate_credit_code(code).value == code


@HYPOTHESIS
@given(
    st.text(alphabet=DIGITS, min_size=6, max_size=6),
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2099, 12, 31)),
    st.text(alphabet=DIGITS, min_size=3, max_size=3),
)
def test_computed_resident_ids_validate(region: str, birth: dt.date, seq: str) -> None:
    rid = validate_resident_id(with_check(region + birth.strftime("%Y%m%d") + seq))
    assert rid.birth_date == birth
    assert rid.sex == ("male" if int(seq) % 2 else "female")


_near_cert_ids = st.from_regex(
    r"\A1\.2\.156\.3005\.2\.[0-9A-Za-z]{20,22}\.[0-9A-Z]{17,19}\.[0-9A-Za-z]{0,33}"
    r"\.[0-9]{2,4}\.[0-9A-Za-z]{0,2}\Z"
)
_any_text = st.text(max_size=200) | st.text(alphabet=string.printable, max_size=140)


def _only_invalid_identifier(fn: Callable[[str], object], text: str) -> None:
    code = None
    try:
        fn(text)
    except InvalidIdentifier as exc:
        code = exc.code
    assert code in {None, FORMAT, CHECK, DATE}


@HYPOTHESIS
@given(_any_text | _near_cert_ids)
def test_random_text_only_raises_invalid_identifier(text: str) -> None:
    for fn in (
        validate_resident_id,
        validate_credit_code,
        parse_certificate_id,
        resident_id_check,
        credit_code_check,
        mod37_36_check,
    ):
        _only_invalid_identifier(fn, text)


@HYPOTHESIS
@given(st.from_regex(r"\A[0-9]{17}[0-9Xx]\Z") | st.from_regex(r"\A[0-9A-Z]{18}\Z"))
def test_near_valid_codes_only_raise_invalid_identifier(text: str) -> None:
    _only_invalid_identifier(validate_resident_id, text)
    _only_invalid_identifier(validate_credit_code, text)
