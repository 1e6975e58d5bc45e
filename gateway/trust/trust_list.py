"""The federation trust list: every node, where it is, and the keys it seals with.

``national``, the trust-list authority, builds the list from the federation file and the
nodes' keys (:func:`build_trust_list`) and signs it with the federation root key
(:mod:`gateway.trust.rootkey`) as a compact JWS of type :data:`TRUST_LIST_TYP`
(:func:`sign_trust_list`). The payload, written by :meth:`TrustList.to_json`::

    {"iss": "federation-root", "federation": "tongban-demo", "seq": 7,
     "iat": 1795507200, "exp": 1795510800,
     "nodes": [{"id": "zhuji", "name": "诸暨市", "kind": "region", "region": "330681",
                "url": "http://127.0.0.1:8404", "parent": "shaoxing",
                "departments": [{"id": "zhuji-civil-affairs", "name": "…",
                                 "credit_code": "…", "issues": ["marriage"]}],
                "keys": [{"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "…", "kid": "…", …},
                          "history": [{"state": "next", "since": 1795500000},
                                      {"state": "active", "since": 1795507200}]}]}],
     "agreements": [["zhuji", "linquan"]]}

A key's *history* is authoritative: its last entry is the key's current state, and a
``revoked`` entry's ``since`` is the revocation time. The JWK's own ``status`` and
``revoked_at`` members are written from it, so the two never disagree.

Verification (:func:`verify_trust_list`) trusts nothing but the pinned root key; every
rejection raises a :class:`~gateway.errors.SealError` with a ``trust.*`` code:

- ``trust.<suffix>`` for a JWS rejected by :func:`gateway.crypto.seals.verify_compact`
  (``trust.bad_signature``, ``trust.wrong_typ``, ``trust.unknown_kid``, …), same indication;
- ``trust.invalid``: the payload is not a well-formed trust list (strict: every member
  present and typed, no unknown members, no duplicate node, department or kid);
- ``trust.not_yet_valid``: issued in the future;
- ``trust.expired`` (INDETERMINATE: no seal can be judged against an expired list);
- ``trust.rollback``: older than a list already seen (a replay);
- ``trust.fork`` (from :class:`TrustListCache`): two different lists with one ``seq``;
- ``trust.unavailable`` (INDETERMINATE): no trust list at all yet.

Not verdicts: ``trust.bad_input`` (:class:`~gateway.errors.InputError`, building),
``trust.unknown_node`` (:class:`~gateway.errors.NotFoundError`), ``trust.storage``
(:class:`~gateway.errors.StorageError`, the cache file cannot be written) and
``trust.unreadable`` (:class:`~gateway.errors.ConfigError`, it cannot be read at start).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

import orjson

from gateway._internal.files import atomic_write
from gateway._internal.wire import is_int
from gateway.config import Federation
from gateway.crypto.jwks import (
    MAX_JWKS_KEYS,
    KeyResolver,
    KeyState,
    StaticKeyResolver,
    VerificationKey,
    parse_jwk,
)
from gateway.crypto.seals import (
    CLOCK_SKEW_SECONDS,
    MAX_SEAL_BYTES,
    Signer,
    sign_compact,
    verify_compact,
)
from gateway.errors import (
    ConfigError,
    InputError,
    InvalidIdentifier,
    NotFoundError,
    SealError,
    SealIndeterminate,
    StorageError,
)
from gateway.identifiers import REGION_CODE, validate_credit_code
from gateway.ids import DepartmentId, KeyId, NodeId, RegionCode
from gateway.trust.rootkey import ROOT_NODE

TRUST_LIST_TYP: Final = "trust-list+jws"
DEFAULT_VALIDITY: Final = 3600
"""Seconds a trust list is valid after it is issued."""
REFRESH_MARGIN: Final = 0.25
"""Refresh when this fraction of a list's validity remains."""

MAX_NODES: Final = 1024
MAX_DEPARTMENTS: Final = 256
MAX_ISSUES: Final = 64
MAX_HISTORY: Final = 32
MAX_AGREEMENTS: Final = 4096

