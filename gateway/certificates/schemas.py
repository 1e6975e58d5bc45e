"""The JSON Schemas of certificates and exchange envelopes, and their validators.

The schemas live in the repository's ``schemas/`` directory, one draft 2020-12 document a
file, each with a ``$id`` under :data:`SCHEMA_BASE` that mirrors its path:

- ``certificate.schema.json``: the sealed certificate document (the seal's JWS payload);
  its ``$defs`` hold the shared building blocks (dates, credit codes, holders...);
- ``types/<type>.schema.json``: one per certificate type, the whole certificate narrowed to
  that type. Each carries ``x-type-code`` and ``x-holder-kind``: the schema files are the
  only table of certificate types and their codes;
- ``exchange/<name>.schema.json``: the HTTP request and response envelopes.

A :class:`SchemaSet` is loaded once at start-up. Loading checks every file against the
draft 2020-12 metaschema and the schema set's own rules (``$id`` matches the path, type schemas
agree with the type list), and compiles one jsonschema-rs validator per schema for the hot
path. jsonschema (the Python implementation) is kept beside it as the reference, for
differential tests. Validation raises :class:`~gateway.errors.SchemaViolation` carrying the
RFC 6901 pointer of every failing field; it never returns a verdict to forget.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urldefrag, urljoin

import jsonschema
import jsonschema.exceptions
import jsonschema_rs
import referencing
import referencing.jsonschema

from gateway._internal.wire import JsonLimits, loads
from gateway.errors import (
    ConfigError,
    InputError,
    NotFoundError,
    SchemaViolation,
    UnknownCertificateType,
)
from gateway.identifiers import CertificateIdentifier

SCHEMA_BASE = "https://schemas.tongban.example/"
"""Every schema's ``$id`` is this base followed by the file's path under ``schemas/``."""

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

CERTIFICATE = "certificate"
"""Catalog name of the generic certificate schema."""

TYPE_PREFIX = "type:"
"""Catalog names of certificate-type schemas: ``type:marriage``."""

EXCHANGE_PREFIX = "exchange:"
"""Catalog names of exchange envelopes: ``exchange:issue-request``."""

MAX_REPORTED_ERRORS = 256
"""At most this many failing fields are reported for one document."""

HolderKind = Literal["person", "organisation"]

HOLDER_ID_TYPES: Mapping[HolderKind, str] = {"person": "111", "organisation": "001"}
"""GB/T 36903 holder id type for each holder kind: resident ID number, credit code."""

_SCHEMA_SUFFIX = ".schema.json"
_TYPE_CODE = re.compile(r"[0-9A-HJ-NPQRTUWXY]{18}[0-9]{3}")
_TYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_EXCHANGE_NAME = re.compile(r"[a-z][a-z0-9-]{0,63}")
_SCHEMA_FILE_LIMITS = JsonLimits(max_depth=64, max_string=65_536, max_members=100_000)
_MAX_LISTED_OPTIONS = 10


@dataclass(frozen=True, slots=True)
class CertificateTypeInfo:
    """One certificate type, as its schema file declares it."""

    name: str
    """Machine name, e.g. ``household_register``."""
    title: str
    """证照名称, the schema's title, e.g. ``居民户口簿``; certificates carry it as ``name``."""
    type_code: str
    """证照类型代码: the defining authority's credit code and three digits."""
    holder_kind: HolderKind
    schema_id: str

    @property
    def holder_id_type(self) -> str:
        """The holder id type every certificate of this type carries (111 or 001)."""
        return HOLDER_ID_TYPES[self.holder_kind]


@dataclass(frozen=True, slots=True)
class _Schema:
    name: str
    path: Path
    document: Mapping[str, Any]
    validator: jsonschema_rs.Validator
    reference: jsonschema.Draft202012Validator


