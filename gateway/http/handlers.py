"""HTTP handlers of a regional node: parse, call the service, respond. Nothing else."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from aiohttp import web

from gateway._internal.wire import JsonLimits, b64url_encode, is_int, loads
from gateway.audit.records import AuditKind
from gateway.certificates.documents import check_party
from gateway.certificates.holders import holder_digest
from gateway.certificates.revocation import PROOF_PATH
from gateway.crypto.jwks import Alg, key_alg
from gateway.crypto.reports import dump_reports
from gateway.errors import (
    Forbidden,
    GatewayError,
    InputError,
    NotFoundError,
    SealIndeterminate,
    UnsupportedMediaType,
)
from gateway.federation.fetch import EXCHANGE_PATH
from gateway.federation.hops import HOP_HEADER
from gateway.federation.keyrotation import KEY_CHANGES_PATH
from gateway.federation.lookups import CATALOG_LOOKUPS_PATH
from gateway.federation.partner_watch import COSIGNATURES_PATH
from gateway.federation.registrations import CATALOG_ENTRIES_PATH
from gateway.http.appkeys import LINKS, NODE, OPENAPI
from gateway.http.middleware import BEARER, principal_of, public
from gateway.http.responses import JSON, json_limits, json_response
from gateway.identifiers import parse_certificate_id
from gateway.ids import KeyId
from gateway.metrics import CONTENT_TYPE
from gateway.services.catalog import CatalogService
from gateway.sso.auth import Principal, Scope
from gateway.sso.consent import CONSENT_HEADER

_LIST_ID = re.compile(r"[0-9]{1,9}")
ROTATION_ALGS = ("EdDSA", "Ed25519", "ES256", "SM2")
"""What ``POST /v1/admin/keys/rotate`` takes as ``alg`` (``EdDSA`` and ``Ed25519`` alike: an
Ed25519 key, published and signing under the federation file's ``ed25519_alg``)."""
"""ASCII digits only (``str.isdigit`` accepts ``²``, which ``int`` refuses, and ``١``)."""


async def read_json(request: web.Request, limits: JsonLimits | None = None) -> Any:
    """The request body as strict JSON, within every configured limit (``limits``: other
    parser bounds than the federation's, e.g. for bodies carrying case materials)."""
    if request.content_type != JSON:
        raise UnsupportedMediaType(f"send the body as {JSON}")
    if request.headers.get("Content-Encoding", "").strip().lower() not in ("", "identity"):
        raise UnsupportedMediaType(
            "send the body uncompressed (no Content-Encoding)", code="input.content_encoding"
        )
    body = await request.read()  # aiohttp enforces max_body_bytes (client_max_size): 413
    return loads(body, limits or json_limits(request.app[NODE].federation.limits))


async def in_writer(request: web.Request, fn: Any, *args: Any) -> Any:
    """Run a store write on the node's single writer thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[LINKS].writer, fn, *args)


def _registrations_due(request: web.Request) -> None:
    registrations = request.app[LINKS].registrations
    if registrations is not None:
        registrations.due()


# -- ops ---------------------------------------------------------------------------------------


@public
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "node": request.app[NODE].node.id})


@public
async def readyz(request: web.Request) -> web.Response:
    """Ready once the node's registry answers and the trust list it holds lists its active
    key; 503 with the reason's code until then."""
    node = request.app[NODE]
    try:
        count = node.readiness(request.app[LINKS].trust.resolver)
    except GatewayError as exc:
        body = {"status": "unavailable", "node": node.node.id, "reason": exc.code}
        return json_response(body, status=503)
    return json_response({"status": "ready", "node": node.node.id, "certificates": count})


@public
async def metrics(request: web.Request) -> web.Response:
    body = request.app[NODE].render_metrics()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


@public
async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


@public
async def jwks(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].jwks(), headers={"Cache-Control": "public, max-age=60"})


# -- catalogs ----------------------------------------------------------------------------------


