"""The federation file, read once into frozen typed objects.

One TOML file describes the whole federation: its nodes (ports, regions, parents,
departments), the point-to-point agreements, the demo clients and citizens, and the limits
every node enforces. :func:`load_federation` validates everything up front and raises
:class:`gateway.errors.ConfigError` with a message naming the line and the problem, so a bad
file fails at start-up, never in the middle of a request.

The embedded default federation (DESIGN.md "Default federation") ships as
``gateway/federation.toml``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from gateway._internal.passwords import check_hash_format
from gateway._internal.secret import Secret
from gateway._internal.wire import is_int
from gateway.errors import ConfigError, InvalidIdentifier
from gateway.identifiers import REGION_CODE, validate_credit_code, validate_resident_id
from gateway.ids import IDP, NATIONAL, DepartmentId, NodeId, RegionCode
from gateway.scopes import SCOPES

DEFAULT_FEDERATION_FILE = Path(__file__).with_name("federation.toml")
_NODE_ID = re.compile(r"[a-z][a-z0-9-]{1,31}")
_URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
DATABASE_SCHEMES = ("postgresql://", "postgres://")
"""What a node's ``database`` (or ``--database``) may name: PostgreSQL, by URL."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Every bound a node enforces on untrusted input. Each is named and tested."""

    max_body_bytes: int = 1_048_576
    max_json_depth: int = 16
    max_string_length: int = 65_536
    max_json_members: int = 20_000
    max_batch: int = 1000
    max_seal_bytes: int = 65_536
    max_token_bytes: int = 8192
    max_lookup_types: int = 16
    request_timeout_seconds: float = 10.0
    max_request_line_bytes: int = 8190
    """The request line (method, path and query, version); longer is refused (414)."""
    max_header_bytes: int = 16_384
    """One header line; longer is refused (431). At least ``max_token_bytes`` + 1 KiB."""
    max_materials_per_case: int = 20
    """Materials in one application (受理材料); more is refused (422)."""
    max_material_bytes: int = 262_144
    """One material's bytes once decoded; more is refused (413). The whole application
    also fits ``max_body_bytes``."""
    max_reason_length: int = 500
    """A decision's reason, a correction item or a note, in characters."""
    max_correction_items: int = 20
    """Items in one 一次性补正 (request for correction) list."""
    max_case_page: int = 100
    """Cases in one page of a department's inbox or outbox."""
    max_webhooks_per_department: int = 8
    """Subscriptions one departmental system may hold at a node."""


@dataclass(frozen=True, slots=True)
class Network:
    """How a node talks to its peers: every timeout, cap and retry number, named once.

    Read from the federation file's ``[network]`` table; each value must be positive."""

    fetch_timeout_seconds: float = 2.0
    """One GET of a peer's public document (JWKS, trust list, status list, audit head)."""
    max_answer_bytes: int = 1_048_576
    """The largest answer read from a peer; a longer one is refused while it is read."""
    retry_attempts: int = 3
    """Attempts of one idempotent call to a peer, within the request's deadline."""
    retry_base_delay_seconds: float = 0.05
    retry_max_delay_seconds: float = 0.5
    breaker_failures: int = 3
    """Consecutive failures of one peer that cut it off (circuit breaker opens)."""
    breaker_open_seconds: float = 2.0
    """How long a cut-off peer is left alone before one probe is let through."""
    nonce_cache_entries: int = 100_000
    """Hop-proof nonces remembered, to refuse a replayed node-to-node request."""
    nonce_ttl_seconds: float = 60.0
    """How long a hop proof is accepted after it was signed (and its nonce remembered)."""
    registration_retry_seconds: float = 2.0
    """How often catalog entries national could not take are offered again."""
    hop_margin_seconds: float = 0.5
    """Each hop forwards a deadline this much shorter than its own, so the hop next to a
    failure gives up first and its answer, naming that hop, still reaches the caller."""
    max_connections_per_peer: int = 64
    """Open connections to one peer at most: a frozen peer holds only these, never the
    connections every other route needs."""
    outbox_retry_base_seconds: float = 0.5
    """First pause before a case message or a webhook notification is tried again
    (doubling, with jitter, per message)."""
    outbox_retry_max_seconds: float = 30.0
    """Longest pause between two tries of one case message or notification."""
    authority_lease_seconds: float = 10.0
    """``national`` as replicas (over PostgreSQL): how long the trust list author's lease
    lasts unrenewed, so how soon a killed author is replaced."""


