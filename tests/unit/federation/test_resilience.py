"""Deadlines, jittered retries and circuit breakers, on a fixed clock with a fake sleep."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, field

import pytest

from gateway.clock import FixedClock
from gateway.errors import ConfigError, NetworkError, NotFoundError, UpstreamTimeout
from gateway.federation.resilience import (
    Breakers,
    BreakerState,
    CircuitBreaker,
    Deadline,
    RetryPolicy,
    call_with_retries,
    hop_label,
)

T0 = 1_795_507_200.0


class ConstantRng:
    """Always the same draw in [0, 1): 0.5 makes every pause half its ceiling."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@dataclass
class FakeSleep:
    """Sleeping only moves the fixed clock; every pause is recorded."""

    clock: FixedClock
    pauses: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.clock.advance(seconds)


@dataclass
class Peer:
    """A scripted peer: each attempt costs ``cost`` seconds, then follows the script."""

    clock: FixedClock
    script: list[BaseException | str]
    cost: float = 0.0
    timeouts: list[float] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)

    async def __call__(self, limit: float) -> str:
        self.timeouts.append(limit)
        self.started_at.append(self.clock.now())
        self.clock.advance(min(self.cost, limit))
        outcome = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state, read afresh (a property mypy would otherwise keep narrowed)."""
    return breaker.state


def down() -> NetworkError:
    return NetworkError("connection refused", log_detail="ECONNREFUSED")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def sleep(clock: FixedClock) -> FakeSleep:
    return FakeSleep(clock)


def breaker_for(clock: FixedClock, threshold: int = 5, open_seconds: float = 2.0) -> CircuitBreaker:
    return CircuitBreaker(
        "shaoxing", clock=clock, failure_threshold=threshold, open_seconds=open_seconds
    )


async def call(
    peer: Peer,
    *,
    clock: FixedClock,
    sleep: FakeSleep,
    budget: float = 5.0,
    policy: RetryPolicy | None = None,
    breaker: CircuitBreaker | None = None,
    idempotent: bool = True,
    rng: float = 0.5,
    attempt_timeout: float | None = None,
) -> str:
    return await call_with_retries(
        peer,
        deadline=Deadline(budget, clock),
        policy=policy or RetryPolicy(attempts=3, base_delay=0.1, max_delay=1.0),
        breaker=breaker or breaker_for(clock),
        idempotent=idempotent,
        sleep=sleep,
        rng=ConstantRng(rng),
        peer="shaoxing",
        source="zhuji",
        attempt_timeout=attempt_timeout,
    )


# --- deadlines --------------------------------------------------------------------------------


def test_a_deadline_counts_down_with_the_clock(clock: FixedClock) -> None:
    deadline = Deadline(3.0, clock)
    assert deadline.remaining() == 3.0
    assert deadline.expires_at == T0 + 3.0
    clock.advance(2.0)
    assert deadline.remaining() == 1.0
    assert not deadline.expired()
    clock.advance(1.5)
    assert deadline.remaining() == 0.0
    assert deadline.expired()


def test_a_child_deadline_never_outlives_its_parent(clock: FixedClock) -> None:
    deadline = Deadline(3.0, clock)
    assert deadline.child(1.0).remaining() == 1.0
    assert deadline.child(10.0).remaining() == 3.0
    clock.advance(2.5)
    assert deadline.child(1.0).remaining() == 0.5
    clock.advance(1.0)
    assert deadline.child(1.0).expired()


def test_a_deadline_propagated_as_a_time(clock: FixedClock) -> None:
    assert Deadline.at(T0 + 4.0, clock).remaining() == 4.0
    assert Deadline.at(T0 - 4.0, clock).expired()


@pytest.mark.parametrize("budget", [-1.0, math.nan, math.inf])
def test_a_deadline_needs_a_finite_budget(clock: FixedClock, budget: float) -> None:
    with pytest.raises(ConfigError) as info:
        Deadline(budget, clock)
    assert info.value.code == "resilience.bad_budget"
    with pytest.raises(ConfigError) as info:
        Deadline(1.0, clock).child(budget)
    assert info.value.code == "resilience.bad_budget"


def test_a_deadline_at_no_finite_time_is_refused(clock: FixedClock) -> None:
    with pytest.raises(ConfigError) as info:
        Deadline.at(math.inf, clock)
    assert info.value.code == "resilience.bad_budget"


# --- retry policy -----------------------------------------------------------------------------


def test_delays_are_full_jitter_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(attempts=6, base_delay=0.1, max_delay=1.0)
    assert policy.delays(ConstantRng(0.0)) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert policy.delays(ConstantRng(0.5)) == pytest.approx((0.05, 0.1, 0.2, 0.4, 0.5))
    seeded = policy.delays(random.Random(7))
    ceilings = (0.1, 0.2, 0.4, 0.8, 1.0)
    assert len(seeded) == 5
    assert all(0.0 <= d < c for d, c in zip(seeded, ceilings, strict=True))
    assert len(set(seeded)) == 5  # jittered, not a fixed ladder


def test_one_attempt_means_no_delays() -> None:
    assert RetryPolicy(attempts=1).delays(ConstantRng(0.5)) == ()


@pytest.mark.parametrize(
    ("attempts", "base", "maximum"),
    [(0, 0.1, 1.0), (3, -0.1, 1.0), (3, 2.0, 1.0), (3, 0.1, math.inf)],
)
def test_a_bad_policy_fails_at_start_up(attempts: int, base: float, maximum: float) -> None:
    with pytest.raises(ConfigError) as info:
        RetryPolicy(attempts=attempts, base_delay=base, max_delay=maximum)
    assert info.value.code == "resilience.policy"


# --- circuit breaker --------------------------------------------------------------------------


def test_the_breaker_opens_after_consecutive_failures_and_names_the_peer(clock: FixedClock) -> None:
    breaker = breaker_for(clock, threshold=3)
    for _ in range(2):
        breaker.allow()
        breaker.record_failure()
    breaker.allow()
    assert state_of(breaker) is BreakerState.CLOSED
    breaker.record_failure()
    assert state_of(breaker) is BreakerState.OPEN
    with pytest.raises(NetworkError) as info:
        breaker.allow()
    assert info.value.code == "network.circuit_open"
    assert info.value.status == 502
    assert "shaoxing" in info.value.detail


def test_a_success_resets_the_count_of_failures(clock: FixedClock) -> None:
    breaker = breaker_for(clock, threshold=2)
    for _ in range(5):
        breaker.record_failure()
        breaker.record_success()
    assert state_of(breaker) is BreakerState.CLOSED
    breaker.allow()


def test_after_open_seconds_one_probe_closes_it_on_success(clock: FixedClock) -> None:
    breaker = breaker_for(clock, threshold=1, open_seconds=2.0)
    breaker.record_failure()
    clock.advance(1.9)
    with pytest.raises(NetworkError):
        breaker.allow()
    clock.advance(0.1)
    breaker.allow()  # the probe
    assert state_of(breaker) is BreakerState.HALF_OPEN
    with pytest.raises(NetworkError) as info:
        breaker.allow()  # only one probe at a time
    assert info.value.code == "network.circuit_open"
    breaker.record_success()
    assert state_of(breaker) is BreakerState.CLOSED
    breaker.allow()
    breaker.allow()


def test_a_failed_probe_reopens_for_the_same_pause_every_time(clock: FixedClock) -> None:
    breaker = breaker_for(clock, threshold=1, open_seconds=2.0)
    breaker.record_failure()
    for _ in range(10):  # no exponential growth: a returning peer is back within 2 s
        clock.advance(1.0)
        with pytest.raises(NetworkError):
            breaker.allow()
        clock.advance(1.0)
        breaker.allow()
        breaker.record_failure()
        assert state_of(breaker) is BreakerState.OPEN
    clock.advance(2.0)
    breaker.allow()
    breaker.record_success()
    assert state_of(breaker) is BreakerState.CLOSED


def test_a_lost_probe_frees_its_slot_after_open_seconds(clock: FixedClock) -> None:
    breaker = breaker_for(clock, threshold=1, open_seconds=2.0)
    breaker.record_failure()
    clock.advance(2.0)
    breaker.allow()  # its caller never reports back
    clock.advance(1.0)
    with pytest.raises(NetworkError):
        breaker.allow()
    clock.advance(1.0)
    breaker.allow()


def test_a_released_probe_frees_its_slot_at_once(clock: FixedClock) -> None:
    breaker = breaker_for(clock, threshold=1)
    breaker.record_failure()
    clock.advance(2.0)
    breaker.allow()
    breaker.release()
    breaker.allow()


def test_a_late_failure_does_not_extend_an_open_breaker(clock: FixedClock) -> None:
    breaker = breaker_for(clock, threshold=1, open_seconds=2.0)
    breaker.record_failure()
    clock.advance(1.5)
    breaker.record_failure()  # a call let through before it opened
    clock.advance(0.5)
    breaker.allow()


@pytest.mark.parametrize(("threshold", "open_seconds"), [(0, 2.0), (5, 0.0), (5, math.nan)])
def test_a_bad_breaker_fails_at_start_up(
    clock: FixedClock, threshold: int, open_seconds: float
) -> None:
    with pytest.raises(ConfigError) as info:
        breaker_for(clock, threshold=threshold, open_seconds=open_seconds)
    assert info.value.code == "resilience.breaker"
    with pytest.raises(ConfigError) as info:
        Breakers(clock=clock, failure_threshold=threshold, open_seconds=open_seconds)
    assert info.value.code == "resilience.breaker"


def test_breakers_are_kept_per_peer(clock: FixedClock) -> None:
    breakers = Breakers(clock=clock, failure_threshold=1)
    shaoxing = breakers.for_peer("shaoxing")
    assert breakers.for_peer("shaoxing") is shaoxing
    shaoxing.record_failure()
    breakers.for_peer("linquan").allow()
    assert breakers.states() == {"shaoxing": BreakerState.OPEN, "linquan": BreakerState.CLOSED}
    with pytest.raises(NetworkError) as info:
        breakers.for_peer("shaoxing").allow()
    assert "shaoxing" in info.value.detail


# --- call_with_retries ------------------------------------------------------------------------


def test_hop_labels() -> None:
    assert hop_label("shaoxing", "zhuji") == "hop zhuji→shaoxing"
    assert hop_label("shaoxing") == "hop shaoxing"


async def test_an_answer_on_the_first_attempt(clock: FixedClock, sleep: FakeSleep) -> None:
    peer = Peer(clock, ["ok"])
    assert await call(peer, clock=clock, sleep=sleep, budget=5.0) == "ok"
    assert peer.timeouts == [5.0]
    assert sleep.pauses == []


async def test_each_attempt_gets_what_is_left_of_the_budget_capped(
    clock: FixedClock, sleep: FakeSleep
) -> None:
    peer = Peer(clock, [down(), down(), "ok"], cost=1.0)
    result = await call(peer, clock=clock, sleep=sleep, budget=5.0, attempt_timeout=1.5)
    assert result == "ok"
    assert peer.timeouts == [1.5, 1.5, 1.5]
    peer = Peer(clock, [down(), down(), "ok"], cost=1.0)
    await call(peer, clock=clock, sleep=sleep, budget=3.0, rng=0.0)
    assert peer.timeouts == [3.0, 2.0, 1.0]


async def test_idempotent_calls_retry_with_jitter_until_they_succeed(
    clock: FixedClock, sleep: FakeSleep
) -> None:
    peer = Peer(clock, [down(), down(), "ok"])
    breaker = breaker_for(clock)
    assert await call(peer, clock=clock, sleep=sleep, breaker=breaker) == "ok"
    assert len(peer.timeouts) == 3
    assert sleep.pauses == pytest.approx([0.05, 0.1])
    assert state_of(breaker) is BreakerState.CLOSED


async def test_retries_stop_inside_the_budget(clock: FixedClock, sleep: FakeSleep) -> None:
    peer = Peer(clock, [down()], cost=1.0)
    policy = RetryPolicy(attempts=100, base_delay=0.2, max_delay=0.2)
    breaker = breaker_for(clock, threshold=1000)
    with pytest.raises(UpstreamTimeout) as info:
        await call(peer, clock=clock, sleep=sleep, budget=3.5, policy=policy, breaker=breaker)
    assert info.value.code == "network.deadline"
    assert info.value.status == 504
    assert "hop zhuji→shaoxing" in info.value.detail
    assert clock.now() <= T0 + 3.5  # nothing slept or waited past the deadline
    assert 1 < len(peer.timeouts) < 100
    for started, timeout in zip(peer.started_at, peer.timeouts, strict=True):
        assert started + timeout <= T0 + 3.5


async def test_no_pause_that_would_overrun_the_budget(clock: FixedClock, sleep: FakeSleep) -> None:
    peer = Peer(clock, [down()], cost=0.5)
    policy = RetryPolicy(attempts=5, base_delay=2.0, max_delay=2.0)
    with pytest.raises(UpstreamTimeout) as info:
        await call(peer, clock=clock, sleep=sleep, budget=1.5, policy=policy, rng=0.9)
    assert info.value.code == "network.deadline"
    assert "hop zhuji→shaoxing" in info.value.detail
    assert sleep.pauses == []
    assert len(peer.timeouts) == 1


async def test_an_attempt_that_uses_the_whole_budget_is_a_deadline_error(
    clock: FixedClock, sleep: FakeSleep
) -> None:
    peer = Peer(clock, [UpstreamTimeout("read timed out")], cost=10.0)
    with pytest.raises(UpstreamTimeout) as info:
        await call(peer, clock=clock, sleep=sleep, budget=2.0)
    assert info.value.code == "network.deadline"
    assert clock.now() == T0 + 2.0
    assert len(peer.timeouts) == 1


async def test_a_spent_budget_never_starts_an_attempt(clock: FixedClock, sleep: FakeSleep) -> None:
    peer = Peer(clock, ["ok"])
    with pytest.raises(UpstreamTimeout) as info:
        await call(peer, clock=clock, sleep=sleep, budget=0.0)
    assert info.value.code == "network.deadline"
    assert peer.timeouts == []


async def test_attempts_run_out_with_the_last_error_naming_the_hop(
    clock: FixedClock, sleep: FakeSleep
) -> None:
    peer = Peer(clock, [down()])
    with pytest.raises(NetworkError) as info:
        await call(peer, clock=clock, sleep=sleep, policy=RetryPolicy(attempts=3))
    assert type(info.value) is NetworkError
    assert info.value.code == "network.bad_gateway"
    assert info.value.status == 502
    assert info.value.detail == "hop zhuji→shaoxing: connection refused"
    assert info.value.log_detail == "ECONNREFUSED"
    assert len(peer.timeouts) == 3


async def test_a_timeout_in_the_attempt_is_an_upstream_timeout(
    clock: FixedClock, sleep: FakeSleep
) -> None:
    peer = Peer(clock, [TimeoutError()])
    with pytest.raises(UpstreamTimeout) as info:
        await call(peer, clock=clock, sleep=sleep, policy=RetryPolicy(attempts=2))
    assert info.value.code == "network.timeout"
    assert info.value.detail.startswith("hop zhuji→shaoxing: ")
    assert len(peer.timeouts) == 2


async def test_a_non_idempotent_call_is_tried_once(clock: FixedClock, sleep: FakeSleep) -> None:
    peer = Peer(clock, [down(), "ok"])
    with pytest.raises(NetworkError) as info:
        await call(peer, clock=clock, sleep=sleep, idempotent=False)
    assert info.value.code == "network.bad_gateway"
    assert "hop zhuji→shaoxing" in info.value.detail
    assert len(peer.timeouts) == 1
    assert sleep.pauses == []


async def test_the_breaker_opens_rejects_fast_probes_and_closes(
    clock: FixedClock, sleep: FakeSleep
) -> None:
    breaker = breaker_for(clock, threshold=2, open_seconds=2.0)
    policy = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.01)
    peer = Peer(clock, [down()])
    # 1. two failures open it; the third attempt is refused without touching the peer
    with pytest.raises(NetworkError) as info:
        await call(peer, clock=clock, sleep=sleep, policy=policy, breaker=breaker)
    assert info.value.code == "network.circuit_open"
    assert info.value.detail.startswith("hop zhuji→shaoxing: ")
    assert len(peer.timeouts) == 2
    # 2. while open, calls fail at once
    with pytest.raises(NetworkError) as info:
        await call(peer, clock=clock, sleep=sleep, policy=policy, breaker=breaker)
    assert info.value.code == "network.circuit_open"
    assert len(peer.timeouts) == 2
    # 3. open_seconds later one probe goes through; the peer is back, so it closes
    clock.advance(2.0)
    peer.script = ["ok"]
    assert await call(peer, clock=clock, sleep=sleep, policy=policy, breaker=breaker) == "ok"
    assert state_of(breaker) is BreakerState.CLOSED
    assert len(peer.timeouts) == 3


async def test_a_failed_probe_is_not_retried(clock: FixedClock, sleep: FakeSleep) -> None:
    breaker = breaker_for(clock, threshold=1, open_seconds=2.0)
    breaker.record_failure()
    clock.advance(2.0)
    peer = Peer(clock, [down()])
    with pytest.raises(NetworkError) as info:
        await call(peer, clock=clock, sleep=sleep, breaker=breaker)
    assert info.value.code == "network.circuit_open"
    assert len(peer.timeouts) == 1
    assert state_of(breaker) is BreakerState.OPEN


async def test_a_peer_answering_with_an_error_is_alive(clock: FixedClock, sleep: FakeSleep) -> None:
    breaker = breaker_for(clock, threshold=2)
    with pytest.raises(NetworkError):
        await call(Peer(clock, [down()]), clock=clock, sleep=sleep, breaker=breaker,
                   idempotent=False)  # fmt: skip
    not_found = NotFoundError("no such certificate", code="registry.not_found")
    with pytest.raises(NotFoundError) as info:
        await call(Peer(clock, [not_found]), clock=clock, sleep=sleep, breaker=breaker)
    assert info.value is not_found
    with pytest.raises(NetworkError) as net:
        await call(Peer(clock, [down()]), clock=clock, sleep=sleep, breaker=breaker,
                   idempotent=False)  # fmt: skip
    assert net.value.code == "network.bad_gateway"  # the NotFound reset the count
    assert state_of(breaker) is BreakerState.CLOSED


async def test_a_local_bug_releases_the_probe(clock: FixedClock, sleep: FakeSleep) -> None:
    breaker = breaker_for(clock, threshold=1)
    breaker.record_failure()
    clock.advance(2.0)
    with pytest.raises(RuntimeError):
        await call(Peer(clock, [RuntimeError("bug")]), clock=clock, sleep=sleep, breaker=breaker)
    assert await call(Peer(clock, ["ok"]), clock=clock, sleep=sleep, breaker=breaker) == "ok"


async def test_an_attempt_that_ignores_its_timeout_is_cut_off(
    clock: FixedClock, sleep: FakeSleep
) -> None:
    def hang(_limit: float) -> asyncio.Future[str]:
        return asyncio.Future()  # never answers, whatever its timeout says

    with pytest.raises(UpstreamTimeout) as info:
        await call_with_retries(
            hang,
            deadline=Deadline(0.01, clock),
            policy=RetryPolicy(attempts=1),
            breaker=breaker_for(clock),
            idempotent=True,
            sleep=sleep,
            rng=ConstantRng(0.5),
            peer="shaoxing",
            source="zhuji",
        )
    assert info.value.code == "network.timeout"
    assert "hop zhuji→shaoxing" in info.value.detail


@pytest.mark.parametrize("cap", [0.0, -1.0, math.nan])
async def test_a_bad_attempt_timeout_is_refused(
    clock: FixedClock, sleep: FakeSleep, cap: float
) -> None:
    peer = Peer(clock, ["ok"])
    with pytest.raises(ConfigError) as info:
        await call(peer, clock=clock, sleep=sleep, attempt_timeout=cap)
    assert info.value.code == "resilience.policy"
    assert peer.timeouts == []
