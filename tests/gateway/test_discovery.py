"""EndpointSlice -> replica set, with the kubernetes client's own model objects (no cluster)."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes.client import (
    DiscoveryV1EndpointPort,
    V1Endpoint,
    V1EndpointConditions,
    V1EndpointSlice,
    V1ObjectMeta,
)

from services.gateway.discovery.kubernetes import KubernetesDiscovery, SliceTracker, slice_urls
from services.gateway.discovery.static import StaticDiscovery, load_backends_file
from services.gateway.metrics import GatewayMetrics
from services.gateway.pools import Pool
from services.gateway.routing import RoundRobin


def endpoint(ip: str, ready: bool | None = True, terminating: bool | None = None) -> V1Endpoint:
    return V1Endpoint(
        addresses=[ip], conditions=V1EndpointConditions(ready=ready, terminating=terminating)
    )


def eps(
    name: str, *endpoints: V1Endpoint, port: int = 3003, address_type: str = "IPv4"
) -> V1EndpointSlice:
    return V1EndpointSlice(
        address_type=address_type,
        metadata=V1ObjectMeta(name=name, labels={"kubernetes.io/service-name": "embedding"}),
        endpoints=list(endpoints),
        ports=[DiscoveryV1EndpointPort(name="http", port=port, protocol="TCP")],
    )


def test_only_ready_endpoints_count() -> None:
    s = eps(
        "embedding-abc",
        endpoint("10.0.0.1"),
        endpoint("10.0.0.2", ready=False),
        endpoint("10.0.0.3", ready=None),  # unknown reads as ready (the API's advice)
        endpoint("10.0.0.4", ready=True, terminating=True),
    )
    assert slice_urls(s) == {"http://10.0.0.1:3003", "http://10.0.0.3:3003"}


def test_port_named_http_wins_and_ipv6_is_bracketed() -> None:
    s = V1EndpointSlice(
        address_type="IPv6",
        metadata=V1ObjectMeta(name="x"),
        endpoints=[endpoint("fd00::1")],
        ports=[
            DiscoveryV1EndpointPort(name="metrics", port=9090, protocol="TCP"),
            DiscoveryV1EndpointPort(name="http", port=3002, protocol="TCP"),
        ],
    )
    assert slice_urls(s) == {"http://[fd00::1]:3002"}


def test_slice_without_ports_or_endpoints_is_empty() -> None:
    assert (
        slice_urls(V1EndpointSlice(address_type="IPv4", metadata=V1ObjectMeta(name="x"))) == set()
    )
    assert slice_urls(eps("y")) == set()


def test_tracker_follows_watch_events_and_relist_drops_gone_pods() -> None:
    t = SliceTracker()
    t.reset([eps("a", endpoint("10.0.0.1")), eps("b", endpoint("10.0.0.2"))])
    assert t.urls() == {"http://10.0.0.1:3003", "http://10.0.0.2:3003"}
    t.apply("MODIFIED", eps("a", endpoint("10.0.0.1"), endpoint("10.0.0.5")))
    t.apply("ADDED", eps("c", endpoint("10.0.0.9", ready=False)))
    assert t.urls() == {"http://10.0.0.1:3003", "http://10.0.0.5:3003", "http://10.0.0.2:3003"}
    t.apply("DELETED", eps("b"))
    assert t.urls() == {"http://10.0.0.1:3003", "http://10.0.0.5:3003"}
    # A missed DELETED event: the periodic re-list replaces everything.
    t.reset([eps("a", endpoint("10.0.0.5"))])
    assert t.urls() == {"http://10.0.0.5:3003"}
    t.apply("BOOKMARK", eps("a"))
    assert t.urls() == {"http://10.0.0.5:3003"}


def test_backends_file_overrides_urls(tmp_path: Path) -> None:
    f = tmp_path / "backends.yaml"
    f.write_text("llm: [http://10.1.0.1:3002/, http://10.1.0.2:3002]\nembedding: http://e:3003\n")
    assert load_backends_file(f) == {
        "llm": ("http://10.1.0.1:3002", "http://10.1.0.2:3002"),
        "embedding": ("http://e:3003",),
    }
    d = StaticDiscovery({"llm": ("http://old:1",), "generation": ("http://g:3005",)}, f)
    assert d.urls["llm"] == ("http://10.1.0.1:3002", "http://10.1.0.2:3002")
    assert d.urls["generation"] == ("http://g:3005",)


@pytest.mark.parametrize("text", ["- a\n- b\n", "nope: [http://x:1]\n", "llm: {a: 1}\n"])
def test_bad_backends_file_is_refused(tmp_path: Path, text: str) -> None:
    f = tmp_path / "backends.yaml"
    f.write_text(text)
    with pytest.raises(ValueError):
        load_backends_file(f)


# -- the watch loop against a real HTTP server speaking the Kubernetes list/watch protocol ----
class FakeKubeApi:
    """Serves EndpointSlice list and watch for one namespace, like the API server does:
    a list with a resourceVersion, then a watch that streams JSON events until timeoutSeconds."""

    def __init__(self) -> None:
        self.slices: dict[str, dict[str, Any]] = {}
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.lists = 0
        self.rv = 1

    def slice(self, name: str, ready: dict[str, bool]) -> dict[str, Any]:
        self.rv += 1
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": name, "resourceVersion": str(self.rv),
                         "labels": {"kubernetes.io/service-name": "embedding"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 3003, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ok}}
                          for ip, ok in ready.items()],
        }  # fmt: skip

    def handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # watches stream as chunked HTTP/1.1, as the API does

            def log_message(self, *args: object) -> None:
                pass

            def chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                assert query["labelSelector"] == ["kubernetes.io/service-name=embedding"]
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if query.get("watch") != ["true"]:
                    api.lists += 1
                    body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                            "metadata": {"resourceVersion": str(api.rv)},
                            "items": list(api.slices.values())}  # fmt: skip
                    self.chunk(json.dumps(body).encode())
                    self.chunk(b"")
                    return
                end = time.monotonic() + float(query["timeoutSeconds"][0])
                while time.monotonic() < end:
                    try:
                        event = api.events.get(timeout=0.05)
                    except queue.Empty:
                        continue
                    self.chunk(json.dumps(event).encode() + b"\n")
                self.chunk(b"")

        return Handler


def test_watch_follows_changes_and_relist_drops_pods_whose_events_were_missed() -> None:
    from kubernetes.client import ApiClient, Configuration, DiscoveryV1Api

    api = FakeKubeApi()
    api.slices["emb-1"] = api.slice("emb-1", {"10.0.0.1": True, "10.0.0.2": False})
    server = ThreadingHTTPServer(("127.0.0.1", 0), api.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    client = DiscoveryV1Api(ApiClient(config))

    async def scenario() -> None:
        metrics = GatewayMetrics()
        pool = Pool("embedding", RoundRobin(), failure_threshold=3, open_s=5, metrics=metrics)
        disco = KubernetesDiscovery("ns", {"embedding": "embedding"}, relist_s=3, api=client)
        await disco.start({"embedding": pool})

        async def until(urls: set[str]) -> None:
            for _ in range(160):
                if set(pool.replicas) == urls:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"{set(pool.replicas)} != {urls}")

        try:
            await until({"http://10.0.0.1:3003"})
            assert pool.replicas["http://10.0.0.1:3003"].healthy  # ready per Kubernetes
            # A watch event: the second pod became ready (seen without waiting for a re-list).
            lists = api.lists
            api.slices["emb-1"] = api.slice("emb-1", {"10.0.0.1": True, "10.0.0.2": True})
            api.events.put({"type": "MODIFIED", "object": api.slices["emb-1"]})
            await until({"http://10.0.0.1:3003", "http://10.0.0.2:3003"})
            assert api.lists == lists
            # The first pod goes away and its event is lost: the periodic re-list catches it.
            lists = api.lists
            api.slices["emb-1"] = api.slice("emb-1", {"10.0.0.2": True})
            await until({"http://10.0.0.2:3003"})
            assert api.lists > lists
        finally:
            await disco.stop()

    try:
        asyncio.run(scenario())
    finally:
        server.shutdown()
