"""The contract between the chart and the processes it runs, checked on a rendered release.

For each container of each workload: resolve its environment the way the kubelet does (``env``
in order with ``$(VAR)`` expansion, ``envFrom``, and ``valueFrom`` against the ConfigMaps and
Secrets the same render produced), expand its command and args the same way, then

- build the process's Settings from exactly that environment and require it to validate; for the
  toolkit's Jobs (``modelfleet train|tune``), parse the argv with the toolkit's own parser and
  resolve its config the way the command does, from the ConfigMap file mounted where --config
  points and that environment;
- refuse any ``MODELFLEET_*`` variable that no Settings field reads (a misspelt key would be
  silently ignored, since the Settings classes ignore unknown variables); the toolkit reads
  :func:`toolkit_env_names`;
- refuse any secret value in a process's argv (``ps`` and ``/proc/<pid>/cmdline`` show argv).

Secrets the chart does not render (``existingSecret`` options the user creates) get the stand-in
values of :data:`EXTERNAL_SECRETS`; a reference to any other missing Secret is a failure.
"""

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Iterator, Mapping
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings

from tests.charts.helm import NAMESPACE, Rendered, containers

# Secrets a user creates before installing (named by the values files); stand-in contents.
EXTERNAL_SECRETS: dict[tuple[str, str], str] = {
    ("modelfleet-api-keys", "api-keys"): "contract-key-0123456789abcdef,contract-key-fedcba98765",
    ("managed-redis", "url"): "rediss://:contract-password@redis.example.internal:6380/0",
    ("hf-token", "HF_TOKEN"): "hf_contract_stand_in",
}

_VAR_REF = re.compile(r"\$\((\w+)\)|\$\$")


def settings_classes() -> dict[str, type[BaseSettings]]:
    """Container name -> the Settings class its process builds in main()."""
    from services.classification.settings import ClassificationSettings
    from services.embedding.settings import EmbeddingSettings
    from services.gateway.settings import GatewaySettings
    from services.generation.settings import GenerationSettings
    from services.llm.settings import LlmSettings

    return {
        "gateway": GatewaySettings,
        "llm": LlmSettings,
        "embedding": EmbeddingSettings,
        "classification": ClassificationSettings,
        "generation": GenerationSettings,
    }


def toolkit_env_names() -> dict[str, set[str]]:
    """Container name -> the MODELFLEET_* variables the toolkit command it runs reads."""
    from modelfleet_toolkit.commands.tune import STORAGE_ENV

    return {"train": set(), "tune": {STORAGE_ENV}}


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable a Settings class reads (nested models as <FIELD>__<SUB>)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    delimiter = cls.model_config.get("env_nested_delimiter") or ""
    names = set()
    for field, info in cls.model_fields.items():
        names.add(f"{prefix}{field}".upper())
        nested = info.annotation
        if delimiter and isinstance(nested, type) and issubclass(nested, BaseModel):
            names.update(f"{prefix}{field}{delimiter}{sub}".upper() for sub in nested.model_fields)
    return names


def expand(text: str, env: Mapping[str, str]) -> str:
    """kubelet's $(VAR) expansion: defined variables are replaced, others stay, $$ is $."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(one, text)


def _cpu_cores(quantity: str) -> int:
    """resourceFieldRef limits.cpu with the default divisor 1: cores rounded up."""
    q = str(quantity)
    return math.ceil(int(q[:-1]) / 1000 if q.endswith("m") else float(q))


@dataclass
class Resolver:
    """Looks up what a pod's env references in one rendered release."""

    out: Rendered

    def _data(self, kind: str, name: str) -> dict[str, str] | None:
        for doc in self.out.kinds(kind):
            if doc["metadata"]["name"] == name:
                raw = doc.get("data", {})
                data = (
                    {k: base64.b64decode(v).decode() for k, v in raw.items()}
                    if kind == "Secret"
                    else dict(raw)
                )
                data.update(doc.get("stringData", {}))
                return data
        return None

    def lookup(self, kind: str, name: str, key: str, where: str) -> str:
        data = self._data(kind, name)
        if data is None and kind == "Secret" and (name, key) in EXTERNAL_SECRETS:
            return EXTERNAL_SECRETS[(name, key)]
        assert data is not None, f"{where}: {kind} {name!r} is neither rendered nor external"
        assert key in data, f"{where}: {kind} {name!r} has no key {key!r}"
        return data[key]

    def all_keys(self, kind: str, name: str, where: str) -> dict[str, str]:
        data = self._data(kind, name)
        assert data is not None, f"{where}: envFrom {kind} {name!r} is not rendered"
        return data

    def secret_values(self) -> set[str]:
        values = {v for v in EXTERNAL_SECRETS.values()}
        for doc in self.out.kinds("Secret"):
            data = self._data("Secret", doc["metadata"]["name"]) or {}
            values.update(v for v in data.values() if v)
        return values