@dataclass(frozen=True, slots=True)
class Calendar:
    """Working days (工作日) for case time limits: weekends, the State Council's public
    holidays, and the make-up working days (调休) that fall on a weekend.

    Read from the federation file's ``[calendar]``; dates are the federation's local dates
    (``utc_offset_hours``, China Standard Time by default)."""

    utc_offset_hours: int = 8
    weekend: tuple[int, ...] = (6, 7)
    """ISO weekdays that are not working days (6 Saturday, 7 Sunday)."""
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()
    """Weekend dates that are working days (调休上班)."""
    acceptance_days: int = 5
    """Working days the owner has to accept, refuse or ask for corrections; after that the
    application is deemed accepted (行政许可法 §32)."""


@dataclass(frozen=True, slots=True)
class Witness:
    """Partners witnessing each other's audit logs (issue 22, item 4): read from the
    federation file's ``[witness]`` table; each value must be positive."""

    quorum: int = 1
    """Distinct partners (never the issuing node itself) that must have cosigned a tree head
    before a key's revocation for an issuance proof to keep that key's seals valid."""
    check_interval_seconds: float = 10.0
    """How often a node checks, and cosigns, each partner's tree head and gathers the
    partners' cosignatures of its own heads."""
    max_cosignatures: int = 64
    """Cosignatures in one answer of ``GET /v1/audit/cosignatures`` and in one issuance
    proof, at most; a proof carrying more is refused unread."""


@dataclass(frozen=True, slots=True)
class Department:
    id: DepartmentId
    name: str
    credit_code: str
    issues: tuple[str, ...]
    """Certificate types this department may issue at its node."""
    kind: str = ""
    """What the department is (``civil-affairs``, ``healthcare-security``, ``window``…):
    a matter names the kind that owns it, and ``window`` departments receive applications."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    id: NodeId
    name: str
    port: int
    kind: str
    """``idp`` for the identity provider, ``region`` for every other node."""
    region: RegionCode | None = None
    parent: NodeId | None = None
    departments: tuple[Department, ...] = ()
    url: str | None = None
    """Where peers reach this node; default ``http://<federation host>:<port>``."""
    database: Secret | None = None
    """``postgresql://…``: the node's stores in this PostgreSQL database, which every replica
    of the node shares; None (the default): SQLite files under the data directory."""

    def department(self, department_id: str) -> Department | None:
        for dept in self.departments:
            if dept.id == department_id:
                return dept
        return None

    def department_by_code(self, credit_code: str) -> Department | None:
        for dept in self.departments:
            if dept.credit_code == credit_code:
                return dept
        return None


@dataclass(frozen=True, slots=True)
class Agreement:
    """A point-to-point (点对点) link between two nodes."""

    nodes: tuple[NodeId, NodeId]
    matters: tuple[str, ...] = ()
    """Matters the two nodes' windows receive for each other (点对点跨省通办)."""

    def covers(self, a: str, b: str, matter: str) -> bool:
        return {a, b} == set(self.nodes) and matter in self.matters


@dataclass(frozen=True, slots=True)
class Client:
    """A departmental system's demo credentials."""

    id: str
    department: DepartmentId
    node: NodeId
    secret_hash: str
    """scrypt hash checked by the IdP (see :mod:`gateway._internal.passwords`)."""
    scopes: tuple[str, ...]
    demo_secret: Secret | None = None
    """The clear secret, for demo clients only (``tongban token --client``)."""
    audit_everywhere: bool = False
    """With ``audit:read``: read every node's audit log, not only its own node's. Only for
    national's auditors, and only when the federation file says so."""


