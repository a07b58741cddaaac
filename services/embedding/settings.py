from pydantic import Field
from pydantic_settings import SettingsConfigDict

from modelfleet.settings import EncoderServiceSettings


class EmbeddingSettings(EncoderServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELFLEET_EMBEDDING_", extra="ignore", frozen=True
    )

    port: int = Field(default=3003, ge=1, le=65535)
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    query_prefix: str = Field(
        default="",
        description="instruction put before a text sent with input_type=query (embeddings) and "
        "before a rerank query, as the model's card asks; bge-large-zh-v1.5: "
        "'为这个句子生成表示以用于检索相关文章：'; empty (all-MiniLM-L6-v2) = none",  # noqa: RUF001
    )
    document_prefix: str = Field(
        default="",
        description="instruction put before a text sent with input_type=document (or passage) "
        "and before rerank documents; empty = none (bge: none)",
    )
    rerank_model: str = Field(
        default="",
        description="a sentence-transformers CrossEncoder (HF id or directory) that scores "
        "/v1/rerank; empty = the embedding model's cosine similarity",
    )
    max_rerank_documents: int = Field(
        default=256, ge=1, description="most documents one /v1/rerank request may send"
    )
