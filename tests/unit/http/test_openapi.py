"""``GET /openapi.json`` against the router it documents and the schema catalog it embeds.

Both directions: every route is documented and every documented operation is routed;
exactly the non-public handlers are secured (and answer 401 without a token); the component
schemas are the catalog's documents, and every ``$ref`` resolves inside the document.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import referencing
import referencing.exceptions
import referencing.jsonschema
from aiohttp.test_utils import TestClient
from conftest import Tokens, marriage_request

from gateway import __version__
from gateway.certificates.schemas import DRAFT_2020_12, SchemaSet
from gateway.http.middleware import PUBLIC
from gateway.http.openapi import component_name

Client = TestClient[Any, Any]
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
_RESPONSE_KEY = re.compile(r"[1-5](?:[0-9]{2}|XX)|default")
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
EXAMPLE_PARAMS = {
    "id": "1.2.156.3005.2.111000000000MCA07A003.113306810025211840.2026000.001.N",
    "list": "0",
    "kid": "ebFfQyg12CSq2SYbkjYEn_v55fT5HUTmMaKsZFyDpeA",
}


@pytest.fixture
async def document(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method, path, operation


def routes(client: Client) -> dict[tuple[str, str], Any]:
    """The router's (method, OpenAPI path) → handler; aiohttp's ``{id:regex}`` → ``{id}``."""
    found = {}
    for route in client.app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue  # HEAD routes aiohttp adds beside GET are not API operations
        path = _PARAM.sub(r"{\1}", route.resource.canonical)
        found[(route.method.lower(), path)] = route.handler
    return found


def resolve_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901: the value at ``pointer`` (``""`` or ``/a/b``) in ``document``."""
    node = document
    for raw in pointer.split("/")[1:] if pointer else []:
        token = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def offline_registry(document: dict[str, Any]) -> referencing.Registry[Any]:
    """Every embedded schema by its ``$id``; anything else is refused, never fetched."""

    def refuse(uri: str) -> referencing.Resource[Any]:
        raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs field

    return referencing.Registry(retrieve=refuse).with_resources(  # type: ignore[call-arg]
        (schema["$id"], referencing.jsonschema.DRAFT202012.create_resource(schema))
        for schema in document["components"]["schemas"].values()
    )


# --- shape -----------------------------------------------------------------------------------


