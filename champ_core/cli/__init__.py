"""`python -m champ_core COMMAND ...`: a thin dispatcher over one module per command.

Each command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Command modules keep their heavy imports inside `run`, so `--help` stays fast.
Errors follow one style (see `errors.py`): `CommandError`, the library's user errors and OS
errors end in one line naming the input and what to do, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import CommandError, report  # noqa: F401  (CommandError: imported by every command)

# command name -> module (relative to this package)
COMMANDS: dict[str, str] = {
    "demo": ".demo",
    "render": ".render",
    "animate": ".animate",
    "convert-weights": ".convert_weights",
    "convert-smpl": ".convert_smpl",
    "synth-data": ".synth_data",
    "train": ".train",
    "prepare": ".prepare",
    "evaluate": ".evaluate",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m champ_core", description="Champ human image animation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name, __name__)
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run, _parser=command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except Exception as exc:  # expected failures -> one line; anything else (a bug) keeps its traceback
        from .errors import path_flags

        status = report(exc, path_flags(args._parser, args))
        if status is None:
            raise
        return status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
