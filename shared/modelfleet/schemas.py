"""Request bodies of the encoder routes, tokenize and summarize: the one source of these shapes.

The services validate with them and the gateway validates and documents with the very same
classes (through :mod:`modelfleet.api`); the chat and completions shapes live with the decoding
engine in :mod:`modelfleet.decoding.openai`.

One rule for unknown fields on every route: a field the server does not know is a 400
``unsupported parameter(s): <name>`` (code ``unsupported_parameter``), as OpenAI answers, never
silently ignored: an ignored field is an answer that differs from what the client asked for.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

NonEmptyStr = Annotated[str, Field(min_length=1)]
# Cohere's and Jina's names for the two kinds of text, mapped to ours.
INPUT_TYPES = {
    "query": "query",
    "search_query": "query",
    "document": "document",
    "passage": "document",
    "search_document": "document",
}
InputType = Literal["query", "search_query", "document", "passage", "search_document"]

TEXTS_OR_IDS = (
    "input must be a non-empty string, an array of non-empty strings, an array of token ids "
    "(integers) or an array of token-id arrays"
)

# Ceilings on every list a request may carry, checked while parsing (pydantic stops at the first
# item over): they keep one body's validation cheap and its 400 small. The services' settings
# (MAX_INPUT_ITEMS, MAX_LABELS, ...) set the real, lower limits after validation.
MAX_LIST_ITEMS = 4096
MAX_LABELS = 1024
MAX_TOKEN_IDS = 131072  # one token-id input
InputList = Annotated[list[NonEmptyStr], Field(min_length=1, max_length=MAX_LIST_ITEMS)]


class Strict(BaseModel):
    """Unknown fields are refused (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")


def texts_or_token_ids(value: Any) -> str | list[str] | list[list[int]]:
    """``input`` as OpenAI takes it: one text, texts, one token-id array, token-id arrays.

    Checked by hand so that a wrong shape is one message in the user's terms, not one error per
    branch of a union named by pydantic's internal types. One token-id array becomes a list of
    one.
    """
    if isinstance(value, str):
        if not value:
            raise ValueError("input must not be an empty string")
        return value
    if not isinstance(value, list) or not value:
        raise ValueError(TEXTS_OR_IDS)
    if len(value) > MAX_TOKEN_IDS or (len(value) > MAX_LIST_ITEMS and not _is_int(value[0])):
        raise ValueError(f"input holds more than {MAX_LIST_ITEMS} items")
    if all(isinstance(v, str) for v in value):
        for i, v in enumerate(value):
            if not v:
                raise ValueError(f"input[{i}] is an empty string")
        return list(value)
    if all(_is_int(v) for v in value):
        return [_token_ids(value, "input")]
    if all(isinstance(v, list) for v in value):
        return [_token_ids(v, f"input[{i}]") for i, v in enumerate(value)]
    raise ValueError(TEXTS_OR_IDS + "; it mixes kinds")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _token_ids(ids: list[Any], where: str) -> list[int]:
    if not ids:
        raise ValueError(f"{where} is an empty token-id array")
    if not all(_is_int(v) and v >= 0 for v in ids):
        raise ValueError(f"{where} must hold only token ids: integers >= 0")
    return ids


class EmbeddingRequest(Strict):
    # [int] is documented as such and becomes [[int]] (one input) once validated.
    input: str | list[str] | list[int] | list[list[int]] = Field(description=TEXTS_OR_IDS)
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    input_type: InputType | None = Field(
        default=None,
        description="extension (Cohere/Jina): query or document (passage); the model's "
        "instruction prefix for that kind of text, when the server configures one, is put "
        "before each text input (token-id inputs are taken as given)",
    )
    user: str | None = None

    _input = field_validator("input", mode="before")(texts_or_token_ids)


class SimilarityRequest(Strict):
    query: NonEmptyStr
    documents: InputList
    model: str | None = None
    top_n: int | None = Field(default=None, ge=1, le=MAX_LIST_ITEMS)


class RerankDocument(Strict):
    text: StrictStr = Field(min_length=1)


class RerankRequest(Strict):
    """Cohere's, Jina's and TEI-compatible servers' rerank shape."""

    query: StrictStr = Field(min_length=1)
    documents: Annotated[
        list[StrictStr | RerankDocument], Field(min_length=1, max_length=MAX_LIST_ITEMS)
    ]
    model: str | None = None
    top_n: int | None = Field(default=None, ge=1, le=MAX_LIST_ITEMS)
    return_documents: bool = False
    user: str | None = None

    @field_validator("documents", mode="before")
    @classmethod
    def _documents(cls, value: Any) -> Any:
        if not isinstance(value, list) or not value:
            raise ValueError("documents must be a non-empty array of strings or {text} objects")
        if len(value) > MAX_LIST_ITEMS:
            raise ValueError(f"documents holds more than {MAX_LIST_ITEMS} items")
        for i, d in enumerate(value):
            text = d.get("text") if isinstance(d, dict) and set(d) == {"text"} else d
            if not (isinstance(text, str) and text):
                raise ValueError(f'documents[{i}] must be a non-empty string or {{"text": ...}}')
        return value

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class ChatTurn(Strict):
    role: StrictStr
    content: StrictStr


class TokenizeRequest(Strict):
    """vLLM's ``/tokenize``: a ``prompt``, or ``messages`` through the chat template."""

    model: str | None = None
    prompt: StrictStr | None = None
    messages: Annotated[list[ChatTurn], Field(min_length=1, max_length=MAX_LIST_ITEMS)] | None = (
        None
    )
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeRequest(Strict):
    model: str | None = None
    tokens: Annotated[
        list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=MAX_TOKEN_IDS)
    ]


class ClassifyRequest(Strict):
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


class SummarizeRequest(Strict):
    input: StrictStr = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    style: Literal["paragraph", "bullets"] = "paragraph"
    model: str | None = None
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int | None = None
