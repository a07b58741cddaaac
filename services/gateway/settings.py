"""Gateway settings (env prefix ``MODELFLEET_GATEWAY_``), built once in ``main()``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode, SettingsConfigDict

from modelfleet.api import FLEET_ROUTES, CacheMode
from modelfleet.settings import ServiceSettings
from services.gateway.routing import RoutingStrategy

CommaList = Annotated[tuple[str, ...], NoDecode]

# Values that mean "nobody set this" and must never guard a production fleet.
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "change_me", "secret", "password", "placeholder", "example",
     "test", "dev", "development", "default", "todo", "xxx", "sk-xxx", "none", "null"}
)  # fmt: skip
MIN_PRODUCTION_KEY_CHARS = 16


def split_list(value: object) -> tuple[str, ...]:
    """``"a, b,,c"`` or a sequence -> ``("a", "b", "c")``."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[object] = list(value.replace("\n", ",").split(","))
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)
    else:
        raise ValueError("expected a comma-separated list")
    return tuple(str(v).strip() for v in items if str(v).strip())


def read_keys_file(path: Path | None) -> tuple[str, ...]:
    return split_list(path.read_text()) if path is not None else ()


POOLS = ("llm", "embedding", "classification", "generation")
# The local fleet's ports; a pool's env vars override these one field at a time.
POOL_DEFAULTS: dict[str, dict[str, Any]] = {
    name: {"urls": (f"http://127.0.0.1:{port}",), "service": name}
    for name, port in zip(POOLS, (3002, 3003, 3004, 3005), strict=True)
}


