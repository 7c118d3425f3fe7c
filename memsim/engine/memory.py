"""Capacity by op index: how full each tier gets from where tensors live (before any movement)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from memsim.trace.table import Trace, tensor_live_ranges


@dataclass
class Occupancy:
    """Bytes live in each tier after each op, and the peak."""

    tiers: list[str]
    live: np.ndarray        # shape (tiers, ops)
    peak: dict[str, float]
    peak_op: dict[str, int]
    peak_by_role: dict[str, dict[str, float]]


def occupancy(trace: Trace, placement: np.ndarray) -> Occupancy:
    start, end = tensor_live_ranges(trace)
    sizes = trace.tensors["nbytes"].to_numpy(dtype=float)
    roles = trace.tensors["role"].to_numpy()
    n_ops = max(len(trace.ops), 1)
    tiers = sorted(set(placement))
    live = np.zeros((len(tiers), n_ops))
    peak, peak_op, by_role = {}, {}, {}
    for row, tier in enumerate(tiers):
        here = placement == tier
        delta = np.zeros(n_ops + 1)
        np.add.at(delta, start[here], sizes[here])
        np.add.at(delta, end[here] + 1, -sizes[here])
        live[row] = np.cumsum(delta)[:n_ops]
        at = int(np.argmax(live[row]))
        peak[tier], peak_op[tier] = float(live[row, at]), at
        alive = here & (start <= at) & (end >= at)
        by_role[tier] = pd.Series(sizes[alive]).groupby(roles[alive]).sum().to_dict()
    return Occupancy(tiers, live, peak, peak_op, by_role)
