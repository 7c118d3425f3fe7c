"""Fit a handful of global constants of one machine to measured op times.

The constants are those a user would tune by hand: the achieved fraction of the matrix peak per
dtype, and per op category present in the data the achieved fraction of memory bandwidth and
the fixed per-kernel cost, plus one compute/memory overlap loss and, where the data has fused
attention kernels, the fraction of the GEMM rate they reach. Never one per shape or per op.
Bandwidth fractions are capped only by the datasheet peak: a device copy (half reads, half
writes) is not the fastest access pattern, and read-heavy kernels such as a residual add measure
above it. The fit minimises the mean absolute percentage error with Powell's method
over the logits of the fractions (so they stay in range) and the logs of the overheads; it
starts from fixed values, so the same data gives bit-identical constants.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from memsim.cost import price_ops
from memsim.cost.roofline import MATRIX_CATEGORIES, main_compute_unit
from memsim.hardware.schema import Calibration, Device, Link
from memsim.validate.metrics import error_summary

MIN_OVERHEAD_S = 1e-7


def calibration_half(sizes: pd.Series) -> np.ndarray:
    """Rows of every other distinct size (token count, M, elements): the half to fit on."""
    distinct = np.sort(sizes.unique())
    fit_sizes = set(distinct[::2])
    return sizes.isin(fit_sizes).to_numpy()


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return float(np.log(p / (1 - p)))


def _expit(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def fit_calibration(ops: pd.DataFrame, device: Device, source: str, links: list[Link] = (),
                    fitted_on: str = "") -> Calibration:
    """Calibration of `device` that best predicts ops.measured_s (priced with price_ops)."""
    unit = main_compute_unit(device)
    base = device.calibration
    # fused attention has its own fraction of the GEMM rate, so GEMM-like ops alone set the latter
    gemm_like = [category for category in MATRIX_CATEGORIES if category != "attention"]
    dtypes = sorted(ops.loc[ops["category"].isin(gemm_like), "dtype"].unique())
    categories = sorted(ops["category"].unique())
    start = [_logit((base.matrix_efficiency.get(d) if base and d in base.matrix_efficiency else unit.matrix_efficiency))
             for d in dtypes]
    start += [_logit(0.9) for _ in categories]
    start.append(_logit(0.3))
    start += [float(np.log(max(unit.op_overhead, 1e-6))) for _ in categories]
    with_attention = "attention" in categories  # the attention rate is fitted only on attention data
    if with_attention:
        start.append(_logit(unit.attention_efficiency))
    overheads = slice(len(dtypes) + len(categories) + 1, len(dtypes) + 2 * len(categories) + 1)
    measured = ops["measured_s"].to_numpy(float)

    def calibration(x) -> Calibration:
        return Calibration(
            source=source, matrix_efficiency={d: _expit(v) for d, v in zip(dtypes, x)},
            bandwidth_efficiency={c: _expit(v) for c, v in zip(categories, x[len(dtypes):])},
            overlap_loss=_expit(x[len(dtypes) + len(categories)]),
            category_overhead={c: max(float(np.exp(v)), MIN_OVERHEAD_S) for c, v in zip(categories, x[overheads])},
            attention_efficiency=_expit(x[-1]) if with_attention else None,
            dispatch_overhead=base.dispatch_overhead if base else None, fitted_on=fitted_on)

    def loss(x) -> float:
        predicted = price_ops(ops, device.model_copy(update={"calibration": calibration(x)}), links=links)
        return float(np.mean(np.abs(predicted["duration_s"].to_numpy() / measured - 1.0)))

    result = minimize(loss, np.array(start), method="Powell",
                      options={"maxiter": 50 * len(start), "xtol": 1e-3, "ftol": 1e-5})
    fitted = calibration(result.x)
    predicted = price_ops(ops, device.model_copy(update={"calibration": fitted}), links=links)["duration_s"]
    summary = error_summary(ops.assign(predicted_s=predicted.to_numpy()))
    residuals = {f"{name}_mape": round(row["mape"], 6) for name, row in summary.items()}
    return fitted.model_copy(update={"residuals": residuals})
