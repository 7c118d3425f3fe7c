"""Capacity over the step: which tier each tensor lives in and how full each tier gets."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from memsim import units
from memsim.errors import MemsimError
from memsim.hardware.schema import System
from memsim.trace.table import Trace, tensor_live_ranges


@dataclass
class Occupancy:
    """Bytes live in each tier after each op, and the peak."""

    tiers: list[str]
    live: np.ndarray        # shape (tiers, ops)
    peak: dict[str, float]
    peak_op: dict[str, int]
    peak_by_role: dict[str, dict[str, float]]


def default_placement(trace: Trace, system: System) -> np.ndarray:
    """Every tensor in the main device's default memory, as 'device.memory' names."""
    tier = f"{system.main_device}.{system.device.default_memory}"
    return np.full(len(trace.tensors), tier, dtype=object)


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


def check_fit(occ: Occupancy, system: System, trace: Trace, placement: np.ndarray) -> None:
    """Stop with a clear message when a tier cannot hold what lives in it at the peak."""
    for tier, needed in occ.peak.items():
        device, memory = tier.split(".", 1)
        capacity = system.devices[device].memories[memory].capacity
        if needed > capacity:
            roles = ", ".join(f"{role} {units.format_bytes(size)}"
                              for role, size in sorted(occ.peak_by_role[tier].items(), key=lambda kv: -kv[1]))
            raise MemsimError(
                f"does not fit: {tier} holds {units.format_bytes(capacity)} but the step needs "
                f"{units.format_bytes(needed)} at its peak (op {occ.peak_op[tier]}: {roles}); "
                f"use a smaller batch or context, or a system with more memory")
