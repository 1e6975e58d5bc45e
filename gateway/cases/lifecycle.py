"""A case's life: its states, the actions that move it, and who may take each.

::

    received ─forward→ in_transit ─arrive→ pending_acceptance     (a case for another node)
    received ─arrive→ pending_acceptance                          (the owner is on this node)
    pending_acceptance ─accept→ accepted | ─not_accept→ closed (不予受理, reason)
                       ─request_correction→ awaiting_correction ─supplement→ pending_acceptance
                       (no answer within the acceptance days: accept, reason "deemed")
    accepted ─suspend→ suspended ─resume→ accepted                (特别程序: the clock stops)
    accepted ─approve→ decided (approved) | ─refuse→ decided (refused, reason)
    decided ─deliver→ delivered ─complete→ closed | ─return→ returned (not collected)
    any state before a decision ─withdraw→ closed (the applicant)

Each action belongs to a role: the owning department decides; the window (or the applicant
online) supplements; the applicant withdraws (the window may on their behalf); the system
forwards, registers the arrival and deems acceptance. An action not allowed in a state
raises :class:`BadTransition` ``case.bad_transition`` naming the actions that are.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.errors import BadTransition, Forbidden


class CaseState(StrEnum):
    RECEIVED = "received"  # 已接件
    IN_TRANSIT = "in_transit"  # 转交中
    PENDING_ACCEPTANCE = "pending_acceptance"  # 待受理
    AWAITING_CORRECTION = "awaiting_correction"  # 补正中
    ACCEPTED = "accepted"  # 已受理 / 办理中
    SUSPENDED = "suspended"  # 特别程序
    DECIDED = "decided"  # 已办结（审批）
    DELIVERED = "delivered"  # 已送达
    CLOSED = "closed"  # 已结束
    RETURNED = "returned"  # 逾期未领退回


class Action(StrEnum):
    FORWARD = "forward"
    ARRIVE = "arrive"
    ACCEPT = "accept"
    NOT_ACCEPT = "not_accept"
    REQUEST_CORRECTION = "request_correction"
    SUPPLEMENT = "supplement"
    SUSPEND = "suspend"
    RESUME = "resume"
    APPROVE = "approve"
    REFUSE = "refuse"
    DELIVER = "deliver"
    COMPLETE = "complete"
    RETURN = "return"
    WITHDRAW = "withdraw"


class Role(StrEnum):
    OWNER = "owner"
    """The owning department (业务属地部门)."""
    WINDOW = "window"
    """The receiving window's department (代收代办)."""
    APPLICANT = "applicant"
    SYSTEM = "system"
    """The nodes themselves: forwarding, arrival, deemed acceptance."""


@dataclass(frozen=True, slots=True)
class Transition:
    sources: frozenset[CaseState]
    target: CaseState
    roles: frozenset[Role]
    needs_reason: bool = False


_S = CaseState
_BEFORE_DECISION = frozenset(
    {_S.PENDING_ACCEPTANCE, _S.AWAITING_CORRECTION, _S.ACCEPTED, _S.SUSPENDED}
)
_OWNER = frozenset({Role.OWNER})
_SYSTEM = frozenset({Role.SYSTEM})

TRANSITIONS: dict[Action, Transition] = {
    Action.FORWARD: Transition(frozenset({_S.RECEIVED}), _S.IN_TRANSIT, _SYSTEM),
    Action.ARRIVE: Transition(
        frozenset({_S.RECEIVED, _S.IN_TRANSIT}), _S.PENDING_ACCEPTANCE, _SYSTEM
    ),
    Action.ACCEPT: Transition(
        frozenset({_S.PENDING_ACCEPTANCE}), _S.ACCEPTED, frozenset({Role.OWNER, Role.SYSTEM})
    ),
    Action.NOT_ACCEPT: Transition(
        frozenset({_S.PENDING_ACCEPTANCE}), _S.CLOSED, _OWNER, needs_reason=True
    ),
    Action.REQUEST_CORRECTION: Transition(
        frozenset({_S.PENDING_ACCEPTANCE}), _S.AWAITING_CORRECTION, _OWNER
    ),
    Action.SUPPLEMENT: Transition(
        frozenset({_S.AWAITING_CORRECTION}),
        _S.PENDING_ACCEPTANCE,
        frozenset({Role.WINDOW, Role.APPLICANT}),
    ),
    Action.SUSPEND: Transition(frozenset({_S.ACCEPTED}), _S.SUSPENDED, _OWNER, needs_reason=True),
    Action.RESUME: Transition(frozenset({_S.SUSPENDED}), _S.ACCEPTED, _OWNER),
    Action.APPROVE: Transition(frozenset({_S.ACCEPTED}), _S.DECIDED, _OWNER),
    Action.REFUSE: Transition(frozenset({_S.ACCEPTED}), _S.DECIDED, _OWNER, needs_reason=True),
    Action.DELIVER: Transition(frozenset({_S.DECIDED}), _S.DELIVERED, _OWNER),
    Action.COMPLETE: Transition(
        frozenset({_S.DELIVERED}), _S.CLOSED, frozenset({Role.OWNER, Role.WINDOW})
    ),
    Action.RETURN: Transition(
        frozenset({_S.DELIVERED}), _S.RETURNED, frozenset({Role.OWNER, Role.WINDOW})
    ),
    Action.WITHDRAW: Transition(
        _BEFORE_DECISION, _S.CLOSED, frozenset({Role.APPLICANT, Role.WINDOW})
    ),
}

FINAL_STATES = frozenset({_S.DECIDED, _S.DELIVERED, _S.CLOSED, _S.RETURNED})
"""States in which the time limit no longer runs (the case is decided or over)."""

OWNER_ACTIONS = frozenset(a for a, t in TRANSITIONS.items() if Role.OWNER in t.roles)


def allowed(state: CaseState, roles: frozenset[Role] | None = None) -> list[Action]:
    """The actions that may be taken in ``state`` (by one of ``roles``, if given)."""
    return [
        action
        for action, rule in TRANSITIONS.items()
        if state in rule.sources and (roles is None or rule.roles & roles)
    ]


def transition(state: CaseState, action: Action, roles: frozenset[Role]) -> CaseState:
    """The state ``action`` leads to from ``state``, taken by someone holding ``roles``.

    Raises :class:`Forbidden` ``case.wrong_owner`` when the action is not theirs to take,
    :class:`BadTransition` ``case.bad_transition`` when it is not allowed now."""
    rule = TRANSITIONS[action]
    if not rule.roles & roles:
        raise Forbidden(
            f"{action.value!r} is taken by the case's "
            + " or ".join(sorted(r.value for r in rule.roles)),
            code="case.wrong_owner",
        )
    if state not in rule.sources:
        now_allowed = tuple(a.value for a in allowed(state, roles))
        raise BadTransition(
            f"{action.value!r} is not allowed while the case is {state.value}; allowed now: "
            + (", ".join(now_allowed) or "nothing"),
            allowed=now_allowed,
        )
    return rule.target
