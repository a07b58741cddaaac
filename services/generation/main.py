from modelfleet.app import serve
from services.generation.service import GenerationService
from services.generation.settings import GenerationSettings


def main() -> None:
    serve(GenerationService, GenerationSettings)
