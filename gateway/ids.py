"""Look-alike identifiers get their own types, so a node name is never passed as a kid."""

from __future__ import annotations

from typing import Final, NewType

NodeId = NewType("NodeId", str)
"""A federation node, e.g. ``zhuji``."""

NATIONAL: Final = NodeId("national")
"""The hierarchy's root: it authors the trust list and keeps the catalog."""

IDP: Final = NodeId("idp")
"""The federation's identity provider: it issues access tokens and consent grants."""

KeyId = NewType("KeyId", str)
"""A JWK ``kid`` (RFC 7638 thumbprint of the public key)."""

RegionCode = NewType("RegionCode", str)
"""A GB/T 2260 administrative region code, six digits, e.g. ``330681``."""

DepartmentId = NewType("DepartmentId", str)
"""A department of a node, e.g. ``zhuji-civil-affairs``."""

CertificateId = NewType("CertificateId", str)
"""A GB/T 36904 certificate identifier, ``1.2.156.3005.2.…``."""
