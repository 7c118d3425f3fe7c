"""Plans: where each tensor lives, what moves when, and which unit runs each op."""
from memsim.plan.schema import Plan, load_plan

__all__ = ["Plan", "load_plan"]
