"""Pure-ASGI middleware: request id, request metrics and the access log.

Written against raw ASGI rather than ``BaseHTTPMiddleware`` because it sits on every request of
the gateway, whose whole budget is about a millisecond.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelfleet.logs import request_id_var
from modelfleet.metrics import Metrics

REQUEST_ID_HEADER = b"x-request-id"
_MAX_REQUEST_ID = 128
# Probes and scrapes are not traffic: keeping them out of the request series keeps rates honest.
UNMETERED = frozenset({"/health", "/ready", "/metrics", "/livez", "/readyz"})

access_log = logging.getLogger("modelfleet.access")
CLIENT_CLOSED = 499


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            rid: str = value.decode("latin-1").strip()
            if 0 < len(rid) <= _MAX_REQUEST_ID and rid.isprintable():
                return rid
            break
    # 128 random bits as 32 hex digits, like uuid4().hex without the UUID object and syscall.
    return f"{random.getrandbits(128):032x}"


_FORM = b"application/x-www-form-urlencoded"


def _json_for_form_posts(scope: Scope) -> None:
    """Read a form-typed body as JSON: no fleet route takes forms, and ``curl -d`` sends this."""
    headers = scope["headers"]
    for i, (name, value) in enumerate(headers):
        if name == b"content-type":
            if value.startswith(_FORM):
                scope["headers"] = [*headers[:i], (name, b"application/json"), *headers[i + 1 :]]
            return


class _RouteMeters:
    __slots__ = ("duration", "in_flight", "metrics", "route", "statuses")

    def __init__(self, metrics: Metrics, route: str) -> None:
        self.metrics = metrics
        self.route = route
        self.duration = metrics.request_duration.labels(metrics.service, route)
        self.in_flight = metrics.in_flight.labels(metrics.service, route)
        self.statuses: dict[int, Any] = {}

    def count(self, status: int) -> None:
        child = self.statuses.get(status)
        if child is None:
            child = self.metrics.requests.labels(self.metrics.service, self.route, str(status))
            self.statuses[status] = child
        child.inc()


class RequestContextMiddleware:
    """Accept or mint ``X-Request-ID``, echo it, meter the request, log it."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        routes: Iterable[str],
        access_log_enabled: bool = False,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log_enabled = access_log_enabled
        self._meters = {r: _RouteMeters(metrics, r) for r in routes if r not in UNMETERED}
        self._other = _RouteMeters(metrics, "other")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_request_id(scope)
        _json_for_form_posts(scope)
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        path: str = scope["path"]
        metered = path not in UNMETERED
        meters = self._meters.get(path, self._other)
        status = 0
        rid_header = (REQUEST_ID_HEADER, rid.encode("latin-1"))

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        start = time.perf_counter()
        if metered:
            meters.in_flight.inc()
        failed = True
        try:
            await self.app(scope, receive, send_wrapper)
            failed = False
        finally:
            if not status:
                # No response at all: the app failed (500), or the client left first (nginx's 499).
                status = 500 if failed else CLIENT_CLOSED
            elapsed = time.perf_counter() - start
            if metered:
                meters.in_flight.dec()
                meters.duration.observe(elapsed)
                meters.count(status)
            if self.access_log_enabled:
                access_log.info(
                    "%s %s %d",
                    scope["method"],
                    path,
                    status,
                    extra={"status": status, "duration_ms": round(elapsed * 1000, 2)},
                )
            request_id_var.reset(token)