@dataclass(frozen=True, slots=True)
class Citizen:
    """A demo citizen (certificate holder)."""

    id: str
    name: str
    password_hash: str
    region: RegionCode
    demo_password: Secret | None = None


@dataclass(frozen=True, slots=True)
class Federation:
    name: str
    host: str
    audience: str
    data_dir: Path
    keys_dir: Path
    seal_alg: str
    key_validity_days: int
    clock_skew_seconds: int
    key_propagation_seconds: float
    """How long a rotation waits for every node to hold a new trust list before going on."""
    """Tolerance on token and grant times between machines (RFC 8725 §3.10 style leeway)."""
    key_passphrase: Secret | None
    limits: Limits
    nodes: tuple[NodeConfig, ...]
    network: Network = Network()
    calendar: Calendar = Calendar()
    witness: Witness = Witness()
    agreements: tuple[Agreement, ...] = ()
    clients: tuple[Client, ...] = ()
    citizens: tuple[Citizen, ...] = ()
    ed25519_alg: str = "EdDSA"
    """The JWS name new Ed25519 seals and tokens carry (and their JWKs' ``alg``): RFC 8037's
    ``EdDSA`` (the default: every library of the interop matrix verifies it) or RFC 9864's
    ``Ed25519``. Both verify everywhere, whichever is chosen."""
    source: Path | None = field(default=None, compare=False)

    def node(self, node_id: str) -> NodeConfig:
        for node in self.nodes:
            if node.id == node_id:
                return node
        known = ", ".join(n.id for n in self.nodes)
        raise ConfigError(f"unknown node {node_id!r}; the federation has: {known}")

    def url(self, node_id: str) -> str:
        node = self.node(node_id)
        return node.url or f"http://{self.host}:{node.port}"

    def client(self, client_id: str) -> Client | None:
        """The federation file's entry for a client id (None for one it does not list)."""
        return next((c for c in self.clients if c.id == client_id), None)

    def idp(self) -> NodeConfig:
        """The federation's identity provider node (``kind = "idp"``, id ``idp``)."""
        node = self.node(IDP)
        if node.kind != "idp":
            raise ConfigError(f"node {IDP!r} is not an identity provider (kind = 'idp')")
        return node

    def idp_issuer(self) -> str:
        """The issuer URL every node pins: the IdP's URL in the federation file."""
        return self.url(IDP)

    def department(self, department_id: str) -> tuple[NodeConfig, Department]:
        for node in self.nodes:
            dept = node.department(department_id)
            if dept is not None:
                return node, dept
        raise ConfigError(f"unknown department {department_id!r}")

    def with_ports(self, ports: Mapping[str, int]) -> Federation:
        """A copy whose named nodes listen on other ports (demo and tests on free ports)."""
        nodes = tuple(
            replace(node, port=ports[node.id], url=None) if node.id in ports else node
            for node in self.nodes
        )
        return replace(self, nodes=nodes)

    def with_database(self, node_id: str, database: str) -> Federation:
        """A copy whose node ``node_id`` keeps its stores in PostgreSQL at ``database``
        (``--database``); ``ConfigError`` for anything but a ``postgresql://`` URL."""
        if not database.startswith(DATABASE_SCHEMES):
            raise ConfigError("--database must be a postgresql:// URL", code="config.database")
        self.node(node_id)
        nodes = tuple(
            replace(node, database=Secret(database)) if node.id == node_id else node
            for node in self.nodes
        )
        return replace(self, nodes=nodes)

    def with_overrides(self, **changes: Any) -> Federation:
        """A copy with some top-level fields replaced (tests, ``--data-dir`` and such)."""
        return replace(self, **changes)


