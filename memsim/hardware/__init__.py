"""Hardware: the YAML schema, its loading, and the System objects the simulator runs on."""
from memsim.hardware.load import load_system, shipped_configs
from memsim.hardware.schema import Calibration, ComputeUnit, Device, Link, MemoryTier, System

__all__ = ["load_system", "shipped_configs", "System", "Device", "MemoryTier", "ComputeUnit", "Link", "Calibration"]
