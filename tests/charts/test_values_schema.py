"""values.schema.json rejects bad values with clear messages; values.yaml documents every key."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python
import pytest

from tests.charts.helm import (
    CHART_DIR,
    ENV_FILES,
    MODEL_SERVICES,
    chart,
    load_values,
    render_values,
)

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/]+):(\s|$)")


def _validate(values: dict[str, Any]) -> str:
    with pytest.raises(helm_python.HelmValuesError) as err:
        chart().validate_schema(chart().merge_values(values))
    return str(err.value)


@pytest.mark.parametrize("service", ["gateway", *MODEL_SERVICES])
def test_negative_replicas_are_rejected_with_the_path(service: str) -> None:
    message = _validate({service: {"replicas": -1}})
    assert f"at '/{service}/replicas'" in message
    assert "minimum: got -1, want 0" in message


@pytest.mark.parametrize("service", ["gateway", *MODEL_SERVICES, "redis"])
def test_unknown_keys_under_a_service_are_rejected_by_name(service: str) -> None:
    message = _validate({service: {"replica": 2}})  # a typo of "replicas"
    assert f"at '/{service}'" in message
    assert "additional properties 'replica' not allowed" in message


def test_nested_typos_and_bad_enums_are_named() -> None:
    message = _validate(
        {
            "llm": {"model": {"sorce": "pvc"}, "device": "tpu"},
            "embedding": {"autoscaling": {"maxReplica": 3}},
            "gateway": {"discovery": "dns"},
        }
    )
    assert "at '/llm/model': additional properties 'sorce' not allowed" in message
    assert "at '/llm/device': value must be one of 'auto', 'cpu', 'cuda'" in message
    assert "at '/embedding/autoscaling': additional properties 'maxReplica' not allowed" in message
    assert "at '/gateway/discovery': value must be one of 'kubernetes', 'static'" in message


def test_a_render_fails_on_schema_errors_too() -> None:
    with pytest.raises(helm_python.HelmValuesError, match="/classification/replicas"):
        render_values({"classification": {"replicas": -3}})


def test_every_shipped_values_file_passes_the_schema() -> None:
    for name in ("values.yaml", *ENV_FILES):
        values = load_values(name) if name != "values.yaml" else {}
        chart().validate_schema(chart().merge_values(values))


def test_the_schema_is_strict_under_every_service() -> None:
    props = SCHEMA["properties"]
    assert SCHEMA["additionalProperties"] is False
    for name in ("gateway", *MODEL_SERVICES, "redis", "externalRedis", "metrics"):
        assert props[name]["additionalProperties"] is False, name
    assert props["llm"]["properties"]["replicas"]["minimum"] == 0


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _schema_at(path: list[str]) -> dict[str, Any] | None:
    node: dict[str, Any] = SCHEMA
    for key in path:
        node = _resolve(node)
        node = node.get("properties", {}).get(key)
        if node is None:
            return None
    return _resolve(node)


def test_every_values_key_has_a_comment_and_a_schema_entry() -> None:
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    undocumented, unschema = [], []
    for i, line in enumerate(lines):
        m = KEY_LINE.match(line)
        if not m:
            continue
        indent, key = len(m["indent"]), m["key"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent_path = [k for _, k in stack]
        stack.append((indent, key))
        parent = _schema_at(parent_path)
        # Keys inside free-form maps (nodeSelector, resources.requests, HPA behavior...) are data.
        if parent is None or "properties" not in parent:
            continue
        dotted = ".".join([*parent_path, key])
        if key not in parent["properties"]:
            unschema.append(dotted)
        previous = next((p for p in reversed(lines[:i]) if p.strip()), "")
        if not previous.strip().startswith("#"):
            undocumented.append(dotted)
    assert not undocumented, f"values keys without a comment: {undocumented}"
    assert not unschema, f"values keys missing from values.schema.json: {unschema}"
