"""Materials checked against their matter: the four credibility levels, every missing one
named at once, and the limits."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from gateway._internal.wire import b64url_encode
from gateway.cases.materials import (
    Level,
    Material,
    case_json_limits,
    content_chars,
    receive_materials,
    sha256_hex,
)
from gateway.certificates.matters import Form, MatterSet
from gateway.config import Limits
from gateway.errors import InputError, InvalidIdentifier, SchemaViolation, TooLarge
from gateway.identifiers import build_certificate_id

MATTERS = MatterSet()
MATERNITY = MATTERS.get("maternity-benefit")
LIMITS = Limits()
RESIDENT_ID_TYPE = "11100000000013338W001"
RESIDENT_ID = str(build_certificate_id(RESIDENT_ID_TYPE, "113306810025211840", "A12345"))


def doc(data: bytes, media_type: str = "application/pdf", **more: Any) -> dict[str, Any]:
    return {"content": b64url_encode(data), "media_type": media_type, **more}


def complete(**changes: Any) -> dict[str, Any]:
    given: dict[str, Any] = {
        "application-form": doc(b'{"form": 1}', "application/json"),
        "resident-id": {"certificate_id": RESIDENT_ID},
        "birth-medical-certificate": doc(b"%PDF birth", checked_original=True),
        "medical-invoices": {"declared": True},
    }
    given.update(changes)
    return {k: v for k, v in given.items() if v is not None}


def test_the_four_levels() -> None:
    received = receive_materials(MATERNITY, complete(), limits=LIMITS, in_person=True)
    by_id = {m.id: m for m in received.materials}
    assert {k: m.level for k, m in by_id.items()} == {
        "application-form": Level.C,
        "resident-id": Level.A,
        "birth-medical-certificate": Level.B,
        "medical-invoices": Level.D,
    }
    form = by_id["application-form"]
    assert form.sha256 == hashlib.sha256(b'{"form": 1}').hexdigest()
    assert (form.size, form.media_type, form.form) == (11, "application/json", Form.ELECTRONIC)
    assert by_id["resident-id"].certificate_id == RESIDENT_ID
    assert by_id["resident-id"].sha256 is None
    assert by_id["medical-invoices"].sha256 is None
    # the bytes travel by their digest, only for the documents
    assert received.blobs == {
        sha256_hex(b'{"form": 1}'): b'{"form": 1}',
        sha256_hex(b"%PDF birth"): b"%PDF birth",
    }


def test_every_missing_material_is_named_at_once() -> None:
    given = complete(**{"application-form": None, "birth-medical-certificate": None})
    del given["medical-invoices"]
    with pytest.raises(SchemaViolation) as caught:
        receive_materials(MATERNITY, given, limits=LIMITS, in_person=True)
    error = caught.value
    assert (error.status, error.code) == (422, "case.materials_missing")
    assert error.pointers == (
        "/materials/application-form",
        "/materials/birth-medical-certificate",
        "/materials/medical-invoices",
    )
    assert len(error.errors) == 3
    # the optional one is never asked for
    assert "/materials/bank-account" not in error.pointers


def test_nothing_at_all_names_every_required_material() -> None:
    with pytest.raises(SchemaViolation) as caught:
        receive_materials(MATERNITY, {}, limits=LIMITS, in_person=True)
    required = [m.id for m in MATERNITY.materials if m.required]
    assert caught.value.pointers == tuple(f"/materials/{m}" for m in required)


def test_a_supplement_need_not_be_complete() -> None:
    given = {"medical-invoices": doc(b"rescanned")}
    received = receive_materials(MATERNITY, given, limits=LIMITS, in_person=False, complete=False)
    assert [m.id for m in received.materials] == ["medical-invoices"]
    assert received.materials[0].level is Level.C


def test_an_optional_material_may_be_given() -> None:
    given = complete(**{"bank-account": {"declared": True}})
    received = receive_materials(MATERNITY, given, limits=LIMITS, in_person=True)
    assert len(received.materials) == 5


def test_unknown_materials_are_named() -> None:
    given = complete(**{"selfie": doc(b"x"), "horoscope": doc(b"y")})
    with pytest.raises(SchemaViolation) as caught:
        receive_materials(MATERNITY, given, limits=LIMITS, in_person=True)
    assert (caught.value.status, caught.value.code) == (422, "case.unknown_material")
    assert caught.value.pointers == ("/materials/selfie", "/materials/horoscope")


def test_too_many_materials() -> None:
    limits = Limits(max_materials_per_case=3)
    with pytest.raises(InputError) as caught:
        receive_materials(MATERNITY, complete(), limits=limits, in_person=True)
    assert (caught.value.status, caught.value.code) == (400, "case.too_many_materials")


def test_a_material_too_large() -> None:
    limits = Limits(max_material_bytes=16)
    given = complete(**{"medical-invoices": doc(b"x" * 17)})
    with pytest.raises(TooLarge) as caught:
        receive_materials(MATERNITY, given, limits=limits, in_person=True)
    assert (caught.value.status, caught.value.code) == (413, "case.material_too_large")
    # exactly the limit is fine
    given = complete(**{"medical-invoices": doc(b"x" * 16)})
    receive_materials(MATERNITY, given, limits=limits, in_person=True)


def test_a_text_too_long_is_refused_before_it_is_decoded() -> None:
    limits = Limits(max_material_bytes=16)
    given = complete(**{"medical-invoices": {"content": "A" * 1000, "media_type": "a/b"}})
    with pytest.raises(TooLarge) as caught:
        receive_materials(MATERNITY, given, limits=limits, in_person=True)
    assert caught.value.code == "case.material_too_large"
    assert content_chars(limits) == 22  # 16 bytes are 22 base64url characters
    assert case_json_limits(limits).max_string >= LIMITS.max_string_length


def test_only_a_window_checks_an_original() -> None:
    with pytest.raises(SchemaViolation) as caught:
        receive_materials(MATERNITY, complete(), limits=LIMITS, in_person=False)
    assert (caught.value.status, caught.value.code) == (422, "input.schema")
    assert caught.value.pointers == ("/materials/birth-medical-certificate",)


@pytest.mark.parametrize(
    "material",
    [
        "a string",
        {"content": b64url_encode(b"x")},  # no media type
        {"content": b64url_encode(b"x"), "media_type": "pdf"},  # not a MIME type
        {"content": b64url_encode(b"x"), "media_type": "a/" + "b" * 100},
        {"content": b64url_encode(b"x"), "media_type": "a/b", "checked_original": "yes"},
        {"content": b64url_encode(b"x"), "media_type": "a/b", "colour": "red"},
        {"content": "", "media_type": "a/b"},  # empty
        {"declared": True, "content": b64url_encode(b"x")},
        {"certificate_id": RESIDENT_ID, "media_type": "a/b"},
        {"certificate_id": 7},
    ],
)
def test_malformed_materials_are_pointed_at(material: Any) -> None:
    given = complete(**{"resident-id": material})
    with pytest.raises(SchemaViolation) as caught:
        receive_materials(MATERNITY, given, limits=LIMITS, in_person=True)
    assert caught.value.status == 422
    assert caught.value.pointers == ("/materials/resident-id",)


def test_only_a_certificate_material_takes_a_certificate() -> None:
    given = complete(**{"medical-invoices": {"certificate_id": RESIDENT_ID}})
    with pytest.raises(SchemaViolation) as caught:
        receive_materials(MATERNITY, given, limits=LIMITS, in_person=True)
    assert caught.value.pointers == ("/materials/medical-invoices",)


def test_a_bad_certificate_id_is_an_identifier_error() -> None:
    wrong = RESIDENT_ID[:-1] + ("0" if RESIDENT_ID[-1] != "0" else "1")
    with pytest.raises(InvalidIdentifier) as caught:
        receive_materials(
            MATERNITY,
            complete(**{"resident-id": {"certificate_id": wrong}}),
            limits=LIMITS,
            in_person=True,
        )
    assert caught.value.code.startswith("input.identifier")


def test_material_json_round_trip() -> None:
    received = receive_materials(MATERNITY, complete(), limits=LIMITS, in_person=True)
    for material in received.materials:
        assert Material.from_json(material.to_json()) == material
    form = next(m for m in received.materials if m.level is Level.C).to_json()
    assert set(form) == {"id", "name", "form", "level", "sha256", "bytes", "media_type"}
