"""Working days: weekends, public holidays, make-up working days, local (UTC+8) dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from gateway.cases.calendar import WorkingCalendar
from gateway.config import Calendar
from gateway.errors import InputError

CST = timezone(timedelta(hours=8))
# The 2026 National Day holiday as the State Council set it: 1-7 October off, with Sunday
# 27 September and Saturday 10 October worked instead (调休).
NATIONAL_DAY = Calendar(
    holidays=frozenset(date(2026, 10, d) for d in range(1, 8)),
    workdays=frozenset({date(2026, 9, 27), date(2026, 10, 10)}),
)


def local(y: int, m: int, d: int, h: int = 10, minute: int = 0) -> float:
    return datetime(y, m, d, h, minute, tzinfo=CST).timestamp()


def end_of(y: int, m: int, d: int) -> float:
    """Local midnight closing that day."""
    return (datetime(y, m, d, tzinfo=CST) + timedelta(days=1)).timestamp()


def test_local_dates_are_utc_plus_8() -> None:
    cal = WorkingCalendar(Calendar())
    # 2026-11-24T17:30Z is already 25 November in China
    at = datetime(2026, 11, 24, 17, 30, tzinfo=UTC).timestamp()
    assert cal.local_date(at) == date(2026, 11, 25)
    assert cal.local_date(at - 3600) == date(2026, 11, 25)
    assert cal.local_date(at - 2 * 3600) == date(2026, 11, 24)


def test_another_offset_is_honoured() -> None:
    cal = WorkingCalendar(Calendar(utc_offset_hours=0))
    at = datetime(2026, 11, 24, 17, 30, tzinfo=UTC).timestamp()
    assert cal.local_date(at) == date(2026, 11, 24)
    assert cal.end_of(date(2026, 11, 24)) == datetime(2026, 11, 25, tzinfo=UTC).timestamp()


def test_working_days() -> None:
    cal = WorkingCalendar(NATIONAL_DAY)
    assert cal.is_working_day(date(2026, 11, 24))  # a Tuesday
    assert not cal.is_working_day(date(2026, 11, 28))  # a Saturday
    assert not cal.is_working_day(date(2026, 11, 29))  # a Sunday
    assert not cal.is_working_day(date(2026, 10, 1))  # a Thursday, but National Day
    assert cal.is_working_day(date(2026, 9, 27))  # a Sunday, but worked
    assert cal.is_working_day(date(2026, 10, 10))  # a Saturday, but worked


def test_zero_days_end_the_same_local_day() -> None:
    cal = WorkingCalendar(Calendar())
    assert cal.add(local(2026, 11, 24, 16), 0) == end_of(2026, 11, 24)
    # even on a weekend: a limit of nothing ends when the day does
    assert cal.add(local(2026, 11, 28), 0) == end_of(2026, 11, 28)


def test_a_limit_skips_the_weekend() -> None:
    cal = WorkingCalendar(Calendar())
    friday = local(2026, 11, 27, 15)
    assert cal.add(friday, 1) == end_of(2026, 11, 30)  # Monday
    assert cal.add(friday, 5) == end_of(2026, 12, 4)  # the next Friday
    # received on a Saturday: the first working day after it is Monday
    assert cal.add(local(2026, 11, 28), 1) == end_of(2026, 11, 30)


def test_a_limit_counts_from_the_local_date_not_the_utc_one() -> None:
    cal = WorkingCalendar(Calendar())
    # Friday 27 November 23:30 local (15:30Z, still Friday in UTC as well) vs Saturday
    # 00:30 local (16:30Z on Friday in UTC): the second is a weekend receipt
    friday_night = local(2026, 11, 27, 23, 30)
    saturday_early = local(2026, 11, 28, 0, 30)
    assert cal.add(friday_night, 1) == end_of(2026, 11, 30)
    assert cal.add(saturday_early, 1) == end_of(2026, 11, 30)
    assert cal.add(friday_night, 0) == end_of(2026, 11, 27)
    assert cal.add(saturday_early, 0) == end_of(2026, 11, 28)


def test_holidays_are_skipped_and_make_up_workdays_count() -> None:
    cal = WorkingCalendar(NATIONAL_DAY)
    friday = local(2026, 9, 25)
    # Sunday 27 September is worked: the first working day after Friday
    assert cal.add(friday, 1) == end_of(2026, 9, 27)
    # 28, 29, 30 September; then 1-7 October off; Saturday 10 October worked; 8, 9 October
    assert cal.add(friday, 4) == end_of(2026, 9, 30)
    assert cal.add(friday, 5) == end_of(2026, 10, 8)
    assert cal.add(friday, 6) == end_of(2026, 10, 9)
    assert cal.add(friday, 7) == end_of(2026, 10, 10)
    assert cal.add(friday, 8) == end_of(2026, 10, 12)
    # without the make-up days the same limits end later
    plain = WorkingCalendar(Calendar(holidays=NATIONAL_DAY.holidays))
    assert plain.add(friday, 1) == end_of(2026, 9, 28)
    assert plain.add(friday, 5) == end_of(2026, 10, 9)


def test_between_counts_working_days_after_the_start_up_to_the_end() -> None:
    cal = WorkingCalendar(NATIONAL_DAY)
    monday, tuesday = local(2026, 11, 23), local(2026, 11, 24)
    assert cal.between(monday, tuesday) == 1
    assert cal.between(monday, monday + 3600) == 0  # the same day
    assert cal.between(tuesday, monday) == 0  # backwards
    assert cal.between(local(2026, 11, 27), local(2026, 11, 30)) == 1  # over a weekend
    assert cal.between(local(2026, 11, 27), local(2026, 11, 29)) == 0  # into a weekend
    # over National Day: 28, 29, 30 September, 8, 9, 10 October (a worked Saturday), 12
    assert cal.between(local(2026, 9, 25), local(2026, 10, 12)) == 8
    assert cal.between(local(2026, 9, 25), local(2026, 9, 27)) == 1  # the worked Sunday


def test_between_undoes_add() -> None:
    cal = WorkingCalendar(NATIONAL_DAY)
    start = local(2026, 9, 21)
    for days in range(0, 30):
        assert cal.between(start, cal.add(start, days) - 1) == days


def test_a_negative_limit_is_refused() -> None:
    cal = WorkingCalendar(Calendar())
    with pytest.raises(InputError) as caught:
        cal.add(local(2026, 11, 24), -1)
    assert caught.value.status == 400


def test_a_calendar_without_working_days_is_refused() -> None:
    cal = WorkingCalendar(Calendar(weekend=(1, 2, 3, 4, 5, 6, 7)))
    assert cal.add(local(2026, 11, 24), 0) == end_of(2026, 11, 24)
    with pytest.raises(InputError) as caught:
        cal.add(local(2026, 11, 24), 1)
    assert (caught.value.status, caught.value.code) == (400, "case.calendar")
    assert cal.between(local(2026, 11, 24), local(2027, 11, 24)) == 0


def test_the_acceptance_days_come_from_the_calendar() -> None:
    assert WorkingCalendar(Calendar()).acceptance_days == 5
    assert WorkingCalendar(Calendar(acceptance_days=3)).acceptance_days == 3
