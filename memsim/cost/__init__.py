"""Cost models: pure, numba-compiled functions that price ops on hardware described as rates."""
from memsim.cost.model import COST_COLUMNS, price_ops

__all__ = ["price_ops", "COST_COLUMNS"]
