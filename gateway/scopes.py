"""The OAuth scopes of the federation (issue, read, change status, verify, admin, audit)."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    CERT_READ = "cert:read"
    CERT_ISSUE = "cert:issue"
    CERT_STATUS = "cert:status"
    SEAL_VERIFY = "seal:verify"
    KEYS_ADMIN = "keys:admin"
    AUDIT_READ = "audit:read"
    CASE_INTAKE = "case:intake"
    """Receive applications at a window (受理窗口) and act for the applicant there."""
    CASE_DECIDE = "case:decide"
    """Decide the cases a department owns (业务属地部门)."""


SCOPES = frozenset(scope.value for scope in Scope)
