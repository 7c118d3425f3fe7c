"""Run a registered workload for real on this machine and compare memsim's prediction with it."""
from __future__ import annotations

import numpy as np
import pandas as pd

from memsim.validate.measure import check_device, single_thread

# Runs spread over several seconds, so that one of them finds the shared machine quiet.
RUNS = 25


def measure_workload(name: str, device: str, phase: str, batch: int, context: int, progress=None) -> pd.DataFrame:
    """The workload's ops traced in real mode RUNS times; each op keeps its fastest run (the
    slower ones measure other processes on a shared machine, as in memsim.validate.measure)."""
    from memsim.trace.workload import StepSpec, trace_workload

    check_device(device)
    spec = StepSpec(phase=phase, batch=batch, context=context, device=device, dtype="fp32" if device == "cpu" else None)
    runs = []
    with single_thread(device):
        for run in range(RUNS):
            if progress:
                progress(f"running {name} for real on {device} ({run + 1}/{RUNS})")
            runs.append(trace_workload(name, spec, mode="real").ops)
    ops = runs[0].copy()
    same_shape = all(len(other) == len(ops) and (other["name"].to_numpy() == ops["name"].to_numpy()).all()
                     for other in runs[1:])
    if same_shape:
        ops["measured_s"] = np.min(np.stack([other["measured_s"].to_numpy(float) for other in runs]), axis=0)
    ops = ops[np.isfinite(ops["measured_s"].to_numpy(float))].reset_index(drop=True)
    ops["label"] = ops["name"]
    ops["size"] = ops["bytes_read"] + ops["bytes_written"] + ops["flops"]
    return ops
