"""How fast the cost models price ops: compiled kernels against their own Python source, and
one GEMM priced on many hardware variants in one call (target: 1e5 variants in under 0.1 s)."""
from __future__ import annotations

import time

import numpy as np

from memsim.cost import kernels

VARIANTS = 100_000
TARGET_S = 0.1


def gemm_inputs(count: int, rng: np.random.Generator):
    """One op per entry; the hardware rates vary per entry (a sweep of hardware variants)."""
    shape = [np.full(count, v) for v in (1.0, 4096.0, 4096.0, 4096.0, 1e8)]
    hardware = [rng.uniform(1e14, 1e15, count), rng.integers(32, 160, count).astype(float),
                rng.uniform(1e12, 5e12, count), np.full(count, 5e-6), np.full(count, 0.3), np.full(count, 0.8),
                np.full(count, 1.0)]
    return shape + hardware


def timed(function, arguments) -> float:
    started = time.perf_counter()
    function(*arguments)
    return time.perf_counter() - started


def main() -> None:
    rng = np.random.default_rng(0)
    kernels.gemm_times(*gemm_inputs(10, rng))  # compile (or load the cache) first
    compiled = timed(kernels.gemm_times, gemm_inputs(VARIANTS, rng))
    sample = 2_000
    python = timed(kernels.gemm_times.py_func, gemm_inputs(sample, rng)) * VARIANTS / sample
    print(f"gemm_times on {VARIANTS:,} hardware variants: {compiled * 1e3:.1f} ms "
          f"({compiled / TARGET_S:.2f} of the {TARGET_S * 1e3:.0f} ms target) {'OK' if compiled < TARGET_S else 'TOO SLOW'}; "
          f"{python / compiled:.0f}x faster than the same code in plain Python")


if __name__ == "__main__":
    main()
