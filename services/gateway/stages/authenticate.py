"""Authenticate: the API key (or, on an open gateway, the client's address) names the client."""

from __future__ import annotations

from modelfleet.errors import FleetError, InvalidRequest
from services.gateway.auth import ApiKeys
from services.gateway.exchange import Exchange, Next, Outcome
from services.gateway.metrics import GatewayMetrics


class Authenticate:
    def __init__(self, keys: ApiKeys, metrics: GatewayMetrics) -> None:
        self.keys = keys
        self.metrics = metrics

    async def __call__(self, ex: Exchange, call_next: Next) -> Outcome:
        if self.keys.open:
            single_authorization(ex.scope["headers"])
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
    return single_authorization(ex.scope["headers"])


def single_authorization(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The one Authorization header; two are a 400, not "the last one wins" (a proxy and a
    client may each add one, and which is checked must never be ambiguous)."""
    found: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            if found is not None:
                raise InvalidRequest(
                    "more than one Authorization header", code="duplicate_authorization"
                )
            found = bytes(value)
    return found
