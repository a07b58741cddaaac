from pydantic import Field
from pydantic_settings import SettingsConfigDict

from modelfleet.decoding.settings import DecoderSettings


class LlmSettings(DecoderSettings):
    model_config = SettingsConfigDict(env_prefix="MODELFLEET_LLM_", extra="ignore", frozen=True)

    port: int = Field(default=3002, ge=1, le=65535)