NodeKind = Literal["idp", "region"]
NODE_KINDS: Final[frozenset[str]] = frozenset({"idp", "region"})

_MAX_TIME: Final = 253_402_300_799  # 9999-12-31T23:59:59Z
_MAX_TEXT: Final = 256
_NODE_ID: Final = re.compile(r"[a-z][a-z0-9-]{1,31}")  # as in the federation file
_URL: Final = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
_DEPARTMENT_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_CLAIMS: Final = frozenset({"iss", "federation", "seq", "iat", "exp", "nodes", "agreements"})
_NODE: Final = frozenset({"id", "name", "kind", "region", "url", "parent", "departments", "keys"})
_DEPARTMENT: Final = frozenset({"id", "name", "credit_code", "issues"})
_KEY: Final = frozenset({"jwk", "history"})
_HISTORY: Final = frozenset({"state", "since"})


# --- models -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyHistory:
    """A key entered ``state`` at ``since`` (epoch seconds)."""

    state: KeyState
    since: int

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state.value, "since": self.since}


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """One seal key of a node: its public JWK as published, and its status history."""

    jwk: Mapping[str, Any]
    """Public members only; deeply read-only."""
    history: tuple[KeyHistory, ...]
    """Oldest first; never empty in a valid list. The last entry is the current state."""

    @property
    def kid(self) -> KeyId:
        return KeyId(str(self.jwk.get("kid")))

    @property
    def state(self) -> KeyState:
        return self.history[-1].state

    @property
    def revoked_at(self) -> int | None:
        for entry in self.history:
            if entry.state is KeyState.REVOKED:
                return entry.since
        return None

    def to_json(self) -> dict[str, Any]:
        return {"jwk": _thaw(self.jwk), "history": [h.to_json() for h in self.history]}


@dataclass(frozen=True, slots=True)
class TrustedDepartment:
    id: DepartmentId
    name: str
    credit_code: str
    issues: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "credit_code": self.credit_code,
            "issues": list(self.issues),
        }


@dataclass(frozen=True, slots=True)
class TrustedNode:
    id: NodeId
    name: str
    kind: NodeKind
    region: RegionCode | None
    url: str
    parent: NodeId | None
    departments: tuple[TrustedDepartment, ...]
    keys: tuple[TrustedKey, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "region": self.region,
            "url": self.url,
            "parent": self.parent,
            "departments": [d.to_json() for d in self.departments],
            "keys": [k.to_json() for k in self.keys],
        }


@dataclass(frozen=True, slots=True)
class TrustList:
    """A trust list: built by :func:`build_trust_list` or returned by :func:`verify_trust_list`."""

    federation: str
    seq: int
    issued_at: int
    expires_at: int
    nodes: tuple[TrustedNode, ...]
    agreements: tuple[tuple[NodeId, NodeId], ...]

    def to_json(self) -> dict[str, Any]:
        """The signed payload: the claims ``iss``, ``federation``, ``seq``, ``iat``, ``exp``…"""
        return {
            "iss": ROOT_NODE,
            "federation": self.federation,
            "seq": self.seq,
            "iat": self.issued_at,
            "exp": self.expires_at,
            "nodes": [n.to_json() for n in self.nodes],
            "agreements": [list(pair) for pair in self.agreements],
        }

    def refresh_at(self) -> float:
        """When a holder should fetch a newer list: :data:`REFRESH_MARGIN` of validity left."""
        return self.expires_at - REFRESH_MARGIN * (self.expires_at - self.issued_at)


# --- authoring --------------------------------------------------------------------------------


