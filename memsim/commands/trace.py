"""memsim trace: trace one step of a registered workload or a user's own model, or import a measured
Kineto trace, into a trace file."""
from __future__ import annotations

import sys
import warnings

from memsim.commands.common import key_values
from memsim.errors import MemsimError

OPTIMIZER_HELP = "train: adamw, or adam8bit[:block=N,scale=fp32|bf16|fp16] (see memsim.trace.training)"


def add_parser(commands) -> None:
    trace = commands.add_parser(
        "trace", help="trace one step of a workload into a trace file",
        description="Trace one step of a registered workload, or of your own model, into a trace file "
                    "(format: memsim.trace.table). Your own model: MODULE:CALLABLE, a no-argument callable "
                    "returning a torch.nn.Module (inputs from --input), a (module, inputs) pair, or a "
                    "WorkloadStep; in meta mode it is called under torch.device('meta').")
    trace.add_argument("workload", help="registered workload (see 'memsim workloads'), my_pkg.my_module:build_model, "
                       "or a measured PyTorch profiler (Kineto) trace, FILE.json or FILE.json.gz")
    trace.add_argument("--config", action="append", metavar="KEY=VALUE", help="override a workload config key")
    trace.add_argument("--phase", default="decode", choices=["prefill", "decode", "train"])
    trace.add_argument("--batch", type=int, default=1)
    trace.add_argument("--context", type=int, default=1024,
                       help="prefill/train: tokens per sequence; decode: tokens already in the cache")
    trace.add_argument("--dtype", default=None, help="override the workload's dtype (fp32, bf16, fp16)")
    trace.add_argument("--optimizer", default="adamw",
                       help=OPTIMIZER_HELP)
    trace.add_argument("--attention", default="fused", choices=["fused", "unfused"],
                       help="scaled_dot_product_attention as one fused kernel (default) or as eager "
                            "matmul/softmax/matmul ops, for comparison")
    trace.add_argument("--mode", default="meta", choices=["meta", "real"],
                       help="meta: shapes only, any size; real: run and time each op")
    trace.add_argument("--device", default=None, help="real mode: cpu or cuda (default: cuda where present)")
    trace.add_argument("--input", action="append", metavar="SHAPE[:DTYPE]",
                       help="a user model's input, e.g. 1x2048:int64 (one per positional argument)")
    trace.add_argument("--out", required=True, metavar="FILE", help="the trace file to write (.memtrace)")
    trace.set_defaults(func=cmd_trace)


def device_for(mode: str, device: str | None) -> str:
    import torch

    if mode == "meta":
        if device not in (None, "meta"):
            raise MemsimError(f"--device {device}: meta mode runs on meta tensors; use --mode real for {device}")
        return "meta"
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise MemsimError(f"--device {device!r}: expected cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise MemsimError("--device cuda: no CUDA device is available here")
    return device


def trace_target(args, spec):
    """The Trace of a measured Kineto file, a registered workload or a user's model."""
    from memsim.trace.capture import capture
    from memsim.trace.kineto import load_kineto
    from memsim.trace.user_model import build_user_step, is_user_target
    from memsim.trace.workload import trace_workload

    if args.workload.endswith((".json", ".json.gz")):
        return load_kineto(args.workload)
    if not is_user_target(args.workload):
        if args.input:
            raise MemsimError("--input is for a user's model (my_pkg.my_module:build_model); registered "
                              "workloads make their own inputs")
        return trace_workload(args.workload, spec, key_values(args.config, "--config"), mode=args.mode)
    if args.config:
        raise MemsimError(f"--config applies to registered workloads; {args.workload} takes no config keys")
    step = build_user_step(args.workload, args.input or [], spec)
    meta = {"workload": args.workload, "phase": spec.phase, "batch": spec.batch, "context": spec.context,
            "tokens": spec.tokens, "inputs": args.input or []}
    return capture(step.run, module=step.module, mode=args.mode, device=spec.device, meta=meta,
                   warmup=1 if args.mode == "real" else 0)


def cmd_trace(args) -> int:
    from rich.console import Console

    from memsim import units
    from memsim.trace.lifetimes import peak_memory
    from memsim.trace.workload import StepSpec

    spec = StepSpec(phase=args.phase, batch=args.batch, context=args.context,
                    device=device_for(args.mode, args.device), dtype=args.dtype, optimizer=args.optimizer,
                    attention=args.attention)
    with Console(stderr=True).status(f"tracing {args.workload} ({spec.phase}, {args.mode} on {spec.device})"), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trace = trace_target(args, spec)
    for warning in caught:  # e.g. the ops no cost formula prices: one line each, not a stack frame
        print(f"memsim: warning: {warning.message}", file=sys.stderr)
    path = trace.save(args.out)
    peak = peak_memory(trace)
    roles = ", ".join(f"{role} {units.format_bytes(size)}"
                      for role, size in sorted(peak["at_peak_by_role"].items(), key=lambda kv: -kv[1]) if size)
    timed = trace.ops.measured_s.notna().sum()
    print(f"{path}: {len(trace.ops):,} ops ({timed:,} timed), {len(trace.tensors):,} tensors, "
          f"{units.format_count(trace.total_flops, 'FLOP')}, peak {units.format_bytes(peak['peak_bytes'])} ({roles})")
    return 0
