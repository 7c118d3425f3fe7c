"""The engine's speed against bare simpy, and its memory on a 1,000,000-op trace.

Measured in one run, because this machine is shared and noisy:
- bare simpy: timeouts per second of an empty process;
- memsim replay: ops per second of the event loop on a llama2-7b decode step whose weights
  stream from host DDR with prefetch over two copy engines (the graph is built once, the loop
  timed over repeats), and, for information, of the whole simulate() call;
- peak resident memory of replaying a 1,000,000-op trace, in a fresh process.
Targets: replay >= 40% of bare simpy's event rate; the 1,000,000-op replay under 2 GB.
"""
from __future__ import annotations

import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd

RATE_TARGET = 0.40
RSS_TARGET = 2e9
PLAN = {"placement": [{"role": "weight", "tier": "host.ddr"}], "prefetch_depth": 2, "copy_engines": 2}


def simpy_rate(count: int = 1_000_000) -> float:
    import simpy

    env = simpy.Environment()

    def empty():
        for _ in range(count):
            yield env.timeout(1.0)

    env.process(empty())
    started = time.perf_counter()
    env.run()
    return count / (time.perf_counter() - started)


def replay_rates(repeats: int = 20) -> tuple[float, float, int, int]:
    """(loop ops/s, simulate() ops/s, ops, tasks) for a llama2-7b decode step with streamed weights."""
    from memsim.engine import simulate
    from memsim.engine.replay import build_graph, initial_occupancy, run_graph
    from memsim.engine.topology import Topology
    from memsim.hardware import load_system
    from memsim.plan import load_plan
    from memsim.trace.workload import StepSpec, trace_workload

    system = load_system("nvidia-h100-sxm")
    trace = trace_workload("llama2-7b", StepSpec(phase="decode", batch=1, context=1024))
    plan = load_plan(PLAN)
    simulate(trace, system, plan)   # compile
    topo = Topology.of(system)
    built = build_graph(trace, system, plan, topo)
    tiers = list(topo.tier_channel)
    capacity = np.array([topo.tier_capacity(tier) for tier in tiers])
    initial = initial_occupancy(trace, built.shares, tiers)
    started = time.perf_counter()
    for _ in range(repeats):
        run_graph(built.graph, topo, capacity, initial)
    loop = len(trace.ops) * repeats / (time.perf_counter() - started)
    started = time.perf_counter()
    simulate(trace, system, plan)
    whole = len(trace.ops) / (time.perf_counter() - started)
    return loop, whole, len(trace.ops), len(built.graph)


def chain_trace(n: int, weights: int = 1000):
    """n ops in a chain, op i reading op i-1's output and weight i mod `weights` (a decode-like trace)."""
    from memsim.trace.table import OP_COLUMNS, TENSOR_COLUMNS, Trace

    ids = np.arange(n)
    ops = pd.DataFrame({name: (np.zeros(n, dtype="int64") if kind == "int64" else
                               np.zeros(n) if kind == "float64" else np.full(n, "", dtype=object))
                        for name, kind in OP_COLUMNS.items()})
    ops["op_id"] = ids
    ops["name"] = "aten::mm"
    ops["category"] = "gemm"
    ops["dtype"] = "bf16"
    ops["flops"] = 2.0 * 4096 * 4096
    ops["bytes_read"] = 4096 * 4096 * 2.0 + 8192
    ops["bytes_written"] = 8192.0
    ops["measured_s"] = np.nan
    activation = weights + ids
    tensors = pd.DataFrame({
        "tensor_id": np.arange(weights + n), "nbytes": np.r_[np.full(weights, 4096 * 4096 * 2.0), np.full(n, 8192.0)],
        "dtype": "bf16", "shape": "", "role": np.r_[np.full(weights, "weight"), np.full(n, "activation")],
        "name": "", "device": "meta", "first_op": np.r_[np.arange(weights), ids],
        "last_op": np.r_[np.arange(weights) + (n - 1) // weights * weights, np.minimum(ids + 1, n - 1)],
        "preexisting": np.r_[np.ones(weights, bool), np.zeros(n, bool)],
        "alive_at_end": np.zeros(weights + n, bool)})[list(TENSOR_COLUMNS)]
    accesses = pd.DataFrame({
        "op_id": np.r_[ids, ids[1:], ids], "tensor_id": np.r_[ids % weights, activation[:-1], activation],
        "write": np.r_[np.zeros(2 * n - 1, bool), np.ones(n, bool)],
        "nbytes": np.r_[np.full(n, 4096 * 4096 * 2.0), np.full(2 * n - 1, 8192.0)]})
    return Trace(ops, tensors, accesses, {"tokens": 1})


def million_op_replay() -> None:
    """Child process: replay a 1,000,000-op trace and print its time and peak RSS."""
    from memsim.engine import simulate
    from memsim.hardware import load_system

    trace = chain_trace(1_000_000)
    started = time.perf_counter()
    result = simulate(trace, load_system("nvidia-h100-sxm"))
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{elapsed} {peak} {len(result.timeline)}")


def main() -> None:
    if sys.argv[1:] == ["--million"]:
        million_op_replay()
        return
    bare = simpy_rate()
    loop, whole, ops, tasks = replay_rates()
    print(f"bare simpy: {bare:,.0f} timeouts/s of an empty process")
    print(f"memsim replay (llama2-7b decode, weights streamed from DDR, prefetch 2, 2 copy engines: "
          f"{ops:,} ops, {tasks:,} tasks): {loop:,.0f} ops/s in the event loop = {loop / bare:.2f} of bare simpy "
          f"(target {RATE_TARGET:.2f}) {'OK' if loop / bare >= RATE_TARGET else 'TOO SLOW'}")
    print(f"  whole simulate() including pricing and building the graph: {whole:,.0f} ops/s "
          f"= {whole / bare:.3f} of bare simpy")
    child = subprocess.run([sys.executable, __file__, "--million"], capture_output=True, text=True, check=True)
    elapsed, peak, rows = child.stdout.split()
    print(f"1,000,000-op trace: simulate() {float(elapsed):.1f} s, {int(rows):,} timeline rows, peak RSS "
          f"{float(peak) / 1e9:.2f} GB (target under {RSS_TARGET / 1e9:.0f} GB) "
          f"{'OK' if float(peak) < RSS_TARGET else 'TOO BIG'}")


if __name__ == "__main__":
    main()
