"""Cost models: pure, numba-compiled functions that price ops on hardware described as rates."""
from memsim.cost.model import COST_COLUMNS, power_capped, power_capped_as_measured, price_ops, storage_read_seconds

__all__ = ["price_ops", "power_capped", "power_capped_as_measured", "storage_read_seconds", "COST_COLUMNS"]
