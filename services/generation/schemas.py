"""Request body of ``/v1/summarize`` (completions use the shared OpenAI shapes)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class SummarizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: StrictStr = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    style: Literal["paragraph", "bullets"] = "paragraph"
    model: str | None = None
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int | None = None
