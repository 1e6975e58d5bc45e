"""The case record: its number, its JSON views, whether it is overdue."""

from __future__ import annotations

from datetime import date

import pytest

from gateway.cases.case import (
    Applicant,
    Case,
    Channel,
    Party,
    case_number,
    check_case_number,
)
from gateway.cases.lifecycle import CaseState
from gateway.cases.materials import Level, Material
from gateway.certificates.matters import Delivery, Form
from gateway.errors import InputError

NOW = 1_795_507_200.0


def a_case(**changes: object) -> Case:
    case = Case(
        id="330681-20261124-000001",
        matter="maternity-benefit",
        channel=Channel.WINDOW,
        state=CaseState.PENDING_ACCEPTANCE,
        window=Party("zhuji", "zhuji-service-center"),
        owner=Party("shanghai", "shanghai-healthcare-security"),
        applicant=Applicant("111", "31010419950312123X", "陈思远", "ab" * 32),
        delivery=Delivery.POST,
        received_at=NOW,
        due_at=NOW + 86_400,
        receipt="a.b.c",
        materials=(
            Material("resident-id", "居民身份证", Form.ELECTRONIC, Level.B, "cd" * 32, 9, "a/b"),
            Material("medical-invoices", "票据", Form.SCAN, Level.D),
        ),
        seq=2,
        updated_at=NOW,
    )
    return case.evolve(**changes)


def test_case_numbers() -> None:
    assert case_number("330681", date(2026, 11, 24), 1) == "330681-20261124-000001"
    assert case_number("310000", date(2026, 1, 2), 999_999) == "310000-20260102-999999"
    for seq in (0, 1_000_000):
        with pytest.raises(InputError) as caught:
            case_number("330681", date(2026, 11, 24), seq)
        assert caught.value.code == "case.numbers"


@pytest.mark.parametrize(
    "text",
    [
        "330681-20261124-1",
        "330681-2026-11-24-000001",
        "33068-20261124-000001",
        "330681-20261124-000001\n",
        " 330681-20261124-000001",
        "../../etc/passwd",
        "",
    ],
)
def test_bad_case_numbers(text: str) -> None:
    with pytest.raises(InputError) as caught:
        check_case_number(text)
    assert (caught.value.status, caught.value.code) == (400, "case.bad_number")


def test_a_good_case_number() -> None:
    assert check_case_number("330681-20261124-000001") == "330681-20261124-000001"


def test_the_record_round_trips() -> None:
    case = a_case(
        outcome="approved",
        result="cert",
        suspended_at=NOW + 5,
        corrections=({"material": "medical-invoices", "reason": "不清晰"},),
        tracking="SF123",
        arrived_at=NOW + 1,
    )
    assert Case.from_record(case.to_record()) == case


def test_the_public_view_hides_the_applicant_id() -> None:
    view = a_case().to_json(now=NOW)
    assert view["applicant"] == {"name": "陈思远", "digest": "ab" * 32}
    assert "31010419950312123X" not in str(view)
    assert view["received_at"] == "2026-11-24T08:00:00Z"
    assert view["due_at"] == "2026-11-25T08:00:00Z"
    assert view["result"] is None
    assert view["events"] == 2
    assert [m["level"] for m in view["materials"]] == ["B", "D"]
    assert a_case(result="X").to_json(now=NOW)["result"] == {"certificate_id": "X"}


def test_overdue() -> None:
    case = a_case()
    assert not case.overdue(NOW)
    assert case.overdue(case.due_at)
    assert case.to_json(now=case.due_at + 1)["overdue"] is True
    # a suspended case's clock is stopped; a decided one's has ended
    assert not a_case(state=CaseState.SUSPENDED).overdue(case.due_at + 1)
    for state in (CaseState.DECIDED, CaseState.DELIVERED, CaseState.CLOSED, CaseState.RETURNED):
        assert not a_case(state=state).overdue(case.due_at + 1)
