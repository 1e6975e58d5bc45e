"""The node's OpenAPI 3.1 document. A test checks it against the router, both ways."""

from __future__ import annotations

from typing import Any

from gateway import __version__
from gateway.certificates.schemas import DRAFT_2020_12
from gateway.services.node import NodeService

_PROBLEM = {"$ref": "#/components/responses/Problem"}


def _op(
    summary: str,
    *,
    tag: str,
    ok: int = 200,
    ok_schema: dict[str, Any] | None = None,
    ok_media: str = "application/json",
    body: str | None = None,
    secured: bool = True,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (),
    hop: bool = False,
) -> dict[str, Any]:
    """One operation. ``secured``: a bearer token; ``hop``: a node's Tongban-Hop proof too."""
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "responses": {
            str(ok): {
                "description": "OK" if ok == 200 else "Created",
                "content": {ok_media: {"schema": ok_schema or {"type": "object"}}},
            },
            **{str(status): _PROBLEM for status in errors},
            "default": _PROBLEM,
        },
    }
    requirement: dict[str, list[str]] = {}
    if secured:
        requirement["bearer"] = []
    if hop:
        requirement["hopProof"] = []
    op["security"] = [requirement] if requirement else []
    if requirement:
        op["responses"].update({"401": _PROBLEM, "403": _PROBLEM})
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema_ref(body)}},
        }
        op["responses"].update({"400": _PROBLEM, "413": _PROBLEM, "415": _PROBLEM, "422": _PROBLEM})
    if params:
        op["parameters"] = params
    return op


def _schema_ref(name: str) -> dict[str, str]:
    """A ``$ref`` to the catalog schema ``name``, embedded under ``components.schemas``."""
    return {"$ref": f"#/components/schemas/{component_name(name)}"}


def _path_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _query(name: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
    }


_KID = _path_param("kid", "RFC 7638 thumbprint", {"type": "string", "maxLength": 128})
_CERT_ID = _path_param(
    "id", "GB/T 36904 certificate identifier", {"type": "string", "maxLength": 128}
)


