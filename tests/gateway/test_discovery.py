"""EndpointSlice -> replica set, with the kubernetes client's own model objects (no cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes.client import (
    DiscoveryV1EndpointPort,
    V1Endpoint,
    V1EndpointConditions,
    V1EndpointSlice,
    V1ObjectMeta,
)

from services.gateway.discovery.kubernetes import SliceTracker, slice_urls
from services.gateway.discovery.static import StaticDiscovery, load_backends_file


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
