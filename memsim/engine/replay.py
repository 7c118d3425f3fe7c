"""Replay a trace on a System in simpy: one compute stream, ops priced by the roofline."""
from __future__ import annotations

import numpy as np
import pandas as pd
import simpy

from memsim.cost import price_ops
from memsim.engine.memory import check_fit, default_placement, occupancy
from memsim.engine.result import Result
from memsim.hardware.schema import System
from memsim.trace.table import Trace


def simulate(trace: Trace, system: System) -> Result:
    """Predict one step of `trace` on `system`; raises MemsimError if it does not fit."""
    placement = default_placement(trace, system)
    occ = occupancy(trace, placement)
    check_fit(occ, system, trace, placement)
    costs = price_ops(trace.ops, system.device)
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