def resolve_env(
    container: Mapping[str, Any], pod_name: str, resolver: Resolver, where: str
) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = resolver.all_keys("ConfigMap", source["configMapRef"]["name"], where)
        else:
            data = resolver.all_keys("Secret", source["secretRef"]["name"], where)
        env.update({prefix + k: v for k, v in data.items()})
    limits = container.get("resources", {}).get("limits", {})
    for entry in container.get("env", []):
        name = entry["name"]
        if "value" in entry:
            env[name] = expand(str(entry["value"]), env)
            continue
        ref = entry.get("valueFrom")
        if ref is None:  # `value` absent means ""
            env[name] = ""
        elif "secretKeyRef" in ref:
            r = ref["secretKeyRef"]
            env[name] = resolver.lookup("Secret", r["name"], r["key"], f"{where} {name}")
        elif "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            env[name] = resolver.lookup("ConfigMap", r["name"], r["key"], f"{where} {name}")
        elif "fieldRef" in ref:
            path = ref["fieldRef"]["fieldPath"]
            env[name] = {"metadata.namespace": NAMESPACE, "metadata.name": pod_name}[path]
        elif "resourceFieldRef" in ref:
            resource = ref["resourceFieldRef"]["resource"]
            assert resource == "limits.cpu", f"{where} {name}: unsupported {resource}"
            env[name] = str(_cpu_cores(limits["cpu"]))
        else:
            raise AssertionError(f"{where} {name}: unsupported valueFrom {ref}")
    return env


@dataclass
class Process:
    """One container as the kubelet would start it."""

    where: str  # "Deployment/mf-modelfleet-gateway:gateway"
    name: str  # container name
    env: dict[str, str]
    argv: list[str]
    # Files the container sees from ConfigMap volumes: mount path -> content.
    files: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None


def configmap_files(
    container: Mapping[str, Any], pod_spec: Mapping[str, Any], resolver: Resolver, where: str
) -> dict[str, str]:
    """Path -> content of every file a ConfigMap volume puts in the container."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    files: dict[str, str] = {}
    for mount in container.get("volumeMounts", []):
        ref = volumes.get(mount["name"], {}).get("configMap")
        if ref is None or "subPath" in mount:
            continue
        data = resolver.all_keys("ConfigMap", ref["name"], where)
        items = ref.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            assert item["key"] in data, f"{where}: ConfigMap {ref['name']} has no {item['key']}"
            files[f"{mount['mountPath'].rstrip('/')}/{item['path']}"] = data[item["key"]]
    return files


def processes(out: Rendered) -> Iterator[Process]:
    resolver = Resolver(out)
    for where, spec in out.pod_specs():
        pod_name = where.split("/", 1)[1] + "-0"
        for c in containers(spec):
            label = f"{where}:{c['name']}"
            env = resolve_env(c, pod_name, resolver, label)
            argv = [expand(str(a), env) for a in [*c.get("command", []), *c.get("args", [])]]
            files = configmap_files(c, spec, resolver, label)
            yield Process(label, c["name"], env, argv, files, c.get("workingDir"))


def toolkit_config(proc: Process, config_dir: Path) -> BaseModel:
    """The config a `modelfleet train|tune` container resolves: its argv through the toolkit's
    parser, --config read from the mounted ConfigMap file (copied into ``config_dir``), with
    exactly the container's environment. Raises ConfigError/SystemExit when it would."""
    from modelfleet_toolkit.cli import build_parser
    from modelfleet_toolkit.commands.train import resolve_train
    from modelfleet_toolkit.commands.tune import resolve_tune

    assert proc.argv[0] == "modelfleet", f"{proc.where}: runs {proc.argv[0]}, not the toolkit"
    args = build_parser().parse_args(proc.argv[1:])
    if args.config:
        assert args.config in proc.files, f"{proc.where}: --config {args.config} is not mounted"
        local = config_dir / Path(args.config).name
        local.write_text(proc.files[args.config], encoding="utf-8")
        args.config = str(local)
    resolver = {"train": resolve_train, "tune": resolve_tune}[args.command]
    with mock.patch.dict(os.environ, dict(proc.env), clear=True):
        config: BaseModel = resolver(args)
    return config


def build_settings(cls: type[BaseSettings], env: Mapping[str, str]) -> BaseSettings:
    """The Settings a process builds in main(), from exactly ``env`` (nothing inherited)."""
    with mock.patch.dict(os.environ, dict(env), clear=True):
        return cls()


def violations(out: Rendered) -> list[str]:
    """Every break of the contract in one rendered release (empty = it holds)."""
    classes = settings_classes()
    toolkit = toolkit_env_names()
    secrets = Resolver(out).secret_values()
    problems: list[str] = []
    for proc in processes(out):
        fleet_vars = {k for k in proc.env if k.startswith("MODELFLEET_")}
        cls = classes.get(proc.name)
        readable = env_names(cls) if cls is not None else toolkit.get(proc.name, set())
        if proc.name in toolkit:
            from modelfleet_toolkit.config import ConfigError

            with tempfile.TemporaryDirectory() as tmp:
                try:
                    toolkit_config(proc, Path(tmp))
                except (ConfigError, SystemExit) as exc:
                    problems.append(f"{proc.where}: modelfleet {proc.name}: {exc}")
        for var in sorted(fleet_vars - readable):
            problems.append(f"{proc.where}: {var} is read by no Settings field")
        if cls is not None:
            try:
                build_settings(cls, proc.env)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = "__".join(str(p) for p in err["loc"])
                    problems.append(
                        f"{proc.where}: {cls.__name__}.{loc} = {err.get('input')!r}: {err['msg']}"
                    )
        for arg in proc.argv:
            for secret in secrets:
                if len(secret) >= 8 and secret in arg:
                    problems.append(f"{proc.where}: a secret value is in argv")
    return problems
