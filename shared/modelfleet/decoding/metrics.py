"""The decoder series of the fleet's metric schema, fed by the engine thread."""

from __future__ import annotations

from typing import Protocol

from modelfleet.metrics import TOKEN_LATENCY_BUCKETS, Metrics


class EngineObserver(Protocol):
    """What the engine reports; called from the engine thread."""

    def admitted(self, route: str, prompt_tokens: int) -> None: ...

    def first_token(self, route: str, seconds: float) -> None: ...

    def next_token(self, route: str, seconds: float) -> None: ...

    def step(self, batch_size: int, running: int, waiting: int) -> None: ...

    def kv_blocks(self, used: int, free: int) -> None: ...


class DecoderMetrics:
    """Prompt and completion tokens, TTFT, inter-token latency, sequences, batch size."""

    def __init__(self, metrics: Metrics) -> None:
        m = metrics
        self.service = m.service
        self._metrics = m
        self.prompt_tokens = m.counter("prompt_tokens_total", "Prompt tokens admitted.", ["route"])
        self.completion_tokens = m.counter(
            "completion_tokens_total", "Tokens generated.", ["route"]
        )
        self.ttft = m.histogram(
            "time_to_first_token_seconds", "Arrival to first generated token.", []
        ).labels(m.service)
        self.itl = m.histogram(
            "inter_token_latency_seconds",
            "Time between consecutive tokens of a sequence.",
            [],
            buckets=TOKEN_LATENCY_BUCKETS,
        ).labels(m.service)
        self.running = m.gauge("sequences_running", "Sequences in the decoding batch.", [])
        self.waiting = m.gauge("sequences_waiting", "Sequences queued for a batch slot.", [])
        self.running.labels(m.service).set(0)
        self.waiting.labels(m.service).set(0)
        blocks = m.gauge("kv_cache_blocks", "KV-cache blocks of the engine's pool.", ["state"])
        self.blocks_used = blocks.labels(m.service, "used")
        self.blocks_free = blocks.labels(m.service, "free")

    def admitted(self, route: str, prompt_tokens: int) -> None:
        self.prompt_tokens.labels(self.service, route).inc(prompt_tokens)
        self._metrics.input_tokens.labels(self.service, route).inc(prompt_tokens)

    def first_token(self, route: str, seconds: float) -> None:
        self.ttft.observe(seconds)
        self.completion_tokens.labels(self.service, route).inc()

    def next_token(self, route: str, seconds: float) -> None:
        self.itl.observe(seconds)
        self.completion_tokens.labels(self.service, route).inc()

    def step(self, batch_size: int, running: int, waiting: int) -> None:
        if batch_size:
            self._metrics.batch_size.labels(self.service).observe(batch_size)
        self.running.labels(self.service).set(running)
        self.waiting.labels(self.service).set(waiting)
        self._metrics.queue_depth.labels(self.service).set(waiting)

    def kv_blocks(self, used: int, free: int) -> None:
        self.blocks_used.set(used)
        self.blocks_free.set(free)
