from __future__ import annotations

import pytest

from modelfleet.api import EMBEDDINGS
from modelfleet.errors import AuthenticationFailed
from services.gateway.auth import ApiKeys
from services.gateway.metrics import GatewayMetrics
from services.gateway.stages.authenticate import Authenticate
from tests.gateway.stages.support import Answer, exchange, run

KEY = "sk-test-0123456789abcdef"


def test_an_open_gateway_names_the_client_by_address() -> None:
    nxt = Answer()
    run(lambda: Authenticate(ApiKeys([]), GatewayMetrics())(exchange(EMBEDDINGS), nxt))
    assert nxt.seen[0].client_id == "ip:10.1.2.3"


def test_a_key_names_the_client_and_a_wrong_key_stops_the_request() -> None:
    stage = Authenticate(ApiKeys([KEY]), GatewayMetrics())
    nxt = Answer()
    run(lambda: stage(exchange(EMBEDDINGS, headers={"Authorization": f"Bearer {KEY}"}), nxt))
    assert nxt.seen[0].client_id.startswith("key:")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {KEY}"}):
        with pytest.raises(AuthenticationFailed):
            run(lambda h=headers: stage(exchange(EMBEDDINGS, headers=h), nxt))
    assert len(nxt.seen) == 1