async def test_document_is_openapi_3_1_in_shape(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert document["jsonSchemaDialect"] == DRAFT_2020_12
    assert isinstance(document["info"]["title"], str)
    assert "zhuji" in document["info"]["title"]
    assert document["info"]["version"] == __version__
    assert document["servers"] == [{"url": "http://zhuji.test"}]
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer"}
    assert schemes["hopProof"]["type"] == "apiKey"
    assert schemes["hopProof"]["name"] == "Tongban-Hop"
    assert document["paths"]
    for method, path, operation in operations(document):
        where = f"{method.upper()} {path}"
        assert path.startswith("/"), where
        assert operation["summary"], where
        statuses = operation["responses"]
        assert all(_RESPONSE_KEY.fullmatch(key) for key in statuses), where
        assert any(key.startswith("2") for key in statuses), where
        assert "default" in statuses, where
        for response in statuses.values():
            assert "$ref" in response or "description" in response, where
        for parameter in operation.get("parameters", []):
            assert parameter["in"] in {"path", "query", "header", "cookie"}, where
            assert "schema" in parameter, where


async def test_path_parameters_are_declared_both_ways(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(_PARAM.findall(path)), f"{method.upper()} {path}"
        assert all(
            p["required"] is True for p in operation.get("parameters", []) if p["in"] == "path"
        )


# --- the router ------------------------------------------------------------------------------


async def test_documented_operations_equal_the_routes(
    client: Client, document: dict[str, Any]
) -> None:
    documented = {(method, path) for method, path, _ in operations(document)}
    routed = set(routes(client))
    assert routed - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routed == set(), "documented operations with no route"


async def test_secured_operations_are_exactly_the_non_public_handlers(
    client: Client, document: dict[str, Any]
) -> None:
    def bearer(op: dict[str, Any]) -> bool:
        return any("bearer" in requirement for requirement in op["security"])

    # bearer-secured = the auth middleware's routes; hop-only routes check their proof themselves
    secured = {(m, p) for m, p, op in operations(document) if bearer(op)}
    public = {(m, p) for m, p, op in operations(document) if not bearer(op)}
    handlers = routes(client)
    protected = {key for key, handler in handlers.items() if not getattr(handler, PUBLIC, False)}
    assert secured == protected
    assert public == set(handlers) - protected
    for method, path, operation in operations(document):
        if (method, path) in secured:
            assert operation["security"] in ([{"bearer": []}], [{"bearer": [], "hopProof": []}])
            assert "401" in operation["responses"]


async def test_documented_security_is_what_the_node_enforces(
    client: Client, document: dict[str, Any]
) -> None:
    for method, path, operation in operations(document):
        url = path.format(**EXAMPLE_PARAMS)
        response = await client.request(method, url, params={"matter": "marriage-registration"})
        if operation["security"]:
            assert response.status == 401, f"{method.upper()} {path}"
        else:
            assert response.status != 401, f"{method.upper()} {path}"


# --- schemas ---------------------------------------------------------------------------------


async def test_component_schemas_are_the_catalog_documents(
    document: dict[str, Any], schemas: SchemaSet
) -> None:
    expected = {component_name(name): doc for name, doc in schemas.schema_documents().items()}
    assert document["components"]["schemas"] == expected
    for schema in expected.values():
        jsonschema.Draft202012Validator.check_schema(schema)


async def test_every_ref_resolves_inside_the_document(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    outside = {key: value for key, value in document.items() if key != "components"}
    outside["components"] = {k: v for k, v in document["components"].items() if k != "schemas"}
    # Outside the embedded schemas: local references into this document only.
    local = list(refs(outside))
    assert "#/components/schemas/exchange_issue_request" in local
    for ref in local:
        assert ref.startswith("#/"), ref
        assert resolve_pointer(document, ref[1:]) is not None, ref
    # Inside each embedded schema: references relative to its $id, resolved against the
    # other embedded schemas alone (the registry refuses to fetch anything).
    registry = offline_registry(document)
    across = 0
    for schema in components.values():
        resolver = registry.resolver(base_uri=schema["$id"])
        for ref in refs(schema):
            across += not ref.startswith("#")
            assert resolver.lookup(ref).contents is not None, (schema["$id"], ref)
    assert across > 0


@pytest.mark.parametrize(
    ("method", "path", "valid", "invalid"),
    [
        ("post", "/v1/certificates", marriage_request(), marriage_request(type="passport")),
        (
            "post",
            "/v1/certificates/{id}/status",
            {"action": "suspend", "reason": "lost"},
            {"action": "delete", "reason": "lost"},
        ),
        ("post", "/v1/seals/verify", {"seals": ["x"]}, {"seals": []}),
    ],
)
async def test_request_body_schemas_validate_offline(
    document: dict[str, Any],
    method: str,
    path: str,
    valid: dict[str, Any],
    invalid: dict[str, Any],
) -> None:
    body = document["paths"][path][method]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    assert ref.startswith("#/components/schemas/")
    schema = resolve_pointer(document, ref[1:])
    validator = jsonschema.Draft202012Validator(
        schema,
        registry=offline_registry(document),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    assert list(validator.iter_errors(valid)) == []
    assert list(validator.iter_errors(invalid)) != []


async def test_verify_response_schema_describes_real_answers(
    client: Client, document: dict[str, Any], tokens: Tokens
) -> None:
    ok = document["paths"]["/v1/seals/verify"]["post"]["responses"]["200"]
    schema = resolve_pointer(document, ok["content"]["application/json"]["schema"]["$ref"][1:])
    response = await client.post(
        "/v1/seals/verify",
        json={"seals": ["x", "a.b.c"]},
        headers={"Authorization": f"Bearer {tokens.client('zhuji-civil-affairs')}"},
    )
    validator = jsonschema.Draft202012Validator(schema, registry=offline_registry(document))
    assert list(validator.iter_errors(await response.json())) == []
