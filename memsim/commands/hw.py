"""memsim hw check / show: validate hardware YAML and print what it describes."""
from __future__ import annotations

import sys

from memsim.commands.common import EXIT_USAGE, key_values
from memsim.errors import MemsimError


def add_parser(commands) -> None:
    hw = commands.add_parser("hw", help="hardware configs").add_subparsers(dest="hw_command", required=True)
    check = hw.add_parser("check", help="validate hardware YAML files")
    check.add_argument("files", nargs="+")
    check.set_defaults(func=cmd_check)
    show = hw.add_parser("show", help="print the tiers, units and links of a config")
    show.add_argument("file")
    show.add_argument("--set", action="append", metavar="KEY.PATH=VALUE")
    show.set_defaults(func=cmd_show)


def cmd_check(args) -> int:
    from memsim.hardware import load_system

    failures = 0
    for path in args.files:
        try:
            system = load_system(path)
            print(f"{path}: ok ({system.name})")
        except MemsimError as error:
            print(str(error), file=sys.stderr)
            failures += 1
    return EXIT_USAGE if failures else 0


def cmd_show(args) -> int:
    from memsim.hardware import load_system
    from memsim.report.text import print_system

    print_system(load_system(args.file, key_values(args.set, "--set")))
    return 0
