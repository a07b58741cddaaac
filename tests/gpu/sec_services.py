"""The llm and classification services on the device.

Targets (issue 16), measured in one load through the llm service on the random-weight
SmolLM2-135M-shape checkpoint: TTFT p50 <= 200 ms with 16 concurrent streams (64 tokens each,
``ignore_eos``), and GPU utilisation >= 80 % at saturation - NVML sampled while those 16
streams, the engine's batch size, keep every batch slot busy.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.gpu.gpuinfo import GpuSampler
from tests.gpu.harness import MINILM, Ctx, log, metrics_summary
from tests.gpu.loadgen import stream_load
from tests.perf.common import PROMPTS

STREAMS = 16


def llm_env(ctx: Ctx) -> dict[str, str]:
    return {"DEVICE": ctx.device, "LOG_LEVEL": "info", "MODEL": str(ctx.shared["llm_dir"]),
            "MAX_BATCH_SIZE": str(STREAMS), "MAX_QUEUE": "64", "CONTEXT_WINDOW": "2048",
            "DEFAULT_MAX_TOKENS": "32"}  # fmt: skip


def classification_env(ctx: Ctx) -> dict[str, str]:
    return {"DEVICE": ctx.device, "LOG_LEVEL": "info", "MODEL": str(MINILM),
            "BACKEND": "embedding"}  # fmt: skip


def _stream_text(url: str, body: dict[str, Any]) -> dict[str, Any]:
    import httpx

    lines: list[str] = []
    t = time.perf_counter()
    first = None
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60, json={
            **body, "stream": True, "stream_options": {"include_usage": True}}) as s:  # fmt: skip
        status = s.status_code
        for line in s.iter_lines():
            if line:
                if first is None and '"content"' in line:
                    first = time.perf_counter() - t
                lines.append(line)
    text = ""
    for ln in lines:
        if ln.startswith("data: {"):
            for c in json.loads(ln[6:]).get("choices", []):
                text += c.get("delta", {}).get("content", "") or ""
    return {"status": status, "events": len(lines), "text": text,
            "ends_with_done": bool(lines) and lines[-1] == "data: [DONE]",
            "ttft_ms": round(1000 * first, 1) if first else None}  # fmt: skip


def section_llm(res: dict[str, Any], ctx: Ctx) -> None:
    import httpx

    proc = ctx.svc.ready("llm", ctx.ready_timeout())
    url = proc.url
    body = {"model": "m", "messages": [{"role": "user", "content": "Hello! Who are you?"}],
            "max_tokens": 16, "temperature": 0}  # fmt: skip
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    res["chat_status"] = r.status_code
    chat_text = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else None
    stream = _stream_text(url, body)
    res["stream"] = {k: v for k, v in stream.items() if k != "text"}
    res["stream_text_equals_chat_text"] = stream["text"] == chat_text
    ctx.report.save()

    new = 16 if ctx.quick else 64
    chat_url = f"{url}/v1/chat/completions"
    # Warm-up: every step shape the load will use, so no first-use kernel lands in a TTFT.
    stream_load(chat_url, PROMPTS, concurrency=STREAMS, max_tokens=new, duration=0)
    dur = 4.0 if ctx.quick else ctx.args.load_seconds * 2
    with GpuSampler(proc.popen.pid) as gpu:
        load = stream_load(chat_url, PROMPTS, concurrency=STREAMS, max_tokens=new, duration=dur)
    res["load_16_streams"] = {**load, **gpu.summary()}
    log(f"llm 16 streams: {res['load_16_streams']}")
    res["metrics"] = metrics_summary(httpx.get(f"{url}/metrics", timeout=10).text)


def section_classification(res: dict[str, Any], ctx: Ctx) -> None:
    import httpx

    url = ctx.svc.ready("classification", ctx.ready_timeout()).url
    res["tasks"] = httpx.get(f"{url}/v1/classify/tasks", timeout=10).json()
    texts = ["I love it, best purchase ever!", "This is the worst service I have ever had.",
             "Cancel my order and refund me please.", "Hello there, good morning!"]  # fmt: skip
    for task in ("sentiment", "intent"):
        r = httpx.post(f"{url}/v1/classify", json={"input": texts, "task": task, "top_k": 2},
                       timeout=60)  # fmt: skip
        res[f"{task}_status"] = r.status_code
        res[task] = [d["labels"] for d in r.json()["data"]] if r.status_code == 200 else r.text
    r = httpx.post(f"{url}/v1/classify", timeout=60, json={
        "input": ["The striker scored twice in the final.", "Simmer the sauce for ten minutes."],
        "labels": {"sports": "sport and games", "cooking": "food and recipes",
                   "finance": "money and markets"}})  # fmt: skip
    res["custom_labels_status"] = r.status_code
    res["custom_labels"] = (
        [d["labels"][0] for d in r.json()["data"]] if r.status_code == 200 else r.text[:800]
    )
    res["metrics"] = metrics_summary(httpx.get(f"{url}/metrics", timeout=10).text)
