from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelfleet.api import CHAT, CLASSIFY_TASKS, EMBEDDINGS
from modelfleet.errors import PayloadTooLarge
from services.gateway.stages.read import ReadBody
from tests.gateway.stages.support import Answer, exchange, run


def test_the_body_is_validated_with_the_services_model_and_kept_byte_for_byte() -> None:
    nxt = Answer()
    body = b'{"input": ["a"],   "dimensions": 8}'
    run(lambda: ReadBody(max_body_bytes=1000)(exchange(EMBEDDINGS, body), nxt))
    ex = nxt.seen[0]
    assert ex.body == body and ex.payload == {"input": ["a"], "dimensions": 8}
    assert not ex.stream
    for bad in (b"{", b"[]", b'{"input": []}', b'{"input": "a", "dimensions": 0}'):
        with pytest.raises(ValidationError):
            run(lambda b=bad: ReadBody(max_body_bytes=1000)(exchange(EMBEDDINGS, b), nxt))


def test_stream_only_on_streaming_routes_and_get_routes_have_no_body() -> None:
    nxt = Answer()
    chat = b'{"messages": [{"role": "user", "content": "hi"}], "stream": true}'
    run(lambda: ReadBody(max_body_bytes=1000)(exchange(CHAT, chat), nxt))
    assert nxt.seen[-1].stream
    run(lambda: ReadBody(max_body_bytes=1000)(exchange(CLASSIFY_TASKS), nxt))
    assert nxt.seen[-1].body == b"" and nxt.seen[-1].payload == {}


def test_a_body_over_the_cap_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        run(
            lambda: ReadBody(max_body_bytes=10)(
                exchange(EMBEDDINGS, b'{"input": "abcdefgh"}'), Answer()
            )
        )
