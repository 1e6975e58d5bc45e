"""The case record (办件): who received it, who decides it, by when, and what came of it.

A case is known by its number, ``<region>-<YYYYMMDD>-<seq>`` (the receiving node's region
code, the local date of receipt, a six-digit sequence of that node and day). Both ends keep
a copy; the events (:mod:`gateway.cases.documents`) bring the copies to the same state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum
from typing import Any

from gateway.cases.lifecycle import FINAL_STATES, CaseState
from gateway.cases.materials import Material
from gateway.certificates.matters import Delivery
from gateway.clock import to_rfc3339
from gateway.errors import InputError

CASE_NUMBER = re.compile(r"[0-9]{6}-[0-9]{8}-[0-9]{6}")
MAX_DAILY_CASES = 999_999


class Channel(StrEnum):
    WINDOW = "window"
    """受办分离 · 代收代办: received at a window."""
    ONLINE = "online"
    """全程网办: filed by the applicant with their own token."""


def case_number(region: str, day: date, seq: int) -> str:
    if not 1 <= seq <= MAX_DAILY_CASES:
        raise InputError("the node has numbered every case it may today", code="case.numbers")
    return f"{region}-{day:%Y%m%d}-{seq:06d}"


def check_case_number(text: str) -> str:
    if not CASE_NUMBER.fullmatch(text):
        raise InputError(
            "a case number is <region>-<YYYYMMDD>-<seq>, e.g. 330681-20261204-000001",
            code="case.bad_number",
        )
    return text


@dataclass(frozen=True, slots=True)
class Party:
    """A node and one of its departments (the window's department is None online)."""

    node: str
    department: str | None

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "department": self.department}


@dataclass(frozen=True, slots=True)
class Applicant:
    """The applicant as the window checked them. Personal data: kept in the case stores of
    the two ends and sent only inside the package; logs carry the digest only."""

    id_type: str
    id: str
    name: str
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {"id_type": self.id_type, "id": self.id, "name": self.name, "digest": self.digest}


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    matter: str
    channel: Channel
    state: CaseState
    window: Party
    owner: Party
    applicant: Applicant
    delivery: Delivery
    received_at: float
    due_at: float
    receipt: str
    """The window's sealed receipt (收件凭证)."""
    materials: tuple[Material, ...]
    seq: int = 0
    """Events so far; the next event is number ``seq + 1``."""
    updated_at: float = 0.0
    outcome: str | None = None
    """``approved``, ``refused``, ``not_accepted``, ``withdrawn``, ``deemed_accepted``…"""
    result: str | None = None
    """The certificate id approval issued."""
    suspended_at: float | None = None
    corrections: tuple[Mapping[str, str], ...] = ()
    """The open 一次性补正 list, every item at once."""
    tracking: str | None = None
    """Delivery detail: a post tracking number, or where to collect."""
    arrived_at: float | None = None
    address: str | None = None
    """Where a result delivered by post goes (personal data: the case's two ends only)."""

    def evolve(self, **changes: Any) -> Case:
        return replace(self, **changes)

    def overdue(self, now: float) -> bool:
        if self.state in FINAL_STATES or self.state == CaseState.SUSPENDED:
            return False
        return now >= self.due_at

    def to_json(self, *, now: float) -> dict[str, Any]:
        """The case as its window, its owner and its applicant see it."""
        return {
            "id": self.id,
            "matter": self.matter,
            "channel": self.channel.value,
            "state": self.state.value,
            "outcome": self.outcome,
            "window": self.window.to_json(),
            "owner": self.owner.to_json(),
            "applicant": {"name": self.applicant.name, "digest": self.applicant.digest},
            "delivery": self.delivery.value,
            "address": self.address,
            "tracking": self.tracking,
            "received_at": to_rfc3339(self.received_at),
            "due_at": to_rfc3339(self.due_at),
            "overdue": self.overdue(now),
            "events": self.seq,
            "corrections": [dict(c) for c in self.corrections],
            "materials": [m.to_json() for m in self.materials],
            "result": {"certificate_id": self.result} if self.result else None,
            "receipt": self.receipt,
        }

    def to_record(self) -> dict[str, Any]:
        """Everything, for the case store (and the package, with the bytes beside it)."""
        return {
            "id": self.id,
            "matter": self.matter,
            "channel": self.channel.value,
            "state": self.state.value,
            "window": self.window.to_json(),
            "owner": self.owner.to_json(),
            "applicant": self.applicant.to_json(),
            "delivery": self.delivery.value,
            "received_at": self.received_at,
            "due_at": self.due_at,
            "receipt": self.receipt,
            "materials": [m.to_json() for m in self.materials],
            "seq": self.seq,
            "updated_at": self.updated_at,
            "outcome": self.outcome,
            "result": self.result,
            "suspended_at": self.suspended_at,
            "corrections": [dict(c) for c in self.corrections],
            "tracking": self.tracking,
            "arrived_at": self.arrived_at,
            "address": self.address,
        }

    @classmethod
    def from_record(cls, raw: Mapping[str, Any]) -> Case:
        applicant = raw["applicant"]
        return cls(
            id=raw["id"],
            matter=raw["matter"],
            channel=Channel(raw["channel"]),
            state=CaseState(raw["state"]),
            window=Party(raw["window"]["node"], raw["window"]["department"]),
            owner=Party(raw["owner"]["node"], raw["owner"]["department"]),
            applicant=Applicant(
                applicant["id_type"], applicant["id"], applicant["name"], applicant["digest"]
            ),
            delivery=Delivery(raw["delivery"]),
            received_at=float(raw["received_at"]),
            due_at=float(raw["due_at"]),
            receipt=raw["receipt"],
            materials=tuple(Material.from_json(m) for m in raw["materials"]),
            seq=int(raw["seq"]),
            updated_at=float(raw["updated_at"]),
            outcome=raw.get("outcome"),
            result=raw.get("result"),
            suspended_at=raw.get("suspended_at"),
            corrections=tuple(raw.get("corrections", ())),
            tracking=raw.get("tracking"),
            arrived_at=raw.get("arrived_at"),
            address=raw.get("address"),
        )
