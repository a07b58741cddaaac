"""Pure-ASGI middleware: request id, request metrics and the access log.

Written against raw ASGI rather than ``BaseHTTPMiddleware`` because it sits on every request of
the gateway, whose whole budget is about a millisecond.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelfleet.errors import UnsupportedMediaType, error_response
from modelfleet.logs import request_id_var
from modelfleet.metrics import Metrics

REQUEST_ID_HEADER = b"x-request-id"
_MAX_REQUEST_ID = 128
# Probes and scrapes are not traffic: keeping them out of the request series keeps rates honest.
UNMETERED = frozenset({"/health", "/ready", "/metrics", "/livez", "/readyz"})

access_log = logging.getLogger("modelfleet.access")
CLIENT_CLOSED = 499


# An incoming X-Request-ID is echoed, logged and forwarded: only a safe alphabet is kept (no
# quotes, spaces or control characters to forge log lines or headers); anything else is replaced.
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,%d}" % _MAX_REQUEST_ID)


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if _SAFE_REQUEST_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    # 128 random bits as 32 hex digits, like uuid4().hex without the UUID object and syscall.
    return f"{random.getrandbits(128):032x}"


_FORM = b"application/x-www-form-urlencoded"
# The types a browser may POST cross-origin without asking (CORS "simple requests"): a web page
# could make a visitor's browser run inference on an open gateway. Never JSON routes' bodies.
_BROWSER_SIMPLE = (b"text/plain", b"multipart/form-data")


def _json_for_form_posts(scope: Scope) -> UnsupportedMediaType | None:
    """Refuse text/plain and multipart bodies (415), and form-typed bodies a browser sent.

    ``curl -d`` sends its JSON as a form: without an ``Origin`` or ``Sec-Fetch-Mode`` header
    (which every browser sends with a POST, and curl never does) it is read as JSON.
    """
    if scope["method"] != "POST":
        return None
    headers = scope["headers"]
    browser = False
    ctype_at = -1
    for i, (header, _) in enumerate(headers):
        if header == b"content-type":
            ctype_at = i
        elif header in (b"origin", b"sec-fetch-mode"):
            browser = True
    if ctype_at < 0:
        return None
    name, value = headers[ctype_at]
    media = value.split(b";", 1)[0].strip().lower()
    if media in _BROWSER_SIMPLE or (media == _FORM and browser):
        return UnsupportedMediaType(
            f"Content-Type {media.decode('latin-1')!r} is not accepted: send application/json"
        )
    if media == _FORM:
        scope["headers"] = [
            *headers[:ctype_at],
            (name, b"application/json"),
            *headers[ctype_at + 1 :],
        ]
    return None


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
        refused = _json_for_form_posts(scope)
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
            if refused is not None:
                await error_response(refused)(scope, receive, send_wrapper)
            else:
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
