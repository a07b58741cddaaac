from pydantic import Field
from pydantic_settings import SettingsConfigDict

from modelfleet.decoding.settings import DecoderSettings


class LlmSettings(DecoderSettings):
    model_config = SettingsConfigDict(env_prefix="MODELFLEET_LLM_", extra="ignore", frozen=True)

    port: int = Field(default=3002, ge=1, le=65535)
    max_messages: int = Field(
        default=256,
        ge=1,
        le=4096,
        description="most messages in one chat request (400 above); the chat template runs "
        "over every one of them, whatever their length",
    )
