"""The one entry point the engine uses to price ops on a device.

price_ops returns, per op, compute_s (the arithmetic alone), memory_s (moving its bytes through
the unit's own memory tier, uncontended), overhead_s (fixed per-op cost) and duration_s (the
uncontended prediction). The engine turns memory_s into flows that can be slowed by contention.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from memsim.cost.roofline import (effective_bandwidth, main_compute_unit, op_overhead, peaks_for,
                                  roofline_times)
from memsim.hardware.schema import ComputeUnit, Device

COST_COLUMNS = ("compute_s", "memory_s", "overhead_s", "duration_s")


def price_ops(ops: pd.DataFrame, device: Device, unit: ComputeUnit | None = None) -> pd.DataFrame:
    """Price every op of a trace's ops table on `unit` (default: the device's main unit)."""
    unit = unit or main_compute_unit(device)
    tier = device.memories[unit.memory or device.default_memory]
    read_bw, write_bw = effective_bandwidth(tier, device)
    n = len(ops)
    compute, memory, total = roofline_times(
        ops["flops"].to_numpy(float), ops["bytes_read"].to_numpy(float), ops["bytes_written"].to_numpy(float),
        peaks_for(ops["category"].to_numpy(), ops["dtype"].to_numpy(), unit, device),
        np.full(n, read_bw), np.full(n, write_bw), np.full(n, op_overhead(unit, device)))
    return pd.DataFrame({"compute_s": compute, "memory_s": memory,
                         "overhead_s": total - np.maximum(compute, memory), "duration_s": total})
