"""RFC 3339 UTC times: the one strict form the gateway writes, and reads back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clock import from_rfc3339, to_rfc3339

HYPOTHESIS = settings(derandomize=True, database=None, deadline=None, max_examples=300)
NOW = 1_795_507_200.0  # 2026-11-24T08:00:00Z
LAST = 253_402_300_799  # 9999-12-31T23:59:59Z


def test_round_trip() -> None:
    assert to_rfc3339(NOW) == "2026-11-24T08:00:00Z"
    assert to_rfc3339(NOW + 0.9) == "2026-11-24T08:00:00Z"  # whole seconds
    assert from_rfc3339("2026-11-24T08:00:00Z") == NOW
    assert to_rfc3339(0) == "1970-01-01T00:00:00Z"
    assert to_rfc3339(LAST) == "9999-12-31T23:59:59Z"
    assert from_rfc3339("0001-01-01T00:00:00Z") == datetime(1, 1, 1, tzinfo=UTC).timestamp()


@given(st.integers(min_value=-62_135_596_800, max_value=LAST))
@HYPOTHESIS
def test_reads_what_it_writes_as_strptime_does(ts: int) -> None:
    text = to_rfc3339(ts)
    assert text == datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ").zfill(20)
    assert from_rfc3339(text) == ts


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-11-24T08:00:00",
        "2026-11-24T08:00:00z",
        "2026-11-24t08:00:00Z",
        "2026-11-24 08:00:00Z",
        "2026-11-24T08:00:00+00:00",
        "2026-11-24T08:00:00.5Z",
        "2026-11-24T08:00Z",
        "2026-11- 4T08:00:00Z",  # strptime's %d takes a space-padded day
        "2026-11-24T08:00:0Z",
        "２０２６-11-24T08:00:00Z",  # full-width digits
        "2026-11-2٤T08:00:00Z",  # an Arabic-Indic digit
        "2026-02-30T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-11-24T24:00:00Z",
        "2026-11-24T08:60:00Z",
        "2026-12-31T23:59:60Z",  # no leap seconds
        "0000-01-01T00:00:00Z",
        " 2026-11-24T08:00:00Z",
        "2026-11-24T08:00:00Z\n",
        "+2026-11-24T08:00:00Z",
        "20261124T080000Z",
    ],
)
def test_refuses_any_other_form(text: str) -> None:
    with pytest.raises(ValueError, match=r".+"):
        from_rfc3339(text)
