"""Active health checks: every replica's ``/ready``, and its ``/v1/models`` now and then.

A replica is healthy after one 200 from ``/ready``. It turns unhealthy at once when ``/ready``
says no or nothing listens, but only after two checks in a row time out: a replica busy enough
to answer slowly is not one to drop all at once (the circuit breaker reacts to real request
failures anyway). A passing check also decides a half-open circuit.

The models each replica reports give the pool its model identity (name + revision), which
keys the inference cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx
import orjson

from services.gateway.circuit import CircuitState
from services.gateway.pools import Pool, Replica

log = logging.getLogger("modelfleet.gateway.health")

TIMEOUTS_TO_EJECT = 2


class HealthChecker:
    def __init__(
        self,
        pools: dict[str, Pool],
        client: httpx.AsyncClient,
        *,
        interval_s: float,
        timeout_s: float,
        models_refresh_s: float,
    ) -> None:
        self.pools = pools
        self.client = client
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.models_refresh_s = models_refresh_s
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    async def start(self) -> None:
        """One round now (so /ready is right from the start), then one every ``interval_s``."""
        await self.check_all()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="health-checks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check_all()
            except Exception:  # never let one bad round stop the checks
                log.exception("health check round failed")

    async def check_all(self) -> None:
        checks = [
            self.check(pool, replica)
            for pool in self.pools.values()
            for replica in list(pool.replicas.values())
        ]
        if checks:
            await asyncio.gather(*checks)
        for pool in self.pools.values():
            pool.refresh_identity()
        self.rounds += 1

    async def check(self, pool: Pool, replica: Replica) -> None:
        ok, error, slow = await self._probe(replica, pool.health_path)
        was = replica.healthy
        replica.check_timeouts = replica.check_timeouts + 1 if slow else 0
        if slow and replica.check_timeouts < TIMEOUTS_TO_EJECT:
            ok = was
        replica.healthy = ok
        replica.last_check = time.monotonic()
        replica.last_error = error if not ok else replica.last_error
        if ok and replica.breaker.state is CircuitState.HALF_OPEN:
            replica.breaker.record_success()
        if ok != was:
            if ok:
                log.info("%s replica %s is healthy", pool.name, replica.url)
            else:
                log.warning("%s replica %s is unhealthy: %s", pool.name, replica.url, error)
        if ok and (
            not replica.models or time.monotonic() - replica.models_at > self.models_refresh_s
        ):
            await self._fetch_models(replica)
        pool.publish(replica)

    async def _probe(self, replica: Replica, path: str = "/ready") -> tuple[bool, str | None, bool]:
        """(ready, error, timed out). ``path``: the pool's readiness path (vLLM: /health)."""
        try:
            resp = await self.client.get(replica.endpoint(path), timeout=self.timeout_s)
        except httpx.TimeoutException as exc:
            return False, repr(exc), True
        except httpx.HTTPError as exc:
            return False, repr(exc), False
        if resp.status_code != 200:
            return False, f"{path} answered {resp.status_code}", False
        return True, None, False

    async def _fetch_models(self, replica: Replica) -> None:
        try:
            resp = await self.client.get(replica.endpoint("/v1/models"), timeout=self.timeout_s)
            data = orjson.loads(resp.content).get("data") if resp.status_code == 200 else None
        except (httpx.HTTPError, orjson.JSONDecodeError, AttributeError) as exc:
            log.info("could not read /v1/models of %s: %r", replica.url, exc)
            return
        if isinstance(data, list):
            replica.models = [m for m in data if isinstance(m, dict)]
            replica.models_at = time.monotonic()