def build_openapi(node: NodeService) -> dict[str, Any]:
    # Every schema document is embedded whole. Each keeps its ``$id``, so the absolute
    # ``$ref``s between them (``…/certificate.schema.json#/$defs/holder``) resolve to a
    # resource inside this document (JSON Schema 2020-12 bundling) and nothing is fetched.
    components = {
        component_name(name): document for name, document in node.schemas.schema_documents().items()
    }
    limits = node.federation.limits
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": DRAFT_2020_12,
        "info": {
            "title": f"Tongban node {node.node.id} ({node.node.name})",
            "version": __version__,
            "description": (
                "A regional node of the Tongban (通办) federation: issues, stores and serves "
                "sealed electronic certificates and verifies seals. Errors are RFC 9457 "
                "problem+json with a stable `code`. Request bodies are uncompressed "
                "`application/json`. Limits: body "
                f"{limits.max_body_bytes} bytes, JSON depth {limits.max_json_depth}, "
                f"batch {limits.max_batch} seals, token {limits.max_token_bytes} bytes."
            ),
        },
        "servers": [{"url": node.public_url}],
        "paths": {
            "/healthz": {"get": _op("Liveness", tag="ops", secured=False)},
            "/readyz": {"get": _op("Readiness", tag="ops", secured=False, errors=(503,))},
            "/metrics": {
                "get": _op(
                    "Prometheus metrics",
                    tag="ops",
                    secured=False,
                    ok_media="text/plain",
                    ok_schema={"type": "string"},
                )
            },
            "/openapi.json": {"get": _op("This document", tag="ops", secured=False)},
            "/.well-known/jwks.json": {
                "get": _op(
                    "Seal keys of this node (JWKS with status and validity)",
                    tag="keys",
                    secured=False,
                )
            },
            "/v1/schemas": {
                "get": _op(
                    "JSON Schemas of certificates and exchanges", tag="catalogs", secured=False
                )
            },
            "/v1/matters": {"get": _op("Catalog of matters (事项)", tag="catalogs", secured=False)},
            "/v1/status-lists/{list}": {
                "get": _op(
                    "IETF Token Status List token",
                    tag="status",
                    secured=False,
                    ok_media="application/statuslist+jwt",
                    ok_schema={"type": "string"},
                    params=[
                        _path_param(
                            "list",
                            "status list number",
                            {"type": "string", "pattern": "^[0-9]{1,9}$"},
                        )
                    ],
                    errors=(400, 404),
                )
            },
            "/v1/certificates": {
                "post": _op(
                    "Issue a certificate (department of this node)",
                    tag="certificates",
                    ok=201,
                    body="exchange:issue-request",
                )
            },
            "/v1/certificates/{id}": {
                "get": _op(
                    "Fetch a sealed certificate with its verification report",
                    tag="certificates",
                    params=[
                        _CERT_ID,
                        {
                            "name": "matter",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "maxLength": 64},
                        },
                    ],
                    errors=(400, 404, 502, 504),
                )
            },
            "/v1/certificates/{id}/status": {
                "post": _op(
                    "Suspend, reinstate or revoke",
                    tag="certificates",
                    params=[_CERT_ID],
                    body="exchange:status-request",
                    errors=(404, 409),
                )
            },
            "/v1/seals/verify": {
                "post": _op(
                    f"Verify up to {limits.max_batch} sealed documents",
                    tag="seals",
                    body="exchange:verify-request",
                    ok_schema=_schema_ref("exchange:verify-response"),
                )
            },
            "/v1/lookups": {
                "post": _op(
                    "Find a holder's certificates of the named types anywhere in the federation "
                    "(national's catalog, then routed fetches; consent in Tongban-Consent)",
                    tag="exchange",
                    body="exchange:lookup-request",
                    ok_schema=_schema_ref("exchange:lookup-response"),
                    errors=(404, 502, 504),
                )
            },
            "/v1/trust-list": {
                "get": _op(
                    "The federation trust list this node trusts (JWS signed by the root key)",
                    tag="trust",
                    secured=False,
                    ok_media="application/jwt",
                    ok_schema={"type": "string"},
                    errors=(503,),
                )
            },
            "/v1/exchange/fetch": {
                "post": _op(
                    "Node to node: one hop of a routed fetch (Tongban-Hop proof, the caller's "
                    "token, Tongban-Consent)",
                    tag="federation",
                    errors=(400, 404, 502, 504),
                    hop=True,
                )
            },
            "/v1/catalog/entries": {
                "post": _op(
                    "Node to national: register a held certificate, or a later status of it "
                    "(status_event orders them; Tongban-Hop proof; holder as a keyed digest "
                    "only)",
                    tag="federation",
                    ok=201,
                    secured=False,
                    errors=(400, 404, 409),
                    hop=True,
                )
            },
            "/v1/admin/key-changes": {
                "post": _op(
                    "Node to national: a key change (prepublish, activate, retire, revoke) "
                    "signed by the node's current key; national republishes the trust list",
                    tag="federation",
                    secured=False,
                    errors=(400, 404, 409),
                    hop=True,
                )
            },
            "/v1/admin/keys": {
                "get": _op("This node's seal keys (keys:admin, this node's ops)", tag="admin")
            },
            "/v1/admin/keys/rotate": {
                "post": _op(
                    "Rotate: pre-publish a next key, activate it once every node trusts it"
                    ' (body {"alg": "EdDSA" | "Ed25519" | "ES256" | "SM2"}, default the'
                    " federation file's seal_alg)",
                    tag="admin",
                    errors=(400, 502, 504),
                )
            },
            "/v1/admin/keys/{kid}/retire": {
                "post": _op(
                    "Retire a key (it keeps verifying)",
                    tag="admin",
                    params=[_KID],
                    errors=(404, 409),
                )
            },
            "/v1/admin/keys/{kid}/revoke": {
                "post": _op(
                    'Revoke a key from a time (body {"at": NumericDate}, default now)',
                    tag="admin",
                    params=[_KID],
                    errors=(404, 409),
                )
            },
            "/v1/audit/head": {
                "get": _op("The audit log's signed tree head (public)", tag="audit", secured=False)
            },
            "/v1/audit/entries": {
                "get": _op(
                    "Audit entries [start, end), at most 1000 (audit:read, this node's auditors)",
                    tag="audit",
                    params=[_query("start"), _query("end")],
                    errors=(400,),
                )
            },
            "/v1/audit/proofs/inclusion": {
                "get": _op(
                    "RFC 9162 inclusion proof of entry seq in the tree of tree_size"
                    " (this node's auditors)",
                    tag="audit",
                    params=[_query("seq", True), _query("tree_size", True)],
                    errors=(400,),
                )
            },
            "/v1/audit/proofs/consistency": {
                "get": _op(
                    "RFC 9162 consistency proof between two tree sizes (public)",
                    tag="audit",
                    secured=False,
                    params=[_query("first", True), _query("second", True)],
                    errors=(400,),
                )
            },
            "/v1/audit/issuance-proof": {
                "get": _op(
                    "Proof that a certificate's issuance is in a signed tree head older than a "
                    "time (for seals by a key revoked later)",
                    tag="audit",
                    secured=False,
                    params=[
                        {
                            "name": "certificate_id",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "maxLength": 128},
                        },
                        _query("before", True),
                    ],
                    errors=(400, 404),
                )
            },
            "/v1/audit/cosignatures": {
                "get": _op(
                    "This node's witness cosignatures (typ audit-cosig+jws) of a partner's"
                    " signed tree heads larger than `after` entries, smallest first (public)",
                    tag="audit",
                    secured=False,
                    params=[
                        {
                            "name": "origin",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "maxLength": 32},
                        },
                        _query("after"),
                    ],
                    errors=(400,),
                )
            },
            "/v1/catalog/lookups": {
                "post": _op(
                    "Node to national: which nodes hold a holder digest's certificates",
                    tag="federation",
                    errors=(400, 404),
                    hop=True,
                )
            },
            **_case_paths(node),
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "hopProof": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Tongban-Hop",
                    "description": "node-to-node only: a JWS (typ hop+jws) signed by the "
                    "calling node's seal key over method, path, body digest, time and nonce",
                },
            },
            "schemas": components,
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details with a stable `code`",
                    "content": {
                        "application/problem+json": {
                            "schema": {
                                "type": "object",
                                "required": ["type", "title", "status", "code"],
                                "properties": {
                                    "type": {"type": "string"},
                                    "title": {"type": "string"},
                                    "status": {"type": "integer"},
                                    "detail": {"type": "string"},
                                    "code": {"type": "string"},
                                    "instance": {"type": "string"},
                                    "request_id": {"type": "string"},
                                    "errors": {"type": "array"},
                                },
                            }
                        }
                    },
                }
            },
        },
    }