class SchemaSet:
    """Every schema of a ``schemas/`` directory, checked and compiled once.

    Build it with :meth:`load`. Schema names are ``certificate``, ``type:<type name>`` and
    ``exchange:<envelope name>``.
    """

    def __init__(
        self,
        schemas: Mapping[str, _Schema],
        types: Mapping[str, CertificateTypeInfo],
    ) -> None:
        self._schemas = dict(schemas)
        self._types = dict(types)

    # --- loading ----------------------------------------------------------------------------

    @classmethod
    def load(cls, directory: Path) -> SchemaSet:
        """Read, check and compile every ``*.schema.json`` under ``directory``.

        Raises :class:`ConfigError` naming the offending file.
        """
        # 1. Read each file strictly (duplicate members are an error) and check it against
        #    the draft 2020-12 metaschema and the schema set's naming rules.
        documents: dict[str, tuple[Path, dict[str, Any]]] = {}
        for path in sorted(directory.rglob(f"*{_SCHEMA_SUFFIX}")):
            relative = path.relative_to(directory)
            name = _schema_name(relative)
            document = _read_schema(path, relative)
            documents[name] = (relative, document)
        if CERTIFICATE not in documents:
            raise ConfigError(f"{directory}: no certificate{_SCHEMA_SUFFIX}")

        # 2. The type schemas must describe exactly the types the certificate schema lists.
        types = _certificate_types(documents)

        # 3. Every $ref must name a schema of this directory: nothing is ever fetched.
        known = {document["$id"] for _, document in documents.values()}
        for relative, document in documents.values():
            for ref in _external_refs(document):
                if ref not in known:
                    raise ConfigError(f"{relative}: $ref to {ref}, which is not in {directory}")

        # 4. Compile, with one registry of every document for the cross-file $refs.
        try:
            rs_registry = jsonschema_rs.Registry(
                [(document["$id"], document) for _, document in documents.values()]
            )
        except ValueError as exc:  # pragma: no cover - step 3 finds what this would
            raise ConfigError(f"{directory}: schemas do not resolve: {exc}") from exc
        reference_registry: referencing.Registry[Any] = referencing.Registry().with_resources(
            (document["$id"], referencing.jsonschema.DRAFT202012.create_resource(document))
            for _, document in documents.values()
        )
        schemas: dict[str, _Schema] = {}
        for name, (relative, document) in documents.items():
            try:
                validator = jsonschema_rs.Draft202012Validator(
                    document, validate_formats=True, registry=rs_registry, offline=True
                )
            except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
                raise ConfigError(f"{relative}: schema does not compile: {exc}") from exc
            reference = jsonschema.Draft202012Validator(
                document,
                registry=reference_registry,
                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
            )
            schemas[name] = _Schema(name, relative, document, validator, reference)
        return cls(schemas, types)

    # --- the set ------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every schema name, sorted."""
        return sorted(self._schemas)

    def certificate_types(self) -> list[CertificateTypeInfo]:
        """Every certificate type, in the order the certificate schema lists them."""
        return list(self._types.values())

    def certificate_type_of(self, certificate_id: CertificateIdentifier) -> CertificateTypeInfo:
        """The type a certificate id names by its type code (GB/T 36904), without fetching
        the certificate; raises :class:`UnknownCertificateType` for a code no type has."""
        for info in self._types.values():
            if info.type_code == certificate_id.type_code:
                return info
        raise UnknownCertificateType("the certificate id names no known certificate type")

    def certificate_type(self, name: str) -> CertificateTypeInfo:
        """The type called ``name``; raises :class:`UnknownCertificateType`."""
        info = self._types.get(name)
        if info is None:
            raise UnknownCertificateType(f"unknown certificate type {name[:64]!r}")
        return info

    def schema_documents(self) -> dict[str, Any]:
        """Every schema document by name, for ``GET /v1/schemas`` (a copy; safe to change)."""
        return {name: copy.deepcopy(self._schemas[name].document) for name in self.names()}

    def validator(self, name: str) -> jsonschema_rs.Validator:
        """The compiled hot-path validator of ``name`` (compiled once, at load)."""
        return self._schema(name).validator

    # --- validation -------------------------------------------------------------------------

    def validate(self, name: str, document: object) -> None:
        """Check ``document`` against the schema ``name``.

        Raises :class:`SchemaViolation` whose ``pointers`` name every failing field (a
        missing member is named where it should be, an unexpected one where it is; at most
        :data:`MAX_REPORTED_ERRORS`) and whose ``errors[i]`` describes ``pointers[i]``, or
        :class:`UnknownCertificateType` / :class:`NotFoundError` for an unknown name.
        """
        schema = self._schema(name)
        try:
            if schema.validator.is_valid(document):
                return
            errors = list(schema.validator.iter_errors(document))
        except ValueError as exc:  # a Python value JSON cannot carry (set, non-str key...)
            raise SchemaViolation(
                f"document for {name} is not JSON data",
                pointers=("",),
                errors=("(document): is not JSON data",),
            ) from exc
        failures = _failures(_rs_failures(errors))
        pointers = tuple(failures)
        shown = "" if len(pointers) < MAX_REPORTED_ERRORS else f" (first {MAX_REPORTED_ERRORS})"
        raise SchemaViolation(
            f"document does not match the schema {name}: {len(pointers)} failing field(s){shown}",
            pointers=pointers,
            errors=tuple(
                f"{pointer or '(document)'}: {message}" for pointer, message in failures.items()
            ),
        )

    def validate_certificate(self, document: object) -> None:
        """Check a certificate document against the schema of the type it names.

        A document naming no known type is checked against the generic certificate schema,
        which reports its ``type`` (and whatever else is wrong).
        """
        unverified_type = document.get("type") if isinstance(document, dict) else None
        if isinstance(unverified_type, str) and unverified_type in self._types:
            self.validate(TYPE_PREFIX + unverified_type, document)
            return
        self.validate(CERTIFICATE, document)
        # The certificate schema's type enum equals the set of type schemas (checked at
        # load), so a document reaching this line named no known type and cannot be valid.
        raise SchemaViolation(  # pragma: no cover - defensive
            "certificate names no known type", pointers=("/type",), errors=("/type: unknown",)
        )

    def reference_errors(self, name: str, document: object) -> list[str]:
        """Pointers of the failing fields by the reference implementation (jsonschema).

        For differential tests: equal, as a set, to a :class:`SchemaViolation`'s pointers.
        """
        schema = self._schema(name)
        return list(dict.fromkeys(_reference_pointers(schema.reference.iter_errors(document))))

    def _schema(self, name: str) -> _Schema:
        schema = self._schemas.get(name)
        if schema is not None:
            return schema
        if name.startswith(TYPE_PREFIX):
            raise UnknownCertificateType(
                f"unknown certificate type {name.removeprefix(TYPE_PREFIX)[:64]!r}"
            )
        raise NotFoundError(f"no schema named {name[:64]!r}", code="schema.not_found")


