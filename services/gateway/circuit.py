"""A per-replica circuit breaker: passive ejection with half-open re-probing.

``threshold`` consecutive failures open the circuit: the replica gets no traffic for
``open_s`` seconds. Then it is half-open: one trial (a live request, or the active health check)
decides - success closes it, failure opens it for another ``open_s``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class CircuitState(enum.IntEnum):
    """Values are what ``modelfleet_circuit_state`` reports."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    __slots__ = ("_clock", "_opened_at", "_state", "_trial", "failures", "on_change", "open_s",
                 "threshold")  # fmt: skip

    def __init__(
        self,
        threshold: int,
        open_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.open_s = open_s
        self.failures = 0
        self.on_change = on_change
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._opened_at = 0.0
        self._trial = False

    @property
    def state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.open_s:
            self._set(CircuitState.HALF_OPEN)
        return self._state

    def available(self) -> bool:
        """Whether a request may be sent now (does not take the half-open trial slot)."""
        state = self.state
        return state is CircuitState.CLOSED or (state is CircuitState.HALF_OPEN and not self._trial)

    def acquire(self) -> None:
        """Called when a request is sent: in half-open state it becomes the one trial."""
        if self.state is CircuitState.HALF_OPEN:
            self._trial = True

    def release(self) -> None:
        """The request ended without a verdict (cancelled): free the trial slot."""
        self._trial = False

    def record_success(self) -> None:
        self.failures = 0
        self._trial = False
        if self._state is not CircuitState.CLOSED:
            self._set(CircuitState.CLOSED)

    def record_failure(self) -> None:
        self.failures += 1
        self._trial = False
        state = self.state
        if state is CircuitState.HALF_OPEN or (
            state is CircuitState.CLOSED and self.failures >= self.threshold
        ):
            self._opened_at = self._clock()
            self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        self._state = state
        if self.on_change is not None:
            self.on_change(state)
