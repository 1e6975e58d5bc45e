"""The JSON Schemas and their validators (gateway.certificates.schemas)."""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schema_corpus import (
    Broken,
    broken_documents,
    certificate,
    issue_request,
    valid_documents,
    with_value,
)

from gateway.certificates.schemas import (
    MAX_REPORTED_ERRORS,
    SCHEMA_BASE,
    CertificateTypeInfo,
    SchemaSet,
    default_schema_dir,
)
from gateway.errors import ConfigError, NotFoundError, SchemaViolation, UnknownCertificateType
from gateway.identifiers import validate_credit_code

SCHEMA_DIR = default_schema_dir()
SCHEMA_FILES = sorted(SCHEMA_DIR.rglob("*.schema.json"))
NINE_TYPES = [
    "resident_id",
    "household_register",
    "marriage",
    "divorce",
    "social_insurance_record",
    "flexible_pension_enrolment",
    "maternity_benefit",
    "work_injury_settlement",
    "business_licence",
]
ENVELOPES = [
    "issue-request",
    "status-request",
    "lookup-request",
    "lookup-response",
    "verify-request",
    "verification-report",
    "verify-response",
    "case-request",
    "case-action",
]


@pytest.fixture(scope="module")
def catalog() -> SchemaSet:
    return SchemaSet.load(SCHEMA_DIR)


