"""Request bodies of the encoder routes and of summarize: the one source of these shapes.

The services validate with them and the gateway validates and documents with the very same
classes (through :mod:`modelfleet.api`); the chat and completions shapes live with the decoding
engine in :mod:`modelfleet.decoding.openai`.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

NonEmptyStr = Annotated[str, Field(min_length=1)]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class SimilarityRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: NonEmptyStr
    documents: Annotated[list[NonEmptyStr], Field(min_length=1)]
    model: str | None = None
    top_n: int | None = Field(default=None, ge=1)


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)]
    task: NonEmptyStr | None = None
    labels: list[NonEmptyStr] | dict[NonEmptyStr, NonEmptyStr] | None = None
    top_k: int | None = Field(default=None, ge=1)
    model: str | None = None
    user: str | None = None


class SummarizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: StrictStr = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    style: Literal["paragraph", "bullets"] = "paragraph"
    model: str | None = None
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int | None = None
