"""Traces: torch execution captured as tables of ops, tensors and accesses."""
from memsim.trace.capture import capture, tag
from memsim.trace.table import Trace

__all__ = ["capture", "tag", "Trace"]