@public
async def schemas(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].schemas.schema_documents())


@public
async def matters(request: web.Request) -> web.Response:
    return json_response({"matters": [m.to_json() for m in request.app[NODE].matters.all()]})


@public
async def status_list(request: web.Request) -> web.Response:
    raw = request.match_info["list"]
    if not _LIST_ID.fullmatch(raw):
        raise InputError("status list ids are small non-negative integers", code="input.list_id")
    token = request.app[NODE].status_list_token(int(raw))
    return web.Response(
        text=token,
        content_type="application/statuslist+jwt",
        headers={"Cache-Control": "public, max-age=60"},
    )


# -- certificates ------------------------------------------------------------------------------


async def issue_certificate(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request)
    node = request.app[NODE]
    issued = await in_writer(request, node.issue, principal, body)
    _registrations_due(request)  # its catalog entry waits in the outbox
    location = f"/v1/certificates/{issued.certificate.id}"
    return json_response(issued.to_json(), status=201, headers={"Location": location})


async def get_certificate(request: web.Request) -> web.Response:
    principal = principal_of(request)
    matter = request.query.get("matter")
    if not matter:
        raise InputError(
            "name the matter this certificate is needed for: ?matter=…",
            code="input.matter_required",
        )
    consent = request.headers.get(CONSENT_HEADER)
    cert_id = request.match_info["id"]
    fetches = request.app[LINKS].fetches
    answer = await fetches.fetch(principal, request[BEARER], cert_id, matter, consent)
    return json_response(answer)


async def relay(request: web.Request) -> web.Response:
    """A hop of a routed fetch (node to node; the caller's token is re-validated here)."""
    principal = principal_of(request)
    body = await request.read()
    answer = await request.app[LINKS].fetches.relay(
        principal,
        request[BEARER],
        request.headers.get(CONSENT_HEADER),
        request.headers.get(HOP_HEADER),
        body,
    )
    return json_response(answer)


@public
async def catalog_register(request: web.Request) -> web.Response:
    """national: a node registers a certificate it holds (hop proof; no user token)."""
    body = await request.read()
    caller = request.app[LINKS].hops.authenticate(
        request.headers.get(HOP_HEADER), path=CATALOG_ENTRIES_PATH, body=body
    )
    catalog, document = _catalog_request(request, body)
    entry = await in_writer(request, catalog.register, caller, document)
    return json_response(entry.to_json(), status=201)


async def catalog_lookup(request: web.Request) -> web.Response:
    """national: which nodes hold what for a holder digest (hop proof + the caller's token)."""
    principal_of(request).require(Scope.CERT_READ)
    body = await request.read()
    request.app[LINKS].hops.authenticate(
        request.headers.get(HOP_HEADER), path=CATALOG_LOOKUPS_PATH, body=body
    )
    catalog, document = _catalog_request(request, body)
    entries = catalog.lookup(document)
    return json_response({"entries": [e.to_json() for e in entries]})


async def lookups(request: web.Request) -> web.Response:
    """Find a holder's certificates of the named types, wherever they were issued."""
    principal = principal_of(request)
    principal.require(Scope.CERT_READ)
    body = await read_json(request)
    node = request.app[NODE]
    node.schemas.validate("exchange:lookup-request", body)
    holder = body["holder"]
    check_party(holder, "/holder")
    digest = holder_digest(node.keys.holder_secret, holder["id_type"], holder["id"])
    answer = await request.app[LINKS].lookups.lookup(
        principal, request[BEARER], body, request.headers.get(CONSENT_HEADER), digest
    )
    return json_response(answer)


def _catalog_request(request: web.Request, body: bytes) -> tuple[CatalogService, Any]:
    """National's catalog and the request's JSON body; 404 anywhere else."""
    catalog = request.app[LINKS].catalog
    if catalog is None:
        raise NotFoundError("only national keeps the catalog", code="catalog.not_here")
    return catalog, loads(body, json_limits(request.app[NODE].federation.limits))


