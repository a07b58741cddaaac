"""The llm service: OpenAI-compatible chat completions, streamed and batched (:3002)."""
