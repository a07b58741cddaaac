"""``modelfleet tune``."""

from __future__ import annotations

import argparse
from typing import Any

from modelfleet_toolkit.commands.common import command_parser


def add_parser(subparsers: Any) -> None:
    parser = command_parser(subparsers, "tune", "tune (in progress)", "in progress")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError
