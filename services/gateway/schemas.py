"""Request shapes for the OpenAPI docs only.

The gateway forwards bodies as raw bytes and never validates them with these models (that
would cost a parse and a re-serialisation per request); the backends validate.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modelfleet.decoding import openai as decoding_api


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


# The decoders' own request models: every OpenAI parameter they take, documented once.
ChatCompletionRequest = decoding_api.ChatCompletionRequest
CompletionRequest = decoding_api.CompletionRequest


class EmbeddingRequest(_Doc):
    input: str | list[str]
    model: str | None = None
    encoding_format: str = "float"
    dimensions: int | None = None


class SimilarityRequest(_Doc):
    query: str
    documents: list[str]
    model: str | None = None
    top_n: int | None = None


class SummarizeRequest(_Doc):
    input: str
    max_tokens: int | None = None
    style: str = Field(default="paragraph", description="paragraph | bullets")
    model: str | None = None
    temperature: float = 0.0
    seed: int | None = None


class ClassifyRequest(_Doc):
    input: str | list[str]
    task: str | None = Field(default=None, description="a shipped task, e.g. sentiment")
    labels: list[str] | dict[str, str] | None = Field(
        default=None, description="zero-shot labels (or label -> description)"
    )
    top_k: int | None = None
    model: str | None = None


class AnyRequest(_Doc):
    """Forwarded to the backend as is; see that service's API."""


SCHEMAS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/embeddings": EmbeddingRequest,
    "/v1/similarity": SimilarityRequest,
    "/v1/summarize": SummarizeRequest,
    "/v1/classify": ClassifyRequest,
}


def request_body_doc(path: str) -> dict[str, Any]:
    """``openapi_extra`` describing the JSON body of ``path``."""
    schema = SCHEMAS.get(path, AnyRequest).model_json_schema()
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "parameters": [
            {
                "name": "Cache-Control",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "no-cache: skip the cache lookup; no-store: do not cache the answer",
            }
        ],
    }
