from pydantic import Field
from pydantic_settings import SettingsConfigDict

from modelfleet.settings import EncoderServiceSettings


class EmbeddingSettings(EncoderServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELFLEET_EMBEDDING_", extra="ignore", frozen=True
    )

    port: int = Field(default=3003, ge=1, le=65535)
    max_batch_size: int = Field(default=32, ge=1, le=4096)
