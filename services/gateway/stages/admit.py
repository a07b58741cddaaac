"""Admit: the gateway-wide in-flight cap (429) and the body-size cap by Content-Length (413).

Both are decided from the headers, before a byte of the body is read. The in-flight count spans
the whole response, streams included, so the cap bounds open upstream connections too.
"""

from __future__ import annotations

from typing import Any

from modelfleet.errors import Overloaded, PayloadTooLarge
from modelfleet.routes import content_length
from services.gateway.exchange import Exchange, Next, Outcome, Streamed


class Admit:
    def __init__(self, *, max_in_flight: int, max_body_bytes: int) -> None:
        self.max_in_flight = max_in_flight
        self.max_body_bytes = max_body_bytes
        self.in_flight = 0
        self.shed = 0

    async def __call__(self, ex: Exchange, call_next: Next) -> Outcome:
        if self.in_flight >= self.max_in_flight:
            self.shed += 1
            raise Overloaded(
                f"the gateway is at its limit of {self.max_in_flight} requests in flight",
                retry_after=1,
            )
        declared = content_length(ex.scope)
        if declared is not None and declared > self.max_body_bytes:
            raise PayloadTooLarge(f"request body over the {self.max_body_bytes}-byte limit")
        self.in_flight += 1
        try:
            outcome = await call_next(ex)
        except BaseException:
            self.in_flight -= 1
            raise
        if isinstance(outcome, Streamed):
            outcome.on_close.append(self._leave)
        else:
            self.in_flight -= 1
        return outcome

    def _leave(self) -> None:
        self.in_flight -= 1

    def snapshot(self) -> dict[str, Any]:
        return {"in_flight": self.in_flight, "max_in_flight": self.max_in_flight, "shed": self.shed}
