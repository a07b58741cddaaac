"""The model worker: the one process that owns the model, fed by every HTTP front-end.

It runs the service's own :class:`~modelfleet.service.ModelService` (load, warm-up, the
micro-batcher with its bounded queue and deadlines), and listens on a Unix socket only once the
model is loaded, so a front-end that is connected is a front-end that can serve. Each request
runs as a task: a ``cancel`` from the front-end (its deadline passed, its client left) cancels
the task, and with it the items the batcher has queued for it. See :mod:`modelfleet.link` for
the messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, cast

from modelfleet.errors import DeadlineExceeded, FleetError, InvalidRequest
from modelfleet.link import Outbox, encode_error, read_frame, write_frame
from modelfleet.service import ModelService

log = logging.getLogger("modelfleet.modelworker")

# Exit status of a worker whose model failed to load: restarting it would fail the same way,
# so the supervisor stops the whole service (the pod restarts, as a single process would).
LOAD_FAILED = 3

Op = Callable[[Any, float], Awaitable[Any]]  # (payload, seconds left) -> result


class WorkerService(Protocol):
    """What a model service offers its front-ends when it runs as the model worker."""

    def worker_hello(self) -> dict[str, Any]:
        """Sent to each front-end on connect: model cards, tokenizer, limits."""

    def worker_ops(self) -> dict[str, Op]:
        """The operations front-ends may call, by name."""


class ModelWorker:
    """Serves ``ops`` to front-ends on a Unix socket at ``path``."""

    def __init__(self, path: str, hello: Callable[[], dict[str, Any]], ops: dict[str, Op]):
        self.path = path
        self.hello = hello
        self.ops = ops

    async def serve(self) -> asyncio.Server:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a socket left by a worker that died
        return await asyncio.start_unix_server(self._client, self.path, limit=1 << 20)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        write_frame(writer, self.hello())
        out = Outbox(writer)
        tasks: dict[int, asyncio.Task[None]] = {}
        try:
            while True:
                for msg in await read_frame(reader):
                    if msg[0] == "cancel":
                        task = tasks.pop(msg[1], None)
                        if task is not None:
                            task.cancel()
                        continue
                    op, rid, deadline, payload = msg
                    task = asyncio.create_task(self._one(out, op, rid, deadline, payload))
                    tasks[rid] = task
                    task.add_done_callback(functools.partial(_forget, tasks, rid))
        except (OSError, EOFError, asyncio.IncompleteReadError):
            pass  # the front-end went away: its requests' work goes with it
        finally:
            for task in list(tasks.values()):
                task.cancel()
            writer.close()

    async def _one(self, out: Outbox, op: str, rid: int, deadline: float, payload: Any) -> None:
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded("request deadline passed before the model worker got it")
            fn = self.ops.get(op)
            if fn is None:
                raise InvalidRequest(f"the model worker has no operation {op!r}")
            reply: tuple[int, bool, Any] = (rid, True, await fn(payload, left))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, FleetError):
                log.exception("model worker operation failed", extra={"op": op})
            reply = (rid, False, encode_error(exc))
        out.send(reply)


def _forget(tasks: dict[int, asyncio.Task[None]], rid: int, _: asyncio.Task[None]) -> None:
    tasks.pop(rid, None)


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the supervisor dies, even by SIGKILL: an orphan
    model worker would hold the GPU, an orphan front-end the port."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def run_worker(service: ModelService, path: str) -> int:
    """Load ``service``'s model, then serve front-ends until SIGTERM; the exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except Exception:
        log.exception("model failed to load")
        return LOAD_FAILED
    offer = cast(WorkerService, service)
    worker = ModelWorker(path, offer.worker_hello, offer.worker_ops())
    server = await worker.serve()
    log.info("model worker serving", extra={"socket": path, "pid": os.getpid()})
    try:
        await stop.wait()
    finally:
        server.close()
        await service.stop()
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
    return 0
