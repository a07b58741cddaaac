"""Tool-call text in and out, and generation_config defaults (no model needed)."""

from __future__ import annotations

import json

from transformers import GenerationConfig

from modelfleet.decoding.params import generation_defaults
from modelfleet.decoding.tools import ToolCallParser, call_text, transcript


def test_parser_holds_back_a_split_tag_and_returns_whole_calls() -> None:
    text = "Sure. " + call_text("f", {"a": 1}) + "\n" + call_text("g", '{"b": [2]}')
    p = ToolCallParser()
    content, calls = "", []
    for i in range(0, len(text), 3):  # deltas split inside tags and JSON
        c, found = p.feed(text[i : i + 3])
        assert "<" not in c
        content, calls = content + c, calls + found
    assert content + p.finish() == "Sure. \n"
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("f", {"a": 1}),
        ("g", {"b": [2]}),
    ]


def test_unfinished_or_malformed_calls_stay_text() -> None:
    p = ToolCallParser()
    content, calls = p.feed('<tool_call>\n{"name": "f", "argu')
    assert (content, calls) == ("", [])
    assert p.finish().startswith("<tool_call>")
    bad = "<tool_call>not json</tool_call>"
    assert ToolCallParser().feed(bad) == (bad, [])


def test_transcript_for_a_template_without_tools() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
    ]
    out = transcript(msgs, tools, native=False)
    assert out[0]["role"] == "system" and '"name":"f"' in out[0]["content"]
    assert out[2]["content"] == call_text("f", '{"x": 1}')
    assert out[3] == {"role": "user", "content": "<tool_response>\n42\n</tool_response>"}
    native = transcript(msgs, tools, native=True)
    assert native[1]["tool_calls"][0]["function"]["arguments"] == {"x": 1}


def test_generation_config_values_only_when_set() -> None:
    class M:
        generation_config = GenerationConfig(temperature=0.7, top_p=0.8, top_k=20, do_sample=True)

    assert generation_defaults(M()) == {"temperature": 0.7, "top_p": 0.8, "top_k": 20.0}

    class Greedy:
        generation_config = GenerationConfig(do_sample=False)

    assert generation_defaults(Greedy()) == {"temperature": 0.0}
    assert generation_defaults(object()) == {}
