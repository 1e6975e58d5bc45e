"""National's catalog service: node registrations and lookups by holder, checked strictly.

A node may only register and change its own certificates: the node named in a request must
be the node its hop proof authenticated (:class:`~gateway.federation.hops.HopVerifier`), and
once a certificate id is registered by one node, no other node can claim or change it. The
service validates request bodies and stamps registrations with the injected clock; the
store is :mod:`gateway.storage.catalog`. :func:`catalog_entry` is what a node sends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from gateway.certificates.catalog import (
    MAX_LOOKUP_RESULTS,
    MAX_LOOKUP_TYPES,
    MAX_NODE_NAME,
    MAX_STATUS_EVENT,
    MAX_TYPE_NAME,
    CatalogEntry,
    require_holder_digest,
)
from gateway.certificates.schemas import CertificateTypeInfo
from gateway.certificates.status import CertStatus
from gateway.clock import Clock
from gateway.errors import (
    ConfigError,
    Forbidden,
    InputError,
    InvalidIdentifier,
    UnknownCertificateType,
)
from gateway.identifiers import parse_certificate_id
from gateway.ids import CertificateId, NodeId
from gateway.storage.catalog import Catalog
from gateway.storage.registry import NewCertificate, StoredCertificate

_REGISTER_MEMBERS: Final = frozenset({"certificate_id", "type", "node", "holder_digest"})
_REGISTER_OPTIONAL: Final = frozenset({"status", "status_event"})
_LOOKUP_MEMBERS: Final = frozenset({"holder_digest", "types"})


# --- service ---------------------------------------------------------------------------------


def _bad_body(detail: str, pointer: str = "") -> InputError:
    return InputError(detail, code="catalog.bad_body", pointers=(pointer,))


def _check_members(
    body: object, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> Mapping[str, object]:
    """The body as a mapping with exactly the ``required`` members (and maybe ``optional``)."""
    if not isinstance(body, Mapping):
        raise _bad_body("the request body must be a JSON object")
    for name in body:
        if not isinstance(name, str) or name not in required | optional:
            shown = name[:64] if isinstance(name, str) else "?"
            raise _bad_body(f"unexpected member {shown!r}", f"/{shown}")
    for name in sorted(required):
        if name not in body:
            raise _bad_body(f"missing member {name!r}", f"/{name}")
    return body


class CatalogService:
    """Validates catalog requests from nodes and applies them to a :class:`Catalog`.

    ``caller`` is always the node that the request's hop proof authenticated
    (:meth:`gateway.federation.hops.HopVerifier.verify`), never a value read from the body.
    ``types`` are the federation's certificate types (``SchemaSet.certificate_types()``):
    a registered type must be one of them and agree with the certificate id's type code.
    """

    __slots__ = ("_catalog", "_clock", "_types")

    def __init__(
        self, catalog: Catalog, *, clock: Clock, types: Iterable[CertificateTypeInfo]
    ) -> None:
        self._catalog = catalog
        self._clock = clock
        self._types: Mapping[str, CertificateTypeInfo] = MappingProxyType(
            {info.name: info for info in types}
        )
        if not self._types:
            raise ConfigError(
                "the catalog needs at least one certificate type", code="catalog.types"
            )

    # --- field parsers -----------------------------------------------------------------------

    @staticmethod
    def _certificate_id(value: object) -> tuple[CertificateId, str]:
        """The id and its type code; identifier errors keep their code and get a pointer."""
        if not isinstance(value, str):
            raise InvalidIdentifier(
                "certificate_id must be a string",
                code="input.identifier.format",
                pointers=("/certificate_id",),
            )
        try:
            parsed = parse_certificate_id(value)
        except InvalidIdentifier as exc:
            raise InvalidIdentifier(
                f"certificate_id: {exc.detail}",
                code=exc.code,
                log_detail=exc.log_detail,
                pointers=("/certificate_id",),
            ) from exc
        return parsed.certificate_id, parsed.type_code

    def _type(self, value: object, pointer: str) -> CertificateTypeInfo:
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_TYPE_NAME:
            raise InputError(
                f"a certificate type must be a name of 1 to {MAX_TYPE_NAME} characters",
                code="catalog.bad_type",
                pointers=(pointer,),
            )
        info = self._types.get(value)
        if info is None:
            raise UnknownCertificateType(f"unknown certificate type {value!r}", pointers=(pointer,))
        return info

    @staticmethod
    def _node(value: object, caller: NodeId) -> NodeId:
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_NODE_NAME:
            raise InputError(
                f"node must be a node name of 1 to {MAX_NODE_NAME} characters",
                code="catalog.bad_node",
                pointers=("/node",),
            )
        if value != caller:
            raise Forbidden(
                "a node may only register and change its own certificates",
                code="catalog.not_owner",
                log_detail=f"caller {caller!r} named node {value!r}",
            )
        return caller

    @staticmethod
    def _status(value: object) -> CertStatus:
        try:
            if not isinstance(value, str):
                raise TypeError(type(value).__name__)
            return CertStatus(value)
        except (TypeError, ValueError) as exc:
            raise InputError(
                "status must be one of valid, suspended, revoked",
                code="catalog.bad_status",
                pointers=("/status",),
            ) from exc

    @staticmethod
    def _status_event(value: object) -> int:
        # bool is an int in Python, not in JSON
        if type(value) is not int or not 0 <= value <= MAX_STATUS_EVENT:
            raise InputError(
                f"status_event must be an integer from 0 to {MAX_STATUS_EVENT}",
                code="catalog.bad_status_event",
                pointers=("/status_event",),
            )
        return value

    # --- operations --------------------------------------------------------------------------

    def register(self, caller: NodeId, body: Mapping[str, Any]) -> CatalogEntry:
        """Register one of ``caller``'s certificates; idempotent for a retry.

        Body: ``certificate_id``, ``type``, ``node`` (must be ``caller``), ``holder_digest``,
        and optionally ``status`` (default ``valid``) with ``status_event``, the holding
        node's number for the change that set it (default 0, the issuance): the holding node
        sends the entry again, with a larger number, on every status change.
        """
        # 1. Exactly the members we know.
        fields = _check_members(body, _REGISTER_MEMBERS, _REGISTER_OPTIONAL)
        # 2. The holder digest first: an id in clear is refused before anything else.
        digest = require_holder_digest(fields["holder_digest"])
        # 3. The certificate id, and a known type that agrees with the id's type code.
        certificate_id, type_code = self._certificate_id(fields["certificate_id"])
        info = self._type(fields["type"], "/type")
        if info.type_code != type_code:
            raise InputError(
                f"certificate_id's type code is not that of type {info.name!r}",
                code="catalog.type_mismatch",
                pointers=("/type",),
            )
        status = self._status(fields["status"]) if "status" in fields else CertStatus.VALID
        status_event = self._status_event(fields.get("status_event", 0))
        # 4. A node registers only its own certificates.
        node = self._node(fields["node"], caller)
        # 5. Store (another node's id is a conflict, a retry or an older status changes
        #    nothing).
        entry = CatalogEntry(
            certificate_id=certificate_id,
            type=info.name,
            node=node,
            holder_digest=digest,
            registered_at=self._clock.now(),
            status=status,
            status_event=status_event,
        )
        return self._catalog.register(entry)

    def lookup(self, body: Mapping[str, Any]) -> list[CatalogEntry]:
        """Where a holder's certificates of some types are, oldest registration first.

        Body: ``holder_digest`` and ``types``, 1 to 16 distinct known type names. At most
        :data:`MAX_LOOKUP_RESULTS` entries.
        """
        fields = _check_members(body, _LOOKUP_MEMBERS)
        digest = require_holder_digest(fields["holder_digest"])
        types = fields["types"]
        if (
            not isinstance(types, list)
            or not 1 <= len(types) <= MAX_LOOKUP_TYPES
            or not all(isinstance(name, str) for name in types)
            or len(set(types)) != len(types)
        ):
            raise InputError(
                f"types must list 1 to {MAX_LOOKUP_TYPES} distinct certificate type names",
                code="catalog.bad_types",
                pointers=("/types",),
            )
        names = [self._type(name, f"/types/{i}").name for i, name in enumerate(types)]
        return self._catalog.lookup(digest, names, limit=MAX_LOOKUP_RESULTS)


def catalog_entry(
    cert: NewCertificate | StoredCertificate,
    node: NodeId,
    *,
    status: CertStatus = CertStatus.VALID,
    status_event: int = 0,
) -> dict[str, Any]:
    """What national's catalog learns of a certificate: no personal data but the holder's
    digest. Sent on issuance, and again on each status change with the registry's number for
    that change (``status_event``), so national keeps the latest status in whatever order
    the entries arrive."""
    return {
        "certificate_id": cert.id,
        "type": cert.type,
        "node": node,
        "holder_digest": cert.holder_digest,
        "status": status.value,
        "status_event": status_event,
    }
