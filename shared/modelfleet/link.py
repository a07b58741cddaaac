"""The local link between HTTP front-end processes and the one model worker that owns the model.

vLLM's split between its API server and its engine core, at encoder scale: front-ends parse,
validate and tokenise (the CPU work that holds a GIL), the worker batches token ids from all of
them into one forward pass. The transport is a Unix socket carrying length-prefixed pickles
(numpy arrays pickle compactly with protocol 5); both ends are asyncio, so neither blocks its
event loop on the other.

After one ``hello`` frame from the worker (model cards, tokenizer), every frame is a list of
messages (:class:`Outbox`). Front-end -> worker: ``(op, id, deadline, payload)`` to run ``op``
and ``("cancel", id)`` when the front-end stopped waiting (deadline, client gone). Worker ->
front-end: ``(id, True, result)`` or ``(id, False, error)`` where ``error`` is
``(FleetError subclass name, message, retry_after)``. Deadlines are
``time.monotonic()`` values: CLOCK_MONOTONIC is one clock for every process on a host.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle
import struct
import time
from collections.abc import Callable
from typing import Any

from modelfleet import errors
from modelfleet.errors import DeadlineExceeded, FleetError, ServiceUnavailable

log = logging.getLogger("modelfleet.link")

_HEADER = struct.Struct("!I")
# A frame carries one request's token ids or one batch's embeddings; the cap only stops a
# corrupt length from allocating gigabytes.
MAX_FRAME = 1 << 30
RECONNECT_S = 0.1  # how often a front-end retries a worker that is down or still loading


def write_frame(writer: asyncio.StreamWriter, obj: Any) -> None:
    """Queue one message; one ``write`` per frame, so concurrent senders never interleave."""
    data = pickle.dumps(obj, protocol=5)
    writer.write(_HEADER.pack(len(data)) + data)


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next message; ``asyncio.IncompleteReadError`` when the peer closed."""
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > MAX_FRAME:
        raise ConnectionError(f"frame of {size} bytes is over the {MAX_FRAME} cap")
    return pickle.loads(await reader.readexactly(size))


class Outbox:
    """Messages sent during one event-loop iteration leave as one frame (a list of them).

    Under load a front-end's requests and a batch's replies arrive together: one pickle and one
    syscall for all of them, rather than one each, keeps the worker's single event loop (which
    every front-end shares) off the critical path.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._items: list[Any] = []

    def send(self, msg: Any) -> None:
        if not self._items:
            asyncio.get_running_loop().call_soon(self._flush)
        self._items.append(msg)

    def _flush(self) -> None:
        items, self._items = self._items, []
        if not self.writer.is_closing():
            write_frame(self.writer, items)


def encode_error(exc: BaseException) -> tuple[str, str, float | None]:
    """A worker-side failure as the front-end re-raises it; anything unexpected is a 500 whose
    text stays in the worker's log."""
    if isinstance(exc, FleetError):
        return type(exc).__name__, exc.message, exc.retry_after
    return "FleetError", "the model worker failed on this request", None


def decode_error(err: tuple[str, str, float | None]) -> FleetError:
    name, message, retry_after = err
    cls = getattr(errors, name, FleetError)
    if not (isinstance(cls, type) and issubclass(cls, FleetError)):
        cls = FleetError
    return cls(message, retry_after=retry_after)


class WorkerClient:
    """A front-end's connection to the model worker: calls with deadlines, reconnects forever.

    ``on_up(hello)`` runs each time a worker is connected (the worker listens only once its
    model is loaded), ``on_down()`` each time it is lost; every call in flight then fails at
    once with 503, so nothing waits on a worker that is gone.
    """

    def __init__(
        self,
        path: str,
        on_up: Callable[[dict[str, Any]], None],
        on_down: Callable[[], None],
    ) -> None:
        self.path = path
        self._on_up = on_up
        self._on_down = on_down
        self._out: Outbox | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="worker-link")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_all("service is shutting down")

    async def call(self, op: str, payload: Any, timeout: float) -> Any:
        """Run ``op`` in the worker; 504 at ``timeout`` (the worker is told to drop the work),
        503 at once while no worker is connected or when it dies meanwhile."""
        out = self._out
        if out is None:
            raise ServiceUnavailable("the model worker is not running; retry", retry_after=5)
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        out.send((op, rid, time.monotonic() + timeout, payload))
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise DeadlineExceeded(
                f"request did not complete within its {timeout:.1f}s deadline"
            ) from None
        finally:
            if self._pending.pop(rid, None) is not None and self._out is out:
                # Still the worker's: the caller gave up (deadline, disconnect), so should it.
                out.send(("cancel", rid))

    def _fail_all(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ServiceUnavailable(why, retry_after=5))

    async def _run(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.path, limit=1 << 20)
            except OSError:  # not started yet, or still loading its model
                await asyncio.sleep(RECONNECT_S)
                continue
            try:
                hello = await read_frame(reader)
                self._out = Outbox(writer)
                self._on_up(hello)
                log.info("model worker connected", extra={"model": hello.get("model_id")})
                while True:
                    for rid, ok, value in await read_frame(reader):
                        fut = self._pending.pop(rid, None)
                        if fut is None or fut.done():
                            continue
                        if ok:
                            fut.set_result(value)
                        else:
                            fut.set_exception(decode_error(value))
            except (OSError, EOFError, asyncio.IncompleteReadError, pickle.PickleError) as exc:
                if self._out is not None:
                    log.warning("model worker lost", extra={"error": repr(exc)})
            finally:
                was_up, self._out = self._out is not None, None
                writer.close()
                self._fail_all("the model worker stopped; retry")
                if was_up:
                    self._on_down()
            await asyncio.sleep(RECONNECT_S)
