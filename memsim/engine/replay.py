"""Replay a trace on a System in simpy: one compute stream, ops priced by the roofline."""
from __future__ import annotations

import numpy as np
import pandas as pd
import simpy

from memsim.cost.roofline import (effective_bandwidth, main_compute_unit, op_overhead, peaks_for,
                                  roofline_times)
from memsim.engine.memory import check_fit, default_placement, occupancy
from memsim.engine.result import Result
from memsim.hardware.schema import System
from memsim.trace.table import Trace


def price(trace: Trace, system: System) -> pd.DataFrame:
    """Compute, memory and overhead seconds of every op on the main device."""
    device = system.device
    unit = main_compute_unit(device)
    ops = trace.ops
    tier = device.memories[unit.memory or device.default_memory]
    read_bw, write_bw = effective_bandwidth(tier, device)
    n = len(ops)
    compute, memory, total = roofline_times(
        ops["flops"].to_numpy(float), ops["bytes_read"].to_numpy(float), ops["bytes_written"].to_numpy(float),
        peaks_for(ops["category"].to_numpy(), ops["dtype"].to_numpy(), unit, device),
        np.full(n, read_bw), np.full(n, write_bw), np.full(n, op_overhead(unit, device)))
    return pd.DataFrame({"compute_s": compute, "memory_s": memory, "overhead_s": total - np.maximum(compute, memory),
                         "duration_s": total})


def simulate(trace: Trace, system: System) -> Result:
    """Predict one step of `trace` on `system`; raises MemsimError if it does not fit."""
    placement = default_placement(trace, system)
    occ = occupancy(trace, placement)
    check_fit(occ, system, trace, placement)
    costs = price(trace, system)
    durations = costs["duration_s"].to_numpy()
    starts = np.empty(len(durations))
    ends = np.empty(len(durations))

    env = simpy.Environment()

    def compute_stream():
        for i, duration in enumerate(durations):
            starts[i] = env.now
            yield env.timeout(duration)
            ends[i] = env.now

    env.process(compute_stream())
    env.run()

    ops = trace.ops
    timeline = pd.DataFrame({
        "op_id": ops["op_id"], "name": ops["name"], "category": ops["category"], "scope": ops["scope"],
        "stream": "compute", "start_s": starts, "end_s": ends,
        "compute_s": costs["compute_s"], "memory_s": costs["memory_s"], "overhead_s": costs["overhead_s"],
        "bound": np.where(costs["compute_s"] >= costs["memory_s"], "compute", "memory"),
        "flops": ops["flops"], "bytes": ops["bytes_read"] + ops["bytes_written"],
    })
    access = trace.accesses
    moved = pd.Series(access["nbytes"].to_numpy(), index=placement[access["tensor_id"].to_numpy()])
    bytes_moved = {tier: float(total) for tier, total in moved.groupby(level=0).sum().items()}
    capacity = {tier: system.devices[tier.split(".")[0]].memories[tier.split(".")[1]].capacity
                for tier in occ.tiers}
    return Result(hardware=system.name, workload=dict(trace.meta), timeline=timeline, occupancy=occ,
                  capacity=capacity, bytes_moved=bytes_moved, tokens=int(trace.meta.get("tokens", 0)))
