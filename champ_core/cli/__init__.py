"""`python -m champ_core COMMAND ...`: a thin dispatcher over one module per command.

Each command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Command modules keep their heavy imports inside `run`, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module (relative to this package)
COMMANDS: dict[str, str] = {
    "demo": ".demo",
    "render": ".render",
    "animate": ".animate",
    "convert-weights": ".convert_weights",
    "convert-smpl": ".convert_smpl",
}


class CommandError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m champ_core", description="Champ human image animation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name, __name__)
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
