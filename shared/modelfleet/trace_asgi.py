"""The server span of every request, and the W3C trace context on the wire.

:func:`instrument` wraps a process's ASGI app in :class:`TracingMiddleware` only when tracing is
on (:data:`modelfleet.tracing.ENABLED`); off, it returns the app itself, so the request path is
exactly the untraced one. The middleware sits outside the request-id middleware, so the access
log line of a request is written while its span is current and carries its trace id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelfleet import tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

# Probes and scrapes are not traffic: no spans for them.
UNTRACED = frozenset({"/health", "/ready", "/metrics", "/livez", "/readyz"})


class _HeaderGetter:
    """Reads a carrier of ASGI ``(name, value)`` byte pairs (names lower-case)."""

    def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.encode("latin-1")
        found = [v.decode("latin-1") for k, v in carrier if k == name]
        return found or None

    def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


_GETTER = _HeaderGetter()


class TracingMiddleware:
    """One SERVER span per request, child of the caller's ``traceparent`` when it sent one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACED:
            await self.app(scope, receive, send)
            return
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        parent = propagate.extract(scope["headers"], getter=_GETTER)  # type: ignore[arg-type]
        method, path = scope["method"], scope["path"]
        span = tracing.tracer().start_span(
            f"{method} {path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )
        token = context.attach(trace.set_span_in_context(span, parent))
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            rid = (scope.get("state") or {}).get("request_id")
            if rid:
                span.set_attribute("modelfleet.request_id", rid)
            if status:
                span.set_attribute("http.response.status_code", status)
            if status >= 500 or not status:
                span.set_status(Status(StatusCode.ERROR))
            context.detach(token)
            span.end()


def instrument(app: ASGIApp) -> ASGIApp:
    """``app`` traced when tracing is on, else ``app`` itself."""
    return TracingMiddleware(app) if tracing.ENABLED else app


def traceparent_header(span: Span) -> bytes:
    """``traceparent`` (and ``tracestate``) of ``span`` as raw HTTP/1.1 header lines."""
    from opentelemetry import propagate, trace

    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in carrier.items())
