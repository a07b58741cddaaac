"""The gateway's route table: every fleet route, served by the pipeline on the raw path, and the
same pipeline behind the FastAPI route that documents it."""

from __future__ import annotations

from starlette.testclient import TestClient

from modelfleet.api import FLEET_ROUTES
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings

EMPTY = GatewaySettings(
    redis_url="", llm_urls="", embedding_urls="", classification_urls="", generation_urls=""
)


def test_every_fleet_route_is_documented_with_the_services_models() -> None:
    app = create_app(EMPTY)
    with TestClient(app) as client:
        doc = client.get("/openapi.json").json()
    for spec in FLEET_ROUTES:
        op = doc["paths"][spec.path][spec.method.lower()]
        if spec.request is not None:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/" + spec.request.__name__)


def test_the_raw_path_and_the_fastapi_path_give_the_same_answers() -> None:
    app = create_app(EMPTY)
    fastapi_app = app.app.app  # type: ignore[attr-defined]  # RequestContext -> RouteTable -> FastAPI
    with TestClient(app) as raw, TestClient(fastapi_app) as documented:
        for client in (raw, documented):
            bad = client.post("/v1/embeddings", json={"input": []})
            assert bad.status_code == 400 and bad.json()["error"]["param"].startswith("input")
            down = client.post("/v1/embeddings", json={"input": "x"})
            assert down.status_code == 503 and "no embedding replica" in down.text
            assert client.get("/v1/classify/tasks").status_code == 503
