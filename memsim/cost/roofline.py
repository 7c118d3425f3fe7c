"""The roofline cost of ops: max(compute time, memory time) plus a fixed per-op overhead.

Pure functions over arrays (one entry per op), compiled with numba so that one call prices a
whole trace, or one op on thousands of hardware variants. The hardware enters only as arrays of
rates, so this module knows nothing of traces or of the simulator.
"""
from __future__ import annotations

import numba
import numpy as np

from memsim.hardware.schema import ComputeUnit, Device, MemoryTier

MATRIX_CATEGORIES = ("gemm", "attention")
# A dtype without its own peak runs at the rate of the nearest one a unit has.
DTYPE_FALLBACK = {"fp16": ("bf16", "fp32"), "bf16": ("fp16", "fp32"), "fp8": ("int8", "bf16", "fp16"),
                  "int8": ("fp8", "bf16", "fp16"), "tf32": ("fp32",), "fp32": ("tf32",), "fp64": ("fp32",)}


@numba.njit(cache=True)
def roofline_times(flops, bytes_read, bytes_written, peak_flops, read_bw, write_bw, overhead_s):
    """Per op: (compute seconds, memory seconds, total seconds)."""
    n = flops.shape[0]
    compute = np.empty(n)
    memory = np.empty(n)
    total = np.empty(n)
    for i in range(n):
        c = flops[i] / peak_flops[i] if peak_flops[i] > 0.0 else 0.0
        m = bytes_read[i] / read_bw[i] + bytes_written[i] / write_bw[i]
        compute[i] = c
        memory[i] = m
        total[i] = max(c, m) + overhead_s[i]
    return compute, memory, total


def _rate(table: dict[str, float], dtype: str) -> float:
    if dtype in table:
        return table[dtype]
    for other in DTYPE_FALLBACK.get(dtype, ()):
        if other in table:
            return table[other]
    return table.get("fp32", max(table.values(), default=0.0))


def effective_peak(unit: ComputeUnit, device: Device, dtype: str, matrix: bool) -> float:
    """Achievable FLOP/s of `unit` for one dtype: the peak times the (calibrated) efficiency."""
    calibration = device.calibration
    if matrix and unit.matrix_flops:
        efficiency = unit.matrix_efficiency
        if calibration is not None and calibration.matrix_efficiency:
            efficiency = _rate(dict(calibration.matrix_efficiency), dtype) or efficiency
        return _rate(unit.matrix_flops, dtype) * efficiency
    efficiency = unit.vector_efficiency
    if calibration is not None and calibration.vector_efficiency is not None:
        efficiency = calibration.vector_efficiency
    table = unit.vector_flops or unit.matrix_flops
    return _rate(table, dtype) * efficiency


def effective_bandwidth(tier: MemoryTier, device: Device) -> tuple[float, float]:
    """Achievable (read, write) bytes/s of a tier on streaming access."""
    efficiency = tier.efficiency
    if device.calibration is not None and device.calibration.memory_efficiency is not None:
        efficiency = device.calibration.memory_efficiency
    return tier.read_bandwidth * efficiency, tier.write_bandwidth * efficiency


def op_overhead(unit: ComputeUnit, device: Device) -> float:
    if device.calibration is not None and device.calibration.launch_overhead is not None:
        return device.calibration.launch_overhead
    return unit.op_overhead


def main_compute_unit(device: Device) -> ComputeUnit:
    """The unit that runs ops unless a plan maps them elsewhere: the first that is not PIM."""
    units = [unit for unit in device.compute.values() if unit.kind != "pim"] or list(device.compute.values())
    if not units:
        raise ValueError("device has no compute units")
    return units[0]


def peaks_for(categories: np.ndarray, dtypes: np.ndarray, unit: ComputeUnit, device: Device) -> np.ndarray:
    """Achievable FLOP/s for each op, by its category (matrix or vector work) and dtype."""
    peaks = np.empty(len(categories))
    cache: dict[tuple[bool, str], float] = {}
    for i, (category, dtype) in enumerate(zip(categories, dtypes)):
        key = (category in MATRIX_CATEGORIES, dtype)
        if key not in cache:
            cache[key] = effective_peak(unit, device, dtype, key[0])
        peaks[i] = cache[key]
    return peaks
