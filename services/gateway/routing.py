"""Routing strategies: which healthy replica of a pool serves the next request.

A strategy is a small object with ``pick(candidates)``; the app factory builds the one named by
``MODELFLEET_GATEWAY_ROUTING`` and hands it to each pool, so tests can inject their own.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from typing import Protocol

from services.gateway.pools import Replica


class RoutingStrategy(enum.StrEnum):
    ROUND_ROBIN = "round_robin"
    LEAST_IN_FLIGHT = "least_in_flight"


class Router(Protocol):
    def pick(self, candidates: Sequence[Replica]) -> Replica:
        """Choose one of ``candidates`` (never empty)."""
        ...


class RoundRobin:
    """Each pick takes the next candidate in turn; retries see a list without the tried ones."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, candidates: Sequence[Replica]) -> Replica:
        return candidates[next(self._counter) % len(candidates)]


class LeastInFlight:
    """The candidate with the fewest requests in flight; ties go round-robin."""

    def __init__(self) -> None:
        self._tiebreak = itertools.count()

    def pick(self, candidates: Sequence[Replica]) -> Replica:
        low = min(r.in_flight for r in candidates)
        best = [r for r in candidates if r.in_flight == low]
        return best[next(self._tiebreak) % len(best)]


STRATEGIES: dict[RoutingStrategy, type[RoundRobin] | type[LeastInFlight]] = {
    RoutingStrategy.ROUND_ROBIN: RoundRobin,
    RoutingStrategy.LEAST_IN_FLIGHT: LeastInFlight,
}


def build_router(kind: RoutingStrategy) -> Router:
    """A fresh strategy object (one per pool: each keeps its own rotation)."""
    return STRATEGIES[kind]()
