"""Export a Result as a Chrome / Perfetto trace (JSON) that opens in ui.perfetto.dev.

One process per device, one track (thread) per stream: compute streams, copy engines,
point-to-point and collective streams. Each task is a complete ('X') event; tier occupancy and
channel utilisation are counter ('C') tracks. Times are microseconds, as the format wants.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from memsim.engine.result import Result

US = 1e6


def perfetto_trace(result: Result) -> dict:
    """The trace as a dict in the Chrome trace-event format."""
    timeline = result.timeline
    devices = sorted(set(timeline["device"]) | {tier.split(".")[0] for tier in result.capacity})
    pid = {device: index + 1 for index, device in enumerate(devices)}
    streams = sorted(set(timeline["stream"]))
    tid = {stream: index + 1 for index, stream in enumerate(streams)}
    events: list[dict] = []
    for device in devices:
        events.append({"ph": "M", "name": "process_name", "pid": pid[device], "tid": 0, "args": {"name": device}})
    for stream in streams:
        device = stream.rsplit(".", 1)[0]
        events.append({"ph": "M", "name": "thread_name", "pid": pid[device], "tid": tid[stream],
                       "args": {"name": stream.rsplit(".", 1)[-1]}})
    columns = [timeline[name].to_numpy() for name in
               ("name", "kind", "category", "scope", "stream", "start_s", "end_s", "op_id", "bound_by", "bytes",
                "flops")]
    for name, kind, category, scope, stream, start, end, op_id, bound_by, nbytes, flops in zip(*columns):
        events.append({"ph": "X", "name": str(name), "cat": f"{kind},{category}",
                       "pid": pid[stream.rsplit(".", 1)[0]], "tid": tid[stream],
                       "ts": float(start) * US, "dur": float(end - start) * US,
                       "args": {"op_id": int(op_id), "scope": str(scope), "bound_by": str(bound_by),
                                "bytes": float(nbytes), "flops": float(flops)}})
    occupancy = result.occupancy_over_time
    for time_s, tier, nbytes in zip(occupancy["time_s"].to_numpy(), occupancy["tier"].to_numpy(),
                                    occupancy["bytes"].to_numpy()):
        if tier in result.capacity:
            events.append({"ph": "C", "name": f"{tier} occupancy", "pid": pid[tier.split(".")[0]], "tid": 0,
                           "ts": float(time_s) * US, "args": {"bytes": float(nbytes)}})
    bandwidth = result.bandwidth_over_time
    for time_s, channel, share in zip(bandwidth["time_s"].to_numpy(), bandwidth["channel"].to_numpy(),
                                      bandwidth["utilisation"].to_numpy()):
        owner = channel.split(".")[0] if channel.split(".")[0] in pid else devices[0]
        events.append({"ph": "C", "name": f"{channel} utilisation", "pid": pid[owner], "tid": 0,
                       "ts": float(time_s) * US, "args": {"share": float(np.round(share, 12))}})
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"hardware": result.hardware, "step_time_s": result.step_time_s}}


def write_perfetto(result: Result, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(perfetto_trace(result), separators=(",", ":")))
    return path
