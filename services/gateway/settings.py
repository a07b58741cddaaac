"""Gateway settings (env prefix ``MODELFLEET_GATEWAY_``), built once in ``main()``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

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


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MODELFLEET_GATEWAY_", extra="ignore", frozen=True)

    port: int = Field(default=8080, ge=1, le=65535)
    shutdown_grace_s: float = Field(default=30.0, ge=0)

    # -- auth -------------------------------------------------------------------------------
    # api_keys_file comes first: the api_keys validator reads it.
    api_keys_file: Path | None = Field(
        default=None, description="File with keys (comma or newline separated), e.g. a Secret"
    )
    api_keys: CommaList = Field(default=(), description="Comma-separated Bearer keys; none=open")

    # -- Redis: cache and rate limits -------------------------------------------------------
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Empty = no cache, no rate limits"
    )
    redis_timeout_s: float = Field(default=0.25, gt=0, le=10)
    redis_backoff_max_s: float = Field(default=5.0, gt=0)
    cache_enabled: bool = True
    cache_ttl_s: int = Field(default=3600, ge=1)
    cache_stale_ttl_s: int = Field(
        default=24 * 3600, ge=1, description="How long an expired answer stays for fallback"
    )
    cache_max_value_bytes: int = Field(default=1 << 20, ge=1)

    # -- backends ---------------------------------------------------------------------------
    discovery: Literal["static", "kubernetes"] = "static"
    llm_urls: CommaList = ("http://127.0.0.1:3002",)
    embedding_urls: CommaList = ("http://127.0.0.1:3003",)
    classification_urls: CommaList = ("http://127.0.0.1:3004",)
    generation_urls: CommaList = ("http://127.0.0.1:3005",)
    backends_file: Path | None = Field(
        default=None, description="YAML mapping pool -> list of URLs; overrides *_URLS"
    )
    namespace: str = "default"
    llm_service: str = "llm"
    embedding_service: str = "embedding"
    classification_service: str = "classification"
    generation_service: str = "generation"
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
    max_in_flight: int = Field(default=512, ge=1)
    max_body_bytes: int = Field(default=4 << 20, ge=1024)

    @field_validator(
        "api_keys", "llm_urls", "embedding_urls", "classification_urls", "generation_urls",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _split(cls, value: object) -> tuple[str, ...]:
        return split_list(value)

    @field_validator("llm_urls", "embedding_urls", "classification_urls", "generation_urls")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"not an http(s) URL: {url!r}")
        return tuple(u.rstrip("/") for u in value)

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
    def _production_redis(cls, value: str, info: ValidationInfo) -> str:
        password = urlsplit(value).password if value else None
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

    def pool_urls(self) -> dict[str, tuple[str, ...]]:
        return {
            "llm": self.llm_urls,
            "embedding": self.embedding_urls,
            "classification": self.classification_urls,
            "generation": self.generation_urls,
        }

    def pool_services(self) -> dict[str, str]:
        return {
            "llm": self.llm_service,
            "embedding": self.embedding_service,
            "classification": self.classification_service,
            "generation": self.generation_service,
        }
