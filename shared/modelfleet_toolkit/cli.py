"""The ``modelfleet`` command line: one subcommand per module in :data:`COMMANDS`.

A command module has ``add_parser(subparsers)`` (its flags) and ``run(args) -> int``; adding a
command is one line in :data:`COMMANDS`. Usage errors (bad config, missing data or model) exit 2
with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from types import ModuleType

from modelfleet_toolkit import console
from modelfleet_toolkit.commands import (
    cv,
    data,
    embed,
    evaluate,
    export,
    registry,
    ship,
    train,
    tune,
)
from modelfleet_toolkit.config import ConfigError
from modelfleet_toolkit.data import DataError

COMMANDS: list[ModuleType] = [train, tune, evaluate, cv, data, export, registry, ship, embed]


def build_parser() -> argparse.ArgumentParser:
    """The parser with every command's subparser."""
    parser = argparse.ArgumentParser(
        prog="modelfleet",
        description=(
            "Develop models for the fleet: train, tune, evaluate and cross-validate text "
            "classifiers, tracked in MLflow. Each command takes --config FILE.yaml and flags "
            "that override it; --json prints the results as one JSON object."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``modelfleet`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "json", False):
            # stdout carries the one JSON object: what libraries print while the command runs
            # (the Trainer's log dicts, progress) goes to stderr.
            out = sys.stdout
            with console.json_to(out), contextlib.redirect_stdout(sys.stderr):
                return int(args.handler(args))
        return int(args.handler(args))
    except (ConfigError, DataError, OSError) as exc:  # OSError: a model or file not found
        print(f"modelfleet {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
