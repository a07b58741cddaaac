"""``make run`` / ``make stop``: the whole fleet on one machine, for development.

Starts a local ``redis-server`` when nothing listens on 6379, then the four model services and
the gateway as background processes (logs and pid files under ``.run/``), waits until each is
ready and the gateway counts a healthy replica in every pool, and prints how to reach it.
``stop`` stops exactly what ``start`` started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

RUN_DIR = Path(".run")
# Start order: the gateway last, so its first health checks find the backends up.
FLEET = (
    ("embedding", 3003),
    ("classification", 3004),
    ("llm", 3002),
    ("generation", 3005),
    ("gateway", 8080),
)
REDIS_PORT = 6379
# The same bound as the chart's Redis (redis.maxmemory / maxmemoryPolicy): a cache that evicts
# its least recently used keys instead of growing until the machine swaps.
REDIS_MAXMEMORY = "256mb"


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.3):
        return True
    return False


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _pools_unhealthy(port: int) -> list[str]:
    """The gateway's pools with no healthy replica yet (its checks lag a backend's /ready)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/fleet", timeout=1) as r:
            pools = json.load(r)["pools"]
    except urllib.error.HTTPError as exc:
        # API keys configured: /v1/fleet is not open to us, so don't wait on it.
        return [] if exc.code in (401, 403) else ["gateway"]
    except (OSError, ValueError, KeyError):
        return ["gateway"]
    return sorted(name for name, pool in pools.items() if not pool.get("healthy"))


def _pidfile(name: str) -> Path:
    return RUN_DIR / "pids" / f"{name}.pid"


def _spawn(name: str, argv: list[str], env: dict[str, str]) -> int:
    (RUN_DIR / "logs").mkdir(parents=True, exist_ok=True)
    _pidfile(name).parent.mkdir(parents=True, exist_ok=True)
    log = (RUN_DIR / "logs" / f"{name}.log").open("ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # fmt: skip
    _pidfile(name).write_text(str(proc.pid))
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def redis_argv(exe: str, port: int) -> list[str]:
    """The local Redis: diskless, loopback only, memory-bounded like the chart's."""
    return [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--maxmemory", REDIS_MAXMEMORY, "--maxmemory-policy", "allkeys-lru"]  # fmt: skip


def start(timeout: float) -> int:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if _listening(REDIS_PORT):
        print(f"redis: already listening on 127.0.0.1:{REDIS_PORT}")
    else:
        exe = shutil.which("redis-server")
        if exe is None:
            print("redis-server is not installed: `make sysdeps` installs it", file=sys.stderr)
            return 1
        _spawn("redis", redis_argv(exe, REDIS_PORT), env)
        print(f"redis: started on 127.0.0.1:{REDIS_PORT}")
    pending = {}
    for name, port in FLEET:
        if _ready(port):
            print(f"{name}: already running on :{port}")
            continue
        if _listening(port):
            print(f"{name}: port {port} is taken by something else", file=sys.stderr)
            return 1
        pending[name] = (port, _spawn(name, [sys.executable, "-m", f"services.{name}"], env))
        print(f"{name}: starting on :{port} (log .run/logs/{name}.log)")
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, (port, pid) in list(pending.items()):
            if _ready(port):
                print(f"{name}: ready")
                del pending[name]
            elif not _alive(pid):
                print(f"{name}: exited; see .run/logs/{name}.log", file=sys.stderr)
                return 1
        time.sleep(0.5)
    gateway_port = dict(FLEET)["gateway"]
    while not pending and time.monotonic() < deadline and _pools_unhealthy(gateway_port):
        time.sleep(0.2)
    if not pending and (unhealthy := _pools_unhealthy(gateway_port)):
        pending = {f"gateway pool {name}": (gateway_port, 0) for name in unhealthy}
    if pending:
        print(f"not ready after {timeout:.0f}s: {', '.join(pending)}", file=sys.stderr)
        return 1
    print(
        "\nThe fleet is up. Gateway: http://127.0.0.1:8080  (docs: /docs, fleet: /v1/fleet)\n"
        "  curl -s http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json'"
        ' \\\n    -d \'{"model": "smollm2", "messages": [{"role": "user", '
        '"content": "Hello!"}]}\'\n'
        "Stop it with: make stop"
    )
    return 0


def stop() -> int:
    pids_dir = RUN_DIR / "pids"
    files = sorted(pids_dir.glob("*.pid")) if pids_dir.exists() else []
    if not files:
        print("nothing to stop")
        return 0
    for f in files:
        pid = int(f.read_text())
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for f in files:
        pid = int(f.read_text())
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        print(f"{f.stem}: stopped")
        f.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.localfleet")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_start = sub.add_parser("start", help="start Redis (if needed), the services and gateway")
    p_start.add_argument("--timeout", type=float, default=600.0)
    sub.add_parser("stop", help="stop what start started")
    args = parser.parse_args(argv)
    return start(args.timeout) if args.cmd == "start" else stop()


if __name__ == "__main__":
    raise SystemExit(main())
