"""Deadlines, retries with jitter, and circuit breakers for calls to peer nodes.

DESIGN.md "Routing and failures": every hop has a deadline budget that includes its
retries; idempotent calls are retried with jitter inside the budget; a peer that keeps
failing is cut off by a circuit breaker and probed back in after a fixed pause (no
exponential backoff, so recovery takes seconds); a failure names the hop.

Time and randomness are injected (a :class:`~gateway.clock.Clock`, an :class:`Rng`, an async
``sleep``), so every path is testable without waiting. Only :func:`call_with_retries` is
async, because it must sleep between attempts.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Protocol, TypeVar

from gateway.clock import Clock
from gateway.errors import ConfigError, GatewayError, NetworkError, UpstreamTimeout

T = TypeVar("T")


class Rng(Protocol):
    """The randomness retries need; :class:`random.Random` is one."""

    def random(self) -> float:
        """A float in [0.0, 1.0)."""
        ...


# --- deadlines ------------------------------------------------------------------------------


class Deadline:
    """A point in time after which nobody waits for an answer any more."""

    __slots__ = ("_clock", "_expires_at")

    def __init__(self, budget_s: float, clock: Clock) -> None:
        if not math.isfinite(budget_s) or budget_s < 0:
            raise ConfigError(
                "a deadline budget must be a finite, non-negative number of seconds",
                code="resilience.bad_budget",
            )
        self._clock = clock
        self._expires_at = clock.now() + budget_s

    @classmethod
    def at(cls, expires_at: float, clock: Clock) -> Deadline:
        """A deadline at an absolute time, e.g. one propagated from the previous hop."""
        if not math.isfinite(expires_at):
            raise ConfigError("a deadline must be a finite time", code="resilience.bad_budget")
        return cls(max(0.0, expires_at - clock.now()), clock)

    @property
    def expires_at(self) -> float:
        """When the budget runs out (epoch seconds), to hand on to the next hop."""
        return self._expires_at

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._expires_at - self._clock.now())

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def child(self, max_s: float) -> Deadline:
        """A deadline for one attempt: at most ``max_s`` from now, never past this one."""
        if not math.isfinite(max_s) or max_s < 0:
            raise ConfigError(
                "a per-attempt budget must be a finite, non-negative number of seconds",
                code="resilience.bad_budget",
            )
        return Deadline(min(max_s, self.remaining()), self._clock)

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f})"


# --- retries --------------------------------------------------------------------------------


class RetryPolicy:
    """How often to try and how long to pause: exponential ceiling, full jitter."""

    __slots__ = ("attempts", "base_delay", "max_delay")

    def __init__(self, attempts: int = 3, base_delay: float = 0.05, max_delay: float = 1.0) -> None:
        if attempts < 1:
            raise ConfigError("a retry policy needs at least one attempt", code="resilience.policy")
        if not (0 <= base_delay <= max_delay) or not math.isfinite(max_delay):
            raise ConfigError(
                "retry delays must satisfy 0 <= base_delay <= max_delay", code="resilience.policy"
            )
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay

    def delays(self, rng: Rng) -> tuple[float, ...]:
        """The pause before each retry (``attempts - 1`` of them), full jitter.

        Retry ``n`` (from 0) waits a uniform time in ``[0, min(max_delay, base_delay·2ⁿ))``.
        """
        return tuple(
            rng.random() * min(self.max_delay, self.base_delay * 2**n)
            for n in range(self.attempts - 1)
        )

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(attempts={self.attempts}, base_delay={self.base_delay}, "
            f"max_delay={self.max_delay})"
        )


def backoff(attempts: int, rng: Rng, *, base: float, most: float) -> float:
    """The pause before trying again a message kept for later (an outbox's), after
    ``attempts`` failed tries: doubling from ``base`` up to ``most``, with jitter (half to all
    of it, so a peer coming back is not met by every sender at once)."""
    ceiling: float = min(most, base * 2.0 ** min(attempts, 32))
    return ceiling * (0.5 + rng.random() / 2)


# --- circuit breakers -----------------------------------------------------------------------


def _check_breaker(failure_threshold: int, open_seconds: float) -> None:
    if failure_threshold < 1:
        raise ConfigError("failure_threshold must be at least 1", code="resilience.breaker")
    if not (math.isfinite(open_seconds) and open_seconds > 0):
        raise ConfigError("open_seconds must be a positive number", code="resilience.breaker")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Cuts off one peer after ``failure_threshold`` consecutive failures.

    closed → open after N failures in a row; while open every call is refused at once;
    ``open_seconds`` later one probe is let through (half-open): its success closes the
    breaker, its failure opens it again for the same ``open_seconds`` (never longer, so a
    peer that comes back is used again within seconds). A probe that never reports (its
    caller was cancelled) stops blocking others after ``open_seconds``.
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_opened_at",
        "_probe_started",
        "_state",
        "failure_threshold",
        "open_seconds",
        "peer",
    )

    def __init__(
        self,
        peer: str,
        *,
        clock: Clock,
        failure_threshold: int = 5,
        open_seconds: float = 2.0,
    ) -> None:
        _check_breaker(failure_threshold, open_seconds)
        self.peer = peer
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started: float | None = None

    @property
    def state(self) -> BreakerState:
        return self._state

    def allow(self) -> None:
        """Let one call through, or raise :class:`NetworkError` ``network.circuit_open``."""
        now = self._clock.now()
        if self._state is BreakerState.CLOSED:
            return
        if self._state is BreakerState.OPEN:
            wait = self._opened_at + self.open_seconds - now
            if wait > 0:
                raise self._open_error(wait)
            self._state = BreakerState.HALF_OPEN
            self._probe_started = now
            return
        # half-open: one probe at a time; a probe lost for open_seconds frees the slot
        if self._probe_started is not None and now - self._probe_started < self.open_seconds:
            raise self._open_error(self._probe_started + self.open_seconds - now)
        self._probe_started = now

    def record_success(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._probe_started = None

    def record_failure(self) -> None:
        now = self._clock.now()
        if self._state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        if self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open(now)
        # already open: a late failure of a call let through earlier changes nothing

    def release(self) -> None:
        """An allowed call ended without a verdict on the peer (cancelled, or a local bug)."""
        if self._state is BreakerState.HALF_OPEN:
            self._probe_started = None

    def _open(self, now: float) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = now
        self._failures = 0
        self._probe_started = None

    def _open_error(self, wait: float) -> NetworkError:
        return NetworkError(
            f"peer {self.peer} is cut off after repeated failures (circuit open)",
            code="network.circuit_open",
            log_detail=f"peer={self.peer} probe_in={wait:.3f}s",
        )

    def __repr__(self) -> str:
        return f"CircuitBreaker(peer={self.peer!r}, state={self._state.value})"


class Breakers:
    """One :class:`CircuitBreaker` per peer, created on first use, shared by every call."""

    __slots__ = ("_breakers", "_clock", "failure_threshold", "open_seconds")

    def __init__(
        self, *, clock: Clock, failure_threshold: int = 5, open_seconds: float = 2.0
    ) -> None:
        _check_breaker(failure_threshold, open_seconds)
        self._clock = clock
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._breakers: dict[str, CircuitBreaker] = {}

    def for_peer(self, peer: str) -> CircuitBreaker:
        breaker = self._breakers.get(peer)
        if breaker is None:
            breaker = CircuitBreaker(
                peer,
                clock=self._clock,
                failure_threshold=self.failure_threshold,
                open_seconds=self.open_seconds,
            )
            self._breakers[peer] = breaker
        return breaker

    def states(self) -> dict[str, BreakerState]:
        """Every peer's breaker state (health and metrics)."""
        return {peer: breaker.state for peer, breaker in self._breakers.items()}


# --- one call, retried ----------------------------------------------------------------------


def hop_label(peer: str, source: str | None = None) -> str:
    """``hop zhuji→shaoxing`` (or ``hop shaoxing`` when the caller is not named)."""
    return f"hop {source}→{peer}" if source else f"hop {peer}"


def _deadline_error(hop: str, peer: str, cause: str) -> UpstreamTimeout:
    return UpstreamTimeout(
        f"{hop}: the deadline ran out before {peer} answered",
        code="network.deadline",
        log_detail=cause,
    )


def _failure(hop: str, exc: BaseException) -> NetworkError:
    """The error a caller sees for a failed hop: same status and code, the hop named."""
    if isinstance(exc, NetworkError):
        kind = UpstreamTimeout if isinstance(exc, UpstreamTimeout) else NetworkError
        return kind(f"{hop}: {exc.detail}", code=exc.code, log_detail=exc.log_detail)
    return UpstreamTimeout(f"{hop}: the peer did not answer in time", log_detail=repr(exc))


async def call_with_retries(
    attempt: Callable[[float], Awaitable[T]],
    *,
    deadline: Deadline,
    policy: RetryPolicy,
    breaker: CircuitBreaker,
    idempotent: bool,
    sleep: Callable[[float], Awaitable[None]],
    rng: Rng,
    peer: str,
    source: str | None = None,
    attempt_timeout: float | None = None,
) -> T:
    """Call ``attempt(timeout)`` against ``peer`` until it answers, within ``deadline``.

    ``attempt`` must translate its transport's exceptions: a :class:`NetworkError` (or a
    ``TimeoutError``) means the peer failed and counts against its breaker; any other
    :class:`GatewayError` means the peer answered (the breaker records a success) and is
    raised as is. A peer that relays a failure further down the route should be reported
    through the returned value, not as a :class:`NetworkError`, or this peer's breaker opens.

    Each attempt gets ``timeout`` = the remaining budget (capped at ``attempt_timeout``) and
    is also cut off by it here. Only ``idempotent`` calls are retried, and only while the
    next (jittered) pause still fits in the remaining budget; nothing sleeps past the
    deadline. Errors name the hop (``hop zhuji→shaoxing``): ``network.deadline`` (504) when
    the budget is gone, ``network.circuit_open`` (502) when the breaker refuses, otherwise
    the last attempt's own code.
    """
    if attempt_timeout is not None and not (math.isfinite(attempt_timeout) and attempt_timeout > 0):
        raise ConfigError("attempt_timeout must be positive", code="resilience.policy")
    hop = hop_label(peer, source)
    delays = iter(policy.delays(rng))
    while True:
        # 1. a spent budget is never spent again
        if deadline.expired():
            raise _deadline_error(hop, peer, "budget spent before the attempt")
        # 2. a peer that keeps failing is refused at once
        try:
            breaker.allow()
        except NetworkError as exc:
            raise _failure(hop, exc) from exc
        # 3. one attempt, bounded by what is left of the budget
        timeout = (
            deadline if attempt_timeout is None else deadline.child(attempt_timeout)
        ).remaining()
        try:
            async with asyncio.timeout(timeout):
                result = await attempt(timeout)
        except (NetworkError, TimeoutError) as exc:
            breaker.record_failure()
            failure: BaseException = exc
        except GatewayError:
            breaker.record_success()  # the peer answered, with an error of its own
            raise
        except BaseException:
            breaker.release()
            raise
        else:
            breaker.record_success()
            return result
        # 4. after a failure: out of time, not retryable, or out of attempts
        if deadline.expired():
            raise _deadline_error(hop, peer, repr(failure)) from failure
        if not idempotent:
            raise _failure(hop, failure) from failure
        delay = next(delays, None)
        if delay is None:
            raise _failure(hop, failure) from failure
        # 5. the pause must leave time for another attempt
        if delay >= deadline.remaining():
            raise _deadline_error(hop, peer, f"no time for a retry after {failure!r}") from failure
        await sleep(delay)
