"""The serving library and the services never import the toolkit (its dependencies stay out of
the serving images)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.toolkit.conftest import ROOT


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_serving_code_never_imports_the_toolkit() -> None:
    files = [*(ROOT / "shared" / "modelfleet").rglob("*.py"), *(ROOT / "services").rglob("*.py")]
    assert len(files) > 20
    offenders = [
        str(f.relative_to(ROOT))
        for f in files
        if any(
            n == "modelfleet_toolkit" or n.startswith("modelfleet_toolkit.") for n in _imports(f)
        )
    ]
    assert offenders == []
