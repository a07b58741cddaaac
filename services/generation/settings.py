from pydantic import Field
from pydantic_settings import SettingsConfigDict

from modelfleet.decoding.settings import DecoderSettings


class GenerationSettings(DecoderSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELFLEET_GENERATION_", extra="ignore", frozen=True
    )

    port: int = Field(default=3005, ge=1, le=65535)
    max_prompts: int = Field(
        default=16, ge=1, le=64, description="most prompts in one completions request (a list)"
    )
    # OpenAI's completions default: a request without max_tokens stays cheap.
    default_max_tokens: int = Field(default=16, ge=1, description="when a request names none")
    summary_chunk_tokens: int = Field(
        default=1536, ge=64, description="input tokens per map step of a long summary"
    )
    summary_map_tokens: int = Field(
        default=160, ge=16, description="max tokens of each partial (map) summary"
    )
    summary_default_tokens: int = Field(default=200, ge=1)
    summary_max_input_chars: int = Field(default=400_000, ge=1)
