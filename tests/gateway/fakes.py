"""Tiny real backends for what no real service can do on demand: fail with 502/503, hang,
pace a stream precisely, or die in the middle of one.

Each runs as its own uvicorn process (``python -m tests.gateway.fakes --port P --mode M``) and
speaks the backend contract the gateway relies on: ``/ready``, ``/v1/models`` and the OpenAI
completion routes. ``GET /_stats`` says how many POSTs it received and the last request's
X-Request-ID and body.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from tests.support.procs import LOG_DIR, ROOT, Proc, free_port, wait_port

MODES = ("openai", "status", "hang", "die-mid-stream")


class FakeBackend:
    def __init__(
        self,
        mode: str,
        status: int,
        chunks: int,
        delay_s: float,
        name: str,
        ready_status: int,
        reply_delay_s: float = 0.0,
    ) -> None:
        self.reply_delay_s = reply_delay_s
        self.mode = mode
        self.ready_status = ready_status
        self.status = status
        self.chunks = chunks
        self.delay_s = delay_s
        self.name = name
        self.posts = 0
        self.last_request_id: str | None = None
        self.last_body: Any = None
        self.last_raw = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        path, method = scope["path"], scope["method"]
        if method == "GET":
            if path == "/health":
                return await _json(send, 200, {"status": "ok"})
            if path == "/ready":
                return await _json(send, self.ready_status, {"status": self.ready_status})
            if path == "/v1/models":
                card = {"id": self.name, "object": "model", "revision": "r1", "ready": True}
                return await _json(send, 200, {"object": "list", "data": [card]})
            if path == "/_stats":
                return await _json(
                    send,
                    200,
                    {
                        "posts": self.posts,
                        "request_id": self.last_request_id,
                        "body": self.last_body,
                        "raw": self.last_raw,
                    },
                )
            return await _json(send, 404, _error("not found", "not_found_error"))
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        self.posts += 1
        headers = dict(scope["headers"])
        self.last_request_id = headers.get(b"x-request-id", b"").decode() or None
        self.last_raw = body.decode("utf-8", "replace")
        self.last_body = orjson.loads(body) if body else None
        if self.mode == "status":
            return await _json(send, self.status, _error("fake failure", "upstream_error"),
                               [(b"retry-after", b"7")])  # fmt: skip
        if self.mode == "hang":
            await asyncio.sleep(3600)
        payload = self.last_body or {}
        if self.reply_delay_s:
            await asyncio.sleep(self.reply_delay_s)  # a backend busy elsewhere (no CPU here)
        if payload.get("stream"):
            return await self._stream(send, path)
        if path == "/v1/chat/completions":
            message = {"role": "assistant", "content": "fake chat answer"}
            choice = {"index": 0, "finish_reason": "stop", "message": message}
            answer = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1}
            usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        else:
            choice = {"index": 0, "text": " fake completion", "finish_reason": "stop"}
            answer = {"id": "cmpl-fake", "object": "text_completion", "created": 1}
            usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        answer.update(model=self.name, choices=[choice], usage=usage, seen=payload)
        return await _json(send, 200, answer)

    async def _stream(self, send: Any, path: str) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
        for i in range(self.chunks):
            if i:
                await asyncio.sleep(self.delay_s)
            if self.mode == "die-mid-stream" and i == 2:
                os._exit(1)
            if path == "/v1/chat/completions":
                choice = {"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}
                obj = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                       "model": self.name, "choices": [choice], "t": time.time()}  # fmt: skip
            else:
                choice = {"index": 0, "text": f"tok{i} ", "finish_reason": None}
                obj = {"id": "cmpl-fake", "object": "text_completion", "model": self.name,
                       "choices": [choice], "t": time.time()}  # fmt: skip
            event = b"data: " + orjson.dumps(obj) + b"\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": None, "param": None}}


async def _json(send: Any, status: int, obj: Any, extra: list[Any] | None = None) -> None:
    body = orjson.dumps(obj)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *(extra or [])]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def start_fake(
    mode: str = "openai",
    *,
    status: int = 503,
    chunks: int = 5,
    delay_s: float = 0.2,
    name: str = "fake-model",
    ready_status: int = 200,
    reply_delay_s: float = 0.0,
    port: int | None = None,
) -> Proc:
    """Start a fake backend process and wait until it listens."""
    assert mode in MODES
    port = port or free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"fake-{mode}-{port}.log"
    args = [sys.executable, "-m", "tests.gateway.fakes", "--port", str(port), "--mode", mode,
            "--status", str(status), "--chunks", str(chunks), "--delay", str(delay_s),
            "--name", name, "--ready-status", str(ready_status),
            "--reply-delay", str(reply_delay_s)]  # fmt: skip
    with log_path.open("wb") as fh:
        popen = subprocess.Popen(args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    wait_port(port, timeout=20)
    return Proc(f"fake-{mode}", popen, port, Path(log_path))


@contextlib.contextmanager
def fake(mode: str = "openai", **kw: Any) -> Iterator[Proc]:
    proc = start_fake(mode, **kw)
    try:
        yield proc
    finally:
        proc.stop(timeout=5)


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=MODES, default="openai")
    p.add_argument("--status", type=int, default=503)
    p.add_argument("--chunks", type=int, default=5)
    p.add_argument("--delay", type=float, default=0.2)
    p.add_argument("--name", default="fake-model")
    p.add_argument("--ready-status", type=int, default=200)
    p.add_argument("--reply-delay", type=float, default=0.0)
    a = p.parse_args()
    app = FakeBackend(a.mode, a.status, a.chunks, a.delay, a.name, a.ready_status, a.reply_delay)
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", loop="uvloop",
                http="httptools")  # fmt: skip


if __name__ == "__main__":
    main()
