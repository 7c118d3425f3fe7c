"""The subcommands of `memsim`, one module a group; each module defines add_parser(subparsers)."""

# Module names under memsim.commands, in the order their subcommands are listed in --help.
MODULES = ("run", "trace", "workloads", "hw", "calibrate", "validate")
