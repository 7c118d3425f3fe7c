"""Run a registered workload for real on this machine and compare memsim's prediction with it."""
from __future__ import annotations

import numpy as np
import pandas as pd

from memsim.validate.measure import MAX_ROUNDS, REPEATS, check_device, settled, single_thread, timed_ops


def measure_workload(name: str, device: str, phase: str, batch: int, context: int, progress=None,
                     overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """The workload's ops traced in real mode, each keeping its fastest run (the slower ones
    measure other processes on a shared machine, as in memsim.validate.measure). Runs come in
    rounds of REPEATS until the fastest times settle, by the rule the calibration's
    micro-benchmarks follow: the fastest of N runs falls as N grows while neighbours load the
    machine (llama-tiny's summed fastest times fell 3-6% from 25 runs to 100 in one busy
    stretch of a shared 2-vCPU VM, not at all in a quiet one), so measurement and calibration
    stop by the same rule."""
    from memsim.trace.workload import StepSpec, build_step, trace_workload

    check_device(device)
    spec = StepSpec(phase=phase, batch=batch, context=context, device=device, dtype="fp32" if device == "cpu" else None)

    def one_run():  # a fresh model each run: a decode step appends to its cache
        if device == "cuda":  # each kernel, as the profiler timed it
            _, step = build_step(name, spec, overrides)
            return timed_ops(step.run, device, warmup=1)
        return trace_workload(name, spec, overrides, mode="real").ops

    ops, fastest, same_shape = None, [], True
    with single_thread(device):
        while len(fastest) < MAX_ROUNDS and not settled(fastest):
            if progress:
                progress(f"running {name} for real on {device} (round {len(fastest) + 1}, at most {MAX_ROUNDS})")
            for _ in range(REPEATS):
                run = one_run()
                if ops is None:
                    ops, best = run, run["measured_s"].to_numpy(float)
                elif len(run) == len(ops) and (run["name"].to_numpy() == ops["name"].to_numpy()).all():
                    best = np.fmin(best, run["measured_s"].to_numpy(float))
                else:  # the runs differ op for op: the first run's times stand
                    same_shape, best = False, ops["measured_s"].to_numpy(float)
                    break
            fastest.append(pd.Series(best))
            if not same_shape:
                break
    ops = ops.assign(measured_s=best)
    seconds = ops["measured_s"].to_numpy(float)
    ops = ops[np.isfinite(seconds) & (seconds > 0)].reset_index(drop=True)  # a time of 0 has no relative error
    ops["label"] = ops["name"]
    ops["size"] = ops["bytes_read"] + ops["bytes_written"] + ops["flops"]
    return ops
