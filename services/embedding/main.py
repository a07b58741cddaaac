from modelfleet.app import serve
from modelfleet.settings import load_settings
from services.embedding.service import EmbeddingService
from services.embedding.settings import EmbeddingSettings


def main() -> None:
    settings = load_settings(EmbeddingSettings)
    if settings.frontends > 1:
        from services.embedding.split import serve_split

        serve_split(settings)
    serve(EmbeddingService, EmbeddingSettings, settings)
