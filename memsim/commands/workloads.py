"""memsim workloads: the registered workload families, their configs and their config keys."""
from __future__ import annotations

import dataclasses


def add_parser(commands) -> None:
    workloads = commands.add_parser("workloads", help="list the registered workloads and their configs")
    workloads.add_argument("name", nargs="?", help="show every config key of this workload")
    workloads.set_defaults(func=cmd_workloads)


def cmd_workloads(args) -> int:
    from memsim.trace.workload import resolve, workloads

    if args.name:
        family, config = resolve(args.name)
        print(f"{args.name} ({family.name}: {family.description})")
        print(f"phases: {', '.join(family.phases)}")
        for field in dataclasses.fields(config):
            print(f"  {field.name} = {getattr(config, field.name)!r}")
        print("override any key with --config KEY=VALUE")
        return 0
    by_family: dict = {}
    for name, (family, _) in workloads().items():
        by_family.setdefault(family, []).append(name)
    for family, names in sorted(by_family.items(), key=lambda item: item[0].name):
        print(f"{family.name} [{', '.join(family.phases)}]: {family.description}")
        print(f"  {'  '.join(names)}")
    return 0
