"""The `memsim` command: parses arguments, runs a subcommand, turns errors into one line.

A user's mistake (MemsimError) prints one line and exits 2; an internal error prints one line
and exits 1 (with --debug, the traceback).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from memsim.commands import MODULES
from memsim.commands.common import EXIT_USAGE
from memsim.errors import MemsimError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memsim", description="Simulate memory hierarchies and accelerators "
                                     "for machine-learning memory models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in MODULES:
        importlib.import_module(f"memsim.commands.{name}").add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MemsimError as error:
        print(f"memsim: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("memsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:  # an internal error: one line unless asked for the traceback
        if args.debug:
            raise
        print(f"memsim: internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
