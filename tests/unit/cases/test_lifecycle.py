"""The lifecycle: each action from the states it is allowed in, by the roles that take it."""

from __future__ import annotations

import pytest

from gateway.cases.lifecycle import (
    FINAL_STATES,
    OWNER_ACTIONS,
    TRANSITIONS,
    Action,
    CaseState,
    Role,
    allowed,
    transition,
)
from gateway.errors import BadTransition, Forbidden

S = CaseState
A = Action
OWNER = frozenset({Role.OWNER})
WINDOW = frozenset({Role.WINDOW})
APPLICANT = frozenset({Role.APPLICANT})
SYSTEM = frozenset({Role.SYSTEM})

# (state, action, roles, target): the whole table, spelled out
PATHS = [
    (S.RECEIVED, A.FORWARD, SYSTEM, S.IN_TRANSIT),
    (S.RECEIVED, A.ARRIVE, SYSTEM, S.PENDING_ACCEPTANCE),
    (S.IN_TRANSIT, A.ARRIVE, SYSTEM, S.PENDING_ACCEPTANCE),
    (S.PENDING_ACCEPTANCE, A.ACCEPT, OWNER, S.ACCEPTED),
    (S.PENDING_ACCEPTANCE, A.ACCEPT, SYSTEM, S.ACCEPTED),
    (S.PENDING_ACCEPTANCE, A.NOT_ACCEPT, OWNER, S.CLOSED),
    (S.PENDING_ACCEPTANCE, A.REQUEST_CORRECTION, OWNER, S.AWAITING_CORRECTION),
    (S.AWAITING_CORRECTION, A.SUPPLEMENT, WINDOW, S.PENDING_ACCEPTANCE),
    (S.AWAITING_CORRECTION, A.SUPPLEMENT, APPLICANT, S.PENDING_ACCEPTANCE),
    (S.ACCEPTED, A.SUSPEND, OWNER, S.SUSPENDED),
    (S.SUSPENDED, A.RESUME, OWNER, S.ACCEPTED),
    (S.ACCEPTED, A.APPROVE, OWNER, S.DECIDED),
    (S.ACCEPTED, A.REFUSE, OWNER, S.DECIDED),
    (S.DECIDED, A.DELIVER, OWNER, S.DELIVERED),
    (S.DELIVERED, A.COMPLETE, OWNER, S.CLOSED),
    (S.DELIVERED, A.COMPLETE, WINDOW, S.CLOSED),
    (S.DELIVERED, A.RETURN, OWNER, S.RETURNED),
    (S.DELIVERED, A.RETURN, WINDOW, S.RETURNED),
    *[
        (state, A.WITHDRAW, roles, S.CLOSED)
        for state in (S.PENDING_ACCEPTANCE, S.AWAITING_CORRECTION, S.ACCEPTED, S.SUSPENDED)
        for roles in (APPLICANT, WINDOW)
    ],
]


@pytest.mark.parametrize(("state", "action", "roles", "target"), PATHS)
def test_allowed_paths(
    state: CaseState, action: Action, roles: frozenset[Role], target: CaseState
) -> None:
    assert transition(state, action, roles) is target
    assert action in allowed(state, roles)


def test_the_table_has_no_other_paths() -> None:
    spelled = {(state, action) for state, action, _, _ in PATHS}
    table = {(state, action) for action, rule in TRANSITIONS.items() for state in rule.sources}
    assert spelled == table


@pytest.mark.parametrize(
    ("action", "roles"),
    [
        (A.ACCEPT, WINDOW),
        (A.ACCEPT, APPLICANT),
        (A.NOT_ACCEPT, SYSTEM),
        (A.REQUEST_CORRECTION, WINDOW),
        (A.SUPPLEMENT, OWNER),
        (A.APPROVE, WINDOW),
        (A.APPROVE, APPLICANT),
        (A.WITHDRAW, OWNER),
        (A.FORWARD, OWNER),
        (A.ARRIVE, WINDOW),
        (A.DELIVER, WINDOW),
    ],
)
def test_an_action_of_another_role_is_forbidden(action: Action, roles: frozenset[Role]) -> None:
    # whatever the state: the role is checked first
    for state in CaseState:
        with pytest.raises(Forbidden) as caught:
            transition(state, action, roles)
        assert (caught.value.status, caught.value.code) == (403, "case.wrong_owner")


def test_an_action_not_allowed_now_names_those_that_are() -> None:
    with pytest.raises(BadTransition) as caught:
        transition(S.ACCEPTED, A.ACCEPT, OWNER)
    assert (caught.value.status, caught.value.code) == (409, "case.bad_transition")
    assert caught.value.allowed == ("suspend", "approve", "refuse")
    # only the caller's own actions are named
    with pytest.raises(BadTransition) as caught:
        transition(S.ACCEPTED, A.SUPPLEMENT, WINDOW)
    assert caught.value.allowed == ("withdraw",)
    # and nothing at all once the case is over
    with pytest.raises(BadTransition) as caught:
        transition(S.CLOSED, A.WITHDRAW, APPLICANT)
    assert caught.value.allowed == ()
    assert "nothing" in caught.value.detail


@pytest.mark.parametrize("state", [S.DECIDED, S.DELIVERED, S.CLOSED, S.RETURNED])
def test_nobody_withdraws_after_the_decision(state: CaseState) -> None:
    with pytest.raises(BadTransition):
        transition(state, A.WITHDRAW, APPLICANT | WINDOW)


def test_a_case_cannot_arrive_twice_nor_be_forwarded_once_it_left() -> None:
    for state in (S.PENDING_ACCEPTANCE, S.ACCEPTED):
        with pytest.raises(BadTransition):
            transition(state, A.ARRIVE, SYSTEM)
    with pytest.raises(BadTransition):
        transition(S.IN_TRANSIT, A.FORWARD, SYSTEM)


def test_several_roles_at_once() -> None:
    # a department that is both the window and the owner (县域通办 inside one department)
    both = OWNER | WINDOW
    assert transition(S.DELIVERED, A.COMPLETE, both) is S.CLOSED
    assert set(allowed(S.PENDING_ACCEPTANCE, both)) == {
        A.ACCEPT,
        A.NOT_ACCEPT,
        A.REQUEST_CORRECTION,
        A.WITHDRAW,
    }


def test_allowed_without_roles_lists_every_action_of_the_state() -> None:
    assert allowed(S.RECEIVED) == [A.FORWARD, A.ARRIVE]
    assert allowed(S.SUSPENDED) == [A.RESUME, A.WITHDRAW]
    assert allowed(S.RETURNED) == []
    assert allowed(S.DECIDED, APPLICANT) == []


def test_final_states_and_reasons() -> None:
    assert {S.DECIDED, S.DELIVERED, S.CLOSED, S.RETURNED} == FINAL_STATES
    assert {a for a, rule in TRANSITIONS.items() if rule.needs_reason} == {
        A.NOT_ACCEPT,
        A.SUSPEND,
        A.REFUSE,
    }
    assert A.ACCEPT in OWNER_ACTIONS
    assert A.SUPPLEMENT not in OWNER_ACTIONS
    assert A.FORWARD not in OWNER_ACTIONS
