"""What flows through the gateway's pipeline: one request (:class:`Exchange`) and its outcome.

A stage is ``async (exchange, call_next) -> Outcome``: it may answer by itself (a cache hit, a
refusal raised as a :class:`~modelfleet.errors.FleetError`), or call the rest of the pipeline and
look at, or replace, what comes back. The stages are composed in :mod:`services.gateway.pipeline`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.types import Receive, Scope

from modelfleet.api import RouteSpec

DEGRADED = "x-fleet-degraded"
X_CACHE = "x-cache"
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass(slots=True)
class Exchange:
    route: RouteSpec
    scope: Scope
    receive: Receive
    request_id: str
    client_id: str = "anonymous"
    body: bytes = b""  # forwarded byte for byte
    payload: dict[str, Any] = field(default_factory=dict)  # the body, parsed once
    stream: bool = False

    def header(self, name: bytes) -> str | None:
        for k, v in self.scope["headers"]:
            if k == name:
                return str(v.decode("latin-1"))
        return None


@dataclass(slots=True)
class Reply:
    """A complete answer (from a backend, the cache, or a conversion), ready to send."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    replica: str | None = None


@dataclass(slots=True)
class Streamed:
    """An answer whose status and headers are in and whose body is still coming."""

    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]
    on_close: list[Callable[[], None]] = field(default_factory=list)
    finished: bool = False

    async def finish(self) -> None:
        """Release the backend connection and run the hooks; once, however often called."""
        if self.finished:
            return
        self.finished = True
        await self.close()
        for hook in self.on_close:
            hook()


Outcome = Reply | Streamed
Next = Callable[[Exchange], Awaitable[Outcome]]


class Stage(Protocol):
    async def __call__(self, ex: Exchange, call_next: Next) -> Outcome: ...
