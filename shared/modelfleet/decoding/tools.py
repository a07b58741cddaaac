"""Tool calling: tools into the prompt, ``<tool_call>`` blocks out of the generated text.

Models whose chat template knows about tools (Qwen2.5, Llama 3.1, Hermes, ...) get the tools
and the conversation's tool calls and results through ``apply_chat_template(tools=...)``. A
template that never mentions tools (SmolLM2's) would silently drop them, so for those the tools
are described in a system message in the Hermes/Qwen2.5 wording and earlier calls and results
are written into the transcript the same way. Either way the model answers in the Hermes
format, which the grammar (:mod:`modelfleet.decoding.grammar`) enforces and
:class:`ToolCallParser` turns back into OpenAI ``tool_calls``.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

OPEN, CLOSE = "<tool_call>", "</tool_call>"

_SYSTEM = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    "{tools}\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def template_knows_tools(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None)
    return isinstance(template, str) and "tools" in template


def call_text(name: str, arguments: Any) -> str:
    """One call in the Hermes format the grammar enforces."""
    args = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
    return f'{OPEN}\n{{"name": "{name}", "arguments": {args}}}\n{CLOSE}'


def transcript(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, native: bool
) -> list[dict[str, Any]]:
    """Messages for the chat template: as they are for a template that knows tools (with
    call arguments as objects, which those templates serialise themselves), else with tools,
    calls and results written out as text."""
    if native:
        return [_with_object_arguments(m) for m in messages]
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = [
                call_text(c["function"]["name"], c["function"]["arguments"])
                for c in m["tool_calls"]
            ]
            text = "\n".join([m["content"], *calls] if m.get("content") else calls)
            out.append({"role": "assistant", "content": text})
        elif m["role"] == "tool":
            out.append(
                {"role": "user", "content": f"<tool_response>\n{m['content']}\n</tool_response>"}
            )
        else:
            out.append({"role": m["role"], "content": m["content"]})
    if tools:
        described = "\n".join(orjson.dumps(t).decode() for t in tools)
        system = _SYSTEM.format(tools=described)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + system}
        else:
            out.insert(0, {"role": "system", "content": system})
    return out


def _with_object_arguments(message: dict[str, Any]) -> dict[str, Any]:
    if not message.get("tool_calls"):
        return message
    calls = []
    for c in message["tool_calls"]:
        try:
            args = orjson.loads(c["function"]["arguments"])
        except orjson.JSONDecodeError:
            args = c["function"]["arguments"]
        calls.append({**c, "function": {**c["function"], "arguments": args}})
    return {**message, "tool_calls": calls}


def _parse_call(block: str) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(block)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {
            "name": obj["name"],
            "arguments": orjson.dumps(obj.get("arguments", {})).decode(),
        },
    }


class ToolCallParser:
    """Splits streamed text into content and complete tool calls.

    Text that may be the start of ``<tool_call>`` is held back until it is known not to be;
    a call is handed out once its closing tag arrives (so a call's ``arguments`` arrive in one
    delta). A call cut off by ``max_tokens`` is returned as content by :meth:`finish`.
    """

    __slots__ = ("_buf", "calls")

    def __init__(self) -> None:
        self._buf = ""
        self.calls = 0

    def feed(self, delta: str) -> tuple[str, list[dict[str, Any]]]:
        self._buf += delta
        content: list[str] = []
        calls: list[dict[str, Any]] = []
        while True:
            start = self._buf.find(OPEN)
            if start == -1:
                keep = _partial(self._buf, OPEN)
                content.append(self._buf[: len(self._buf) - keep])
                self._buf = self._buf[len(self._buf) - keep :]
                break
            end = self._buf.find(CLOSE, start)
            if end == -1:
                content.append(self._buf[:start])
                self._buf = self._buf[start:]
                break
            call = _parse_call(self._buf[start + len(OPEN) : end].strip())
            if call is None:
                content.append(self._buf[: end + len(CLOSE)])
            else:
                calls.append(call)
            self._buf = self._buf[end + len(CLOSE) :]
        self.calls += len(calls)
        return "".join(content), calls

    def finish(self) -> str:
        """Whatever is still held back (an unfinished call) as plain text."""
        rest, self._buf = self._buf, ""
        return rest


def _partial(buf: str, tag: str) -> int:
    for n in range(min(len(tag) - 1, len(buf)), 0, -1):
        if buf.endswith(tag[:n]):
            return n
    return 0
