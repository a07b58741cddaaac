"""Helpers of the stage tests: an exchange as the pipeline builds it, and a next stage that
answers with a fixed outcome and records what reached it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from modelfleet.api import RouteSpec
from services.gateway.exchange import Exchange, Outcome, Reply


def exchange(
    route: RouteSpec,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    client: tuple[str, int] = ("10.1.2.3", 5555),
) -> Exchange:
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": route.method, "path": route.path, "headers": raw_headers,
             "client": client}  # fmt: skip
    return Exchange(route, scope, receive, "req-1")


class Answer:
    """The rest of the pipeline, replaced by a fixed outcome."""

    def __init__(self, outcome: Outcome | None = None, error: Exception | None = None) -> None:
        self.outcome = outcome or Reply(200, b'{"ok":true}', {"content-type": "application/json"})
        self.error = error
        self.seen: list[Exchange] = []

    async def __call__(self, ex: Exchange) -> Outcome:
        self.seen.append(ex)
        if self.error is not None:
            raise self.error
        return self.outcome


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]
