"""``flowblend``: sample, calibrate and benchmark Large/Small flow-matching pairs.

Run ``flowblend --help`` or ``flowblend <command> --help``. One module per command (``demo``,
``sample``, ``bench``, ``calibrate``, ``frontier``, ``oracle``), each with ``register(sub)`` (its
parser), an optional ``check(parser, args)`` (what only it refuses) and ``run(args)``; the options
they share are parsed in :mod:`adaptive.cli.options` and checked in :mod:`adaptive.cli.checks`.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from adaptive.cli import bench, calibrate, demo, frontier, oracle, sample
from adaptive.cli.checks import validate
from adaptive.cli.options import parse_schedule

COMMANDS: tuple[ModuleType, ...] = (demo, sample, bench, calibrate, frontier, oracle)


def build_parser() -> argparse.ArgumentParser:
    """The ``flowblend`` parser: one sub-parser per command module, each knowing its module."""
    parser = argparse.ArgumentParser(prog="flowblend", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command_parser = command.register(sub)
        command_parser.set_defaults(subparser=command_parser, module=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a library error (a corrupt profile, no stored controller, a pair mismatch...)
    is one line naming the problem, not a traceback; Ctrl-C says what was kept."""
    from adaptive.errors import AdaptiveError

    parser = build_parser()
    args = parser.parse_args(argv)
    command: argparse.ArgumentParser = args.subparser
    validate(command, args)  # errors print the command's usage, not the top level's
    if hasattr(args.module, "check"):
        args.module.check(command, args)
    try:
        return int(args.module.run(args) or 0)
    except AdaptiveError as err:
        command.exit(2, f"flowblend {args.command}: error: {err}\n")
    except KeyboardInterrupt:
        kept = (" Optuna keeps every finished trial in the study: run the same command to resume."
                if args.command == "calibrate" else "")
        command.exit(130, f"flowblend {args.command}: interrupted.{kept}\n")
    return 0


__all__ = ["COMMANDS", "build_parser", "main", "parse_schedule"]

if __name__ == "__main__":
    sys.exit(main())
