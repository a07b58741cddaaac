"""Where the replicas of each pool come from: static URLs (env or YAML) or Kubernetes."""

from __future__ import annotations

from typing import Protocol

from services.gateway.pools import Pool
from services.gateway.settings import GatewaySettings


class Discovery(Protocol):
    async def start(self, pools: dict[str, Pool]) -> None:
        """Fill the pools' membership once, then keep it current until ``stop``."""
        ...

    async def stop(self) -> None: ...


def build_discovery(settings: GatewaySettings) -> Discovery:
    if settings.discovery == "kubernetes":
        # Imported only here: the kubernetes client is slow to import and static setups skip it.
        from services.gateway.discovery.kubernetes import KubernetesDiscovery

        return KubernetesDiscovery(
            namespace=settings.namespace,
            services=settings.pool_services(),
            relist_s=settings.discovery_relist_s,
        )
    from services.gateway.discovery.static import StaticDiscovery

    return StaticDiscovery(settings.pool_urls(), settings.backends_file)
