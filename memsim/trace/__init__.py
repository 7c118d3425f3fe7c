"""Traces: torch execution captured as tables of ops, tensors and accesses."""
from memsim.trace.capture import attention_window, capture, run_fused, scope, tag
from memsim.trace.table import Trace

__all__ = ["attention_window", "capture", "run_fused", "scope", "tag", "Trace"]
