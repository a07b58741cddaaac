from modelfleet.app import serve
from services.llm.service import LlmService
from services.llm.settings import LlmSettings


def main() -> None:
    serve(LlmService, LlmSettings)
