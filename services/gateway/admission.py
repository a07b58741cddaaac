"""Pure-ASGI admission for the /v1 API: API key, gateway-wide in-flight cap, body size.

Raw ASGI rather than ``BaseHTTPMiddleware``: it runs on every request and must cost
microseconds. A refused request never reaches routing or a backend. The in-flight count spans
the whole response, streams included, so the cap bounds open upstream connections too.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from modelfleet.errors import FleetError, Overloaded, PayloadTooLarge, error_response
from services.gateway.auth import ApiKeys
from services.gateway.metrics import GatewayMetrics

API_PREFIX = "/v1/"


class Admission:
    """The admission rules and counters; shared by the middleware and ``/v1/fleet``."""

    def __init__(
        self, keys: ApiKeys, metrics: GatewayMetrics, *, max_in_flight: int, max_body_bytes: int
    ) -> None:
        self.keys = keys
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.max_body_bytes = max_body_bytes
        self.in_flight = 0
        self.shed = 0

    def admit(self, scope: Scope) -> str:
        """The client's id (API key id, or its address when the API is open); raise if refused."""
        authorization = content_length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                content_length = value
        if self.keys.open:
            client = scope.get("client")
            client_id = f"ip:{client[0]}" if client else "anonymous"
        else:
            try:
                client_id = self.keys.identify(authorization)
            except FleetError:
                self.metrics.refused("auth")
                raise
        if self.in_flight >= self.max_in_flight:
            self.shed += 1
            raise Overloaded(
                f"the gateway is at its limit of {self.max_in_flight} requests in flight",
                retry_after=1,
            )
        if (
            content_length is not None
            and content_length.isdigit()
            and int(content_length) > self.max_body_bytes
        ):
            raise PayloadTooLarge(f"request body over the {self.max_body_bytes}-byte limit")
        return client_id

    def snapshot(self) -> dict[str, Any]:
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "shed": self.shed,
            "auth": "open" if self.keys.open else f"{len(self.keys)} keys",
        }


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        admission = self.admission
        try:
            client_id = admission.admit(scope)
        except FleetError as exc:
            await error_response(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})["client_id"] = client_id
        admission.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            admission.in_flight -= 1
