"""Prometheus metrics, one registry per node (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self, node: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tongban_http_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tongban_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "tongban_errors",
            "Problems answered, by stable error code",
            ["code"],
            registry=self.registry,
        )
        self.verifications = Counter(
            "tongban_verifications",
            "Seal verifications by indication and code",
            ["indication", "code"],
            registry=self.registry,
        )
        self.issued = Counter(
            "tongban_certificates_issued", "Certificates issued", registry=self.registry
        )
        self.catalog_refused = Counter(
            "tongban_catalog_entries_refused",
            "Catalog entries national refused for good (dropped from the outbox, logged)",
            registry=self.registry,
        )
        self.outbox = Gauge(
            "tongban_outbox_records",
            "Records committed changes still owe to another store, by topic (the audit log,"
            " national's catalog): delivered and dropped as they go, so a count that stays"
            " above zero means delivery is failing",
            ["topic"],
            registry=self.registry,
        )
        self.key_expiry = Gauge(
            "tongban_seal_key_expiry_seconds",
            "Seconds until each seal key's validity ends",
            ["kid", "state"],
            registry=self.registry,
        )
        self.audit_partner_forks = Gauge(
            "tongban_audit_partner_forks",
            "1 once a partner's audit log was seen to fork, shrink or be rewritten",
            ["partner"],
            registry=self.registry,
        )
        self.audit_partner_checks = Counter(
            "tongban_audit_partner_checks",
            "Checks of partners' signed tree heads, by partner and result",
            ["partner", "result"],
            registry=self.registry,
        )
        self.audit_cosignatures = Counter(
            "tongban_audit_cosignatures",
            "Witness cosignatures: of partners' heads made here (made) and of this node's"
            " heads gathered from partners (gathered, refused), by partner",
            ["partner", "result"],
            registry=self.registry,
        )
        self.info = Gauge("tongban_node_info", "Node identity", ["node"], registry=self.registry)
        self.info.labels(node=node).set(1)
        # labelled series of the per-request metrics, each looked up once (``labels()`` costs
        # a lock and a tuple a call; the set is the one Prometheus keeps anyway)
        self._requests: dict[tuple[str, str, str], Counter] = {}
        self._latency: dict[str, Histogram] = {}
        self._verifications: dict[tuple[str, str], Counter] = {}

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        """One HTTP request answered."""
        key = (route, method, str(status))
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(*key)
        counter.inc()
        timer = self._latency.get(route)
        if timer is None:
            timer = self._latency[route] = self.latency.labels(route)
        timer.observe(seconds)

    def verified(self, indication: str, code: str, n: int = 1) -> None:
        """``n`` seals verified, with their reports' indication and code."""
        key = (indication, code)
        counter = self._verifications.get(key)
        if counter is None:
            counter = self._verifications[key] = self.verifications.labels(*key)
        counter.inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
