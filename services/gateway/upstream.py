"""Calls to backend replicas: pick, send, retry on another replica, stream without buffering.

Retries (tenacity) cover failures that say nothing about the request itself - the connection
could not be made or was lost before a complete response, or the replica answered 502/503 -
and each retry goes to a replica not tried yet, within one deadline per request. Model
inference has no side effects, so resending a request whose connection died mid-flight is safe.
A stream is never retried once its first byte has gone to the client: the caller gets the
stream only after its status line, and from then on it is the caller's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_none

from modelfleet import tracing
from modelfleet.errors import BadGateway, DeadlineExceeded
from modelfleet.trace_asgi import traceparent_header
from services.gateway.exchange import Reply
from services.gateway.h1 import (
    H1Pool,
    H1Stream,
    Headers,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamTimeout,
    UpstreamTooLarge,
)
from services.gateway.pools import Pool, Replica

log = logging.getLogger("modelfleet.gateway.upstream")

RETRY_STATUSES = frozenset({502, 503})
# Headers of a backend response that mean something to the client; the rest (server, date,
# content-length, x-request-id) are the gateway's own.
PASS_HEADERS = frozenset({b"content-type", b"retry-after", b"cache-control"})


class Retryable(Exception):
    """This attempt failed in a way another replica might not."""

    def __init__(self, replica: Replica, reason: str, retry_after: str | None = None) -> None:
        super().__init__(reason)
        self.replica = replica
        self.reason = reason
        self.retry_after = retry_after


class PoolUnavailable(Exception):
    """No replica of the pool could serve the request: fall back, or answer 503."""

    def __init__(self, pool: str, reason: str, retry_after: str | None = None) -> None:
        super().__init__(f"{pool}: {reason}")
        self.pool = pool
        self.reason = reason
        self.retry_after = retry_after


def pass_headers(headers: Headers) -> dict[str, str]:
    return {k.decode(): v.decode("latin-1") for k, v in headers if k in PASS_HEADERS}


def _header(headers: Headers, name: bytes) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None


class StreamReply:
    """A backend response whose status arrived and whose body is still coming."""

    def __init__(self, pool: Pool, replica: Replica, stream: H1Stream, started: float) -> None:
        self.pool = pool
        self.replica = replica
        self.stream = stream
        self.status = stream.status
        self.headers = pass_headers(stream.headers)
        self._started = started
        self._closed = False
        self.span: Any = None  # the attempt's client span when tracing: ends with the body

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as the backend sends it, one network read at a time."""
        try:
            async for chunk in self.stream.chunks():
                yield chunk
        except (UpstreamDisconnected, UpstreamTimeout) as exc:
            # Mid-stream: the client already has part of the answer, so nothing is retried.
            self.replica.breaker.record_failure()
            self.replica.last_error = f"stream broken: {exc}"
            raise
        else:
            self.replica.breaker.record_success()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.replica.breaker.release()
        self.replica.in_flight -= 1
        self.pool.upstream_duration.observe(time.perf_counter() - self._started)
        self.stream.aclose()
        if self.span is not None:
            self.span.end()


class TriedReplicas(list[Replica]):
    """The replicas one request was sent to, and the last Retry-After one of them gave."""

    retry_after: str | None = None


