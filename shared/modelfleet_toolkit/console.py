"""Output of the commands: rich tables on stdout, or one JSON object with ``--json``.

Progress bars always go to stderr, so ``--json`` output on stdout stays one parseable object.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

err = Console(stderr=True)


def _plain(value: Any) -> Any:
    """JSON-safe: Paths and other objects as strings, NaN as null."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


_json_out: list[TextIO] = []


@contextlib.contextmanager
def json_to(stream: TextIO) -> Iterator[None]:
    """Send :func:`emit_json` to ``stream`` (the real stdout) while the command runs."""
    _json_out.append(stream)
    try:
        yield
    finally:
        _json_out.pop()


def emit_json(result: Mapping[str, Any]) -> None:
    """The command's result as one JSON object on stdout."""
    out = _json_out[-1] if _json_out else sys.stdout
    out.write(json.dumps(_plain(result), ensure_ascii=False) + "\n")
    out.flush()


def fmt(value: Any) -> str:
    """A cell: floats to 4 places."""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on stdout."""
    t = Table(title=title)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*(fmt(v) for v in row))
    Console().print(t)


def key_values(title: str, values: Mapping[str, Any]) -> None:
    """A two-column table of scalar results."""
    table(
        title, ["", "value"], [(k, v) for k, v in values.items() if not isinstance(v, dict | list)]
    )
