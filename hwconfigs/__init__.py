"""Hardware configs shipped with memsim (real machines, every figure with its source)."""
