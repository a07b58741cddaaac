from modelfleet.app import serve
from services.embedding.service import EmbeddingService
from services.embedding.settings import EmbeddingSettings


def main() -> None:
    serve(EmbeddingService, EmbeddingSettings)
