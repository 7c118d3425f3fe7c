"""What a simulation produces: the per-op timeline, memory per tier, and the summary."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from memsim.engine.memory import Occupancy


@dataclass
class Result:
    hardware: str
    workload: dict
    timeline: pd.DataFrame
    """One row per op: op_id, name, category, scope, start_s, end_s, compute_s, memory_s,
    overhead_s, bound ('compute' or 'memory')."""
    occupancy: Occupancy
    capacity: dict[str, float]
    bytes_moved: dict[str, float]
    tokens: int
    extra: dict = field(default_factory=dict)

    @property
    def step_time_s(self) -> float:
        return float(self.timeline["end_s"].max()) if len(self.timeline) else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.step_time_s if self.step_time_s > 0 else 0.0

    def time_shares(self) -> dict[str, float]:
        """Share of the step spent bound by compute, by memory, and in per-op overhead."""
        t = self.timeline
        busy = t["end_s"] - t["start_s"] - t["overhead_s"]
        total = self.step_time_s or 1.0
        return {"compute_bound": float(busy[t["bound"] == "compute"].sum() / total),
                "memory_bound": float(busy[t["bound"] == "memory"].sum() / total),
                "overhead": float(t["overhead_s"].sum() / total)}

    def top_ops(self, count: int = 10) -> list[dict]:
        """The most expensive ops, grouped across layers (scope with layer numbers as '*')."""
        t = self.timeline.assign(duration_s=self.timeline["end_s"] - self.timeline["start_s"],
                                 where=self.timeline["scope"].map(lambda s: re.sub(r"\.\d+(?=\.|$)", ".*", s)))
        groups = (t.groupby(["where", "name"], sort=False)
                  .agg(count=("op_id", "count"), time_s=("duration_s", "sum"), flops=("flops", "sum"),
                       bytes=("bytes", "sum"), bound=("bound", lambda b: b.mode().iat[0]),
                       category=("category", "first"))
                  .reset_index().sort_values(["time_s", "where", "name"], ascending=[False, True, True]))
        total = self.step_time_s or 1.0
        return [{"scope": row.where, "name": row.name, "category": row.category, "count": int(row.count),
                 "time_s": float(row.time_s), "share": float(row.time_s / total), "flops": float(row.flops),
                 "bytes": float(row.bytes), "bound": row.bound}
                for row in groups.head(count).itertuples()]

    def summary(self) -> dict:
        return {
            "hardware": self.hardware,
            "workload": self.workload,
            "step_time_s": self.step_time_s,
            "tokens_per_s": self.tokens_per_s,
            "tokens": self.tokens,
            "time_share": self.time_shares(),
            "flops": float(self.timeline["flops"].sum()),
            "bytes_moved": self.bytes_moved,
            "peak_bytes": self.occupancy.peak,
            "capacity_bytes": self.capacity,
            "peak_by_role": self.occupancy.peak_by_role,
            "op_count": int(len(self.timeline)),
            "ops": self.top_ops(),
            **self.extra,
        }

    def write_timeline(self, folder: str | Path, fmt: str = "csv") -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"timeline.{fmt}"
        if fmt == "parquet":
            self.timeline.to_parquet(path, index=False)
        else:
            self.timeline.to_csv(path, index=False)
        return path
