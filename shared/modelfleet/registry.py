"""Registered models in the services: ``models:/<name>@<alias>`` and ``models:/<name>/<version>``.

A MODEL setting in MLflow's model-URI form names a version in MLflow's model registry (the
toolkit's ``modelfleet registry`` writes it). :class:`RegistryResolver` turns it into a local
directory: the version's artifacts are downloaded once into ``CACHE_DIR/registry/<name>/<version>``
(from the run's artifact store: a local folder, a volume or object storage) and reused by later
starts. The tracking URI is the service's ``TRACKING_URI`` setting, else MLflow's own default
(``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory).

:class:`AliasWatcher` polls an alias and calls back when it moves (promotion or rollback), so a
service can load the new version beside the old one and swap (see the classification service).
mlflow is imported lazily: a service on a plain directory or hub id never pays for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelfleet.resolve import ModelSource, ModelUnavailable

log = logging.getLogger("modelfleet.registry")

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")
_COMPLETE = ".modelfleet-complete"


def is_registry_uri(spec: str) -> bool:
    return spec.strip().startswith("models:/")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A registered model by alias (follows promotions) or by fixed version."""

    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, spec: str) -> ModelRef:
        m = _URI.match(spec.strip())
        if not m:
            raise ModelUnavailable(
                f"bad model URI {spec!r}: use models:/<name>@<alias> or models:/<name>/<version>"
            )
        return cls(m["name"], m["alias"], m["version"])


def version_id(name: str, version: str) -> str:
    """The model id clients see: it names the version, so answers say which one served."""
    return f"models:/{name}/{version}"


class RegistryResolver:
    """Alias -> version, and version -> a local artifact directory (cached)."""

    def __init__(self, tracking_uri: str | None, cache_dir: Path) -> None:
        self.tracking_uri = tracking_uri or None
        self.cache_dir = cache_dir / "registry"
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def version_of(self, ref: ModelRef) -> str:
        """The version ``ref`` names now (an alias is looked up on every call)."""
        if ref.version is not None:
            return ref.version
        try:
            mv = self.client().get_model_version_by_alias(ref.name, ref.alias)
        except Exception as exc:  # MlflowException for an unknown name/alias, OSError for a store
            raise ModelUnavailable(
                f"models:/{ref.name}@{ref.alias} does not resolve: {exc}"
            ) from None
        return str(mv.version)

    def fetch(self, name: str, version: str) -> Path:
        """The version's artifact directory, downloaded into the cache on first use."""
        dst = self.cache_dir / name / version
        if (dst / _COMPLETE).exists():
            return dst
        from mlflow.artifacts import download_artifacts

        try:
            mv = self.client().get_model_version(name, version)
        except Exception as exc:
            raise ModelUnavailable(f"models:/{name}/{version} does not exist: {exc}") from None
        tmp = dst.with_name(f".{version}.{os.getpid()}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # A download that dies half way leaves only the .partial folder, never a dst that
        # looks complete.
        local = Path(download_artifacts(artifact_uri=str(mv.source), dst_path=str(tmp)))
        (local / _COMPLETE).write_text(str(mv.source))
        shutil.rmtree(dst, ignore_errors=True)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, dst)
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("registered model fetched", extra={"model": version_id(name, version)})
        return dst


class AliasWatcher:
    """Polls ``models:/<name>@<alias>`` every ``interval_s`` and calls ``on_move(version)``.

    ``on_move`` runs to completion before the next poll, so a slow load is never started twice.
    A failed poll is retried at the next tick; a version that fails to load is not tried again
    until the alias moves once more (the old version keeps serving meanwhile).
    """

    def __init__(
        self,
        resolver: RegistryResolver,
        ref: ModelRef,
        current: str,
        on_move: Callable[[str], Awaitable[None]],
        interval_s: float,
    ) -> None:
        self.resolver = resolver
        self.ref = ref
        self.current = current
        self.on_move = on_move
        self.interval_s = interval_s
        self.failed: str | None = None  # a version whose load failed is not retried
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.ref.alias is not None and self.interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"watch-{self.ref.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                version = await asyncio.to_thread(self.resolver.version_of, self.ref)
                if version not in (self.current, self.failed):
                    log.info(
                        "alias moved",
                        extra={"alias": f"{self.ref.name}@{self.ref.alias}",
                               "from": self.current, "to": version},
                    )  # fmt: skip
                    self.failed = version  # until it loads: one try per alias move
                    await self.on_move(version)
                    self.current, self.failed = version, None
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alias watch failed; the current version keeps serving")


class RegisteredModel:
    """A service's ``MODEL=models:/<name>@<alias>``: the version the alias names, that version's
    files, and (once :meth:`watch` is called) a watcher that hot-swaps when the alias moves.

    The service base starts and stops the watcher (:class:`modelfleet.service.ModelService`).
    """

    def __init__(self, spec: str, tracking_uri: str | None, cache_dir: Path, poll_s: float) -> None:
        self.ref = ModelRef.parse(spec)
        self.resolver = RegistryResolver(tracking_uri, cache_dir)
        self.poll_s = poll_s
        self.watcher: AliasWatcher | None = None

    def current_version(self) -> str:
        return self.resolver.version_of(self.ref)

    def fetch(self, version: str) -> ModelSource:
        """Version ``version``'s files in the local cache, as a model source."""
        path = self.resolver.fetch(self.ref.name, version)
        return ModelSource(str(path), version_id(self.ref.name, version), True, f"v{version}")

    def watch(self, version: str, on_move: Callable[[str], Awaitable[None]]) -> None:
        self.watcher = AliasWatcher(self.resolver, self.ref, version, on_move, self.poll_s)