def load_federation(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Federation:
    """Read and validate a federation file. Raises :class:`ConfigError` naming line and problem.

    ``env`` supplies ``TONGBAN_KEY_PASSPHRASE`` (read here, once, never by handlers).
    Relative ``data_dir`` / ``keys_dir`` resolve against ``base_dir`` (default: the current
    directory).
    """
    path = path or DEFAULT_FEDERATION_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the federation file: {exc.strerror}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return _Parser(path, text, raw, env or {}, base_dir or Path.cwd()).federation()


_Numbers = TypeVar("_Numbers", "Limits", "Network", "Witness")


class _Parser:
    def __init__(
        self, path: Path, text: str, raw: dict[str, Any], env: Mapping[str, str], base: Path
    ) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.raw = raw
        self.env = env
        self.base = base

    # -- error reporting -------------------------------------------------------------------

    def fail(
        self, where: str, problem: str, needle: str | None = None, *, anchor: str | None = None
    ) -> ConfigError:
        """An error naming the file, the line (``needle`` found after ``anchor``), the problem."""
        start = self._line_of(anchor, 0) if anchor else 0
        line = self._line_of(needle, start or 0) if needle else start
        at = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{at}: {where}: {problem}")

    def _line_of(self, needle: str, start: int) -> int | None:
        begin = max(start - 1, 0)
        for number, line in enumerate(self.lines[begin:], start=begin + 1):
            if needle in line:
                return number
        return None

    # -- typed getters ---------------------------------------------------------------------

    def _get(
        self, table: Mapping[str, Any], key: str, kind: type, where: str, *, default: Any = ...
    ) -> Any:
        if key not in table:
            if default is ...:
                raise self.fail(where, f"missing required key {key!r}")
            return default
        value = table[key]
        if kind is float and is_int(value):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(
                where,
                f"{key!r} must be a {kind.__name__}, not {type(value).__name__}",
                f"{key} =",
            )
        return value

    def _table(self, key: str) -> dict[str, Any]:
        value = self.raw.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table", f"[{key}]")
        return value

    def _array(self, key: str) -> list[dict[str, Any]]:
        value = self.raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(key, f"must be an array of tables ([[{key}]])", key)
        return value

    # -- sections --------------------------------------------------------------------------

    def federation(self) -> Federation:
        known = {
            "federation",
            "limits",
            "network",
            "calendar",
            "witness",
            "nodes",
            "agreements",
            "clients",
            "citizens",
        }
        for key in self.raw:
            if key not in known:
                raise self.fail(key, f"unknown section (expected one of {sorted(known)})", key)
        fed = self._table("federation")
        where = "[federation]"
        name = self._get(fed, "name", str, where)
        host = self._get(fed, "host", str, where, default="127.0.0.1")
        audience = self._get(fed, "audience", str, where, default="tongban")
        seal_alg = self._get(fed, "seal_alg", str, where, default="EdDSA")
        if seal_alg not in ("EdDSA", "ES256", "SM2"):
            raise self.fail(where, "seal_alg must be EdDSA, ES256 or SM2", "seal_alg")
        ed25519_alg = self._get(fed, "ed25519_alg", str, where, default="EdDSA")
        if ed25519_alg not in ("EdDSA", "Ed25519"):
            raise self.fail(where, "ed25519_alg must be EdDSA or Ed25519", "ed25519_alg")
        skew = self._get(fed, "clock_skew_seconds", int, where, default=60)
        if not 0 <= skew <= 300:
            raise self.fail(where, "clock_skew_seconds must be 0..300", "clock_skew_seconds")
        propagation = self._get(fed, "key_propagation_seconds", float, where, default=30.0)
        if not 0 < propagation <= 3600:
            raise self.fail(where, "key_propagation_seconds must be in (0, 3600]", "propagation")
        validity = self._get(fed, "key_validity_days", int, where, default=365)
        if not 1 <= validity <= 3650:
            raise self.fail(where, "key_validity_days must be 1..3650", "key_validity_days")
        data_dir = self.base / self._get(fed, "data_dir", str, where, default="var")
        keys_dir = self.base / self._get(fed, "keys_dir", str, where, default="keys")
        passphrase = self.env.get("TONGBAN_KEY_PASSPHRASE")
        nodes = tuple(self._node(i, n) for i, n in enumerate(self._array("nodes")))
        self._check_nodes(nodes)
        node_ids: set[str] = {n.id for n in nodes}
        return Federation(
            name=name,
            host=host,
            audience=audience,
            data_dir=data_dir,
            keys_dir=keys_dir,
            seal_alg=seal_alg,
            key_validity_days=validity,
            clock_skew_seconds=skew,
            key_propagation_seconds=propagation,
            key_passphrase=Secret(passphrase) if passphrase else None,
            limits=self._limits(),
            network=self._network(),
            calendar=self._calendar(),
            witness=self._positive_numbers("witness", Witness),
            nodes=nodes,
            agreements=tuple(
                self._agreement(i, a, node_ids) for i, a in enumerate(self._array("agreements"))
            ),
            clients=tuple(self._client(i, c, nodes) for i, c in enumerate(self._array("clients"))),
            citizens=tuple(self._citizen(i, c) for i, c in enumerate(self._array("citizens"))),
            ed25519_alg=ed25519_alg,
            source=self.path,
        )

    def _limits(self) -> Limits:
        limits = self._positive_numbers("limits", Limits)
        if limits.max_header_bytes < limits.max_token_bytes + 1024:
            raise self.fail(
                "[limits]",
                "max_header_bytes must leave 1 KiB above max_token_bytes",
                "max_header_bytes",
            )
        return limits

    def _network(self) -> Network:
        return self._positive_numbers("network", Network)

    def _calendar(self) -> Calendar:
        table = self._table("calendar")
        where = "[calendar]"
        known = set(Calendar.__dataclass_fields__)
        for key in table:
            if key not in known:
                raise self.fail(where, f"unknown calendar key {key!r}", key)
        offset = self._get(table, "utc_offset_hours", int, where, default=8)
        if not -12 <= offset <= 14:
            raise self.fail(where, "utc_offset_hours must be -12..14", "utc_offset_hours")
        weekend = self._get(table, "weekend", list, where, default=[6, 7])
        if not all(is_int(d) and 1 <= d <= 7 for d in weekend) or len(set(weekend)) > 6:
            raise self.fail(where, "weekend lists ISO weekdays 1..7 (not all seven)", "weekend")
        days = self._get(table, "acceptance_days", int, where, default=5)
        if not 1 <= days <= 60:
            raise self.fail(where, "acceptance_days must be 1..60", "acceptance_days")
        return Calendar(
            utc_offset_hours=offset,
            weekend=tuple(sorted(set(weekend))),
            holidays=self._dates(table, "holidays", where),
            workdays=self._dates(table, "workdays", where),
            acceptance_days=days,
        )

    def _dates(self, table: Mapping[str, Any], key: str, where: str) -> frozenset[date]:
        """A list of TOML dates (``2026-10-01``) or ISO date strings."""
        found: set[date] = set()
        for value in self._get(table, key, list, where, default=[]):
            parsed = value if isinstance(value, date) else _iso_date(value)
            if parsed is None:
                raise self.fail(where, f"{key} lists dates (YYYY-MM-DD), not {value!r}", key)
            found.add(parsed)
        return frozenset(found)

    def _positive_numbers(self, section: str, kind: type[_Numbers]) -> _Numbers:
        """A table of positive numbers, each with its default (``[limits]``, ``[network]``)."""
        table = self._table(section)
        defaults = kind()
        where = f"[{section}]"
        for key in table:
            if not hasattr(defaults, key):
                raise self.fail(where, f"unknown {section} key {key!r}", key)
        values: dict[str, Any] = {}
        for name in kind.__dataclass_fields__:
            default = getattr(defaults, name)
            value = self._get(table, name, type(default), where, default=default)
            if value <= 0:
                raise self.fail(where, f"{name} must be positive", name)
            values[name] = value
        return kind(**values)

    def _node(self, i: int, table: dict[str, Any]) -> NodeConfig:
        where = f"nodes[{i}]"
        node_id = self._get(table, "id", str, where)
        where = f"node {node_id!r}"
        needle = f'"{node_id}"'
        anchor = f'id = "{node_id}"'
        if not _NODE_ID.fullmatch(node_id):
            raise self.fail(where, "id must match [a-z][a-z0-9-]{1,31}", needle, anchor=anchor)
        port = self._get(table, "port", int, where)
        if not 0 <= port <= 65535:
            raise self.fail(where, f"port {port} is out of range", f"port = {port}", anchor=anchor)
        kind = self._get(table, "kind", str, where, default="region")
        if kind not in ("idp", "region"):
            raise self.fail(where, "kind must be 'idp' or 'region'", needle, anchor=anchor)
        region = self._get(table, "region", str, where, default=None)
        if kind == "region":
            if region is None:
                raise self.fail(where, "a region node needs a region code", needle, anchor=anchor)
            if not REGION_CODE.fullmatch(region):
                raise self.fail(
                    where,
                    f"region {region!r} is not a 6-digit GB/T 2260 code",
                    region,
                    anchor=anchor,
                )
        parent = self._get(table, "parent", str, where, default=None)
        departments = tuple(
            self._department(node_id, j, d) for j, d in enumerate(table.get("departments", []))
        )
        url = self._get(table, "url", str, where, default=None)
        if url is not None and not _URL.fullmatch(url):
            raise self.fail(
                where, f"url {url!r} must be http(s)://host[:port]", "url", anchor=anchor
            )
        database = self._get(table, "database", str, where, default=None)
        if database is not None and not database.startswith(DATABASE_SCHEMES):
            raise self.fail(
                where, "database must be a postgresql:// URL", "database", anchor=anchor
            )
        return NodeConfig(
            database=Secret(database) if database is not None else None,
            id=NodeId(node_id),
            name=self._get(table, "name", str, where, default=node_id),
            port=port,
            kind=kind,
            region=RegionCode(region) if region else None,
            parent=NodeId(parent) if parent else None,
            departments=departments,
            url=url,
        )

    def _department(self, node_id: str, j: int, table: Any) -> Department:
        where = f"node {node_id!r} departments[{j}]"
        if not isinstance(table, dict):
            raise self.fail(where, "must be a table", node_id)
        dept_id = self._get(table, "id", str, where)
        code = self._get(table, "credit_code", str, where)
        try:
            validate_credit_code(code)
        except InvalidIdentifier as exc:
            raise self.fail(f"department {dept_id!r}", exc.detail, code) from exc
        issues = self._get(table, "issues", list, where, default=[])
        if not all(isinstance(t, str) for t in issues):
            raise self.fail(f"department {dept_id!r}", "issues must list type names", dept_id)
        prefix = f"{node_id}-"
        default_kind = dept_id[len(prefix) :] if dept_id.startswith(prefix) else dept_id
        kind = self._get(table, "kind", str, where, default=default_kind)
        if not _NODE_ID.fullmatch(kind):
            raise self.fail(f"department {dept_id!r}", "kind must match [a-z][a-z0-9-]{1,31}",
                            dept_id)  # fmt: skip
        return Department(
            id=DepartmentId(dept_id),
            name=self._get(table, "name", str, where),
            credit_code=code,
            issues=tuple(issues),
            kind=kind,
        )

    def _check_nodes(self, nodes: tuple[NodeConfig, ...]) -> None:
        seen: dict[str, NodeConfig] = {}
        ports: dict[int, str] = {}
        departments: set[str] = set()
        for node in nodes:
            if node.id in seen:
                raise self.fail(f"node {node.id!r}", "defined twice", f'"{node.id}"')
            seen[node.id] = node
            if node.port and node.port in ports:
                raise self.fail(
                    f"node {node.id!r}",
                    f"port {node.port} is already used by {ports[node.port]!r}",
                    f"port = {node.port}",
                )
            ports[node.port] = node.id
            for dept in node.departments:
                if dept.id in departments:
                    raise self.fail(f"department {dept.id!r}", "defined twice", f'"{dept.id}"')
                departments.add(dept.id)
        for node in nodes:
            if node.parent is None:
                continue
            if node.parent not in seen:
                raise self.fail(
                    f"node {node.id!r}", f"parent {node.parent!r} is not a node", node.parent
                )
            # walk up: no cycles
            chain = {node.id}
            cur: NodeConfig | None = seen[node.parent]
            while cur is not None:
                if cur.id in chain:
                    raise self.fail(f"node {node.id!r}", "parent chain has a cycle", node.parent)
                chain.add(cur.id)
                cur = seen[cur.parent] if cur.parent else None

    def _agreement(self, i: int, table: dict[str, Any], node_ids: set[str]) -> Agreement:
        where = f"agreements[{i}]"
        pair = self._get(table, "nodes", list, where)
        if len(pair) != 2 or pair[0] == pair[1] or not all(isinstance(p, str) for p in pair):
            raise self.fail(where, "nodes must name two different nodes", "nodes =")
        for node_id in pair:
            if node_id not in node_ids:
                raise self.fail(where, f"{node_id!r} is not a node", f'"{node_id}"')
        matters = self._get(table, "matters", list, where, default=[])
        if not all(isinstance(m, str) for m in matters):
            raise self.fail(where, "matters must list matter ids", "matters =")
        return Agreement(nodes=(NodeId(pair[0]), NodeId(pair[1])), matters=tuple(matters))

    def _client(self, i: int, table: dict[str, Any], nodes: tuple[NodeConfig, ...]) -> Client:
        where = f"clients[{i}]"
        client_id = self._get(table, "id", str, where)
        department = self._get(table, "department", str, where)
        owner = next((n for n in nodes if n.department(department) is not None), None)
        if owner is None:
            raise self.fail(
                f"client {client_id!r}", f"department {department!r} is not defined", department
            )
        scopes = self._get(table, "scopes", list, where, default=[])
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            raise self.fail(f"client {client_id!r}", f"unknown scopes {unknown}", "scopes =",
                            anchor=f'id = "{client_id}"')  # fmt: skip
        secret_hash = self._hash(table, "secret_hash", f"client {client_id!r}", client_id)
        demo = self._get(table, "demo_secret", str, where, default=None)
        everywhere = self._get(table, "audit_everywhere", bool, where, default=False)
        if everywhere and (owner.id != NATIONAL or "audit:read" not in scopes):
            raise self.fail(
                f"client {client_id!r}",
                "audit_everywhere is for national's clients with the audit:read scope",
                "audit_everywhere",
                anchor=f'id = "{client_id}"',
            )
        return Client(
            id=client_id,
            department=DepartmentId(department),
            node=owner.id,
            secret_hash=secret_hash,
            scopes=tuple(str(s) for s in scopes),
            demo_secret=Secret(demo) if demo else None,
            audit_everywhere=everywhere,
        )

    def _hash(self, table: dict[str, Any], key: str, where: str, anchor_id: str) -> str:
        value = self._get(table, key, str, where)
        try:
            check_hash_format(value)
        except ConfigError as exc:
            raise self.fail(where, f"{key}: {exc.detail}", f"{key} =",
                            anchor=f'id = "{anchor_id}"') from exc  # fmt: skip
        return str(value)

    def _citizen(self, i: int, table: dict[str, Any]) -> Citizen:
        where = f"citizens[{i}]"
        citizen_id = self._get(table, "id", str, where)
        try:
            validate_resident_id(citizen_id)
        except InvalidIdentifier as exc:
            raise self.fail(f"citizen {citizen_id!r}", exc.detail, citizen_id) from exc
        region = self._get(table, "region", str, where, default=citizen_id[:6])
        demo = self._get(table, "demo_password", str, where, default=None)
        return Citizen(
            id=citizen_id,
            name=self._get(table, "name", str, where),
            password_hash=self._hash(table, "password_hash", f"citizen {citizen_id!r}", citizen_id),
            region=RegionCode(region),
            demo_password=Secret(demo) if demo else None,
        )


def _iso_date(value: object) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None
