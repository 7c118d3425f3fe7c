"""The simulator: replays a trace on a System and produces a Result."""
from memsim.engine.replay import simulate
from memsim.engine.result import Result

__all__ = ["simulate", "Result"]