class Upstream:
    """Sends requests to pools over the hot-path connection pool; one per gateway process."""

    def __init__(
        self,
        pool: H1Pool,
        *,
        retries: int,
        request_timeout_s: float,
    ) -> None:
        self.h1 = pool
        self.retries = retries
        self.request_timeout_s = request_timeout_s
        self._retrying = AsyncRetrying(
            stop=stop_after_attempt(max(1, retries)),
            retry=retry_if_exception_type(Retryable),
            wait=wait_none(),
            reraise=True,
            before_sleep=self._count_retry,
        )

    @staticmethod
    def _count_retry(state: RetryCallState) -> None:
        pool: Pool = state.args[0]
        pool.retries.inc()
        exc = state.outcome.exception() if state.outcome else None
        log.info("retrying %s on another replica: %s", pool.name, exc)

    async def send(
        self,
        pool: Pool,
        method: str,
        path: str,
        body: bytes,
        request_id: str,
        *,
        stream: bool = False,
    ) -> Reply | StreamReply:
        """Send to a replica of ``pool``; :class:`PoolUnavailable` if none could serve."""
        deadline = time.monotonic() + self.request_timeout_s
        extra = b"X-Request-ID: " + request_id.encode("latin-1") + b"\r\n"
        tried = TriedReplicas()
        args = (pool, method.encode(), path, body, extra, stream, tried, deadline)
        attempt = traced_attempt(self._attempt) if tracing.ENABLED else self._attempt
        # The first attempt runs bare: tenacity costs tens of microseconds a call, and most
        # requests never need it. It takes over for the retries.
        try:
            return await attempt(*args)
        except Retryable as exc:
            if not self.retries:
                raise PoolUnavailable(pool.name, exc.reason, exc.retry_after) from exc
            pool.retries.inc()
            log.info("retrying %s on another replica: %s", pool.name, exc)
        # AsyncRetrying keeps per-call state on the instance: one copy per request.
        retrying = self._retrying.copy()
        try:
            result: Reply | StreamReply = await retrying(attempt, *args)
        except Retryable as exc:
            raise PoolUnavailable(pool.name, exc.reason, exc.retry_after) from exc
        return result

    async def _attempt(
        self,
        pool: Pool,
        method: bytes,
        path: str,
        body: bytes,
        extra: bytes,
        stream: bool,
        tried: TriedReplicas,
        deadline: float,
    ) -> Reply | StreamReply:
        replica = pool.pick(tried)
        if replica is None:
            reason = f"all {len(tried)} tried replicas failed" if tried else "no healthy replica"
            raise PoolUnavailable(pool.name, reason, tried.retry_after)
        tried.append(replica)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            replica.breaker.release()
            raise DeadlineExceeded(f"{pool.name} did not answer in time")
        replica.in_flight += 1
        started = time.perf_counter()
        handed_over = False
        target = replica.target(path)
        try:
            if stream:
                s = await self.h1.stream(
                    replica.origin, method, target, body, extra, remaining, self.request_timeout_s
                )
                status, headers = s.status, s.headers
            else:
                r = await self.h1.request(replica.origin, method, target, body, extra, remaining)
                status, headers = r.status, r.headers
            if status in RETRY_STATUSES:
                if stream:
                    s.aclose()
                replica.breaker.record_failure()
                replica.last_error = f"HTTP {status}"
                tried.retry_after = _header(headers, b"retry-after") or tried.retry_after
                raise Retryable(replica, f"HTTP {status}", tried.retry_after)
            if stream:
                handed_over = True
                return StreamReply(pool, replica, s, started)
            if status >= 500:
                # Relayed as it is (the request may be what failed), but a replica that fails
                # everything must stop getting traffic: it counts against its circuit.
                replica.breaker.record_failure()
                replica.last_error = f"HTTP {status}"
            else:
                replica.breaker.record_success()
            return Reply(status, r.body, pass_headers(headers), replica.url)
        except (UpstreamConnectError, UpstreamDisconnected) as exc:
            replica.breaker.record_failure()
            replica.last_error = str(exc)
            raise Retryable(replica, type(exc).__name__) from exc
        except UpstreamTooLarge as exc:
            # Another replica would answer the same request as largely: no retry.
            replica.last_error = str(exc)
            replica.breaker.release()
            raise BadGateway(f"{pool.name} answered with a body over the gateway's limit") from exc
        except UpstreamTimeout as exc:
            # The rest of the deadline went to this attempt: nothing left to retry with.
            replica.breaker.record_failure()
            replica.last_error = str(exc)
            raise DeadlineExceeded(f"{pool.name} did not answer in time") from exc
        except asyncio.CancelledError:
            replica.breaker.release()
            raise
        finally:
            if not handed_over:
                replica.in_flight -= 1
                pool.upstream_duration.observe(time.perf_counter() - started)


Attempt = Callable[..., Awaitable[Reply | StreamReply]]


def traced_attempt(attempt: Attempt) -> Attempt:
    """``attempt`` in a CLIENT span of its own (a retry is another span), with the span's
    ``traceparent`` added to the request's headers; a stream's span ends with its body."""

    async def traced(
        pool: Pool, method: bytes, path: str, body: bytes, extra: bytes, *rest: Any
    ) -> Reply | StreamReply:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        span = tracing.tracer().start_span(
            f"{method.decode()} {path}",
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": method.decode(), "modelfleet.pool": pool.name},
        )
        headers = extra + traceparent_header(span)
        try:
            res = await attempt(pool, method, path, body, headers, *rest)
        except BaseException as exc:
            if isinstance(exc, Retryable):
                span.set_attribute("server.address", exc.replica.url)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.end()
            raise
        span.set_attribute("http.response.status_code", res.status)
        if isinstance(res, StreamReply):
            span.set_attribute("server.address", res.replica.url)
            res.span = span
        else:
            span.set_attribute("server.address", res.replica or "")
            span.end()
        return res

    return traced