def build_trust_list(
    federation: Federation,
    node_keys: Mapping[NodeId, Sequence[TrustedKey]],
    *,
    seq: int,
    now: float,
    validity: int = DEFAULT_VALIDITY,
) -> TrustList:
    """The trust list of ``federation`` with each node's seal keys, issued at ``now``.

    Each key's JWK ``status`` (and ``revoked_at``) is rewritten from its history. The result
    is checked by the same parser verifiers use, so a list that would be refused is never
    built: any problem raises :class:`InputError` ``trust.bad_input``.
    """
    known = {node.id for node in federation.nodes}
    unknown = sorted(set(node_keys) - known)
    if unknown:
        raise InputError(f"keys given for unknown nodes {unknown}", code="trust.bad_input")
    if validity <= 0:
        raise InputError("a trust list's validity must be positive", code="trust.bad_input")
    issued_at = int(now)
    claims = {
        "iss": ROOT_NODE,
        "federation": federation.name,
        "seq": seq,
        "iat": issued_at,
        "exp": issued_at + validity,
        "nodes": [
            {
                "id": node.id,
                "name": node.name,
                "kind": node.kind,
                "region": node.region,
                "url": federation.url(node.id),
                "parent": node.parent,
                "departments": [
                    {
                        "id": dept.id,
                        "name": dept.name,
                        "credit_code": dept.credit_code,
                        "issues": list(dept.issues),
                    }
                    for dept in node.departments
                ],
                "keys": [_normalised(key) for key in node_keys.get(node.id, ())],
            }
            for node in federation.nodes
        ],
        "agreements": [list(agreement.nodes) for agreement in federation.agreements],
    }
    try:
        return _parse_claims(claims)
    except SealError as exc:
        raise InputError(
            f"cannot build the trust list: {exc.detail}",
            code="trust.bad_input",
            log_detail=exc.log_detail,
        ) from exc


def _normalised(key: TrustedKey) -> dict[str, Any]:
    out = key.to_json()
    jwk = out["jwk"]
    if key.history:
        jwk["status"] = key.state.value
        jwk.pop("revoked_at", None)
        revoked_at = key.revoked_at
        if revoked_at is not None:
            jwk["revoked_at"] = revoked_at
    return out


def sign_trust_list(trust_list: TrustList, root_signer: Signer, *, now: float) -> str:
    """Sign ``trust_list`` with the federation root key: a compact JWS of type
    :data:`TRUST_LIST_TYP` whose payload is :meth:`TrustList.to_json`."""
    payload = orjson.dumps(trust_list.to_json(), option=orjson.OPT_SORT_KEYS)
    try:
        return sign_compact(root_signer, payload, typ=TRUST_LIST_TYP, signed_at=now)
    except SealError as exc:
        raise _translated(exc) from exc


# --- verification -----------------------------------------------------------------------------


def verify_trust_list(
    token: str, root: VerificationKey, *, now: float, min_seq: int | None = None
) -> TrustList:
    """Verify a signed trust list against the pinned ``root`` key at time ``now``.

    ``min_seq`` is the sequence number of the newest list already accepted; an older one is
    a replay (``trust.rollback``). Returns the list or raises :class:`SealError` ``trust.*``.
    """
    return _verify(token, root, now=now, min_seq=min_seq, allow_expired=False)


def _verify(
    token: str, root: VerificationKey, *, now: float, min_seq: int | None, allow_expired: bool
) -> TrustList:
    # 1. the JWS: strict compact form, typ pinned, signed by the root key and no other
    try:
        verified = verify_compact(
            token, StaticKeyResolver({root.kid: root}), typ=TRUST_LIST_TYP, now=now
        )
    except SealError as exc:
        raise _translated(exc) from exc
    claims = verified.payload
    # 2. the issuer is the root the caller pinned
    if claims.get("iss") != root.node:
        raise _invalid("its issuer (iss) is not the federation root")
    # 3. the payload is a well-formed trust list, every member present and typed
    trust_list = _parse_claims(claims)
    # 4. issued no later than now (within the clock skew)
    if trust_list.issued_at > now + CLOCK_SKEW_SECONDS:
        raise _error(SealError, "the trust list is issued in the future", "trust.not_yet_valid")
    # 5. not expired: an expired list cannot vouch for any key
    if not allow_expired and now >= trust_list.expires_at:
        raise _expired(trust_list, now)
    # 6. not older than a list already seen
    if min_seq is not None and trust_list.seq < min_seq:
        raise _error(
            SealError,
            "the trust list is older than one already accepted",
            "trust.rollback",
            log_detail=f"seq {trust_list.seq} < {min_seq}",
            step="sequence",
        )
    return trust_list