class PoolSettings(BaseModel):
    """Where one pool's replicas are: static URLs, or the Service whose EndpointSlices list them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    urls: CommaList = Field(default=(), description="static discovery; empty = an empty pool")
    service: str = Field(default="", description="kubernetes discovery; empty = an empty pool")
    health_path: str = Field(
        default="/ready",
        pattern=r"^/",
        description="readiness path of the pool's replicas (/health for a vLLM server)",
    )

    @field_validator("urls", mode="before")
    @classmethod
    def _split(cls, value: object) -> tuple[str, ...]:
        return split_list(value)

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"not an http(s) URL: {url!r}")
        return tuple(u.rstrip("/") for u in value)


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELFLEET_GATEWAY_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    port: int = Field(default=8080, ge=1, le=65535)

    # -- auth -------------------------------------------------------------------------------
    # api_keys_file comes first: the api_keys validator reads it.
    api_keys_file: Path | None = Field(
        default=None, description="File with keys (comma or newline separated), e.g. a Secret"
    )
    # repr=False: a settings object printed or logged never shows a key.
    api_keys: CommaList = Field(
        default=(), repr=False, description="Comma-separated Bearer keys; none=open"
    )

    # -- Redis: cache and rate limits -------------------------------------------------------
    # A SecretStr: the URL may hold the Redis password; printed, it shows as '**********'.
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="Empty = no cache, no rate limits",
    )
    redis_timeout_s: float = Field(default=0.25, gt=0, le=10)
    redis_backoff_max_s: float = Field(default=5.0, gt=0)
    cache_enabled: bool = True
    cache_ttl_s: int = Field(default=3600, ge=1)
    cache_stale_ttl_s: int = Field(
        default=24 * 3600, ge=1, description="How long an expired answer stays for fallback"
    )
    cache_max_value_bytes: int = Field(default=1 << 20, ge=1)
    cache_shared_routes: CommaList = Field(
        default=(),
        description="Routes whose cached answers are shared by every API key (e.g. "
        "/v1/embeddings); others are cached per key. Sharing lets one tenant tell from a hit "
        "that another sent the same input",
    )

    # -- backends ---------------------------------------------------------------------------
    discovery: Literal["static", "kubernetes"] = "static"
    # One nested model per pool: MODELFLEET_GATEWAY_LLM__URLS, MODELFLEET_GATEWAY_LLM__SERVICE,
    # ... (the chart's gateway.pools.<pool> values map onto these one to one).
    llm: PoolSettings = PoolSettings(**POOL_DEFAULTS["llm"])
    embedding: PoolSettings = PoolSettings(**POOL_DEFAULTS["embedding"])
    classification: PoolSettings = PoolSettings(**POOL_DEFAULTS["classification"])
    generation: PoolSettings = PoolSettings(**POOL_DEFAULTS["generation"])
    backends_file: Path | None = Field(
        default=None, description="YAML mapping pool -> list of URLs; overrides <POOL>__URLS"
    )
    namespace: str = "default"
    discovery_relist_s: float = Field(default=30.0, gt=0)

    # -- routing and resilience -------------------------------------------------------------
    routing: RoutingStrategy = RoutingStrategy.ROUND_ROBIN
    health_interval_s: float = Field(default=2.0, gt=0)
    health_timeout_s: float = Field(default=1.0, gt=0)
    models_refresh_s: float = Field(default=30.0, gt=0)
    circuit_failure_threshold: int = Field(default=3, ge=1)
    circuit_open_s: float = Field(default=5.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    connect_timeout_s: float = Field(default=1.0, gt=0)
    request_timeout_s: float = Field(default=120.0, gt=0)

    # -- admission --------------------------------------------------------------------------
    rate_limit_rpm: int = Field(default=0, ge=0, description="Requests/minute per key; 0 = off")
    rate_limit_tpm: int = Field(default=0, ge=0, description="Tokens/minute per key; 0 = off")
    rate_limit_fail_mode: Literal["open", "closed", "local"] = Field(
        default="open",
        description="while Redis is down: open = no limits, closed = 503, local = this "
        "replica's own in-process windows",
    )
    rate_limit_default_completion_tokens: int = Field(
        default=256,
        ge=0,
        description="tokens reserved against RATE_LIMIT_TPM for a request that names no "
        "max_tokens (settled with the real usage afterwards)",
    )
    max_in_flight: int = Field(default=512, ge=1)
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="serve /metrics on this port only (a NetworkPolicy can then admit "
        "monitoring to metrics and not to the API); 0 = /metrics on the API port",
    )
    max_body_bytes: int = Field(default=4 << 20, ge=1024)
    max_response_bytes: int = Field(
        default=32 << 20,
        ge=1024,
        description="largest backend answer buffered whole (not streamed); 502 above",
    )

    @model_validator(mode="before")
    @classmethod
    def _pool_defaults(cls, data: Any) -> Any:
        # MODELFLEET_GATEWAY_LLM__URLS alone must not reset the llm pool's SERVICE to empty.
        if isinstance(data, dict):
            for name, default in POOL_DEFAULTS.items():
                given = data.get(name)
                if isinstance(given, dict):
                    data = {**data, name: {**default, **given}}
        return data

    @field_validator("api_keys", "cache_shared_routes", mode="before")
    @classmethod
    def _split(cls, value: object) -> tuple[str, ...]:
        return split_list(value)

    @field_validator("cache_shared_routes")
    @classmethod
    def _cached_routes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cached = {r.path for r in FLEET_ROUTES if r.cache is not CacheMode.NEVER}
        for path in value:
            if path not in cached:
                raise ValueError(f"{path!r} is not a cached route (one of {sorted(cached)})")
        return value

    @field_validator("api_keys")
    @classmethod
    def _production_keys(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if info.data.get("environment") != "production":
            return value
        try:
            keys = set(value) | set(read_keys_file(info.data.get("api_keys_file")))
        except OSError as exc:
            raise ValueError(f"cannot read API_KEYS_FILE: {exc}") from None
        if not keys:
            raise ValueError("environment=production needs API keys (here or in API_KEYS_FILE)")
        for key in keys:
            if key.lower() in PLACEHOLDER_SECRETS or len(key) < MIN_PRODUCTION_KEY_CHARS:
                raise ValueError(
                    "placeholder or short API key refused in production "
                    f"(keys need >= {MIN_PRODUCTION_KEY_CHARS} characters)"
                )
        return value

    @field_validator("redis_url")
    @classmethod
    def _production_redis(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        url = value.get_secret_value()
        password = urlsplit(url).password if url else None
        if (
            info.data.get("environment") == "production"
            and password is not None
            and password.lower() in PLACEHOLDER_SECRETS
        ):
            raise ValueError("placeholder Redis password refused in production")
        return value

    def all_api_keys(self) -> frozenset[str]:
        """Keys from the env list and the keys file together."""
        return frozenset(self.api_keys) | frozenset(read_keys_file(self.api_keys_file))

    def pools(self) -> dict[str, PoolSettings]:
        return {name: getattr(self, name) for name in POOLS}

    def pool_urls(self) -> dict[str, tuple[str, ...]]:
        return {name: pool.urls for name, pool in self.pools().items()}

    def pool_services(self) -> dict[str, str]:
        return {name: pool.service for name, pool in self.pools().items()}
