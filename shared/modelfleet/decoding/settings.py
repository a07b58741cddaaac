"""Settings shared by the decoder services (llm, generation); each sets its own env prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modelfleet.settings import ModelServiceSettings


class DecoderSettings(ModelServiceSettings):
    """Model-service settings plus what a causal-LM engine needs."""

    quantize: Literal["none", "int8"] = Field(
        default="none", description="int8: per-token dynamic W8A8 linear layers (CPU only)"
    )
    # Continuous batching: how many sequences decode together, how many tokens one step feeds.
    max_batch_size: int = Field(default=16, ge=1, le=1024)
    max_queue: int = Field(default=64, ge=1, description="sequences waiting for a batch slot")
    max_step_tokens: int = Field(default=512, ge=16, description="token budget of one step")
    prefill_chunk: int = Field(default=256, ge=16, description="prompt tokens per prefill chunk")
    default_max_tokens: int = Field(default=256, ge=1, description="when a request names none")
    max_tokens_cap: int = Field(default=2048, ge=1, description="largest max_tokens accepted")
    max_n: int = Field(default=8, ge=1, le=128, description="largest n (choices per prompt)")
    max_logit_bias: int = Field(default=300, ge=0, description="most logit_bias entries")
    grammar_cache_size: int = Field(
        default=256, ge=1, description="compiled JSON-schema / tool grammars kept"
    )
    context_window: int = Field(default=0, ge=0, description="0 = the model's own")
    # The paged KV cache (modelfleet.decoding.kvcache): one pool, preallocated at start-up.
    kv_cache_blocks: int = Field(
        default=0,
        ge=0,
        description="KV-cache blocks in the pool; 0 = auto: on CUDA KV_CACHE_MEMORY_FRACTION of "
        "the memory free after loading, on a CPU MAX_BATCH_SIZE full context windows (at most "
        "a quarter of RAM). A request reserves blocks for prompt + max_tokens per choice and "
        "waits for them; one that can never fit is a 400",
    )
    kv_block_size: int = Field(default=16, ge=1, le=1024, description="tokens per KV block")
    kv_cache_memory_fraction: float = Field(
        default=0.8, gt=0.0, le=1.0, description="CUDA, KV_CACHE_BLOCKS=0: share of free memory"
    )
    batch_invariant: bool = Field(
        default=True,
        description="pad each step to a row count whose GEMM kernels are batch-invariant, so "
        "greedy output never depends on what else is in the batch",
    )
    # Generation waits in the queue count against the request deadline, not the decoding.
    request_timeout_s: float = Field(default=120.0, gt=0)
