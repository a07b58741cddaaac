"""The contract between the chart and the processes it runs, checked on a rendered release.

For each container of each workload: resolve its environment the way the kubelet does (``env``
in order with ``$(VAR)`` expansion, ``envFrom``, and ``valueFrom`` against the ConfigMaps and
Secrets the same render produced), expand its command and args the same way, then

- build the process's Settings from exactly that environment and require it to validate;
- refuse any ``MODELFLEET_*`` variable that no Settings field reads (a misspelt key would be
  silently ignored, since the Settings classes ignore unknown variables);
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
from dataclasses import dataclass
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


def processes(out: Rendered) -> Iterator[Process]:
    resolver = Resolver(out)
    for where, spec in out.pod_specs():
        pod_name = where.split("/", 1)[1] + "-0"
        for c in containers(spec):
            label = f"{where}:{c['name']}"
            env = resolve_env(c, pod_name, resolver, label)
            argv = [expand(str(a), env) for a in [*c.get("command", []), *c.get("args", [])]]
            yield Process(label, c["name"], env, argv)


def build_settings(cls: type[BaseSettings], env: Mapping[str, str]) -> BaseSettings:
    """The Settings a process builds in main(), from exactly ``env`` (nothing inherited)."""
    with mock.patch.dict(os.environ, dict(env), clear=True):
        return cls()


def violations(out: Rendered) -> list[str]:
    """Every break of the contract in one rendered release (empty = it holds)."""
    classes = settings_classes()
    secrets = Resolver(out).secret_values()
    problems: list[str] = []
    for proc in processes(out):
        fleet_vars = {k for k in proc.env if k.startswith("MODELFLEET_")}
        cls = classes.get(proc.name)
        readable = env_names(cls) if cls is not None else set()
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