def _translated(exc: SealError) -> SealError:
    """A JWS rejection re-coded ``trust.<suffix>``, with the same indication and step."""
    suffix = exc.code.partition(".")[2] or "invalid"
    error = type(exc)(
        f"trust list rejected: {exc.detail}", code=f"trust.{suffix}", log_detail=exc.log_detail
    )
    error.step = exc.step
    return error


def _error(
    kind: type[SealError],
    detail: str,
    code: str,
    *,
    log_detail: str | None = None,
    step: str = "time",
) -> SealError:
    error = kind(detail, code=code, log_detail=log_detail)
    error.step = step
    return error


def _expired(trust_list: TrustList, now: float) -> SealError:
    return _error(
        SealIndeterminate,
        "the trust list has expired",
        "trust.expired",
        log_detail=f"seq {trust_list.seq} expired at {trust_list.expires_at}, now {int(now)}",
    )


def _invalid(detail: str, *, log_detail: str | None = None) -> SealError:
    return _error(
        SealError,
        f"the trust list is malformed: {detail}",
        "trust.invalid",
        log_detail=log_detail,
        step="claims",
    )


# --- strict payload parsing -------------------------------------------------------------------


def _members(value: object, members: frozenset[str], where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _invalid(f"{where} must be an object")
    missing = members - value.keys()
    if missing:
        raise _invalid(f"{where} lacks {sorted(missing)}")
    unknown = value.keys() - members
    if unknown:
        raise _invalid(f"{where} has unknown members", log_detail=repr(sorted(unknown)[:8]))
    return value


def _text(
    obj: Mapping[str, Any], name: str, where: str, pattern: re.Pattern[str] | None = None
) -> str:
    value = obj[name]
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
        raise _invalid(f"{where} {name!r} must be a non-empty string of at most {_MAX_TEXT}")
    if pattern is not None and not pattern.fullmatch(value):
        raise _invalid(f"{where} {name!r} is not well formed")
    return value


def _optional_text(
    obj: Mapping[str, Any], name: str, where: str, pattern: re.Pattern[str]
) -> str | None:
    return None if obj[name] is None else _text(obj, name, where, pattern)


def _time(obj: Mapping[str, Any], name: str, where: str) -> int:
    value = obj[name]
    if not is_int(value) or not 0 <= value <= _MAX_TIME:
        raise _invalid(f"{where} {name!r} must be an integer number of seconds since the epoch")
    return value


def _array(obj: Mapping[str, Any], name: str, where: str, limit: int) -> list[Any]:
    value = obj[name]
    if not isinstance(value, list):
        raise _invalid(f"{where} {name!r} must be an array")
    if len(value) > limit:
        raise _invalid(f"{where} {name!r} has more than {limit} entries")
    return value


def _parse_claims(claims: Mapping[str, Any]) -> TrustList:
    obj = _members(claims, _CLAIMS, "the payload")
    if not isinstance(obj["iss"], str):
        raise _invalid("'iss' must be a string")
    federation = _text(obj, "federation", "the payload")
    seq = obj["seq"]
    if not is_int(seq) or seq < 0:
        raise _invalid("'seq' must be a non-negative integer")
    issued_at, expires_at = _time(obj, "iat", "the payload"), _time(obj, "exp", "the payload")
    if expires_at <= issued_at:
        raise _invalid("'exp' must be after 'iat'")
    nodes = tuple(
        _parse_node(value, i)
        for i, value in enumerate(_array(obj, "nodes", "the payload", MAX_NODES))
    )
    _check_unique(nodes)
    agreements = _parse_agreements(
        _array(obj, "agreements", "the payload", MAX_AGREEMENTS), {n.id for n in nodes}
    )
    return TrustList(
        federation=federation,
        seq=seq,
        issued_at=issued_at,
        expires_at=expires_at,
        nodes=nodes,
        agreements=agreements,
    )


def _parse_node(value: object, index: int) -> TrustedNode:
    obj = _members(value, _NODE, f"nodes[{index}]")
    node_id = NodeId(_text(obj, "id", f"nodes[{index}]", _NODE_ID))
    where = f"node {node_id!r}"
    kind = obj["kind"]
    if not isinstance(kind, str) or kind not in NODE_KINDS:
        raise _invalid(f"{where} has an unknown kind", log_detail=repr(kind)[:64])
    region = _optional_text(obj, "region", where, REGION_CODE)
    if kind == "region" and region is None:
        raise _invalid(f"{where} is a region node without a region code")
    parent = _optional_text(obj, "parent", where, _NODE_ID)
    return TrustedNode(
        id=node_id,
        name=_text(obj, "name", where),
        kind="idp" if kind == "idp" else "region",
        region=None if region is None else RegionCode(region),
        url=_text(obj, "url", where, _URL),
        parent=None if parent is None else NodeId(parent),
        departments=tuple(
            _parse_department(d, f"{where} departments[{j}]")
            for j, d in enumerate(_array(obj, "departments", where, MAX_DEPARTMENTS))
        ),
        keys=tuple(
            _parse_key(k, node_id, f"{where} keys[{j}]")
            for j, k in enumerate(_array(obj, "keys", where, MAX_JWKS_KEYS))
        ),
    )


def _parse_department(value: object, where: str) -> TrustedDepartment:
    obj = _members(value, _DEPARTMENT, where)
    credit_code = _text(obj, "credit_code", where)
    try:
        validate_credit_code(credit_code)
    except InvalidIdentifier as exc:
        raise _invalid(f"{where} has an invalid credit code", log_detail=exc.code) from exc
    issues = _array(obj, "issues", where, MAX_ISSUES)
    if not all(isinstance(t, str) and 0 < len(t) <= _MAX_TEXT for t in issues):
        raise _invalid(f"{where} 'issues' must list certificate type names")
    if len(set(issues)) != len(issues):
        raise _invalid(f"{where} 'issues' lists a type twice")
    return TrustedDepartment(
        id=DepartmentId(_text(obj, "id", where, _DEPARTMENT_ID)),
        name=_text(obj, "name", where),
        credit_code=credit_code,
        issues=tuple(issues),
    )


def _parse_key(value: object, node: NodeId, where: str) -> TrustedKey:
    obj = _members(value, _KEY, where)
    jwk = obj["jwk"]
    if not isinstance(jwk, Mapping):
        raise _invalid(f"{where} 'jwk' must be an object")
    # 1. public material only, whatever else the object says
    if _PRIVATE_MEMBERS & jwk.keys():
        raise _invalid(f"{where} carries private key material")
    # 2. a strict public JWK of this node whose kid is its thumbprint
    try:
        parsed = parse_jwk(jwk, node=node)
    except SealError as exc:
        raise _invalid(f"{where}: {exc.detail}", log_detail=exc.code) from exc
    # 3. a history: states in time order, nothing after a revocation
    entries = _array(obj, "history", where, MAX_HISTORY)
    if not entries:
        raise _invalid(f"{where} has an empty history")
    history = tuple(_parse_history(e, f"{where} history[{i}]") for i, e in enumerate(entries))
    for before, after in pairwise(history):
        if after.since < before.since:
            raise _invalid(f"{where} history is not in time order")
        if after.state is before.state:
            raise _invalid(f"{where} history repeats a state")
        if before.state is KeyState.REVOKED:
            raise _invalid(f"{where} history continues after a revocation")
    key = TrustedKey(jwk=_freeze(jwk), history=history)
    # 4. the JWK's own status members agree with the history
    if "status" in jwk and parsed.state is not key.state:
        raise _invalid(f"{where} JWK status contradicts its history")
    if parsed.revoked_at is not None and parsed.revoked_at != key.revoked_at:
        raise _invalid(f"{where} JWK revocation time contradicts its history")
    return key


def _parse_history(value: object, where: str) -> KeyHistory:
    obj = _members(value, _HISTORY, where)
    try:
        state = KeyState(obj["state"])
    except ValueError as exc:
        raise _invalid(f"{where} 'state' is not a key state") from exc
    return KeyHistory(state=state, since=_time(obj, "since", where))


def _check_unique(nodes: tuple[TrustedNode, ...]) -> None:
    node_ids: set[str] = set()
    departments: set[str] = set()
    credit_codes: set[str] = set()
    kids: set[str] = set()
    for node in nodes:
        if node.id in node_ids:
            raise _invalid(f"node {node.id!r} is listed twice")
        node_ids.add(node.id)
        for dept in node.departments:
            if dept.id in departments or dept.credit_code in credit_codes:
                raise _invalid(f"department {dept.id!r} or its credit code is listed twice")
            departments.add(dept.id)
            credit_codes.add(dept.credit_code)
        for key in node.keys:
            if key.kid in kids:
                raise _invalid(f"key {key.kid!r} is listed twice")
            kids.add(key.kid)
    by_id = {node.id: node for node in nodes}
    for node in nodes:
        # every parent is listed, and walking up always ends (no cycle)
        seen = {node.id}
        parent = node.parent
        while parent is not None:
            if parent not in by_id:
                raise _invalid(f"node {node.id!r} has an unlisted parent")
            if parent in seen:
                raise _invalid(f"node {node.id!r} has a parent cycle")
            seen.add(parent)
            parent = by_id[parent].parent


def _parse_agreements(
    values: list[Any], node_ids: set[NodeId]
) -> tuple[tuple[NodeId, NodeId], ...]:
    out: list[tuple[NodeId, NodeId]] = []
    seen: set[frozenset[str]] = set()
    for i, pair in enumerate(values):
        where = f"agreements[{i}]"
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(n, str) for n in pair)
            or pair[0] == pair[1]
        ):
            raise _invalid(f"{where} must name two different nodes")
        if not all(n in node_ids for n in pair):
            raise _invalid(f"{where} names an unlisted node")
        key = frozenset(pair)
        if key in seen:
            raise _invalid(f"{where} is listed twice")
        seen.add(key)
        out.append((NodeId(pair[0]), NodeId(pair[1])))
    return tuple(out)


