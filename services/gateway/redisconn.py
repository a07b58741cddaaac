"""One guarded Redis client for the cache and the rate limiter.

Redis is an optimisation here, never a dependency: every call has a short timeout, the first
failure marks Redis down, and while it is down calls fail instantly (no network, no added
latency) until a background probe - backing off up to ``backoff_max_s`` - sees it answer again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from services.gateway.metrics import SERVICE, GatewayMetrics

log = logging.getLogger("modelfleet.gateway.redis")

T = TypeVar("T")


class RedisDown(Exception):
    """Redis is not configured, or did not answer; the caller goes on without it."""


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


class RedisGuard:
    def __init__(
        self,
        url: str,
        metrics: GatewayMetrics,
        *,
        timeout_s: float = 0.25,
        backoff_min_s: float = 0.25,
        backoff_max_s: float = 5.0,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.client: redis.Redis | None = None
        self.up = False
        self.failures = 0
        self.down_since: float | None = None
        self._gauge = metrics.redis_up.labels(SERVICE)
        self._probe: asyncio.Task[None] | None = None

    @property
    def configured(self) -> bool:
        return bool(self.url)

    async def start(self) -> None:
        if not self.url:
            log.warning("no REDIS_URL: the cache and rate limits are off")
            return
        self.client = redis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            # No client-side retries: a failure should cost one timeout, then the guard's backoff.
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        try:
            await self.client.ping()
            self._set_up(True)
        except (RedisError, OSError) as exc:
            self._mark_down(exc)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self.client is not None:
            await self.client.aclose()

    async def call(self, op: Callable[[redis.Redis], Awaitable[T]]) -> T:
        """Run ``op`` on the client, or raise :class:`RedisDown` at once if Redis is down."""
        client = self.client
        if client is None or not self.up:
            raise RedisDown()
        try:
            return await op(client)
        except (RedisError, OSError) as exc:
            self._mark_down(exc)
            raise RedisDown() from exc

    def _set_up(self, up: bool) -> None:
        self.up = up
        self._gauge.set(int(up))

    def _mark_down(self, exc: BaseException) -> None:
        self.failures += 1
        if not self.up and self._probe is not None:
            return
        self._set_up(False)
        self.down_since = time.monotonic()
        log.warning("redis unavailable, serving without cache: %s", exc)
        self._probe = asyncio.get_running_loop().create_task(self._recover(), name="redis-probe")

    async def _recover(self) -> None:
        assert self.client is not None
        delay = self.backoff_min_s
        while True:
            await asyncio.sleep(delay)
            # Pooled connections died with the server; start from fresh ones.
            with contextlib.suppress(Exception):
                await self.client.connection_pool.disconnect()
            try:
                await self.client.ping()
            except (RedisError, OSError):
                delay = min(delay * 2, self.backoff_max_s)
                continue
            log.info("redis is back, cache and rate limits resume")
            self._set_up(True)
            self.down_since = None
            self._probe = None
            return

    def snapshot(self) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "url": redact(self.url) if self.url else None,
            "up": self.up,
            "failures": self.failures,
            "down_for_s": round(time.monotonic() - self.down_since, 1)
            if self.down_since is not None
            else None,
        }
