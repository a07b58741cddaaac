"""The shared inference cache in Redis, and single-flight for concurrent identical misses.

Only deterministic requests are cached (the caller decides which). The key is the route, the
model identity the backends report (name + revision) and the canonical JSON of the body (sorted
keys), hashed. One Redis entry per key holds the answer and the time it was stored: younger than
``ttl_s`` it is a hit; older, it is kept (until ``stale_ttl_s``) only as a fallback for when
the pool is down. One entry with a timestamp instead of a fresh + stale pair halves the memory.

Single-flight is per gateway process (an in-memory map of futures): N identical concurrent
misses in one process make one backend call (``Cache-Control: no-cache`` requests stay out of
it: they asked for an answer of their own). Across gateway replicas each process may make its
own call; a Redis lock would turn that into one call fleet-wide at the price of a round trip on
every miss, and a duplicate inference is cheaper than that on the hot path.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from modelfleet.decoding.openai import new_id
from services.gateway.redisconn import RedisDown, RedisGuard

log = logging.getLogger("modelfleet.gateway.cache")

T = TypeVar("T")

_MAGIC = b"MF1"
_STAMP = struct.Struct(">d")
_HEADER = len(_MAGIC) + _STAMP.size


def cache_key(route: str, identity: str, payload: Any, tenant: str = "") -> str:
    """The key of one answer: route, model identity, canonical body and, unless the route is
    shared across tenants, the tenant (an API key's id): one tenant never gets another's answer,
    nor learns from a hit that someone else sent the same request."""
    canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    scope = f"{tenant}\0{identity}".encode()
    digest = hashlib.blake2b(scope + b"\0" + canonical, digest_size=20).hexdigest()
    return f"mf:cache:v2:{route}:{digest}"


def with_fresh_id(body: bytes) -> bytes:
    """A cached completion with a new ``id`` (same prefix) and ``created``: two answers never
    share an id, so a hit cannot be matched to the request that filled the cache."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        return body
    prefix = obj["id"].split("-", 1)[0] or "cmpl"
    obj["id"] = new_id(prefix)
    if "created" in obj:
        obj["created"] = int(time.time())
    return orjson.dumps(obj)


@dataclass(frozen=True, slots=True)
class CacheControl:
    no_cache: bool = False  # skip the lookup
    no_store: bool = False  # skip the write

    @classmethod
    def parse(cls, header: str | None) -> CacheControl:
        if not header:
            return _DEFAULT_CC
        directives = {d.strip().split("=", 1)[0].lower() for d in header.split(",")}
        return cls("no-cache" in directives, "no-store" in directives)


_DEFAULT_CC = CacheControl()


@dataclass(frozen=True, slots=True)
class Entry:
    body: bytes
    age_s: float
    fresh: bool


class ResponseCache:
    def __init__(
        self,
        redis: RedisGuard,
        *,
        enabled: bool,
        ttl_s: int,
        stale_ttl_s: int,
        max_value_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.clock = clock  # wall time: entries are shared by every gateway replica
        self.enabled = enabled and redis.configured
        self.ttl_s = ttl_s
        self.stale_ttl_s = max(stale_ttl_s, ttl_s)
        self.max_value_bytes = max_value_bytes
        self.writes = 0
        self.skipped_too_large = 0
        self._pending: set[asyncio.Task[None]] = set()

    async def get(self, key: str) -> Entry | None:
        """The entry under ``key``, fresh or stale; raises :class:`RedisDown`."""
        raw = await self.redis.call(lambda r: r.get(key))
        if not isinstance(raw, bytes) or len(raw) < _HEADER or not raw.startswith(_MAGIC):
            return None
        (stored_at,) = _STAMP.unpack_from(raw, len(_MAGIC))
        age = max(0.0, self.clock() - stored_at)
        return Entry(raw[_HEADER:], age, age < self.ttl_s)

    async def put(self, key: str, body: bytes) -> None:
        if len(body) > self.max_value_bytes:
            self.skipped_too_large += 1
            return
        value = _MAGIC + _STAMP.pack(self.clock()) + body
        try:
            await self.redis.call(lambda r: r.set(key, value, ex=self.stale_ttl_s))
            self.writes += 1
        except RedisDown:
            pass

    def put_later(self, key: str, body: bytes) -> asyncio.Task[None]:
        """Write after the response went out; the task is kept so it is not collected early."""
        task = asyncio.get_running_loop().create_task(self.put(key, body))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    def snapshot(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "ttl_s": self.ttl_s,
            "stale_ttl_s": self.stale_ttl_s,
            "max_value_bytes": self.max_value_bytes,
            "writes": self.writes,
            "skipped_too_large": self.skipped_too_large,
            "redis": self.redis.snapshot(),
        }


class SingleFlight(Generic[T]):
    """Concurrent calls with the same key share one execution of ``fn`` (in this process).

    The work runs in its own task, so the first caller going away (client disconnect) neither
    cancels it for the others nor loses the cache write. ``after`` (the cache write) runs
    before the key is released, so a request arriving between the answer and the write still
    joins instead of calling the backend again.
    """

    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Future[T]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.shared = 0

    def in_flight(self) -> int:
        return len(self._calls)

    async def do(
        self,
        key: str,
        fn: Callable[[], Awaitable[T]],
        after: Callable[[T], Awaitable[None]] | None = None,
    ) -> tuple[T, bool]:
        """``(result, shared)``: shared is True when another caller did the work."""
        fut = self._calls.get(key)
        if fut is not None:
            self.shared += 1
            return await asyncio.shield(fut), True
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        # Read the outcome even if every waiter left, so asyncio never logs it as lost.
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._calls[key] = fut
        task = loop.create_task(self._run(key, fut, fn, after))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(fut), False

    async def _run(
        self,
        key: str,
        fut: asyncio.Future[T],
        fn: Callable[[], Awaitable[T]],
        after: Callable[[T], Awaitable[None]] | None,
    ) -> None:
        try:
            try:
                result = await fn()
            except BaseException as exc:
                fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                if not isinstance(exc, Exception):
                    raise
                return
            fut.set_result(result)
            if after is not None:
                try:
                    await after(result)
                except Exception:
                    log.exception("single-flight follow-up failed")
        finally:
            self._calls.pop(key, None)
