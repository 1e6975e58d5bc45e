"""Injected time. Nothing in the domain core calls ``time.time()`` directly."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FixedClock:
    """A clock for tests and offline replays: it only moves when told to."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, now: float) -> None:
        self._now = now


def to_rfc3339(ts: float) -> str:
    """Format a timestamp as RFC 3339 UTC with second precision (``2026-11-24T08:00:00Z``)."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_rfc3339(text: str) -> float:
    """Parse the strict form written by :func:`to_rfc3339`. Raises ``ValueError``."""
    if len(text) != 20 or not text.endswith("Z"):
        raise ValueError("not an RFC 3339 UTC timestamp of the form YYYY-MM-DDTHH:MM:SSZ")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