@public
async def key_change(request: web.Request) -> web.Response:
    """national: a node's key-change request, signed (hop proof) by its current key."""
    body = await request.read()
    links = request.app[LINKS]
    caller = links.hops.authenticate(
        request.headers.get(HOP_HEADER), path=KEY_CHANGES_PATH, body=body
    )
    authority = links.authority
    if authority is None:
        raise NotFoundError("only national authors the trust list", code="keys.not_here")
    change = loads(body, json_limits(request.app[NODE].federation.limits))
    action, kid = authority.apply_request(caller, change)
    await links.trust.offer_local(authority.publish())  # its hook records the list's change
    await links.journal.append(
        [(AuditKind.KEY_EVENT, caller, kid, {"action": action, "seq": authority.seq})]
    )
    return json_response({"trust_list_seq": authority.seq})


# -- audit (audit:read) -------------------------------------------------------------------------


def _int_param(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise InputError(f"query parameter {name!r} is required", code="input.query")
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise InputError(f"query parameter {name!r} is a non-negative integer", code="input.query")
    return int(raw)


@public
async def audit_head(request: web.Request) -> web.Response:
    """Public, like a transparency log's: partners watch it; it reveals only a hash."""
    head = await asyncio.to_thread(request.app[NODE].audit_head)  # it may sign: off the loop
    return json_response(
        {
            "node": head.node,
            "tree_size": head.tree_size,
            "root_hash": b64url_encode(head.root_hash),
            "signed_tree_head": head.token,
        }
    )


async def audit_entries(request: web.Request) -> web.Response:
    principal = principal_of(request)
    start = _int_param(request, "start", 0)
    end = _int_param(request, "end", start + 100)
    records = request.app[NODE].audit_entries(principal, start, end)
    return json_response({"entries": [orjson.loads(r.entry()) for r in records]})


async def audit_inclusion(request: web.Request) -> web.Response:
    principal = principal_of(request)
    seq, size = _int_param(request, "seq"), _int_param(request, "tree_size")
    proof = request.app[NODE].inclusion_proof(principal, seq, size)
    return json_response(
        {"seq": seq, "tree_size": size, "proof": [b64url_encode(p) for p in proof]}
    )


@public
async def issuance_proof(request: web.Request) -> web.Response:
    """Public: proof that a certificate's issuance is in a tree head signed before a time
    (whoever holds the seal may ask; the answer adds nothing the seal does not say)."""
    cert_id = request.query.get("certificate_id", "")
    parse_certificate_id(cert_id)
    before = _int_param(request, "before")
    proof = request.app[NODE].issuance_proof(cert_id, revoked_at=before)
    return json_response(proof.to_json())


@public
async def audit_cosignatures(request: web.Request) -> web.Response:
    """Public, like a witness's: this node's cosignatures of a partner's heads larger than
    ``after`` entries (smallest first, a page of ``[witness] max_cosignatures``)."""
    node = request.app[NODE]
    origin = request.query.get("origin", "")
    after = _int_param(request, "after", 0) if "after" in request.query else -1
    made = node.cosignatures_made(origin, after_size=after)
    return json_response(
        {"witness": node.node.id, "origin": origin, "cosignatures": [c.to_json() for c in made]}
    )


@public
async def audit_consistency(request: web.Request) -> web.Response:
    """Public: hashes only, so partners can check the log only ever grew."""
    first, second = _int_param(request, "first"), _int_param(request, "second")
    proof = request.app[NODE].consistency_proof(first, second)
    return json_response(
        {"first": first, "second": second, "proof": [b64url_encode(p) for p in proof]}
    )


def _admin(request: web.Request) -> Principal:
    """Keys are administered by the node's own ops department (``keys:admin``)."""
    principal = principal_of(request)
    principal.require(Scope.KEYS_ADMIN)
    if principal.node != request.app[NODE].node.id:
        raise Forbidden("only this node's operators administer its keys", code="keys.not_owner")
    return principal


async def list_keys(request: web.Request) -> web.Response:
    _admin(request)
    return json_response({"keys": request.app[LINKS].keys.listing()})


async def rotate_key(request: web.Request) -> web.Response:
    _admin(request)
    body = await read_json(request) if request.can_read_body else {}
    name = body.get("alg") if isinstance(body, dict) else None
    alg: Alg | None = None
    if name is not None:
        if name not in ROTATION_ALGS:
            raise InputError(f"'alg' is one of {', '.join(ROTATION_ALGS)}", code="keys.bad_change")
        alg = key_alg(name)
    return json_response(await request.app[LINKS].keys.rotate(alg=alg))


async def retire_key(request: web.Request) -> web.Response:
    _admin(request)
    return json_response(await request.app[LINKS].keys.retire(KeyId(request.match_info["kid"])))


async def revoke_key(request: web.Request) -> web.Response:
    _admin(request)
    body = await read_json(request) if request.can_read_body else {}
    at = body.get("at") if isinstance(body, dict) else None
    if at is not None and (not is_int(at)):
        raise InputError("'at' is a NumericDate (integer seconds)", code="keys.bad_change")
    kid = KeyId(request.match_info["kid"])
    return json_response(await request.app[LINKS].keys.revoke(kid, at=at))


@public
async def trust_list(request: web.Request) -> web.Response:
    token = request.app[LINKS].trust.token
    if token is None:
        raise SealIndeterminate("no trust list is available yet", code="trust.unavailable")
    return web.Response(
        text=token, content_type="application/jwt", headers={"Cache-Control": "public, max-age=30"}
    )


async def change_status(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request)
    node = request.app[NODE]
    updated = await in_writer(
        request, node.change_status, principal, request.match_info["id"], body
    )
    _registrations_due(request)  # national's catalog learns the new status
    return json_response(
        {
            "certificate_id": updated.id,
            "status": updated.status.value,
            "status_list": updated.slot.list_id,
            "index": updated.slot.index,
        }
    )


async def verify_seals(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request)
    reports = await request.app[LINKS].verifier.verify_batch(principal, body)
    return web.Response(body=dump_reports(reports), content_type=JSON)


ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("GET", "/healthz", healthz),
    ("GET", "/readyz", readyz),
    ("GET", "/metrics", metrics),
    ("GET", "/openapi.json", openapi),
    ("GET", "/.well-known/jwks.json", jwks),
    ("GET", "/v1/schemas", schemas),
    ("GET", "/v1/matters", matters),
    ("GET", "/v1/status-lists/{list}", status_list),
    ("POST", "/v1/certificates", issue_certificate),
    ("GET", "/v1/certificates/{id}", get_certificate),
    ("POST", "/v1/certificates/{id}/status", change_status),
    ("POST", "/v1/seals/verify", verify_seals),
    ("POST", EXCHANGE_PATH, relay),
    ("POST", "/v1/lookups", lookups),
    ("POST", CATALOG_ENTRIES_PATH, catalog_register),
    ("POST", CATALOG_LOOKUPS_PATH, catalog_lookup),
    ("GET", "/v1/trust-list", trust_list),
    ("POST", KEY_CHANGES_PATH, key_change),
    ("GET", "/v1/audit/head", audit_head),
    ("GET", "/v1/audit/entries", audit_entries),
    ("GET", "/v1/audit/proofs/inclusion", audit_inclusion),
    ("GET", "/v1/audit/proofs/consistency", audit_consistency),
    ("GET", PROOF_PATH, issuance_proof),
    ("GET", COSIGNATURES_PATH, audit_cosignatures),
    ("GET", "/v1/admin/keys", list_keys),
    ("POST", "/v1/admin/keys/rotate", rotate_key),
    ("POST", "/v1/admin/keys/{kid}/retire", retire_key),
    ("POST", "/v1/admin/keys/{kid}/revoke", revoke_key),
)
