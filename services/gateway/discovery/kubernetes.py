"""Kubernetes membership: ready endpoints of each model Service's EndpointSlices.

Per pool, one thread lists the slices labelled ``kubernetes.io/service-name=<service>``, then
watches them from that list's resourceVersion. The watch ends every ``relist_s`` seconds (the
server's ``timeoutSeconds``) and the loop re-lists from scratch, so a pod whose deletion event
was missed can never stay in the pool for longer than that. The blocking client runs in a
thread; each change is handed to the event loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Iterable
from typing import Any

from services.gateway.pools import Pool

log = logging.getLogger("modelfleet.gateway.discovery")

SERVICE_LABEL = "kubernetes.io/service-name"
HTTP_GONE = 410


def _pick_port(ports: Iterable[Any] | None) -> int | None:
    tcp = [p for p in ports or () if p.port is not None and (p.protocol or "TCP") == "TCP"]
    for p in tcp:
        if p.name == "http":
            return int(p.port)
    return int(tcp[0].port) if tcp else None


def slice_urls(endpoint_slice: Any) -> set[str]:
    """Base URLs of the ready endpoints of one ``V1EndpointSlice``.

    A nil ``ready`` condition means "unknown", which the API asks consumers to read as ready;
    terminating endpoints are dropped even when they still serve.
    """
    if endpoint_slice.address_type not in ("IPv4", "IPv6", "FQDN"):
        return set()
    port = _pick_port(endpoint_slice.ports)
    if port is None:
        return set()
    urls = set()
    for ep in endpoint_slice.endpoints or ():
        cond = ep.conditions
        if cond is not None and (cond.ready is False or cond.terminating is True):
            continue
        if not ep.addresses:
            continue
        # All addresses of one endpoint are the same backend; the first is enough.
        host = ep.addresses[0]
        if endpoint_slice.address_type == "IPv6":
            host = f"[{host}]"
        urls.add(f"http://{host}:{port}")
    return urls


class SliceTracker:
    """The current slices of one Service, updated by list results and watch events."""

    def __init__(self) -> None:
        self._slices: dict[str, set[str]] = {}

    def reset(self, slices: Iterable[Any]) -> None:
        self._slices = {s.metadata.name: slice_urls(s) for s in slices}

    def apply(self, event_type: str, endpoint_slice: Any) -> None:
        name = endpoint_slice.metadata.name
        if event_type == "DELETED":
            self._slices.pop(name, None)
        elif event_type in ("ADDED", "MODIFIED"):
            self._slices[name] = slice_urls(endpoint_slice)

    def urls(self) -> set[str]:
        return set().union(*self._slices.values()) if self._slices else set()


class KubernetesDiscovery:
    def __init__(
        self,
        namespace: str,
        services: dict[str, str],
        relist_s: float,
        api: Any = None,
    ) -> None:
        self.namespace = namespace
        self.services = services
        self.relist_s = max(1, int(relist_s))
        self._api = api
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches: list[Any] = []

    async def start(self, pools: dict[str, Pool]) -> None:
        if self._api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            self._api = client.DiscoveryV1Api()
        loop = asyncio.get_running_loop()
        first = []
        for name, pool in pools.items():
            service = self.services.get(name)
            if not service:
                continue
            ready = asyncio.Event()
            first.append(ready.wait())
            t = threading.Thread(
                target=self._run,
                args=(loop, pool, service, ready),
                name=f"discovery-{name}",
                daemon=True,
            )
            self._threads.append(t)
            t.start()
        # Wait briefly for the first lists so /ready reflects reality; never block startup.
        if first:
            await asyncio.wait(
                [asyncio.ensure_future(w) for w in first], timeout=10, return_when="ALL_COMPLETED"
            )

    async def stop(self) -> None:
        self._stop.set()
        for w in self._watches:
            w.stop()

    def _run(self, loop: asyncio.AbstractEventLoop, pool: Pool, service: str, ready: Any) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        tracker = SliceTracker()
        selector = f"{SERVICE_LABEL}={service}"
        api = self._api
        backoff = 1.0

        def push() -> None:
            urls = tracker.urls()
            loop.call_soon_threadsafe(functools.partial(pool.set_urls, urls, assume_healthy=True))

        while not self._stop.is_set():
            try:
                listed = api.list_namespaced_endpoint_slice(
                    self.namespace, label_selector=selector, _request_timeout=10
                )
                tracker.reset(listed.items)
                push()
                loop.call_soon_threadsafe(ready.set)
                backoff = 1.0
                w = watch.Watch()  # type: ignore[no-untyped-call]
                self._watches.append(w)
                try:
                    for event in w.stream(  # type: ignore[no-untyped-call]
                        api.list_namespaced_endpoint_slice,
                        self.namespace,
                        label_selector=selector,
                        resource_version=listed.metadata.resource_version,
                        timeout_seconds=self.relist_s,
                        _request_timeout=self.relist_s + 10,
                    ):
                        tracker.apply(event["type"], event["object"])
                        push()
                        if self._stop.is_set():
                            break
                finally:
                    self._watches.remove(w)
            except ApiException as exc:
                if exc.status == HTTP_GONE:
                    continue  # the watch fell behind: re-list now
                log.warning("endpointslice watch failed: %s", exc, extra={"pool": pool.name})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as exc:
                log.warning("endpointslice watch failed: %s", exc, extra={"pool": pool.name})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
