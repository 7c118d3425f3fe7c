"""Cost models: pure, numba-compiled functions that price ops on hardware described as rates."""
from memsim.cost.model import COST_COLUMNS, MeasuredPowerState, power_capped, price_ops, storage_read_seconds

__all__ = ["price_ops", "power_capped", "MeasuredPowerState", "storage_read_seconds", "COST_COLUMNS"]
