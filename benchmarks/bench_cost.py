"""How fast the cost models price ops: compiled kernels against their own Python source, one
GEMM priced on many hardware variants in one call (target: 1e5 variants in under 0.1 s), and a
measured file's ops priced as a calibration prices them, thousands of times with different
constants: from the table each time, against from the table read once into OpArrays."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from memsim.cost import kernels, price_ops
from memsim.cost.op_arrays import OpArrays
from memsim.hardware import load_system
from memsim.validate.readers import gemm_row, op_row

VARIANTS = 100_000
TARGET_S = 0.1


def gemm_inputs(count: int, rng: np.random.Generator):
    """One op per entry; the hardware rates vary per entry (a sweep of hardware variants)."""
    shape = [np.full(count, v) for v in (1.0, 4096.0, 4096.0, 4096.0, 1e8)]
    hardware = [rng.uniform(1e14, 1e15, count), rng.integers(32, 160, count).astype(float),
                rng.uniform(1e12, 5e12, count), np.full(count, 5e-6), np.full(count, 0.3), np.full(count, 0.8),
                np.full(count, 1.0), np.full(count, 2.0), rng.uniform(5e12, 12e12, count)]
    return shape + hardware


def timed(function, arguments) -> float:
    started = time.perf_counter()
    function(*arguments)
    return time.perf_counter() - started


def measured_like_table() -> pd.DataFrame:
    """5,000 ops shaped like a Vidur layer profile: projections, norms and one-block-per-token
    kernels over a range of token counts."""
    rows = []
    for tokens in range(8, 8 * 850, 8):
        rows += [gemm_row("up_proj", "fp16", 1, tokens, 11008, 4096, 0.0, tokens),
                 gemm_row("down_proj", "fp16", 1, tokens, 4096, 11008, 0.0, tokens),
                 op_row("norm", "norm", "fp16", 0, tokens * 8192, tokens * 8192, 0.0, tokens),
                 op_row("rope", "strided", "fp16", 0, tokens * 8192, tokens * 8192, 0.0, tokens,
                        attrs={"blocks": tokens}),
                 op_row("act", "strided", "fp16", 0, tokens * 44032, tokens * 22016, 0.0, tokens,
                        attrs={"blocks": tokens}),
                 op_row("add", "elementwise", "fp16", 0, tokens * 16384, tokens * 8192, 0.0, tokens,
                        attrs={"kernels": 1}, reread=tokens * 8192)]
    return pd.DataFrame(rows[:5000])


def calibration_pricing() -> None:
    table = measured_like_table()
    system = load_system("nvidia-h100-sxm")
    repeats = 50
    arrays = OpArrays.from_table(table)
    price_ops(arrays, system.device)  # compile (or load the cache) first
    started = time.perf_counter()
    for _ in range(repeats):
        price_ops(table, system.device)
    from_table = (time.perf_counter() - started) / repeats
    started = time.perf_counter()
    for _ in range(repeats):
        price_ops(arrays, system.device)
    from_arrays = (time.perf_counter() - started) / repeats
    print(f"price_ops of {len(table):,} measured ops: {from_table * 1e3:.1f} ms from the table, "
          f"{from_arrays * 1e3:.1f} ms from OpArrays read once ({from_table / from_arrays:.1f}x faster per "
          f"calibration step)")


def main() -> None:
    rng = np.random.default_rng(0)
    kernels.gemm_times(*gemm_inputs(10, rng))  # compile (or load the cache) first
    compiled = timed(kernels.gemm_times, gemm_inputs(VARIANTS, rng))
    sample = 2_000
    python = timed(kernels.gemm_times.py_func, gemm_inputs(sample, rng)) * VARIANTS / sample
    print(f"gemm_times on {VARIANTS:,} hardware variants: {compiled * 1e3:.1f} ms "
          f"({compiled / TARGET_S:.2f} of the {TARGET_S * 1e3:.0f} ms target) {'OK' if compiled < TARGET_S else 'TOO SLOW'}; "
          f"{python / compiled:.0f}x faster than the same code in plain Python")
    calibration_pricing()


if __name__ == "__main__":
    main()
