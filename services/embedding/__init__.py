"""The embedding service: OpenAI-compatible embeddings and semantic similarity (:3003)."""
