"""Flags every command shares."""

from __future__ import annotations

import argparse
from typing import Any


def command_parser(
    subparsers: Any, name: str, help_text: str, description: str
) -> argparse.ArgumentParser:
    """A subparser with ``--config`` and ``--json``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help_text,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", help="YAML config file; flags override its values")
    parser.add_argument("--json", action="store_true", help="print results as one JSON object")
    return parser
