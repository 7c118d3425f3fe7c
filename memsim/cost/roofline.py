"""Achievable rates of a device: datasheet peaks times datasheet or calibrated efficiencies.

The cost models (memsim.cost.kernels) see hardware only as arrays of these rates, so this is
the one place where a hardware description and its calibration become numbers.
"""
from __future__ import annotations

import numpy as np

from memsim.hardware.schema import ComputeUnit, Device, MemoryTier

MATRIX_CATEGORIES = ("gemm", "conv", "attention", "chunked_scan")
# A dtype without its own peak runs at the rate of the nearest one a unit has.
# fp32 has none on matrix units: a GPU without an fp32 matrix rate runs fp32 matmuls on its vector
# units (PyTorch's default precision; TF32 is a dtype of its own, 'tf32').
DTYPE_FALLBACK = {"fp16": ("bf16", "fp32"), "bf16": ("fp16", "fp32"), "fp8": ("int8", "bf16", "fp16"),
                  "int8": ("fp8", "bf16", "fp16"), "tf32": ("fp32",), "fp64": ("fp32",)}


def _rate(table: dict[str, float], dtype: str) -> float:
    if dtype in table:
        return table[dtype]
    for other in DTYPE_FALLBACK.get(dtype, ()):
        if other in table:
            return table[other]
    return table.get("fp32", max(table.values(), default=0.0))


def _has_rate(table: dict[str, float], dtype: str) -> bool:
    return dtype in table or any(other in table for other in DTYPE_FALLBACK.get(dtype, ()))


def on_matrix_units(unit: ComputeUnit, dtype: str) -> bool:
    """Whether a matmul in `dtype` runs on the unit's matrix units (else on its vector units)."""
    return _has_rate(unit.matrix_flops, dtype)


def effective_peak(unit: ComputeUnit, device: Device, dtype: str, matrix: bool) -> float:
    """Achievable FLOP/s of `unit` for one dtype: the peak times the (calibrated) efficiency. A
    matrix op in a dtype the matrix units lack (fp32 on a GPU) runs on the vector units."""
    calibration = device.calibration
    if matrix and on_matrix_units(unit, dtype):
        efficiency = unit.matrix_efficiency
        if calibration is not None and calibration.matrix_efficiency:
            efficiency = _rate(dict(calibration.matrix_efficiency), dtype) or efficiency
        return _rate(unit.matrix_flops, dtype) * efficiency
    efficiency = unit.vector_efficiency
    if calibration is not None and calibration.vector_efficiency is not None:
        efficiency = calibration.vector_efficiency
    table = unit.vector_flops or unit.matrix_flops
    return _rate(table, dtype) * efficiency


def attention_fraction(unit: ComputeUnit, device: Device) -> float:
    """Fraction of the GEMM rate a fused attention kernel reaches: calibrated, else datasheet."""
    calibration = device.calibration
    if calibration is not None and calibration.attention_efficiency is not None:
        return calibration.attention_efficiency
    return unit.attention_efficiency


def bandwidth_efficiency(tier: MemoryTier, device: Device, category: str) -> float:
    """Achieved fraction of a tier's bandwidth for one op category (calibrated where known)."""
    calibration = device.calibration
    if calibration is None:
        return tier.efficiency
    return _for_category(calibration.bandwidth_efficiency, category, calibration.memory_efficiency, tier.efficiency)


def effective_bandwidth(tier: MemoryTier, device: Device) -> tuple[float, float]:
    """Achievable (read, write) bytes/s of a tier on streaming access, whatever the op: the rate a
    channel of the engine offers to the flows that share it."""
    calibration = device.calibration
    general = calibration.memory_efficiency if calibration is not None else None
    efficiency = general if general is not None else tier.efficiency
    return tier.read_bandwidth * efficiency, tier.write_bandwidth * efficiency


def op_overhead(unit: ComputeUnit, device: Device, category: str = "") -> float:
    """Fixed per-op cost: calibrated for the category, else calibrated, else the datasheet's."""
    calibration = device.calibration
    if calibration is None:
        return unit.op_overhead
    return _for_category(calibration.category_overhead, category, calibration.launch_overhead, unit.op_overhead)


# A category a calibration did not measure takes the constant of the one it is a variant of: a
# fused attention kernel is a tiled matrix kernel like a GEMM (same launch, prologue, epilogue),
# and so is a convolution; a factory op (allocate, then fill) runs a fill kernel.
CATEGORY_FALLBACK = {"strided": "elementwise", "factory": "elementwise", "attention": "gemm", "conv": "gemm"}


def _for_category(per_category: dict, category: str, general: float | None, datasheet: float) -> float:
    """A calibrated constant: the category's own (or that of the category it varies), else the
    machine-wide one, else the datasheet's."""
    for candidate in (category, CATEGORY_FALLBACK.get(category)):
        if candidate in per_category:
            return per_category[candidate]
    return general if general is not None else datasheet


def main_compute_unit(device: Device) -> ComputeUnit:
    """The unit that runs ops unless a plan maps them elsewhere: the first that is not PIM."""
    units = [unit for unit in device.compute.values() if unit.kind != "pim"] or list(device.compute.values())
    if not units:
        raise ValueError("device has no compute units")
    return units[0]


def per_op_rates(kinds, codes: np.ndarray, unit: ComputeUnit, device: Device,
                 tier: MemoryTier) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Achievable FLOP/s, read bandwidth and fixed overhead of each op, by its kind: `codes`
    index the distinct (category, dtype) `kinds` (matrix or not, fused attention), each computed once."""
    table = np.empty((len(kinds), 3))
    for index, (category, dtype) in enumerate(kinds):
        peak = effective_peak(unit, device, dtype, category in MATRIX_CATEGORIES)
        if category == "attention":
            peak *= attention_fraction(unit, device)
        table[index] = (peak,
                        tier.read_bandwidth * bandwidth_efficiency(tier, device, category),
                        op_overhead(unit, device, category))
    rates = table[codes] if len(codes) else np.empty((0, 3))
    return rates[:, 0], rates[:, 1], rates[:, 2]
