"""A mixed workload through the gateway: one wrk process per route, bodies made up per request.

wrk (C, LuaJIT) rather than a Python client: on a machine whose cores the fleet uses, a client
that costs little per request skews the measurement least. Each request's text is drawn from a
word list with a random length, so forward passes see ever-changing shapes (what makes an
allocator fragment) and most requests miss the cache; a share of them (``repeat_share``) repeat
one of a small set of texts, so the cache has hits to serve too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

_WORD_TEXT = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu the a model "
    "serves embedding vector kubernetes replica gateway cache token batch latency memory great "
    "terrible service delayed refund lovely weather river mountain quickly slowly report"
)
WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True)
class Route:
    """One route of the mix: how its bodies are made, and how many connections drive it."""

    name: str
    path: str
    body: str  # a Lua expression of the JSON body; ``text`` is the made-up input
    words: tuple[int, int]  # input length range, in words
    connections: int


def mix(scale: int = 1) -> list[Route]:
    """The standard mix; ``scale`` multiplies every route's connections."""
    return [
        Route("embeddings", "/v1/embeddings", '\'{"input": "\' .. text .. \'"}\'', (3, 60),
              4 * scale),
        Route("classify", "/v1/classify",
              '\'{"input": "\' .. text .. \'", "task": "sentiment"}\'', (3, 40), 2 * scale),
        Route("chat", "/v1/chat/completions",
              '\'{"messages": [{"role": "user", "content": "\' .. text .. \'"}], '
              '"max_tokens": 4, "temperature": 0}\'', (3, 16), 1 * scale),
        Route("completions", "/v1/completions",
              '\'{"prompt": "\' .. text .. \'", "max_tokens": 4, "temperature": 0}\'', (3, 16),
              1 * scale),
        Route("summarize", "/v1/summarize",
              '\'{"input": "\' .. text .. \'", "max_tokens": 8}\'', (30, 90), 1 * scale),
    ]  # fmt: skip


_LUA = """
local words = {%(words)s}
local headers = {["Content-Type"] = "application/json"%(extra_headers)s}
local fixed = {}
local threads = {}
codes_4xx, codes_429, codes_5xx, hits, seen = 0, 0, 0, 0, 0

local function sentence(lo, hi)
  local n = math.random(lo, hi)
  local t = {}
  for i = 1, n do t[i] = words[math.random(#words)] end
  return table.concat(t, " ")
end

setup = function(thread) table.insert(threads, thread) end

init = function(args)
  math.randomseed(%(seed)d + tonumber(tostring({}):sub(8), 16) %% 1000003)
  for i = 1, 16 do fixed[i] = sentence(%(lo)d, %(hi)d) .. " fixed " .. i end
end

request = function()
  local text
  if math.random() < %(repeat_share)f then
    text = fixed[math.random(#fixed)]
  else
    text = sentence(%(lo)d, %(hi)d) .. " " .. math.random(1, 2000000000)
  end
  return wrk.format("POST", "%(path)s", headers, %(body)s)
end

response = function(status, hdrs, body)
  seen = seen + 1
  if status == 429 then codes_429 = codes_429 + 1
  elseif status >= 500 then codes_5xx = codes_5xx + 1
  elseif status >= 400 then codes_4xx = codes_4xx + 1 end
  if hdrs["x-cache"] == "hit" or hdrs["X-Cache"] == "hit" then hits = hits + 1 end
end

done = function(summary, latency, requests)
  local c4, c429, c5, h, s = 0, 0, 0, 0, 0
  for _, t in ipairs(threads) do
    c4 = c4 + t:get("codes_4xx"); c429 = c429 + t:get("codes_429")
    c5 = c5 + t:get("codes_5xx"); h = h + t:get("hits"); s = s + t:get("seen")
  end
  io.write(string.format("MFRESULT %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d\\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect
    + summary.errors.read + summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    c4, c429, c5, h))
end
"""

_RESULT = re.compile(r"MFRESULT" + r" (\d+)" * 13)


def lua_script(
    route: Route,
    *,
    repeat_share: float = 0.25,
    headers: dict[str, str] | None = None,
    seed: int = 1,
) -> str:
    extra = "".join(f", [{json.dumps(k)}] = {json.dumps(v)}" for k, v in (headers or {}).items())
    return _LUA % {
        "words": ", ".join(json.dumps(w) for w in WORDS),
        "extra_headers": extra,
        "seed": seed,
        "lo": route.words[0],
        "hi": route.words[1],
        "repeat_share": repeat_share,
        "path": route.path,
        "body": route.body,
    }


class WrkRun:
    """One wrk process driving one route in the background; :meth:`result` waits for it."""

    def __init__(
        self,
        url: str,
        route: Route,
        duration_s: float,
        *,
        connections: int | None = None,
        repeat_share: float = 0.25,
        headers: dict[str, str] | None = None,
        timeout_s: int = 120,
    ) -> None:
        wrk = shutil.which("wrk")
        if wrk is None:
            raise RuntimeError("wrk is not installed (make sysdeps installs it)")
        self.route = route
        self.connections = connections or route.connections
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
            fh.write(lua_script(route, repeat_share=repeat_share, headers=headers))
            self._lua = fh.name
        self.duration_s = max(1, round(duration_s))
        self._proc = subprocess.Popen(
            [wrk, "-t", "1", "-c", str(self.connections), "-d", f"{self.duration_s}s",
             "--timeout", f"{timeout_s}s", "-s", self._lua, url],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if os.path.exists(self._lua):
            os.unlink(self._lua)

    def result(self) -> dict[str, Any]:
        try:
            out, _ = self._proc.communicate(timeout=self.duration_s + 120)
        finally:
            self.stop()
        m = _RESULT.search(out or "")
        if not m:
            raise RuntimeError(f"unexpected wrk output for {self.route.name}:\n{out}")
        req, dur_us, non2xx, sock, timeouts, p50, p95, p99, pmax, c4, c429, c5, hits = (
            int(x) for x in m.groups()
        )
        return {
            "route": self.route.name,
            "connections": self.connections,
            "requests": req,
            "rps": req / (dur_us / 1e6) if dur_us else 0.0,
            "non_2xx": non2xx,
            "status_4xx": c4,
            "status_429": c429,
            "status_5xx": c5,
            "socket_errors": sock,
            "timeouts": timeouts,
            "errors": non2xx + sock + timeouts,
            "cache_hits": hits,
            "p50_ms": p50 / 1000,
            "p95_ms": p95 / 1000,
            "p99_ms": p99 / 1000,
            "max_ms": pmax / 1000,
        }


def run_mix(
    url: str,
    routes: list[Route],
    duration_s: float,
    *,
    connections: dict[str, int] | None = None,
    repeat_share: float = 0.25,
    headers: dict[str, str] | None = None,
) -> list[WrkRun]:
    """Start one wrk per route at once; call ``result()`` on each to collect."""
    return [
        WrkRun(url, r, duration_s, connections=(connections or {}).get(r.name),
               repeat_share=repeat_share, headers=headers)
        for r in routes
    ]  # fmt: skip
