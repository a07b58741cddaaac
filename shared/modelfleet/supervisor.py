"""One model worker and N HTTP front-ends sharing a port: the process tree of ``FRONTENDS=N``.

One event loop parses, validates and tokenises only so many requests a second; on a GPU that is
a small share of what one forward pass can take. Here N front-end processes, each its own
uvicorn on its own ``SO_REUSEPORT`` socket (the kernel spreads connections over them), hand
token ids to one model worker (:mod:`modelfleet.modelworker`) that batches across all of them.

The supervisor (the container's main process) starts them, restarts any that dies (the worker
reloads its model meanwhile: the front-ends answer 503 and ``/ready`` is false until it
listens again), stops the service when the model cannot load at all, and on SIGTERM drains
the front-ends before it stops the worker. Metrics: every process writes to one
prometheus_client multiprocess directory, and each front-end's ``/metrics`` renders the sum.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from modelfleet.settings import EncoderServiceSettings, ModelServiceSettings

log = logging.getLogger("modelfleet.supervisor")

CRASH_LOOP_S = 10.0  # a child that exits sooner after it started is restarted after a pause
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client as it is imported


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other processes may bind too; the kernel balances between them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class Supervisor:
    """Starts, watches and stops the worker and the front-ends.

    ``worker_target(settings, path)`` and ``frontend_target(settings, path, metrics_dir)`` run
    in spawned processes (module-level functions: they are pickled by name).
    """

    def __init__(
        self,
        settings: ModelServiceSettings,
        frontends: int,
        worker_target: Callable[..., Any],
        frontend_target: Callable[..., Any],
    ) -> None:
        self.settings = settings
        self.frontends = frontends
        self._worker_target = worker_target
        self._frontend_target = frontend_target
        self._ctx = multiprocessing.get_context("spawn")
        self._dir = Path(tempfile.mkdtemp(prefix="modelfleet-"))
        self.socket_path = str(self._dir / "worker.sock")
        self.metrics_dir = self._dir / "metrics"
        self.metrics_dir.mkdir()
        self._stopping = False
        self.worker: BaseProcess | None = None
        self.fronts: list[BaseProcess | None] = [None] * frontends
        self._started: dict[str, float] = {}  # child name -> when it last started
        self._pause: dict[str, float] = {}  # child name -> its last restart pause
        self._due: dict[str, float] = {}  # child name -> when to restart it

    def _spawn(self, name: str, target: Callable[..., Any], *args: Any) -> BaseProcess:
        proc = self._ctx.Process(target=target, args=args, name=name, daemon=False)
        proc.start()
        self._started[name] = time.monotonic()
        log.info("process started", extra={"child": name, "pid": proc.pid})
        return proc

    def _start_worker(self) -> None:
        self.worker = self._spawn(
            "model-worker", self._worker_target, self.settings, self.socket_path
        )

    def _start_frontend(self, i: int) -> None:
        self.fronts[i] = self._spawn(
            f"frontend-{i}", self._frontend_target, self.settings, self.socket_path,
            str(self.metrics_dir),
        )  # fmt: skip

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; the exit status."""
        # Children import prometheus_client after this, so they all write to one directory.
        os.environ[METRICS_ENV] = str(self.metrics_dir)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        status = 0
        try:
            self._start_worker()
            for i in range(self.frontends):
                self._start_frontend(i)
            status = self._watch()
        finally:
            self._shutdown()
        return status

    def _on_signal(self, _signum: int, _frame: Any) -> None:
        self._stopping = True

    def _watch(self) -> int:
        from prometheus_client.multiprocess import mark_process_dead

        from modelfleet.modelworker import LOAD_FAILED

        while not self._stopping:
            self._start_due()
            procs = [p for p in (self.worker, *self.fronts) if p is not None]
            wait([p.sentinel for p in procs], timeout=0.5)
            if self._stopping:
                break
            for proc in procs:
                if proc.is_alive():
                    continue
                proc.join()
                if proc.pid is not None:
                    mark_process_dead(proc.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
                log.warning("process exited", extra={"child": proc.name,
                                                     "exitcode": proc.exitcode})  # fmt: skip
                if proc is self.worker and proc.exitcode == LOAD_FAILED:
                    log.error("the model cannot load; stopping the service")
                    return 1
                self._schedule_restart(proc)
        return 0

    def _schedule_restart(self, proc: BaseProcess) -> None:
        """Restart at once a child that ran a while; one that dies soon after it started (a
        crash on every batch, a port it cannot bind) waits 1, 2, 4 ... 30 s, not a tight loop."""
        name = proc.name
        quick = time.monotonic() - self._started.get(name, 0.0) < CRASH_LOOP_S
        pause = min(30.0, 2 * self._pause.get(name, 0.5)) if quick else 0.0
        self._pause[name] = pause
        self._due[name] = time.monotonic() + pause
        if proc is self.worker:
            self.worker = None
        else:
            self.fronts[self.fronts.index(proc)] = None

    def _start_due(self) -> None:
        now = time.monotonic()
        for name, due in list(self._due.items()):
            if due > now:
                continue
            del self._due[name]
            if name == "model-worker":
                self._start_worker()
            else:
                self._start_frontend(int(name.rsplit("-", 1)[1]))

    def _shutdown(self) -> None:
        """Front-ends first (uvicorn drains their requests), then the worker that serves them."""
        grace = self.settings.shutdown_grace_s + 5
        fronts = [p for p in self.fronts if p is not None]
        _terminate(fronts, grace)
        _terminate([self.worker] if self.worker is not None else [], 15)
        shutil.rmtree(self._dir, ignore_errors=True)


def _terminate(procs: list[BaseProcess], grace: float) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    end = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(5)


def serve_frontend(
    app: Any, settings: ModelServiceSettings, graceful_s: float
) -> None:  # pragma: no cover - runs in a spawned process
    """Run uvicorn for ``app`` on this front-end's own SO_REUSEPORT socket."""
    import uvicorn

    from modelfleet.app import uvicorn_config
    from modelfleet.memory import tune_allocator

    tune_allocator(settings.malloc_mmap_threshold, settings.malloc_arena_max)
    sock = reuseport_socket(settings.host, settings.port)
    uvicorn.Server(uvicorn_config(app, settings, graceful_s)).run(sockets=[sock])


def run_worker_process(
    build: Callable[[], Any], path: str
) -> None:  # pragma: no cover - spawned process
    """The worker process's body: build the service, serve, exit with :func:`run_worker`'s
    status; a service that cannot even be built (a bad MODEL) exits as a failed load."""
    import uvloop

    from modelfleet.modelworker import LOAD_FAILED, run_worker

    try:
        service = build()
    except Exception:
        log.exception("model service could not be built")
        raise SystemExit(LOAD_FAILED) from None
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        status = runner.run(run_worker(service, path))
    raise SystemExit(status)


def child_setup(name: str, settings: ModelServiceSettings) -> None:  # pragma: no cover
    """What every spawned worker or front-end does first, as a single process's main() does."""
    from modelfleet.devices import reproducible_cpu_math
    from modelfleet.logs import configure_logging
    from modelfleet.modelworker import die_with_parent
    from modelfleet.tracing import configure as configure_tracing

    die_with_parent()
    reproducible_cpu_math()
    configure_logging(name, settings.log_level, settings.log_json)
    configure_tracing(name, settings.otlp_endpoint, settings.trace_sample_ratio)


def _worker_main(
    name: str, worker_cls: Callable[..., Any], settings: ModelServiceSettings, path: str
) -> None:  # pragma: no cover - spawned process
    child_setup(name, settings)
    run_worker_process(functools.partial(worker_cls, settings), path)


def _frontend_main(
    name: str,
    frontend_cls: Callable[..., Any],
    settings: ModelServiceSettings,
    path: str,
    metrics_dir: str,
) -> None:  # pragma: no cover - spawned process
    from modelfleet.app import create_app

    child_setup(name, settings)
    app = create_app(frontend_cls(settings, path, metrics_dir))
    serve_frontend(app, settings, settings.shutdown_grace_s)


def serve_supervised(
    name: str,
    settings: EncoderServiceSettings,
    worker_cls: Callable[..., Any],
    frontend_cls: Callable[..., Any],
) -> None:
    """``main()`` of a service with ``FRONTENDS`` > 1: supervise until SIGTERM, then exit.

    The worker process builds ``worker_cls(settings)``, each front-end serves
    ``frontend_cls(settings, socket_path, metrics_dir)``; both must be importable module-level
    classes (the children are spawned, so what they run is pickled by name).
    """
    from modelfleet.logs import configure_logging

    configure_logging(name, settings.log_level, settings.log_json)
    sup = Supervisor(
        settings,
        settings.frontends,
        functools.partial(_worker_main, name, worker_cls),
        functools.partial(_frontend_main, name, frontend_cls),
    )
    raise SystemExit(sup.run())
