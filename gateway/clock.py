"""Injected time. Nothing in the domain core calls ``time.time()`` directly."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Final, Protocol

_RFC3339_UTC: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
"""The one form :func:`to_rfc3339` writes: ASCII digits, every field at full width."""


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
    return datetime.fromtimestamp(int(ts), UTC).isoformat()[:-6] + "Z"  # less "+00:00"


def from_rfc3339(text: str) -> float:
    """Parse the strict form written by :func:`to_rfc3339`. Raises ``ValueError``.

    The form is matched first (ASCII digits only, no padding with spaces, ``Z`` only), so
    ``fromisoformat`` only has to check that the date and time exist.
    """
    if _RFC3339_UTC.fullmatch(text) is None:
        raise ValueError("not an RFC 3339 UTC timestamp of the form YYYY-MM-DDTHH:MM:SSZ")
    return datetime.fromisoformat(text).timestamp()
