from __future__ import annotations

import asyncio

import pytest

from modelfleet.api import CHAT, EMBEDDINGS
from modelfleet.errors import Overloaded, PayloadTooLarge
from services.gateway.exchange import Exchange, Outcome, Streamed
from services.gateway.stages.admit import Admit
from tests.gateway.stages.support import Answer, exchange, run


def test_a_declared_body_over_the_cap_is_refused_before_reading() -> None:
    nxt = Answer()
    ex = exchange(EMBEDDINGS, headers={"Content-Length": "1001"})
    with pytest.raises(PayloadTooLarge):
        run(lambda: Admit(max_in_flight=4, max_body_bytes=1000)(ex, nxt))
    assert nxt.seen == []


def test_the_in_flight_cap_counts_until_a_stream_is_finished() -> None:
    admit = Admit(max_in_flight=1, max_body_bytes=1000)

    async def chunks():  # type: ignore[no-untyped-def]
        yield b"data: x\n\n"

    async def close() -> None:
        return None

    async def main() -> None:
        streamed = Streamed(200, {}, chunks(), close)
        out = await admit(exchange(CHAT), Answer(streamed))
        assert admit.in_flight == 1
        with pytest.raises(Overloaded):
            await admit(exchange(CHAT), Answer())
        assert isinstance(out, Streamed)
        await out.finish()
        await out.finish()  # idempotent: counted down once
        assert admit.in_flight == 0 and admit.shed == 1
        await admit(exchange(CHAT), Answer())
        assert admit.in_flight == 0

    run(main)


def test_an_error_downstream_releases_the_slot() -> None:
    admit = Admit(max_in_flight=1, max_body_bytes=1000)

    async def boom(ex: Exchange) -> Outcome:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        run(lambda: admit(exchange(EMBEDDINGS), boom))
    assert admit.in_flight == 0
