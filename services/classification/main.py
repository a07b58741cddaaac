from modelfleet.app import serve
from modelfleet.settings import load_settings
from services.classification.service import ClassificationService
from services.classification.settings import ClassificationSettings


def main() -> None:
    settings = load_settings(ClassificationSettings)
    if settings.frontends > 1:
        from services.classification.split import serve_split

        serve_split(settings)
    serve(ClassificationService, ClassificationSettings, settings)