def _freeze(value: Any) -> Any:
    """A deeply read-only copy of parsed JSON: objects as mapping proxies, arrays as tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({name: _freeze(member) for name, member in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    """The JSON value again: objects as dicts, arrays as lists (for orjson and parse_jwk)."""
    if isinstance(value, Mapping):
        return {name: _thaw(member) for name, member in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(item) for item in value]
    return value


# --- using a verified list --------------------------------------------------------------------


class TrustListResolver:
    """A :class:`gateway.crypto.jwks.KeyResolver` over every key of a trust list, plus node
    look-ups.

    Each key resolves to its owning node with the state, validity and revocation time the
    list gives it, so :func:`gateway.crypto.seals.verify_seal` judges a seal by the list alone.
    """

    def __init__(self, trust_list: TrustList) -> None:
        self.trust_list = trust_list
        keys: dict[KeyId, VerificationKey] = {}
        departments: dict[str, tuple[TrustedNode, TrustedDepartment]] = {}
        for node in trust_list.nodes:
            for dept in node.departments:
                departments[dept.credit_code] = (node, dept)
            for trusted in node.keys:
                parsed = parse_jwk(_thaw(trusted.jwk), node=node.id)
                revoked_at = trusted.revoked_at
                keys[parsed.kid] = replace(
                    parsed,
                    state=trusted.state,
                    revoked_at=None if revoked_at is None else float(revoked_at),
                )
        self._keys = StaticKeyResolver(keys)
        self._nodes: Mapping[NodeId, TrustedNode] = MappingProxyType(
            {node.id: node for node in trust_list.nodes}
        )
        self._departments = MappingProxyType(departments)

    def key_for(self, kid: KeyId) -> VerificationKey:
        """The key named ``kid``; :class:`SealIndeterminate` ``seal.unknown_kid`` if none."""
        return self._keys.key_for(kid)

    def node(self, node_id: str) -> TrustedNode:
        try:
            return self._nodes[NodeId(node_id)]
        except KeyError:
            raise NotFoundError(
                "the trust list has no such node", code="trust.unknown_node"
            ) from None

    def department_by_credit_code(
        self, credit_code: str
    ) -> tuple[TrustedNode, TrustedDepartment] | None:
        return self._departments.get(credit_code)

    def nodes(self) -> tuple[TrustedNode, ...]:
        return self.trust_list.nodes


class TrustListCache:
    """The trust list a node currently trusts, kept on disk so a restart keeps it.

    :meth:`offer` accepts only a verified list at least as new as the current one (an equal
    ``seq`` must be the very same token, else ``trust.fork``). The last good token is written
    atomically to ``path`` and reloaded on construction: signature and shape are checked again,
    but an expired list is kept, so its ``seq`` still refuses replays of older ones, and
    :meth:`current` still refuses to trust it.
    """

    def __init__(self, root: VerificationKey, *, path: Path | None = None, now: float) -> None:
        self._root = root
        self._path = path
        self._token: str | None = None
        self._list: TrustList | None = None
        self._resolver: TrustListResolver | None = None
        if path is not None and path.exists():
            token = read_trust_list_file(path)
            self._accept(token, _verify(token, root, now=now, min_seq=None, allow_expired=True))

    @property
    def token(self) -> str | None:
        """The last accepted signed list, as received (what ``/v1/trust-list`` serves)."""
        return self._token

    @property
    def seq(self) -> int | None:
        return None if self._list is None else self._list.seq

    def offer(self, token: str, *, now: float) -> TrustList:
        """Verify ``token`` and make it current if it is new. Returns the current list."""
        current = self._list
        trust_list = verify_trust_list(
            token, self._root, now=now, min_seq=None if current is None else current.seq
        )
        if current is not None and trust_list.seq == current.seq:
            if token != self._token:
                raise _error(
                    SealError,
                    "two different trust lists carry the same sequence number",
                    "trust.fork",
                    log_detail=f"seq {trust_list.seq}",
                    step="sequence",
                )
            return current
        if self._path is not None:
            # on disk first: a list is current only once a restart would find it again
            try:
                atomic_write(self._path, token.encode("ascii"))
            except OSError as exc:
                raise StorageError(
                    "cannot save the trust list", code="trust.storage", log_detail=str(exc)
                ) from exc
        self._accept(token, trust_list)
        return trust_list

    def current(self, now: float) -> TrustList:
        """The current list; ``trust.unavailable`` if none, ``trust.expired`` if expired."""
        if self._list is None:
            raise _error(SealIndeterminate, "no trust list is available", "trust.unavailable")
        if now >= self._list.expires_at:
            raise _expired(self._list, now)
        return self._list

    def resolver(self, now: float) -> TrustListResolver:
        """A key resolver over the current list (raises as :meth:`current` does)."""
        self.current(now)
        assert self._resolver is not None  # set with every accepted list
        return self._resolver

    def needs_refresh(self, now: float) -> bool:
        """True when there is no list or only :data:`REFRESH_MARGIN` of its validity is left."""
        return self._list is None or now >= self._list.refresh_at()

    def _accept(self, token: str, trust_list: TrustList) -> None:
        self._token, self._list = token, trust_list
        self._resolver = TrustListResolver(trust_list)


def require_active_key(keys: KeyResolver, node: NodeId, kid: KeyId) -> None:
    """Raise unless ``keys`` (a trust list's) hold ``kid`` as ``node``'s active key: the
    condition for the federation to verify that node's seals and hop proofs."""
    listed = keys.key_for(kid)  # seal.unknown_kid when the list does not have it at all
    if listed.node != node or listed.state is not KeyState.ACTIVE:
        raise SealIndeterminate(
            f"the trust list does not list {node}'s signing key as active yet",
            code="trust.key_not_active",
        )


def read_trust_list_file(path: Path) -> str:
    """The token in a trust list file (one compact JWS; surrounding whitespace ignored).

    Only reads: verify the result with :func:`verify_trust_list`.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SEAL_BYTES + 2)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the trust list: {exc.strerror}", code="trust.unreadable"
        ) from exc
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise _error(
            SealError, "the trust list file is not ASCII", "trust.malformed", step="format"
        ) from exc
