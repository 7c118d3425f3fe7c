"""Memory over the step, from each tensor's lifetime: live bytes after every op, by role.

A tensor is live from the op that first writes it (from the start, for tensors that existed
before the step) to the op that last uses it (to the end, for tensors still referenced after
the step); see memsim.trace.table.tensor_live_ranges. This is what an allocator that frees
each tensor right after its last use holds, which is what torch's caching allocator reports
as allocated memory (torch.cuda.max_memory_allocated).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from memsim.trace.table import Trace, tensor_live_ranges


def live_bytes_by_role(trace: Trace) -> pd.DataFrame:
    """Bytes live after each op (rows, indexed by op_id), one column per tensor role."""
    start, end = tensor_live_ranges(trace)
    sizes = trace.tensors["nbytes"].to_numpy(dtype=float)
    roles = trace.tensors["role"].to_numpy()
    n_ops = max(len(trace.ops), 1)
    columns = {}
    for role in sorted(set(roles)):
        here = roles == role
        delta = np.zeros(n_ops + 1)
        np.add.at(delta, start[here], sizes[here])
        np.add.at(delta, end[here] + 1, -sizes[here])
        columns[role] = np.cumsum(delta)[:n_ops]
    return pd.DataFrame(columns, index=pd.RangeIndex(n_ops, name="op_id"))


def peak_memory(trace: Trace) -> dict:
    """The peak of all live bytes, the op where it happens, what is live there by role, and
    each role's own peak (which may fall at a different op)."""
    live = live_bytes_by_role(trace)
    total = live.sum(axis=1)
    at = int(total.to_numpy().argmax()) if len(total) else 0
    return {
        "peak_bytes": float(total.iloc[at]) if len(total) else 0.0,
        "peak_op": at,
        "at_peak_by_role": {role: float(live[role].iloc[at]) for role in live.columns},
        "peak_by_role": {role: float(live[role].max()) for role in live.columns},
    }
