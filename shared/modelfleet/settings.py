"""Typed settings: one pydantic-settings class per service, built once in ``main()``.

Each service subclasses :class:`ServiceSettings` (or :class:`ModelServiceSettings`) and sets its own
env prefix, e.g. ``MODELFLEET_EMBEDDING_``. :func:`load_settings` turns a validation failure into
one message that names the environment variables at fault.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Literal, Self, TypeVar

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["debug", "info", "warning", "error"]
Device = Literal["auto", "cpu", "cuda", "mps"]
DType = Literal["auto", "float32", "float16", "bfloat16"]


class ServiceSettings(BaseSettings):
    """Settings every fleet process has."""

    model_config = SettingsConfigDict(env_prefix="MODELFLEET_", extra="ignore", frozen=True)

    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: LogLevel = "info"
    log_json: bool = True
    access_log: bool = True
    environment: Literal["development", "staging", "production"] = "development"
    docs: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="/docs and /openapi.json: auto = on except in production",
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="comma-separated addresses (or *) whose X-Forwarded-For/-Proto are "
        "trusted as the client's; empty = none, the peer address is the client",
    )
    shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="after SIGTERM, seconds in-flight requests get to finish before the process "
        "exits; the chart derives it from one drain value with the pod's grace period",
    )
    # See modelfleet.memory: without these an encoder's RSS grows for as long as it serves.
    malloc_mmap_threshold: int = Field(
        default=0,
        ge=0,
        description="glibc mmap threshold in bytes, fixed (no dynamic rise); 0 = glibc default",
    )
    malloc_arena_max: int = Field(
        default=2, ge=0, le=1024, description="glibc malloc arenas at most; 0 = glibc default"
    )
    otlp_endpoint: str = Field(
        default="",
        description="base URL of an OTLP/HTTP trace collector (Jaeger, Zipkin, an OpenTelemetry "
        "Collector: http://host:4318); spans go to <url>/v1/traces. Empty = the standard "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT; none set = tracing off",
    )
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="share of new traces recorded when tracing is on; a request whose caller "
        "sent a traceparent follows the caller's sampling decision",
    )

    def docs_enabled(self) -> bool:
        return self.docs == "on" or (self.docs == "auto" and self.environment != "production")


class ModelServiceSettings(ServiceSettings):
    """Settings of a model service: model source, device, batching and limits."""

    model: str = Field(
        default="",
        description="HF model id, local directory, or a registered model "
        "(models:/<name>@<alias>, models:/<name>/<version>); empty = packaged",
    )
    model_revision: str | None = None
    trust_remote_code: bool = Field(
        default=False,
        description="let the model's repository run its own Python code when it loads "
        "(models with custom architectures need it). RISK: that code runs with this process's "
        "rights; allow it only for a model whose code you have read, pinned by MODEL_REVISION",
    )
    device: Device = "auto"
    dtype: DType = "auto"
    cache_dir: Path = Path.home() / ".cache" / "modelfleet"
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    max_queue: int = Field(default=1024, ge=1)
    request_timeout_s: float = Field(default=30.0, gt=0)
    max_input_items: int = Field(default=256, ge=1)
    max_input_chars: int = Field(default=100_000, ge=1)
    max_body_bytes: int = Field(
        default=4 << 20,
        ge=1024,
        description="largest request body; 413 from Content-Length before reading, and while "
        "reading a chunked body",
    )
    malloc_trim_interval_s: float = Field(
        default=2.0,
        ge=0,
        description="seconds between returns of free heap pages to the OS (malloc_trim); 0 = never",
    )
    torch_threads: int = Field(
        default=0, ge=0, description="CPU threads the model uses in all; 0 = torch's default"
    )


class EncoderServiceSettings(ModelServiceSettings):
    """Settings of a service built on a sentence encoder (embedding, classification)."""

    tracking_uri: str = Field(
        default="",
        description="MLflow tracking/registry URI for models:/ MODEL settings; empty = "
        "MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory",
    )
    registry_poll_s: float = Field(
        default=10.0,
        ge=0,
        description="how often a models:/<name>@<alias> MODEL's alias is checked; on a move the "
        "new version loads beside the old and takes over; 0 = never",
    )

    packed: bool = Field(
        default=True,
        description="run BERT-family encoders on packed, unpadded batches "
        "(other architectures always use padded batches)",
    )
    forward_workers: int = Field(
        default=0,
        ge=0,
        le=256,
        description="forward passes run at once, sharing TORCH_THREADS; 0 = auto: on a CPU one "
        "single-threaded pass per thread (throughput mode), on an accelerator 1",
    )
    frontends: int = Field(
        default=1,
        ge=1,
        le=64,
        description="HTTP front-end processes. 1 = one process serves HTTP and runs the model; "
        "N > 1 = one model-worker process owns the model and N front-ends on the same port "
        "parse and validate requests and hand them over (for a GPU, which one event loop "
        "cannot keep busy)",
    )

    @model_validator(mode="after")
    def _split_needs_a_fixed_model(self) -> Self:
        # Front-ends keep the tokenizer and model cards the worker sent when they connected;
        # an alias that moves would change them under the front-ends.
        if self.frontends > 1 and self.model.strip().startswith("models:/"):
            raise ValueError("FRONTENDS > 1 serves a fixed model: not a models:/ MODEL")
        return self


S = TypeVar("S", bound=BaseSettings)


def env_name(cls: type[BaseSettings], field: str) -> str:
    prefix = str(cls.model_config.get("env_prefix", ""))
    return f"{prefix}{field}".upper()


# Settings whose values are secrets: a configuration error names them but never shows them.
_SECRET_NAME = re.compile(r"KEY|PASSWORD|SECRET|TOKEN|CREDENTIAL|REDIS_URL", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^/@\s:]*:)[^/@\s]*@")
REDACTED = "<redacted>"


def redact_url(text: str) -> str:
    """Every ``scheme://user:password@host`` in ``text`` with the password replaced."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def _secret_values() -> list[str]:
    """Values of secret-named environment variables (and their comma-separated items)."""
    out: list[str] = []
    for name, value in os.environ.items():
        if name.startswith("MODELFLEET") and _SECRET_NAME.search(name) and value.strip():
            out.append(value)
            out += [v.strip() for v in value.split(",") if len(v.strip()) >= 4]
    return sorted(out, key=len, reverse=True)


def redact_secrets(text: str) -> str:
    """``text`` with secret env values and URL passwords replaced: safe to print or log."""
    for secret in _secret_values():
        text = text.replace(secret, REDACTED)
    return redact_url(text)


def _shown(field: str, value: object) -> str:
    if _SECRET_NAME.search(field):
        return REDACTED
    if isinstance(value, dict | list | tuple):
        return f"<{type(value).__name__}>"  # a whole nested model may carry secrets
    return repr(value)


def load_settings(cls: type[S]) -> S:
    """Build settings from the environment or exit(2) with a message naming each bad variable.

    The message never shows a secret: secret-named settings are shown as ``<redacted>``, nested
    values by their type only, and anything left that looks like a key or URL password is
    scrubbed (:func:`redact_secrets`).
    """
    try:
        return cls()
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            # Nested settings (a gateway pool) read MODELFLEET_..._LLM__URLS: loc joined by "__".
            field = "__".join(str(part) for part in err["loc"]) if err["loc"] else "?"
            shown = _shown(field, err.get("input"))
            lines.append(f"  {env_name(cls, field)}={shown}: {err['msg']}")
        text = f"invalid configuration for {cls.__name__}:\n" + "\n".join(lines)
        print(redact_secrets(text), file=sys.stderr)
        raise SystemExit(2) from None