def default_schema_dir() -> Path:
    """The repository's ``schemas/`` directory."""
    return Path(__file__).resolve().parents[2] / "schemas"


# --- loading helpers ------------------------------------------------------------------------


def _schema_name(relative: Path) -> str:
    parts = relative.parts
    stem = parts[-1].removesuffix(_SCHEMA_SUFFIX)
    if parts == (f"{CERTIFICATE}{_SCHEMA_SUFFIX}",):
        return CERTIFICATE
    if len(parts) == 2 and parts[0] == "types" and _TYPE_NAME.fullmatch(stem):
        return TYPE_PREFIX + stem
    if len(parts) == 2 and parts[0] == "exchange" and _EXCHANGE_NAME.fullmatch(stem):
        return EXCHANGE_PREFIX + stem
    raise ConfigError(
        f"{relative}: unexpected schema file (expected certificate{_SCHEMA_SUFFIX}, "
        f"types/<type>{_SCHEMA_SUFFIX} or exchange/<name>{_SCHEMA_SUFFIX})"
    )


def _read_schema(path: Path, relative: Path) -> dict[str, Any]:
    try:
        document = loads(path.read_bytes(), _SCHEMA_FILE_LIMITS)
    except OSError as exc:
        raise ConfigError(f"{relative}: cannot read: {exc.strerror}") from exc
    except InputError as exc:
        raise ConfigError(f"{relative}: not strict JSON: {exc.detail}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{relative}: a schema must be a JSON object")
    try:
        jsonschema.Draft202012Validator.check_schema(document)
    except jsonschema.exceptions.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path)
        raise ConfigError(
            f"{relative}: not a valid draft 2020-12 schema at /{where}: {exc.message}"
        ) from exc
    if document.get("$schema") != DRAFT_2020_12:
        raise ConfigError(f"{relative}: $schema must be {DRAFT_2020_12}")
    expected_id = SCHEMA_BASE + relative.as_posix()
    if document.get("$id") != expected_id:
        raise ConfigError(f"{relative}: $id must be {expected_id}")
    for member in ("title", "description"):
        if not isinstance(document.get(member), str) or not document[member]:
            raise ConfigError(f"{relative}: needs a {member}")
    return document


def _certificate_types(
    documents: Mapping[str, tuple[Path, dict[str, Any]]],
) -> dict[str, CertificateTypeInfo]:
    relative, certificate = documents[CERTIFICATE]
    listed = _dig(certificate, "$defs", "typeName", "enum")
    if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
        raise ConfigError(f"{relative}: $defs/typeName/enum must list the type names")
    found = {name.removeprefix(TYPE_PREFIX) for name in documents if name.startswith(TYPE_PREFIX)}
    if missing := sorted(set(listed) - found):
        raise ConfigError(f"{relative}: no types/<type>{_SCHEMA_SUFFIX} for {', '.join(missing)}")
    if unlisted := sorted(found - set(listed)):
        raise ConfigError(f"{relative}: $defs/typeName/enum does not list {', '.join(unlisted)}")

    types: dict[str, CertificateTypeInfo] = {}
    codes: dict[str, str] = {}
    for name in listed:
        info = _type_info(name, *documents[TYPE_PREFIX + name])
        if (other := codes.get(info.type_code)) is not None:
            raise ConfigError(
                f"{documents[TYPE_PREFIX + name][0]}: x-type-code {info.type_code} "
                f"is also the code of {other}"
            )
        codes[info.type_code] = name
        types[name] = info
    return types


