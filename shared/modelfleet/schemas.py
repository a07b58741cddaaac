"""Request bodies of the encoder routes and of summarize: the one source of these shapes.

The services validate with them and the gateway validates and documents with the very same
classes (through :mod:`modelfleet.api`); the chat and completions shapes live with the decoding
engine in :mod:`modelfleet.decoding.openai`.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

NonEmptyStr = Annotated[str, Field(min_length=1)]

# Ceilings on every list a request may carry, checked while parsing (pydantic stops at the first
# item over): they keep one body's validation cheap and its 400 small. The services' settings
# (MAX_INPUT_ITEMS, MAX_LABELS, ...) set the real, lower limits after validation.
MAX_LIST_ITEMS = 4096
MAX_LABELS = 1024
InputList = Annotated[list[NonEmptyStr], Field(min_length=1, max_length=MAX_LIST_ITEMS)]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: NonEmptyStr | InputList
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class SimilarityRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: NonEmptyStr
    documents: InputList
    model: str | None = None
    top_n: int | None = Field(default=None, ge=1, le=MAX_LIST_ITEMS)


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: NonEmptyStr | InputList
    task: NonEmptyStr | None = None
    labels: (
        Annotated[list[NonEmptyStr], Field(max_length=MAX_LABELS)]
        | Annotated[dict[NonEmptyStr, NonEmptyStr], Field(max_length=MAX_LABELS)]
        | None
    ) = None
    top_k: int | None = Field(default=None, ge=1, le=MAX_LABELS)
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
