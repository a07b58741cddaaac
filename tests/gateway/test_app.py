"""The app factory: no work at import or construction, and no ML library in the gateway."""

from __future__ import annotations

import subprocess
import sys
import time

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from tests.support.procs import ROOT

ML = ("torch", "transformers", "sentence_transformers", "numpy", "huggingface_hub", "kubernetes")


def test_the_gateway_imports_no_ml_library() -> None:
    # A fresh interpreter: this test process has torch loaded by other tests.
    code = (
        "import sys, services.gateway.main as m; "
        "from services.gateway.app import create_app; "
        "from services.gateway.settings import GatewaySettings; "
        "create_app(GatewaySettings()); "
        f"print(sorted(n for n in sys.modules if n.split('.')[0] in {ML!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_create_app_touches_nothing_until_the_lifespan_runs() -> None:
    # Unroutable Redis and backends: construction must not try to reach them.
    settings = GatewaySettings(
        redis_url="redis://10.255.255.1:6379/0",
        llm={"urls": "http://10.255.255.1:3002"},
        discovery="static",
    )
    t0 = time.monotonic()
    app = create_app(settings)
    # A connect to the unroutable address would hang for seconds; construction is milliseconds
    # (up to ~0.6 s was seen on a loaded 2-core runner, hence the margin).
    assert time.monotonic() - t0 < 2.0
    fastapi_app = app.app.app  # RequestContextMiddleware -> RouteTable -> FastAPI
    paths = {getattr(r, "path", None) for r in fastapi_app.routes}
    assert {"/v1/chat/completions", "/v1/embeddings", "/v1/fleet", "/ready"} <= paths
