from modelfleet.app import serve
from services.classification.service import ClassificationService
from services.classification.settings import ClassificationSettings


def main() -> None:
    serve(ClassificationService, ClassificationSettings)
