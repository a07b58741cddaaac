"""Request body of ``POST /v1/classify``."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NonEmptyStr = Annotated[str, Field(min_length=1)]


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)]
    task: NonEmptyStr | None = None
    labels: list[NonEmptyStr] | dict[NonEmptyStr, NonEmptyStr] | None = None
    top_k: int | None = Field(default=None, ge=1)
    model: str | None = None
    user: str | None = None
