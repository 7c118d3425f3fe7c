"""The `memsim` command. Each subcommand is a small function; errors become one line, exit 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from memsim.errors import MemsimError

EXIT_USAGE = 2


def _key_values(items: list[str] | None, flag: str) -> dict[str, str]:
    pairs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MemsimError(f"{flag} {item!r}: expected KEY=VALUE")
        pairs[key.strip()] = value.strip()
    return pairs


def _load_trace_or_workload(args):
    from memsim.trace.table import Trace
    from memsim.trace.workload import StepSpec, trace_workload

    if Path(args.workload).is_file():
        return Trace.load(args.workload)
    spec = StepSpec(phase=args.phase, batch=args.batch, context=args.context, device="meta", dtype=args.dtype)
    return trace_workload(args.workload, spec, _key_values(args.config, "--config"))


def cmd_run(args) -> int:
    from memsim.engine import simulate
    from memsim.hardware import load_system
    from memsim.report.text import print_summary

    system = load_system(args.hardware, _key_values(args.set, "--set"))
    trace = _load_trace_or_workload(args)
    result = simulate(trace, system)
    summary = result.summary()
    if args.out:
        path = result.write_timeline(args.out, args.format)
        summary["timeline_file"] = str(path)
        (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        print_summary(summary)
        if args.out:
            print(f"timeline written to {summary['timeline_file']}")
    return 0


def cmd_hw_check(args) -> int:
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


def cmd_hw_show(args) -> int:
    from memsim.hardware import load_system
    from memsim.report.text import print_system

    print_system(load_system(args.file, _key_values(args.set, "--set")))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memsim", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="predict one step of a workload on a hardware config")
    run.add_argument("hardware", help="hardware YAML file, or the name of a shipped config")
    run.add_argument("workload", help="registered workload name (see 'memsim workloads') or a trace file")
    run.add_argument("--phase", default="decode", choices=["prefill", "decode", "train"])
    run.add_argument("--batch", type=int, default=1)
    run.add_argument("--context", type=int, default=1024,
                     help="prefill/train: tokens per sequence; decode: tokens already in the cache")
    run.add_argument("--dtype", default=None, help="override the workload's dtype (fp32, bf16, fp16)")
    run.add_argument("--config", action="append", metavar="KEY=VALUE", help="override a workload config key")
    run.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a hardware key")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    run.add_argument("--out", metavar="DIR", help="also write the per-op timeline and summary.json here")
    run.add_argument("--format", default="csv", choices=["csv", "parquet"], help="timeline file format")
    run.set_defaults(func=cmd_run)

    hw = commands.add_parser("hw", help="hardware configs").add_subparsers(dest="hw_command", required=True)
    check = hw.add_parser("check", help="validate hardware YAML files")
    check.add_argument("files", nargs="+")
    check.set_defaults(func=cmd_hw_check)
    show = hw.add_parser("show", help="print the tiers, units and links of a config")
    show.add_argument("file")
    show.add_argument("--set", action="append", metavar="KEY.PATH=VALUE")
    show.set_defaults(func=cmd_hw_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
