"""The security review's findings on request bounds (issue 15): bodies over the caps, floods of
invalid input, clients that leave - each against real processes."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import orjson
import pytest

from tests.conftest import assert_openai_error
from tests.gateway.conftest import gateway
from tests.support.procs import Proc, wait_until

KEY_A, KEY_B = "key-alpha-0001", "key-bravo-0002"
CHAT = [{"role": "user", "content": "Name a colour."}]


def _metric(proc: Proc, name: str) -> float:
    text = httpx.get(f"{proc.url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- finding 1: validation-error amplification ---------------------------------------------


def _health_times(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=10) as c:
        while not stop.is_set():
            t = time.perf_counter()
            c.get(f"{url}/health")
            out.append(time.perf_counter() - t)
            time.sleep(0.02)  # probe pacing while the load runs, not a wait


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "via-gateway"])
def test_a_huge_invalid_body_gets_a_small_400_fast_and_health_stays_fast(
    llm_proc: Proc, direct: bool
) -> None:
    """800k messages (3.2 MB): a 400 of a few hundred bytes, while /health keeps answering."""
    body = orjson.dumps({"messages": ["x"] * 800_000})
    assert len(body) > 3_000_000
    with gateway({"llm": llm_proc.url}) as gw:  # 4 MiB body caps: the body is admitted
        target = llm_proc if direct else gw
        stop, times = threading.Event(), list[float]()
        watcher = threading.Thread(target=_health_times, args=(target.url, stop, times))
        watcher.start()
        try:
            t = time.perf_counter()
            r = httpx.post(
                f"{target.url}/v1/chat/completions",
                content=body,
                headers={"content-type": "application/json"},
                timeout=30,
            )
            elapsed = time.perf_counter() - t
        finally:
            stop.set()
            watcher.join()
    err = assert_openai_error(r, 400)
    assert len(r.content) < 1200, len(r.content)
    assert err["param"] == "messages"
    assert elapsed < 1.5, elapsed
    assert times and max(times) < 0.5, max(times)


# -- finding 2: message count ----------------------------------------------------------------


def test_messages_over_max_messages_are_a_400(llm_proc: Proc) -> None:
    """100k empty-ish messages would run the chat template over each: refused by count."""
    many = [{"role": "user", "content": ""}] * 300  # over the default MAX_MESSAGES of 256
    r = httpx.post(
        f"{llm_proc.url}/v1/chat/completions", json={"messages": many, "max_tokens": 1}, timeout=10
    )
    err = assert_openai_error(r, 400)
    assert err["param"] == "messages" and err["code"] == "too_many_messages"


# -- finding 3: body caps on every service ----------------------------------------------------


def _read_response(sock: socket.socket) -> bytes:
    """A whole response with a Content-Length body (the services' error answers)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _chunked_post(url: str, path: str, total: int) -> tuple[int, bytes]:
    """POST ``total`` bytes with Transfer-Encoding: chunked; the status and body of the answer."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        piece = b"x" * 65536
        sent = 0
        try:
            while sent < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed mid-body: what we want
        data = _read_response(sock)
        status = int(data.split(b" ", 2)[1])
        return status, data
    finally:
        sock.close()


SERVICE_POSTS = {
    "llm_proc": "/v1/chat/completions",
    "generation_proc": "/v1/completions",
    "embedding_proc": "/v1/embeddings",
    "classification_proc": "/v1/classify",
}


@pytest.mark.parametrize("fixture", list(SERVICE_POSTS))
def test_every_service_refuses_a_body_over_max_body_bytes(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    proc: Proc = request.getfixturevalue(fixture)
    path = SERVICE_POSTS[fixture]
    t = time.perf_counter()
    # By Content-Length, before a byte is read (the body is never sent).
    with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {50 << 20}\r\n\r\n".encode()
        )
        head = _read_response(sock)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b"payload_too_large" in head
    # While reading a chunked body (no Content-Length).
    status, _ = _chunked_post(proc.url, path, 20 << 20)
    assert status == 413
    assert time.perf_counter() - t < 5


# -- finding 5: a client that leaves cancels its generation ----------------------------------


def _tokens(llm: Proc) -> float:
    return _metric(llm, "modelfleet_completion_tokens_total")


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_client_leaving_the_gateway_stops_its_generation(llm_proc: Proc, stream: bool) -> None:
    with gateway({"llm": llm_proc.url}) as gw:
        body = orjson.dumps(
            {
                "messages": CHAT,
                "max_tokens": 500,
                "ignore_eos": True,
                "temperature": 0.7,
                "stream": stream,
            }
        )
        before = _tokens(llm_proc)
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        wait_until(lambda: _tokens(llm_proc) >= before + 10, 30, 0.1, "the generation to start")
        sock.close()
        left = time.monotonic()
        # The gateway closes the upstream connection; the llm notices (it polls every 0.25 s)
        # and frees the sequence at its next step: about a second on a quiet machine; the bound
        # leaves room for a loaded CI runner (left running, the 500 tokens take far longer).
        wait_until(
            lambda: _metric(llm_proc, "modelfleet_sequences_running") == 0,
            5, 0.1, "the generation to stop after the client left",
        )  # fmt: skip
        print(f"generation freed {time.monotonic() - left:.2f}s after the client left")
        assert _metric(llm_proc, "modelfleet_sequences_waiting") == 0
        settled = _tokens(llm_proc)
        # Proving that nothing more happens: no event marks "no more tokens", so a window of
        # two of the llm's 0.25 s disconnect polls it is.
        time.sleep(0.5)
        assert _tokens(llm_proc) == settled, "tokens still being generated after the client left"
        assert settled < before + 400
