"""memsim run: predict one step of a workload (or a saved trace) on a hardware config."""
from __future__ import annotations

import json
from pathlib import Path

from memsim.commands.common import key_values
from memsim.commands.trace import OPTIMIZER_HELP


def add_parser(commands) -> None:
    run = commands.add_parser("run", help="predict one step of a workload on a hardware config")
    run.add_argument("hardware", help="hardware YAML file, or the name of a shipped config")
    run.add_argument("workload", help="registered workload name (see 'memsim workloads') or a trace file")
    run.add_argument("--phase", default="decode", choices=["prefill", "decode", "train"])
    run.add_argument("--batch", type=int, default=1)
    run.add_argument("--context", type=int, default=1024,
                     help="prefill/train: tokens per sequence; decode: tokens already in the cache")
    run.add_argument("--dtype", default=None, help="override the workload's dtype (fp32, bf16, fp16)")
    run.add_argument("--optimizer", default="adamw", help=OPTIMIZER_HELP)
    run.add_argument("--attention", default="fused", choices=["fused", "unfused"],
                     help="scaled_dot_product_attention as one fused kernel (default) or as eager "
                          "matmul/softmax/matmul ops, for comparison")
    run.add_argument("--config", action="append", metavar="KEY=VALUE", help="override a workload config key")
    run.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a hardware key")
    run.add_argument("--plan", metavar="FILE", help="placement and movement plan (YAML): where tensors live, "
                     "prefetch depth, eviction policy, copy engines, pipeline stages, tensor parallelism")
    run.add_argument("--perfetto", metavar="FILE", help="also write a Chrome/Perfetto trace (open in ui.perfetto.dev)")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    run.add_argument("--out", metavar="DIR", help="also write the per-op timeline and summary.json here")
    run.add_argument("--format", default="csv", choices=["csv", "parquet"], help="timeline file format")
    run.set_defaults(func=cmd_run)


def load_trace_or_workload(args):
    """A saved trace file, or a registered workload traced on meta tensors."""
    from memsim.trace.table import Trace
    from memsim.trace.workload import StepSpec, trace_workload

    if Path(args.workload).is_file():
        return Trace.load(args.workload)
    spec = StepSpec(phase=args.phase, batch=args.batch, context=args.context, device="meta", dtype=args.dtype,
                    optimizer=args.optimizer, attention=args.attention)
    return trace_workload(args.workload, spec, key_values(args.config, "--config"))


def cmd_run(args) -> int:
    from rich.console import Console

    from memsim.engine import simulate
    from memsim.hardware import load_system
    from memsim.plan import load_plan
    from memsim.report.perfetto import write_perfetto
    from memsim.report.text import print_summary

    system = load_system(args.hardware, key_values(args.set, "--set"))
    plan = load_plan(args.plan)
    trace = load_trace_or_workload(args)
    with Console(stderr=True).status(f"simulating {len(trace.ops):,} ops on {system.name}"):
        result = simulate(trace, system, plan)
    summary = result.summary()
    if args.perfetto:
        summary["perfetto_file"] = str(write_perfetto(result, args.perfetto))
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
        if args.perfetto:
            print(f"Perfetto trace written to {summary['perfetto_file']} (open it in ui.perfetto.dev)")
    return 0
