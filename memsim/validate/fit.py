"""Fit a handful of global constants of one machine to measured op times.

The constants are those a user would tune by hand: the achieved fraction of the matrix peak per
dtype, and per op category present in the data the achieved fraction of memory bandwidth and
the fixed per-kernel cost, plus one compute/memory overlap loss, the share of a wave's memory
time a GEMM's first wave exposes and the share of a partial last wave it pays in full (where
the data has GEMMs), the cost of operand rows whose length is a multiple of a large power of
two (where its tensor-core GEMMs have rows of at least two such classes), on a CPU the host
time of wrapping a Python number into a tensor (where some ops pass numbers and others not) and
the rate of batched matmuls it runs as scalar loops (where the data has some), what
one thread block streams on its own per category of ops that say how many blocks they run (or
whose blocks the model counts: FlashAttention-2's KV-cache kernel) and, where the data
has fused attention kernels, the fraction of the GEMM rate they reach; where it has collectives
or sends, the efficiency and per-step latency of the peer link they cross (with the fixed cost
per call of each, collective and p2p, as their category's overhead). Never one per shape or
per op.
Bandwidth fractions are capped only by the datasheet peak: a device copy (half reads, half
writes) is not the fastest access pattern, and read-heavy kernels such as a residual add measure
above it. The fit minimises the mean absolute percentage error with Powell's method over the
logits of the fractions (so they stay in range), the logs of the overheads, of the block rate
and of the scalar-loop rate, the square root of the pitch cost and the angles of the squared
sines of the wave share and of the matrix efficiencies (fractions whose best value may be a
bound; see _sine_squared), from
fixed starting values and from the minimum of the squared log ratio, keeps the lower, and then
frees the wave share (held at whole waves until then) from there; so the same data gives
bit-identical constants.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from memsim.cost import MeasuredPowerState, kernels, price_ops
from memsim.cost.model import (LINK_CATEGORIES, block_bandwidth, load_alignment, peer_link, pitch_interleave,
                               runs_aten_cpu_flash, scalar_loop_flops, scalar_loop_gemms)
from memsim.cost.op_arrays import OpArrays
from memsim.cost.roofline import MATRIX_CATEGORIES, main_compute_unit
from memsim.hardware.schema import Calibration, ComputeUnit, Device, Link
from memsim.trace.ops import ROW_CATEGORIES
from memsim.validate.metrics import error_summary

MIN_OVERHEAD_S = 1e-7
MIN_FRACTION = 1e-12
# Where the unit states no per-block rate, the fit starts from what Vidur's one-block-per-token
# kernels stream on an A100 or H100 (6-12 GB/s).
DEFAULT_BLOCK_BANDWIDTH = 8e9
# Where a CPU's per-row cost of row-wise kernels is fitted, it starts from tens of ns a row.
DEFAULT_ROW_COST = 2e-8
# Scale of the pitch cost's search variable, so that a step of 1 moves it as much as a logit's.
PITCH_COST_SCALE = 10.0


class FittedMachine(NamedTuple):
    calibration: Calibration
    links: dict[str, Link]
    """Links whose constants the fit changed, by name (the peer link, where collectives were measured)."""


def calibration_half(sizes: pd.Series) -> np.ndarray:
    """Rows of every other distinct size (token count, M, elements): the half to fit on."""
    distinct = np.sort(sizes.unique())
    fit_sizes = set(distinct[::2])
    return sizes.isin(fit_sizes).to_numpy()


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return float(np.log(p / (1 - p)))


def _expit(x: float) -> float:
    """The fraction of a logit, never below MIN_FRACTION: a search can run a logit far below 0,
    where 1 / (1 + exp(-x)) overflows to exactly 0, which no fraction of the schema may be."""
    with np.errstate(over="ignore"):
        return float(max(1.0 / (1.0 + np.exp(-x)), MIN_FRACTION))


# A cost that may well be 0 is searched as a square root: a logit or log flattens out towards 0,
# where Powell's line searches can stall and never come back; a square is smooth through it.
# The pitch cost is a fraction; a time is searched in square roots of microseconds.
def _root(cost: float) -> float:
    return float(np.sqrt(cost) * PITCH_COST_SCALE)


def _square(x: float) -> float:
    return float(min(1.0, (x / PITCH_COST_SCALE) ** 2))


def _root_us(seconds: float) -> float:
    return float(np.sqrt(seconds / 1e-6))


def _square_us(x: float) -> float:
    return float(x * x * 1e-6)


# A fraction whose best value may sit at either bound is searched as the angle of its sine
# squared: both bounds are reached at finite, smooth points, where a logit flattens out short of
# them and clipping leaves flat ground that stalls the line searches.
def _sine_squared(x: float) -> float:
    return float(np.sin(x) ** 2)


def _angle(p: float) -> float:
    return float(np.arcsin(np.sqrt(p)))


def _pitch_classes(ops: OpArrays, device: Device, unit: ComputeUnit) -> int:
    """Distinct row-pitch conflict classes (doublings) among the GEMMs that pay them. With one
    class the cost is indistinguishable from the matrix efficiency, so it is fitted from two."""
    gemms = np.flatnonzero((ops.category == "gemm") & (ops.k > 0))
    interleave = pitch_interleave(load_alignment(ops.dtype[gemms], unit),
                                  device.memories[unit.memory or device.default_memory])
    doublings = kernels.pitch_doublings(ops.k[gemms], ops.elem_bytes[gemms], interleave)
    return np.unique(doublings[interleave > 0]).size


def fit_calibration(ops: pd.DataFrame, device: Device, source: str, links: dict[str, Link] | None = None,
                    fitted_on: str = "", progress=None) -> FittedMachine:
    """Calibration of `device` (and of its peer link) that best predicts ops.measured_s (priced with price_ops)."""
    links = dict(links or {})
    # an op timed at 0 or not at all says nothing of its cost, and one such op would make every
    # relative error infinite and hold the whole search where it starts
    timed = np.isfinite(ops["measured_s"].to_numpy(float)) & (ops["measured_s"].to_numpy(float) > 0)
    if not timed.all():
        if progress:
            progress(f"fit: left out {int((~timed).sum())} op(s) timed at 0 or not at all")
        ops = ops[timed].reset_index(drop=True)
    arrays = OpArrays.from_table(ops)  # read once, priced thousands of times
    unit = main_compute_unit(device)
    base = device.calibration
    # fused attention has its own fraction of the GEMM rate, so GEMM-like ops alone set the latter
    gemm_like = [category for category in MATRIX_CATEGORIES if category != "attention"]
    dtypes = sorted(ops.loc[ops["category"].isin(gemm_like), "dtype"].unique())
    categories = sorted(ops["category"].unique())
    # categories priced at a link's rate rather than the memory tier's have no tier bandwidth fraction
    streamed = [category for category in categories if category not in LINK_CATEGORIES]
    start = [_angle((base.matrix_efficiency.get(d) if base and d in base.matrix_efficiency else unit.matrix_efficiency))
             for d in dtypes]
    start += [_logit(0.9) for _ in streamed]
    start.append(_logit(0.3))
    overheads = slice(len(start), len(start) + len(categories))
    start += [float(np.log(max(unit.op_overhead, 1e-6))) for _ in categories]
    if dtypes:  # the first GEMM wave's exposed share and the wave quantisation only on GEMM data
        exposure_at = len(start)
        start += [_logit(0.9), np.pi / 2]  # from the tile/wave model's whole last wave
    with_pitch = _pitch_classes(arrays, device, unit) >= 2
    if with_pitch:
        pitch_at = len(start)
        start.append(_root(0.01))
    # what one thread block streams, per category of ops that say how many blocks they run
    # (and FlashAttention-2's KV-cache kernel, whose blocks the attention model counts itself)
    # and ATen's CPU flash attention, whose tasks the attention model counts likewise)
    appends = arrays.column("appends_kv") > 0
    cpu_flash = (arrays.category == "attention") & runs_aten_cpu_flash(appends, unit)
    block_categories = sorted(set(arrays.category[(arrays.column("blocks") > 0) | appends | cpu_flash]))
    block_rates = slice(len(start), len(start) + len(block_categories))
    start += [float(np.log(block_bandwidth(category, unit, device) or DEFAULT_BLOCK_BANDWIDTH))
              for category in block_categories]
    # the host time of wrapping a Python number into a tensor, where some ops pass numbers and
    # some not: part of an op's time on a CPU only (a GPU kernel's time is the device's)
    wrapped = arrays.column("wrapped_scalars")
    with_wrapped = device.kind == "cpu" and bool((wrapped > 0).any() and (wrapped == 0).any())
    if with_wrapped:
        wrapped_at = len(start)
        start.append(_root_us(unit.op_overhead / 4))
    # a CPU's time per row of row-wise kernels, per category whose ops reduce rows of more than
    # one count (else it is indistinguishable from the category's fixed cost)
    rows = arrays.column("rows")
    row_categories = sorted(category for category in ROW_CATEGORIES
                            if device.kind == "cpu" and np.unique(rows[arrays.category == category]).size >= 2)
    row_costs = slice(len(start), len(start) + len(row_categories))
    start += [float(np.log(DEFAULT_ROW_COST)) for _ in row_categories]
    # the rate of batched matmuls the framework runs as scalar loops, where the data has some
    loops = scalar_loop_gemms({"batch": arrays.batch, "m": arrays.m, "n": arrays.n, "k": arrays.k}, unit, device)
    with_loops = bool((loops & (arrays.category == "gemm")).any())
    if with_loops:
        loops_at = len(start)
        start.append(float(np.log(scalar_loop_flops(unit, device))))
    with_attention = "attention" in categories  # the attention rate is fitted only on attention data
    if with_attention:
        attention_at = len(start)
        start.append(_logit(unit.attention_efficiency))
    # only a link between the devices' copies is fitted: a host link's constants price host copies
    link = peer_link(links.values()) if set(categories) & set(LINK_CATEGORIES) else None
    link = link if link is not None and link.joins_copies else None
    link_name = next((name for name, candidate in links.items() if candidate is link), None)
    if link is not None:
        link_at = len(start)
        start += [_logit(link.efficiency), float(np.log(max(link.latency, 1e-7)))]
    measured = ops["measured_s"].to_numpy(float)
    power_state = MeasuredPowerState(ops, device)  # as the measurement ran: constants of the uncapped GPU

    def calibration(x) -> Calibration:
        return Calibration(
            source=source, matrix_efficiency={d: max(_sine_squared(v), 1e-4) for d, v in zip(dtypes, x)},
            bandwidth_efficiency={c: _expit(v) for c, v in zip(streamed, x[len(dtypes):])},
            overlap_loss=_expit(x[len(dtypes) + len(streamed)]),
            category_overhead={c: max(float(np.exp(v)), MIN_OVERHEAD_S) for c, v in zip(categories, x[overheads])},
            attention_efficiency=_expit(x[attention_at]) if with_attention else None,
            first_wave_exposure=_expit(x[exposure_at]) if dtypes else 1.0,
            wave_quantization=_sine_squared(x[exposure_at + 1]) if dtypes else 1.0,
            pitch_conflict_cost=_square(x[pitch_at]) if with_pitch else 0.0,
            wrapped_scalar_cost=_square_us(x[wrapped_at]) if with_wrapped else 0.0,
            row_cost={c: float(np.exp(v)) for c, v in zip(row_categories, x[row_costs])},
            scalar_loop_flops=float(np.exp(x[loops_at])) if with_loops else None,
            block_bandwidth={c: float(np.exp(v)) for c, v in zip(block_categories, x[block_rates])},
            dispatch_overhead=base.dispatch_overhead if base else None,
            warm_overhead=base.warm_overhead if base else {}, kind_footprint=base.kind_footprint if base else 0.0,
            fitted_on=fitted_on)

    def fitted_links(x) -> dict[str, Link]:
        if link is None:
            return {}
        return {link_name: link.model_copy(update={
            "efficiency": _expit(x[link_at]), "latency": float(np.exp(x[link_at + 1])),
            "source": f"efficiency and latency fitted to {fitted_on or source}"})}

    def predict(x) -> np.ndarray:
        calibrated = device.model_copy(update={"calibration": calibration(x)})
        costs = price_ops(arrays, calibrated, links={**links, **fitted_links(x)}.values())
        return power_state.apply(costs)["duration_s"].to_numpy()

    def loss(x) -> float:
        return float(np.mean(np.abs(predict(x) / measured - 1.0)))

    # MAPE has a kink wherever a prediction meets its measurement, and Powell's line searches can
    # stall on such kinks where two constants trade off (a link's per-step latency against a
    # call's fixed cost). So MAPE is also minimised from where the smooth squared log ratio is
    # least, and the lower of the two minima is kept.
    def smooth_loss(x) -> float:
        return float(np.mean(np.log(predict(x) / measured) ** 2))

    # The tile/wave model's whole last waves first: freed from the start, the wave share trades
    # off against the first wave's exposure and the searches settle in a worse minimum than the
    # one with whole waves. So the three searches hold it, and a fourth frees it from their best.
    free = np.ones(len(start), bool)
    if dtypes:
        free[exposure_at + 1] = False

    def search(objective, x0, step: str, mask) -> tuple[np.ndarray, float]:
        def placed(values):
            x = np.array(x0, float)
            x[mask] = values
            return x

        found = minimize(lambda values: objective(placed(values)), x0[mask], method="Powell",
                         options={"maxiter": 50 * int(mask.sum()), "xtol": 1e-3, "ftol": 1e-5})
        x = placed(found.x)
        error = loss(x)
        if progress:
            progress(f"fit {step}: MAPE {error:.1%}")
        return x, error

    passes = 4 if dtypes else 3
    near, _ = search(smooth_loss, np.array(start), f"1/{passes} (squared log ratio)", free)
    result, error = min((search(loss, np.array(start), f"2/{passes} (MAPE from the fixed start)", free),
                         search(loss, near, f"3/{passes} (MAPE from the log-ratio minimum)", free)),
                        key=lambda found: found[1])
    if dtypes:
        freed, freed_error = search(loss, result, "4/4 (MAPE with the wave share free)", np.ones(len(start), bool))
        result = freed if freed_error < error else result
    summary = error_summary(ops.assign(predicted_s=predict(result)))
    residuals = {f"{name}_mape": round(row["mape"], 6) for name, row in summary.items()}
    return FittedMachine(calibration(result).model_copy(update={"residuals": residuals}), fitted_links(result))
