"""memsim: simulate memory hierarchies and accelerators for machine-learning memory models."""

__version__ = "0.1.0"