def _type_info(name: str, relative: Path, document: Mapping[str, Any]) -> CertificateTypeInfo:
    type_code = document.get("x-type-code")
    if not isinstance(type_code, str) or not _TYPE_CODE.fullmatch(type_code):
        raise ConfigError(f"{relative}: x-type-code must be 18 credit-code characters + 3 digits")
    holder_kind = document.get("x-holder-kind")
    if holder_kind not in HOLDER_ID_TYPES:
        raise ConfigError(f"{relative}: x-holder-kind must be person or organisation")
    kind = cast(HolderKind, holder_kind)
    # The schema itself must pin what the set says, so the two cannot drift apart.
    pins = {
        ("properties", "type", "const"): name,
        ("properties", "type_code", "const"): type_code,
        ("properties", "holder", "properties", "id_type", "const"): HOLDER_ID_TYPES[kind],
    }
    for where, expected in pins.items():
        if _dig(document, *where) != expected:
            raise ConfigError(f"{relative}: /{'/'.join(where)} must be {expected!r}")
    if _dig(document, "properties", "data", "additionalProperties") is not False:
        raise ConfigError(f"{relative}: /properties/data must set additionalProperties false")
    return CertificateTypeInfo(
        name=name,
        title=document["title"],
        type_code=type_code,
        holder_kind=kind,
        schema_id=document["$id"],
    )


def _external_refs(document: Mapping[str, Any]) -> Iterator[str]:
    """The documents (URIs without fragment) that ``document``'s ``$ref``s point into."""
    base = str(document["$id"])
    stack: list[object] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                yield urldefrag(urljoin(base, ref)).url
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _dig(document: Mapping[str, Any], *path: str) -> object:
    node: object = document
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


# --- error reporting ------------------------------------------------------------------------


def _pointer(path: Iterable[str | int]) -> str:
    """RFC 6901 JSON pointer of a path (``~`` and ``/`` escaped)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _failures(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """First message per pointer, in order, at most :data:`MAX_REPORTED_ERRORS` pointers."""
    failures: dict[str, str] = {}
    for pointer, message in items:
        if pointer not in failures:
            if len(failures) == MAX_REPORTED_ERRORS:
                break
            failures[pointer] = message
    return failures


def _rs_failures(errors: Iterable[jsonschema_rs.ValidationError]) -> Iterator[tuple[str, str]]:
    for error in errors:
        path = list(error.instance_path)
        keyword = error.kind.name
        facts: dict[str, Any] = error.kind.as_dict()
        if keyword == "required":
            yield _pointer([*path, facts["property"]]), "is required"
        elif keyword in {"additionalProperties", "unevaluatedProperties"}:
            for member in facts["unexpected"]:
                yield _pointer([*path, member]), "is not allowed here"
        else:
            yield _pointer(path), _describe(keyword, facts)


def _describe(keyword: str, facts: Mapping[str, Any]) -> str:
    """A short message about the failed keyword; never quotes the (possibly personal) value."""
    limit = facts.get("limit")
    match keyword:
        case "type":
            return f"must be of type {' or '.join(facts.get('types', ()))}"
        case "const":
            return f"must be {json.dumps(facts.get('expected_value'), ensure_ascii=False)}"
        case "enum":
            return _describe_enum(facts.get("options", []))
        case "pattern":
            return f"does not match {facts.get('pattern')}"
        case "format":
            return f"is not a valid {facts.get('format')}"
        case "minLength":
            return f"is shorter than {limit} characters"
        case "maxLength":
            return f"is longer than {limit} characters"
        case "minimum":
            return f"is less than {limit}"
        case "maximum":
            return f"is greater than {limit}"
        case "minItems":
            return f"has fewer than {limit} items"
        case "maxItems":
            return f"has more than {limit} items"
        case "uniqueItems":
            return "has duplicate items"
        case "maxProperties":
            return f"has more than {limit} members"
        case "not":
            return "is in a form this field does not allow (e.g. a line break)"
        case _:
            return f"fails {keyword}"


def _describe_enum(options: list[Any]) -> str:
    if len(options) > _MAX_LISTED_OPTIONS:
        return "is not one of the allowed values"
    return "must be one of " + ", ".join(json.dumps(o, ensure_ascii=False) for o in options)


def _reference_pointers(errors: Iterable[jsonschema.ValidationError]) -> Iterator[str]:
    for error in errors:
        path = list(error.absolute_path)
        instance = error.instance
        required = error.validator_value
        if error.validator == "required" and isinstance(instance, dict):
            for member in required if isinstance(required, list) else ():
                if member not in instance:
                    yield _pointer([*path, member])
        elif error.validator == "additionalProperties" and isinstance(instance, dict):
            schema = error.schema if isinstance(error.schema, dict) else {}
            declared = schema.get("properties", {})
            patterns = schema.get("patternProperties", {})
            for member in instance:
                if member not in declared and not any(re.search(p, member) for p in patterns):
                    yield _pointer([*path, member])
        else:
            yield _pointer(path)
