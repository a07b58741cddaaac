"""Real processes for tests: fleet services under uvicorn and private redis-servers.

Every process gets a free port and its own log file, so tests never touch a fleet or a Redis
that something else on the machine is using.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / ".run" / "test-logs"

ENV_PREFIX = {
    "llm": "MODELFLEET_LLM_",
    "embedding": "MODELFLEET_EMBEDDING_",
    "classification": "MODELFLEET_CLASSIFICATION_",
    "generation": "MODELFLEET_GENERATION_",
    "gateway": "MODELFLEET_GATEWAY_",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    pred: Callable[[], object], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> None:
    """Poll ``pred`` until it is truthy; fail naming ``what`` after ``timeout`` seconds.

    A test waits for the thing it needs rather than sleeping a fixed time: a fixed sleep is
    slow where the machine is quick and too short where it is loaded.
    """
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        time.sleep(interval)


async def await_until(
    pred: Callable[[], object], timeout: float = 5.0, interval: float = 0.001, what: str = ""
) -> None:
    """:func:`wait_until` inside an event loop: other tasks run while ``pred`` is polled."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        await asyncio.sleep(interval)


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


@dataclass
class Proc:
    """A process started by a test, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def start_service(
    name: str,
    env: Mapping[str, str] | None = None,
    *,
    port: int | None = None,
    wait_ready: bool = True,
    timeout: float = 180.0,
) -> Proc:
    """Start ``python -m services.<name>`` on a free port; wait until ``/ready`` answers 200.

    ``env`` keys without the service prefix get it (``{"MAX_BATCH_SIZE": "8"}``).
    """
    prefix = ENV_PREFIX[name]
    port = port or free_port()
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    full_env[f"{prefix}HOST"] = "127.0.0.1"
    full_env[f"{prefix}PORT"] = str(port)
    full_env[f"{prefix}LOG_JSON"] = "true"
    for k, v in (env or {}).items():
        full_env[k if k.startswith(("MODELFLEET_", "HF_", "OMP_", "OTEL_")) else prefix + k] = v
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}-{port}.log"
    with log_path.open("wb") as fh:
        popen = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=ROOT,
            env=full_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    proc = Proc(name, popen, port, log_path, dict(env or {}))
    if wait_ready:
        wait_until_ready(proc, timeout)
    return proc


def wait_until_ready(proc: Proc, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{proc.url}/ready", timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    proc.stop()
    raise TimeoutError(f"{proc.name} not ready after {timeout}s:\n{proc.log()}")


@contextlib.contextmanager
def service(name: str, env: Mapping[str, str] | None = None, **kw: object) -> Iterator[Proc]:
    proc = start_service(name, env, **kw)  # type: ignore[arg-type]
    try:
        yield proc
    finally:
        proc.stop()


def start_redis(port: int | None = None) -> Proc:
    """A private, diskless redis-server on a free port."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (make sysdeps installs it)")
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="mf-redis-"))
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"redis-{port}.log"
    with log_path.open("wb") as fh:
        popen = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", str(workdir)],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    wait_port(port)
    return Proc("redis", popen, port, log_path)