def _read(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


MARRIAGE_CODE: str = _read(SCHEMA_DIR / "types" / "marriage.schema.json")["x-type-code"]


def _violation(catalog: SchemaSet, name: str, document: object) -> SchemaViolation:
    with pytest.raises(SchemaViolation) as caught:
        catalog.validate(name, document)
    return caught.value


# --- the schema files -----------------------------------------------------------------------


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.relative_to(SCHEMA_DIR).as_posix())
def test_schema_file_passes_the_2020_12_metaschema(path: Path) -> None:
    document = _read(path)
    jsonschema.Draft202012Validator.check_schema(document)
    assert jsonschema_rs.meta.is_valid(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"] == SCHEMA_BASE + path.relative_to(SCHEMA_DIR).as_posix()
    assert document["title"]
    assert document["description"]


def test_every_type_and_envelope_has_a_schema_file() -> None:
    relative = {p.relative_to(SCHEMA_DIR).as_posix() for p in SCHEMA_FILES}
    assert relative == {
        "certificate.schema.json",
        *(f"types/{t}.schema.json" for t in NINE_TYPES),
        *(f"exchange/{e}.schema.json" for e in ENVELOPES),
    }


def _strings_without_max_length(node: object, pointer: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        bounded = "maxLength" in node or "const" in node or "enum" in node or "$ref" in node
        types = node.get("type")
        if (types == "string" or (isinstance(types, list) and "string" in types)) and not bounded:
            found.append(pointer)
        for key, child in node.items():
            found.extend(_strings_without_max_length(child, f"{pointer}/{key}"))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found.extend(_strings_without_max_length(child, f"{pointer}/{index}"))
    return found


def _objects_without_closed_members(node: object, pointer: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if "properties" in node and node.get("additionalProperties") is not False:
            found.append(pointer)
        for key, child in node.items():
            found.extend(_objects_without_closed_members(child, f"{pointer}/{key}"))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found.extend(_objects_without_closed_members(child, f"{pointer}/{index}"))
    return found


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.relative_to(SCHEMA_DIR).as_posix())
def test_every_string_has_a_max_length(path: Path) -> None:
    assert _strings_without_max_length(_read(path)) == []


@pytest.mark.parametrize(
    "path",
    [SCHEMA_DIR / "certificate.schema.json", *sorted((SCHEMA_DIR / "exchange").iterdir())],
    ids=lambda p: p.name,
)
def test_every_object_is_closed(path: Path) -> None:
    # Type schemas only narrow members the certificate schema already closes (except data).
    open_objects = [
        p
        for p in _objects_without_closed_members(_read(path))
        if not re.search(r"/(if|then|else)(/|$)", p)
    ]
    assert open_objects == []


def test_type_data_is_closed(catalog: SchemaSet) -> None:
    for name, document in catalog.schema_documents().items():
        if name.startswith("type:"):
            data = document["properties"]["data"]
            assert data["additionalProperties"] is False
            assert _objects_without_closed_members(data) == [], name


def test_nine_types_each_with_a_valid_type_code(catalog: SchemaSet) -> None:
    types = catalog.certificate_types()
    assert [t.name for t in types] == NINE_TYPES
    codes = [t.type_code for t in types]
    assert len(set(codes)) == len(codes)
    for info in types:
        document = _read(SCHEMA_DIR / "types" / f"{info.name}.schema.json")
        assert document["x-type-code"] == info.type_code
        assert re.fullmatch(r"[0-9A-HJ-NPQRTUWXY]{18}[0-9]{3}", info.type_code)
        # The defining authority's credit code passes both GB 32100 check characters.
        validate_credit_code(info.type_code[:18])
        assert info.schema_id == SCHEMA_BASE + f"types/{info.name}.schema.json"
    by_name = {t.name: t for t in types}
    assert by_name["resident_id"].type_code == "11100000000013338W001"
    assert by_name["household_register"].type_code == "11100000000013338W002"


def test_certificate_type_info(catalog: SchemaSet) -> None:
    licence = catalog.certificate_type("business_licence")
    assert licence == CertificateTypeInfo(
        name="business_licence",
        title="营业执照",
        type_code=licence.type_code,
        holder_kind="organisation",
        schema_id=SCHEMA_BASE + "types/business_licence.schema.json",
    )
    assert licence.holder_id_type == "001"
    marriage = catalog.certificate_type("marriage")
    assert (marriage.title, marriage.holder_kind, marriage.holder_id_type) == (
        "结婚证",
        "person",
        "111",
    )
    with pytest.raises(AttributeError):
        marriage.name = "divorce"  # type: ignore[misc]


def test_unknown_certificate_type(catalog: SchemaSet) -> None:
    with pytest.raises(UnknownCertificateType) as caught:
        catalog.certificate_type("passport")
    assert caught.value.code == "input.certificate_type"
    assert caught.value.status == 400


def test_unknown_schema_names(catalog: SchemaSet) -> None:
    with pytest.raises(UnknownCertificateType) as unknown_type:
        catalog.validate("type:passport", {})
    assert unknown_type.value.code == "input.certificate_type"
    with pytest.raises(NotFoundError) as unknown_envelope:
        catalog.validate("exchange:nope", {})
    assert unknown_envelope.value.code == "schema.not_found"
    with pytest.raises(NotFoundError):
        catalog.reference_errors("nope", {})


def test_schema_documents_are_every_schema_and_copies(catalog: SchemaSet) -> None:
    documents = catalog.schema_documents()
    assert sorted(documents) == catalog.names()
    assert set(documents) == {
        "certificate",
        *(f"type:{t}" for t in NINE_TYPES),
        *(f"exchange:{e}" for e in ENVELOPES),
    }
    for name, document in documents.items():
        assert document["$id"].startswith(SCHEMA_BASE), name
    documents["certificate"]["properties"].clear()
    assert catalog.schema_documents()["certificate"]["properties"]


def test_default_schema_dir_is_the_repository_schemas() -> None:
    assert default_schema_dir() == Path(__file__).resolve().parents[3] / "schemas"
    assert (default_schema_dir() / "certificate.schema.json").is_file()


def test_issue_request_checks_each_type_data_and_holder(catalog: SchemaSet) -> None:
    documents = catalog.schema_documents()
    for info in catalog.certificate_types():
        request = issue_request(catalog, info.name)
        request["data"] = {}
        required = documents[f"type:{info.name}"]["properties"]["data"]["required"]
        violation = _violation(catalog, "exchange:issue-request", request)
        assert set(violation.pointers) == {f"/data/{field}" for field in required}, info.name


# --- valid and broken documents: exact pointers, and both implementations agree ---------------


def test_valid_corpus_covers_every_schema(catalog: SchemaSet) -> None:
    assert {name for name, _ in valid_documents(catalog)} == set(catalog.names())


def test_valid_documents_pass_both_implementations(catalog: SchemaSet) -> None:
    for name, document in valid_documents(catalog):
        catalog.validate(name, document)
        assert catalog.reference_errors(name, document) == [], name


def _broken_ids() -> list[str]:
    return [b.label for b in broken_documents(SchemaSet.load(SCHEMA_DIR))]


@pytest.fixture(scope="module")
def broken(catalog: SchemaSet) -> dict[str, Broken]:
    return {b.label: b for b in broken_documents(catalog)}


@pytest.mark.parametrize("label", _broken_ids())
def test_broken_document_reports_each_failing_field(
    catalog: SchemaSet, broken: dict[str, Broken], label: str
) -> None:
    case = broken[label]
    violation = _violation(catalog, case.schema, case.document)
    assert violation.code == "input.schema"
    assert violation.status == 422
    assert set(violation.pointers) == case.pointers
    assert len(violation.pointers) == len(set(violation.pointers))
    assert len(violation.errors) == len(violation.pointers)
    for pointer, message in zip(violation.pointers, violation.errors, strict=True):
        assert message.startswith(f"{pointer or '(document)'}: ")
    # The reference implementation finds exactly the same fields.
    assert set(catalog.reference_errors(case.schema, case.document)) == case.pointers


def test_messages_name_the_rule_but_not_the_value(catalog: SchemaSet) -> None:
    document = certificate(catalog, "household_register")
    document["holder"] |= {"id_type": "001", "id": "secret-id-1234567x"}
    violation = _violation(catalog, "certificate", document)
    assert violation.pointers == ("/holder/id",)
    assert violation.errors == ("/holder/id: does not match ^[0-9A-HJ-NPQRTUWXY]{18}$",)
    assert violation.detail.startswith("document does not match the schema certificate")


def test_messages_for_common_rules(catalog: SchemaSet) -> None:
    document = certificate(catalog, "household_register")
    document = with_value(document, "/iat", "now")
    document = with_value(document, "/data/household_type", "x")
    document = with_value(document, "/issued", "2026-02-30")
    document = with_value(document, "/extra", 1)
    del document["status"]
    violation = _violation(catalog, "type:household_register", document)
    messages = dict(zip(violation.pointers, violation.errors, strict=True))
    assert messages == {
        "/iat": "/iat: must be of type integer",
        "/data/household_type": '/data/household_type: must be one of "家庭户", "集体户"',
        "/issued": "/issued: is not a valid date",
        "/extra": "/extra: is not allowed here",
        "/status": "/status: is required",
    }


def test_too_many_failures_are_capped(catalog: SchemaSet) -> None:
    document = certificate(catalog, "social_insurance_record")
    period = document["data"]["periods"][0] | {"month": "2026-13"}
    document["data"]["periods"] = [period] * 600
    violation = _violation(catalog, "type:social_insurance_record", document)
    assert len(violation.pointers) == MAX_REPORTED_ERRORS
    assert violation.pointers[0].startswith("/data/periods/")
    assert f"(first {MAX_REPORTED_ERRORS})" in violation.detail


def test_non_json_values_are_a_schema_violation(catalog: SchemaSet) -> None:
    document = certificate(catalog, "marriage")
    document["data"]["spouse"] = {"a", "set"}
    violation = _violation(catalog, "type:marriage", document)
    assert violation.code == "input.schema"
    assert violation.pointers == ("",)
    assert isinstance(violation.__cause__, ValueError)


def test_validate_certificate_uses_the_type_it_names(catalog: SchemaSet) -> None:
    marriage = certificate(catalog, "marriage")
    catalog.validate_certificate(marriage)
    # Valid for the generic schema, but not for its own type.
    wrong_data = with_value(marriage, "/data", {"x": 1})
    catalog.validate("certificate", wrong_data)
    with pytest.raises(SchemaViolation) as caught:
        catalog.validate_certificate(wrong_data)
    assert set(caught.value.pointers) == {
        "/data/x",
        "/data/registration_date",
        "/data/spouse",
        "/data/registration_office",
    }


@pytest.mark.parametrize(
    ("document", "pointer"),
    [
        pytest.param({"type": "passport"}, "/type", id="unknown type"),
        pytest.param({"type": 7}, "/type", id="type not a string"),
        pytest.param(["not", "an", "object"], "", id="not an object"),
    ],
)
def test_validate_certificate_without_a_known_type(
    catalog: SchemaSet, document: object, pointer: str
) -> None:
    with pytest.raises(SchemaViolation) as caught:
        catalog.validate_certificate(document)
    assert pointer in caught.value.pointers


# --- the validators are compiled once -------------------------------------------------------


def test_validators_are_compiled_once(catalog: SchemaSet, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[object] = []
    original = jsonschema_rs.Draft202012Validator

    def counting(*args: Any, **kwargs: Any) -> jsonschema_rs.Validator:
        compiled.append(args)
        return original(*args, **kwargs)

    before = catalog.validator("type:marriage")
    monkeypatch.setattr(jsonschema_rs, "Draft202012Validator", counting)
    document = certificate(catalog, "marriage")
    catalog.validate("type:marriage", document)
    catalog.validate("type:marriage", document)
    _violation(catalog, "type:marriage", with_value(document, "/iat", "x"))
    assert compiled == []
    assert catalog.validator("type:marriage") is before
    assert catalog.validator("type:marriage") is catalog.validator("type:marriage")


def test_load_compiles_every_schema_once(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[str] = []
    original = jsonschema_rs.Draft202012Validator

    def counting(schema: dict[str, Any], **kwargs: Any) -> jsonschema_rs.Validator:
        compiled.append(schema["$id"])
        assert kwargs["validate_formats"] is True
        return original(schema, **kwargs)

    monkeypatch.setattr(jsonschema_rs, "Draft202012Validator", counting)
    catalog = SchemaSet.load(SCHEMA_DIR)
    assert sorted(compiled) == sorted(set(compiled))
    assert len(compiled) == len(catalog.names()) == 19


# --- loading refuses bad schema directories ---------------------------------------------------


Edit = Callable[[Path], None]


def _edit_json(relative: str, change: Callable[[dict[str, Any]], None]) -> Edit:
    def edit(root: Path) -> None:
        path = root / relative
        document = _read(path)
        change(document)
        path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")

    return edit


def _write(relative: str, content: bytes) -> Edit:
    def edit(root: Path) -> None:
        (root / relative).write_bytes(content)

    return edit


def _delete(relative: str) -> Edit:
    def edit(root: Path) -> None:
        (root / relative).unlink()

    return edit


def _add_passport(root: Path) -> None:
    document = _read(root / "types/marriage.schema.json")
    document["$id"] = SCHEMA_BASE + "types/passport.schema.json"
    document["properties"]["type"]["const"] = "passport"
    (root / "types/passport.schema.json").write_text(json.dumps(document), encoding="utf-8")


def _unreadable(root: Path) -> None:
    (root / "exchange/folder.schema.json").mkdir()


def _stray_file(root: Path) -> None:
    shutil.copy(root / "exchange/status-request.schema.json", root / "other.schema.json")


def _same_code_twice(root: Path) -> None:
    code = _read(root / "types/marriage.schema.json")["x-type-code"]

    def change(document: dict[str, Any]) -> None:
        document["x-type-code"] = code
        document["properties"]["type_code"]["const"] = code

    _edit_json("types/divorce.schema.json", change)(root)


def _set(*path_and_value: Any) -> Callable[[dict[str, Any]], None]:
    *path, value = path_and_value

    def change(document: dict[str, Any]) -> None:
        node = document
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return change


def _remove(*path: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        node = document
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return change


BAD_DIRECTORIES: list[Any] = [
    pytest.param(
        _write("types/marriage.schema.json", b'{"a": 1,}'),
        "types/marriage.schema.json: not strict JSON",
        id="malformed JSON",
    ),
    pytest.param(
        _write("exchange/verify-request.schema.json", b'{"title": "a", "title": "b"}'),
        "exchange/verify-request.schema.json: not strict JSON: duplicate member name 'title'",
        id="duplicate member",
    ),
    pytest.param(
        _write("exchange/verify-request.schema.json", b"[]"),
        "exchange/verify-request.schema.json: a schema must be a JSON object",
        id="not an object",
    ),
    pytest.param(
        _edit_json("certificate.schema.json", _set("properties", "iat", "type", 5)),
        "certificate.schema.json: not a valid draft 2020-12 schema at /properties/iat/type",
        id="metaschema",
    ),
    pytest.param(
        _edit_json(
            "types/marriage.schema.json",
            _set("$schema", "http://json-schema.org/draft-07/schema#"),
        ),
        "types/marriage.schema.json: $schema must be https://json-schema.org/draft/2020-12/schema",
        id="wrong draft",
    ),
    pytest.param(
        _edit_json("exchange/lookup-request.schema.json", _set("$id", SCHEMA_BASE + "x.json")),
        "exchange/lookup-request.schema.json: $id must be "
        + SCHEMA_BASE
        + "exchange/lookup-request.schema.json",
        id="wrong $id",
    ),
    pytest.param(
        _edit_json("exchange/lookup-request.schema.json", _remove("title")),
        "exchange/lookup-request.schema.json: needs a title",
        id="no title",
    ),
    pytest.param(_stray_file, "other.schema.json: unexpected schema file", id="stray file"),
    pytest.param(_unreadable, "exchange/folder.schema.json: cannot read", id="unreadable"),
    pytest.param(
        _delete("certificate.schema.json"), "no certificate.schema.json", id="no certificate"
    ),
    pytest.param(
        _delete("types/marriage.schema.json"),
        "certificate.schema.json: no types/<type>.schema.json for marriage",
        id="listed type without a schema",
    ),
    pytest.param(
        _add_passport,
        "certificate.schema.json: $defs/typeName/enum does not list passport",
        id="type schema not listed",
    ),
    pytest.param(
        _edit_json("certificate.schema.json", _remove("$defs", "typeName", "enum")),
        "certificate.schema.json: $defs/typeName/enum must list the type names",
        id="no type list",
    ),
    pytest.param(
        _edit_json("types/marriage.schema.json", _set("x-type-code", MARRIAGE_CODE[:-1])),
        "types/marriage.schema.json: x-type-code must be",
        id="short type code",
    ),
    pytest.param(
        _edit_json("types/marriage.schema.json", _remove("x-type-code")),
        "types/marriage.schema.json: x-type-code must be",
        id="no type code",
    ),
    pytest.param(
        _edit_json("types/marriage.schema.json", _set("x-holder-kind", "citizen")),
        "types/marriage.schema.json: x-holder-kind must be person or organisation",
        id="holder kind",
    ),
    pytest.param(
        _edit_json("types/marriage.schema.json", _set("properties", "type", "const", "divorce")),
        "types/marriage.schema.json: /properties/type/const must be 'marriage'",
        id="type const",
    ),
    pytest.param(
        _edit_json(
            "types/marriage.schema.json",
            _set("properties", "type_code", "const", MARRIAGE_CODE[:-3] + "999"),
        ),
        f"types/marriage.schema.json: /properties/type_code/const must be '{MARRIAGE_CODE}'",
        id="type code const",
    ),
    pytest.param(
        _edit_json("types/business_licence.schema.json", _set("x-holder-kind", "person")),
        "types/business_licence.schema.json: /properties/holder/properties/id_type/const "
        "must be '111'",
        id="holder id type const",
    ),
    pytest.param(
        _edit_json(
            "types/marriage.schema.json",
            _remove("properties", "data", "additionalProperties"),
        ),
        "types/marriage.schema.json: /properties/data must set additionalProperties false",
        id="open data",
    ),
    pytest.param(
        _same_code_twice,
        f"types/divorce.schema.json: x-type-code {MARRIAGE_CODE} is also the code of marriage",
        id="type code twice",
    ),
    pytest.param(
        _edit_json(
            "exchange/status-request.schema.json",
            _set("properties", "reason", "$ref", "../missing.schema.json#/$defs/x"),
        ),
        "exchange/status-request.schema.json: $ref to " + SCHEMA_BASE + "missing.schema.json, "
        "which is not in",
        id="$ref outside the directory",
    ),
    pytest.param(
        _edit_json(
            "exchange/status-request.schema.json",
            _set("properties", "reason", "$ref", "../certificate.schema.json#/$defs/nope"),
        ),
        "exchange/status-request.schema.json: schema does not compile",
        id="$ref to a missing definition",
    ),
]


@pytest.mark.parametrize(("edit", "message"), BAD_DIRECTORIES)
def test_load_refuses_a_bad_schema_directory(tmp_path: Path, edit: Edit, message: str) -> None:
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, root)
    edit(root)
    with pytest.raises(ConfigError) as caught:
        SchemaSet.load(root)
    assert type(caught.value) is ConfigError
    assert caught.value.code == "config.invalid"
    assert message in caught.value.detail


def test_load_accepts_a_copy(tmp_path: Path) -> None:
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, root)
    (root / "README.md").write_text("not a schema", encoding="utf-8")
    assert SchemaSet.load(root).names() == SchemaSet.load(SCHEMA_DIR).names()


# --- differential: mutated valid documents, jsonschema-rs against jsonschema ---------------------

_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=6,
)


def _locations(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    found = [(path, node)]
    if isinstance(node, dict):
        for key, child in node.items():
            found.extend(_locations(child, (*path, key)))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found.extend(_locations(child, (*path, index)))
    return found


def _replace(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = document
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return document


def _string_edits(text: str) -> list[str]:
    return [
        text + "\n",
        "\n" + text,
        text[:-1],
        text + text[-1:],
        text.upper(),
        text.lower(),
        "",
        text * 40,
        text.replace("-", "/"),
        text.replace("1", "\u0661"),
        text[:4] + "-02-29" if len(text) == 10 else text + "0",
    ]


def _number_edits(number: float) -> list[Any]:
    return [-number, number + 0.5, number * 10**12, str(number), float(number), -1, 2**64]


@st.composite
def mutated(draw: st.DrawFn, corpus: list[tuple[str, dict[str, Any]]]) -> tuple[str, Any]:
    name, original = draw(st.sampled_from(corpus))
    document: Any = copy.deepcopy(original)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path, node = draw(st.sampled_from(_locations(document)))
        operation = draw(st.sampled_from(["drop", "retype", "add", "edit"]))
        if operation == "drop" and path:
            parent = document
            for part in path[:-1]:
                parent = parent[part]
            del parent[path[-1]]
        elif operation == "add" and isinstance(node, dict):
            node[draw(_TEXT)] = draw(_JSON)
        elif operation == "add" and isinstance(node, list):
            duplicate = bool(node) and draw(st.booleans())
            node.append(copy.deepcopy(draw(st.sampled_from(node))) if duplicate else draw(_JSON))
        elif operation == "edit" and isinstance(node, str):
            document = _replace(document, path, draw(st.sampled_from(_string_edits(node))))
        elif operation == "edit" and isinstance(node, int | float) and not isinstance(node, bool):
            document = _replace(document, path, draw(st.sampled_from(_number_edits(node))))
        else:
            document = _replace(document, path, draw(_JSON))
    return name, document


def _differential_corpus() -> list[tuple[str, dict[str, Any]]]:
    return valid_documents(SchemaSet.load(SCHEMA_DIR))


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=mutated(_differential_corpus()))
def test_mutated_documents_get_the_same_verdict_from_both(
    catalog: SchemaSet, case: tuple[str, Any]
) -> None:
    name, document = case
    reference = set(catalog.reference_errors(name, document))
    try:
        catalog.validate(name, document)
    except SchemaViolation as violation:
        found = set(violation.pointers)
    else:
        found = set()
    assert found == reference


def test_the_mutator_mostly_breaks_documents(catalog: SchemaSet) -> None:
    # Guards the test above against a mutator that (silently) produces only valid documents.
    invalid = 0
    total = 0

    @settings(max_examples=100, deadline=None, derandomize=True, database=None)
    @given(case=mutated(_differential_corpus()))
    def count(case: tuple[str, Any]) -> None:
        nonlocal invalid, total
        total += 1
        invalid += bool(catalog.reference_errors(*case))

    count()
    assert invalid > total // 2
