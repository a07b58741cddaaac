from __future__ import annotations

from typing import Any

from services.gateway.exchange import Reply, Streamed
from services.gateway.stages.respond import write
from tests.gateway.stages.support import run


def capture() -> tuple[list[dict[str, Any]], Any, Any]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    return sent, send, receive


def test_a_reply_is_two_messages_with_its_length() -> None:
    sent, send, receive = capture()
    reply = Reply(201, b'{"a":1}', {"content-type": "application/json"})
    run(lambda: write(reply, {"type": "http"}, receive, send))
    assert sent[0]["status"] == 201
    assert (b"content-length", b"7") in sent[0]["headers"]
    assert sent[1]["body"] == b'{"a":1}'


def test_a_stream_is_relayed_and_finished_once() -> None:
    sent, send, receive = capture()
    closed = []

    async def chunks():  # type: ignore[no-untyped-def]
        yield b"data: 1\n\n"
        yield b"data: [DONE]\n\n"

    async def close() -> None:
        closed.append(True)

    streamed = Streamed(200, {"content-type": "text/event-stream"}, chunks(), close)
    scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
    run(lambda: write(streamed, scope, receive, send))
    bodies = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert bodies == b"data: 1\n\ndata: [DONE]\n\n"
    assert closed == [True]
