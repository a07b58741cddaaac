"""Request bodies of the embedding service (OpenAI's embeddings shape, plus similarity)."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

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
