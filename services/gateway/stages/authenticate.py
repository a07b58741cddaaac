"""Authenticate: the API key (or, on an open gateway, the client's address) names the client."""

from __future__ import annotations

from modelfleet.errors import FleetError
from services.gateway.auth import ApiKeys
from services.gateway.exchange import Exchange, Next, Outcome
from services.gateway.metrics import GatewayMetrics


class Authenticate:
    def __init__(self, keys: ApiKeys, metrics: GatewayMetrics) -> None:
        self.keys = keys
        self.metrics = metrics

    async def __call__(self, ex: Exchange, call_next: Next) -> Outcome:
        if self.keys.open:
            client = ex.scope.get("client")
            ex.client_id = f"ip:{client[0]}" if client else "anonymous"
        else:
            try:
                ex.client_id = self.keys.identify(_authorization(ex))
            except FleetError:
                self.metrics.refused("auth")
                raise
        return await call_next(ex)


def _authorization(ex: Exchange) -> bytes | None:
    for name, value in ex.scope["headers"]:
        if name == b"authorization":
            return bytes(value)
    return None
