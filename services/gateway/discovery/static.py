"""Static membership: the ``*_URLS`` settings, overridden per pool by ``BACKENDS_FILE``.

The YAML file maps a pool name to a list of base URLs::

    llm: [http://10.0.0.5:3002, http://10.0.0.6:3002]
    embedding:
      - http://embedding-0:3003
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from services.gateway.pools import POOLS, Pool


def load_backends_file(path: Path) -> dict[str, tuple[str, ...]]:
    """Parse the YAML file; raise ``ValueError`` naming what is wrong."""
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of pool -> list of URLs")
    out: dict[str, tuple[str, ...]] = {}
    for pool, urls in data.items():
        if pool not in POOLS:
            raise ValueError(f"{path}: unknown pool {pool!r} (pools: {', '.join(POOLS)})")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ValueError(f"{path}: {pool} must be a list of URLs")
        out[pool] = tuple(u.rstrip("/") for u in urls)
    return out


class StaticDiscovery:
    def __init__(self, urls: Mapping[str, tuple[str, ...]], backends_file: Path | None) -> None:
        self.urls = dict(urls)
        if backends_file is not None:
            self.urls.update(load_backends_file(backends_file))

    async def start(self, pools: dict[str, Pool]) -> None:
        for name, pool in pools.items():
            pool.set_urls(self.urls.get(name, ()))

    async def stop(self) -> None:
        return None
