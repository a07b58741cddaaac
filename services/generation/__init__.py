"""The generation service: OpenAI-compatible completions and summarisation (:3005)."""