_CASE_ID = _path_param(
    "id",
    "case number <region>-<YYYYMMDD>-<seq>",
    {"type": "string", "pattern": "^[0-9]{6}-[0-9]{8}-[0-9]{6}$"},
)


def _case_paths(node: NodeService) -> dict[str, Any]:
    """Cases (办件) and their webhooks."""
    limits = node.federation.limits
    idempotency = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "a retried intake with the same key returns the same case and writes "
        "nothing twice (header Idempotent-Replayed: true)",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    }
    listing = [
        {"name": "box", "in": "query", "schema": {"enum": ["inbox", "outbox"]}},
        {"name": "state", "in": "query", "schema": {"type": "string", "maxLength": 32}},
        {"name": "after", "in": "query", "schema": {"type": "string", "maxLength": 32}},
        {"name": "limit", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,6}$"}},
    ]
    return {
        "/v1/cases": {
            "post": _op(
                "Receive an application (受理): at a window of this node (case:intake, "
                "channel window, 代收代办) or online by the applicant's own token (channel "
                "online, 全程网办). Answers the case with its sealed receipt. Materials: at most "
                f"{limits.max_materials_per_case}, each at most {limits.max_material_bytes} "
                "bytes; every missing required material is named by pointer (422 "
                "case.materials_missing)",
                tag="cases",
                ok=201,
                body="exchange:case-request",
                params=[idempotency],
                errors=(409,),
            ),
            "get": _op(
                "A department's inbox (cases it owns, case:decide) or outbox (cases its window "
                f"received, case:intake), or an applicant's cases; {limits.max_case_page} a "
                "page, `next` is the cursor for `after`",
                tag="cases",
                params=listing,
                errors=(400,),
            ),
        },
        "/v1/cases/{id}": {
            "get": _op(
                "A case: state, owner, window, due date, overdue, result, receipt, the actions "
                "allowed to the caller (its window, owner or applicant; 404 for anyone else)",
                tag="cases",
                params=[_CASE_ID],
                errors=(404,),
            )
        },
        "/v1/cases/{id}/events": {
            "get": _op(
                "The case's sealed events in order (each a JWS, typ case-event+jws)",
                tag="cases",
                params=[_CASE_ID],
                errors=(404,),
            )
        },
        "/v1/cases/{id}/result": {
            "get": _op(
                "The decided case's result certificate (sealed, with its verification report) "
                "for its applicant or owner at the owning node; a 303 to the owning node "
                "elsewhere; the window's department fetches it with the applicant's consent",
                tag="cases",
                params=[_CASE_ID],
                errors=(404,),
            )
        },
        "/v1/cases/{id}/actions": {
            "post": _op(
                "Act on a case: the owner decides (accept, not_accept, request_correction, "
                "suspend, resume, approve, refuse, deliver, complete, return); the window "
                "supplements; the applicant (or the window) withdraws. 403 case.wrong_owner, "
                "409 case.bad_transition with `allowed`",
                tag="cases",
                params=[_CASE_ID],
                body="exchange:case-action",
                errors=(404, 409, 502, 504),
            )
        },
        "/v1/exchange/cases": {
            "post": _op(
                "Node to node: a case package or event along its route (Tongban-Hop proof; "
                "the owner checks the package against the receipt's seal)",
                tag="federation",
                secured=False,
                errors=(400, 404, 409, 422, 502, 504),
                hop=True,
            )
        },
        "/v1/webhooks": {
            "post": _op(
                "Subscribe a departmental system to its cases' transitions: CloudEvents 1.0 "
                "JSON POSTs signed by the node (header Tongban-Signature, typ webhook+jws), "
                "retried with backoff, de-duplicated by event id",
                tag="cases",
                ok=201,
                errors=(400, 409),
            ),
            "get": _op("This department's subscriptions", tag="cases"),
        },
        "/v1/webhooks/{id}": {
            "delete": _op(
                "Unsubscribe",
                tag="cases",
                ok=204,
                params=[_path_param("id", "subscription id", {"type": "string"})],
                errors=(404,),
            )
        },
    }


def component_name(name: str) -> str:
    """The ``components.schemas`` key of a schema of the set: ``exchange:issue-request`` →
    ``exchange_issue_request``."""
    return name.replace(":", "_").replace("-", "_")
