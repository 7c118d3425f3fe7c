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
    """One row per task (ops, copies, collectives): op_id (-1 for engine tasks), name, kind, category,
    scope, stream, device, issue_s, start_s, end_s, compute_s and memory_s (uncontended, 0 for engine
    tasks), overhead_s, waited ('host' when the op waited for its dispatch), bound ('compute',
    'memory', 'link' or 'overhead') and bound_by (the channel)."""
    occupancy: Occupancy
    """Bytes live in each tier by op index, from where tensors live (before any movement)."""
    capacity: dict[str, float]
    bytes_moved: dict[str, float]
    tokens: int
    occupancy_over_time: pd.DataFrame = field(default_factory=pd.DataFrame)
    """time_s, tier, bytes: each tier's occupancy after every allocation and free."""
    bandwidth_over_time: pd.DataFrame = field(default_factory=pd.DataFrame)
    """time_s, channel, utilisation: the share of each channel in use, at every change."""
    utilisation: dict[str, float] = field(default_factory=dict)
    """Per channel (tier, compute unit, link direction): the mean share of it used over the step."""
    movement: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def ops(self) -> pd.DataFrame:
        """The timeline rows of the trace's own ops (not the copies the engine added)."""
        return self.timeline[self.timeline["kind"] == "op"] if "kind" in self.timeline else self.timeline

    @property
    def step_time_s(self) -> float:
        return float(self.timeline["end_s"].max()) if len(self.timeline) else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.step_time_s if self.step_time_s > 0 else 0.0

    def time_shares(self) -> dict[str, float]:
        """Share of the step the ops spent bound by compute, by memory, in per-op overhead, and
        with their stream idle: waiting for the host to issue them, or for data (copies, other
        streams, other devices). Summed over compute streams."""
        t = self.ops
        busy = t["end_s"] - t["start_s"] - t["overhead_s"]
        total = self.step_time_s or 1.0
        shares = {"compute_bound": float(busy[t["bound"] == "compute"].sum() / total),
                  "memory_bound": float(busy[t["bound"].isin(["memory", "link"])].sum() / total),
                  "overhead": float(t["overhead_s"].sum() / total)}
        if "waited" in t:
            idle = (t["start_s"] - t.groupby("stream", sort=False)["end_s"].shift(fill_value=0.0)).clip(lower=0.0)
            host = t["waited"] == "host"
            shares["host_wait"] = float(idle[host].sum() / total)
            shares["data_wait"] = float(idle[~host].sum() / total)
        return shares

    def peak_bytes(self) -> dict[str, float]:
        """The most each tier held at any moment of the step."""
        if self.occupancy_over_time.empty:
            return self.occupancy.peak
        peaks = self.occupancy_over_time.groupby("tier", observed=True)["bytes"].max()
        return {tier: float(peak) for tier, peak in peaks.items() if peak > 0}

    def top_ops(self, count: int = 10) -> list[dict]:
        """The most expensive ops, grouped across layers (scope with layer numbers as '*')."""
        t = self.ops.assign(duration_s=self.ops["end_s"] - self.ops["start_s"],
                                 where=self.ops["scope"].map(lambda s: re.sub(r"\.\d+(?=\.|$)", ".*", s)))
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
            "flops": float(self.ops["flops"].sum()),
            "bytes_moved": self.bytes_moved,
            "peak_bytes": self.peak_bytes(),
            "capacity_bytes": self.capacity,
            "peak_by_role": self.occupancy.peak_by_role,
            "op_count": int(len(self.ops)),
            "ops": self.top_ops(),
            "utilisation": {name: share for name, share in self.utilisation.items() if share > 0},
            "movement": self.movement,
            **self.extra,
        }

    def write_timeline(self, folder: str | Path, fmt: str = "csv") -> Path:
        """Write timeline.<fmt> (and occupancy.<fmt>, each tier's bytes over time) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, table in (("timeline", self.timeline), ("occupancy", self.occupancy_over_time)):
            path = folder / f"{name}.{fmt}"
            if fmt == "parquet":
                table.to_parquet(path, index=False)
            else:
                table.to_csv(path, index=False)
        return folder / f"timeline.{fmt}"
