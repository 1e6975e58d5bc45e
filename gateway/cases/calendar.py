"""Working days (工作日): the clock of every case's time limits.

A limit of N working days from a time ends at the close of the N-th working day after that
time's local date (weekends and the listed public holidays are skipped; a make-up working
day (调休) on a weekend counts). The federation file's ``[calendar]`` gives the days.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from gateway.config import Calendar
from gateway.errors import InputError

MAX_SPAN_DAYS = 3660
"""The longest calendar span walked (ten years): a limit that cannot end within it is refused."""


class WorkingCalendar:
    """Counts working days in the federation's local dates."""

    __slots__ = ("_calendar", "_zone")

    def __init__(self, calendar: Calendar) -> None:
        self._calendar = calendar
        self._zone = timezone(timedelta(hours=calendar.utc_offset_hours))

    @property
    def acceptance_days(self) -> int:
        return self._calendar.acceptance_days

    def local_date(self, at: float) -> date:
        return datetime.fromtimestamp(at, self._zone).date()

    def is_working_day(self, day: date) -> bool:
        if day in self._calendar.workdays:
            return True
        return day.isoweekday() not in self._calendar.weekend and day not in self._calendar.holidays

    def end_of(self, day: date) -> float:
        """The first instant after ``day`` (local midnight ending it)."""
        start = datetime(day.year, day.month, day.day, tzinfo=self._zone) + timedelta(days=1)
        return start.astimezone(UTC).timestamp()

    def add(self, at: float, days: int) -> float:
        """The end of the ``days``-th working day after ``at``'s local date."""
        if days < 0:
            raise InputError("a time limit is a non-negative number of working days")
        day = self.local_date(at)
        counted = 0
        for _ in range(MAX_SPAN_DAYS):
            if counted == days:
                return self.end_of(day)
            day += timedelta(days=1)
            if self.is_working_day(day):
                counted += 1
        raise InputError("the calendar has no such span of working days", code="case.calendar")

    def between(self, start: float, end: float) -> int:
        """Working days from ``start``'s local date (excluded) to ``end``'s (included)."""
        first, last = self.local_date(start), self.local_date(end)
        if last <= first:
            return 0
        span = min((last - first).days, MAX_SPAN_DAYS)
        return sum(self.is_working_day(first + timedelta(days=i)) for i in range(1, span + 1))
