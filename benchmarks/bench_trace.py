"""How long tracing a 7B model takes on meta tensors: prefill and a training step (target: under 10 s each)."""
from __future__ import annotations

import time

from memsim.trace.workload import StepSpec, trace_workload

TARGET_S = 10.0
CASES = [("llama2-7b prefill 2048 tokens", "llama2-7b", StepSpec(phase="prefill", batch=1, context=2048)),
         ("llama2-7b training step 2048 tokens (AdamW)", "llama2-7b", StepSpec(phase="train", batch=1, context=2048)),
         ("llama2-7b training step 2048 tokens (8-bit Adam)", "llama2-7b",
          StepSpec(phase="train", batch=1, context=2048, optimizer="adam8bit"))]


def main() -> None:
    trace_workload("llama-tiny", StepSpec(phase="prefill", context=8))  # imports and first-call costs
    for label, name, spec in CASES:
        started = time.perf_counter()
        trace = trace_workload(name, spec)
        elapsed = time.perf_counter() - started
        print(f"{label}: {elapsed:.2f} s for {len(trace.ops):,} ops "
              f"({elapsed / TARGET_S:.2f} of the {TARGET_S:.0f} s target) "
              f"{'OK' if elapsed < TARGET_S else 'TOO SLOW'}")


if __name__ == "__main__":
    main()
