"""Replay a trace on a System: build the task graph, run the event loop, collect the Result.

An op is one task on its device's compute stream: after its fixed overhead (launch), a compute
flow (its arithmetic, on the device's compute unit) and a memory flow (its bytes, on the tier it
reads) run side by side, and it ends when both have ended, so an op alone on the machine takes
exactly the roofline max(compute, memory) + overhead. The host issues ops one after another, each
costing the device's dispatch overhead, and never waits for the GPU (no synchronising op is
traced), so op k cannot begin before (k + 1) x dispatch: a trace of many tiny kernels is bound
by the host. Ops wait for the ops that wrote what they read (or overwrite) and for the op before
them on their stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from memsim import units
from memsim.cost import power_capped, price_ops
from memsim.cost.roofline import main_compute_unit, op_overhead
from memsim.engine.core import NO_OVERFLOW, run_tasks
from memsim.engine.devices import (add_allreduces, add_op_flows, add_transfers_between_devices,
                                   assign_devices)
from memsim.engine.memory import occupancy
from memsim.engine.movement import Movement, add_movement
from memsim.engine.result import Result
from memsim.engine.tasks import GraphBuilder, TaskGraph, rows_of
from memsim.engine.topology import Topology
from memsim.errors import MemsimError
from memsim.hardware.schema import Device, System
from memsim.plan.placement import home_tiers
from memsim.plan.schema import Plan, load_plan
from memsim.trace.table import Trace


def dispatch_overhead(device: Device) -> float:
    """Host time to issue one op: the calibrated figure when there is one, else the datasheet's."""
    if device.calibration is not None and device.calibration.dispatch_overhead is not None:
        return device.calibration.dispatch_overhead
    return device.dispatch_overhead


def simulate(trace: Trace, system: System, plan: Plan | dict | str | None = None) -> Result:
    """Predict one step of `trace` on `system` under `plan`; raises MemsimError if a tier overflows."""
    plan = load_plan(plan)
    topo = Topology.of(system)
    built = build_graph(trace, system, plan, topo)
    graph = built.graph
    tiers = list(topo.tier_channel)
    tier_capacity = np.array([topo.tier_capacity(tier) for tier in tiers])
    initial = initial_occupancy(trace, built.shares, tiers)
    over = np.flatnonzero(initial > tier_capacity * (1 + 1e-12))
    if len(over):
        raise overflow_error(trace, built.home, tiers[over[0]], tier_capacity[over[0]], 0.0, 0)
    run = run_graph(graph, topo, tier_capacity, initial)
    capped = power_capped_costs(trace, system, plan, built, run[0], run[1])
    if capped is not None:  # the power state the first run's timeline puts each GPU in
        built = build_graph(trace, system, plan, topo, capped)
        graph = built.graph
        run = run_graph(graph, topo, tier_capacity, initial)
    (start, end, last_flow, work, sample_time, sample_tier, sample_bytes, bw_time, bw_channel, bw_load,
     overflow_tier, overflow_task) = run
    if overflow_tier != NO_OVERFLOW:
        started = graph.op_row[(graph.op_row >= 0) & (start <= start[overflow_task])]
        raise overflow_error(trace, built.home, tiers[overflow_tier], tier_capacity[overflow_tier],
                             start[overflow_task], int(started.max()) if len(started) else 0)
    if np.isnan(end).any():
        stuck = int(np.flatnonzero(np.isnan(end))[0])
        raise RuntimeError(f"task graph deadlocked at task {stuck} ({graph.name[stuck]})")
    timeline = make_timeline(trace, graph, topo, built.costs, start, end, last_flow)
    tier_code = np.concatenate([np.arange(len(tiers)), sample_tier])
    occupancy_over_time = pd.DataFrame({"time_s": np.concatenate([np.zeros(len(tiers)), sample_time]),
                                        "tier": pd.Categorical.from_codes(tier_code, tiers),
                                        "bytes": np.concatenate([initial, sample_bytes])})
    bandwidth_over_time = pd.DataFrame({"time_s": bw_time, "channel": pd.Categorical.from_codes(bw_channel, topo.names),
                                        "utilisation": bw_load})
    step = float(end.max()) if len(end) else 0.0
    utilisation = {name: float(work[c] / (topo.capacity[c] * step)) if step > 0 else 0.0
                   for c, name in enumerate(topo.names)}
    held = np.bincount(tier_code[occupancy_over_time["bytes"].to_numpy() > 0], minlength=len(tiers)) > 0
    used = sorted({tier for tier, any_bytes in zip(tiers, held) if any_bytes} | set(np.unique(built.op_tier)))
    movement = built.movement
    return Result(hardware=system.name, workload=dict(trace.meta), timeline=timeline,
                  occupancy=occupancy(trace, built.home),
                  capacity={tier: float(tier_capacity[tiers.index(tier)]) for tier in used},
                  bytes_moved=bytes_moved(trace, built.op_tier, movement), tokens=int(trace.meta.get("tokens", 0)),
                  occupancy_over_time=occupancy_over_time, bandwidth_over_time=bandwidth_over_time,
                  utilisation=utilisation,
                  movement={"bytes_by_kind": dict(movement.bytes_by_kind),
                            "bytes_by_route": dict(movement.bytes_by_route), "evictions": movement.evictions})


def run_graph(graph: TaskGraph, topo: Topology, tier_capacity: np.ndarray, initial: np.ndarray) -> tuple:
    """Run the compiled event loop over a built graph (what the benchmark times)."""
    return run_tasks(
        graph.issue_s, graph.overhead_s, graph.flow_ptr, graph.flow_volume, graph.hop_ptr, graph.hop_channel,
        graph.hop_weight, graph.succ_ptr, graph.succ, graph.start_succ_ptr, graph.start_succ, graph.indegree,
        graph.alloc_ptr, graph.alloc_tier, graph.alloc_bytes, graph.free_ptr, graph.free_tier, graph.free_bytes,
        topo.capacities(), tier_capacity, initial)


@dataclass
class Built:
    graph: TaskGraph
    home: np.ndarray
    """Per tensor, the tier it lives in (for tensor-parallel ops, the first device's share)."""
    shares: list[tuple[np.ndarray, float]]
    """Where each tensor's bytes are at the start, as (tier per tensor, fraction of its bytes)."""
    movement: Movement
    op_tier: np.ndarray
    costs: pd.DataFrame
    """price_ops' uncontended costs of the trace's ops."""


def power_capped_costs(trace: Trace, system: System, plan: Plan, built: Built, start: np.ndarray,
                       end: np.ndarray) -> pd.DataFrame | None:
    """The ops' costs with the GEMMs that a run's timeline puts under its GPU's power cap slowed
    (memsim.cost.power_capped, each device's ops in start order); None where none slow down. The
    step is taken as one of many run back to back, as a throughput figure assumes."""
    op_tasks = np.flatnonzero(built.graph.op_row >= 0)
    if (main_compute_unit(system.device).power_cap is None or not (trace.ops["category"] == "gemm").any()
            or np.isnan(end[op_tasks]).any()):  # a run that stopped short raises its own error
        return None
    op_start = np.empty(len(trace.ops))
    op_busy = np.empty(len(trace.ops))
    op_start[built.graph.op_row[op_tasks]] = start[op_tasks]
    op_busy[built.graph.op_row[op_tasks]] = end[op_tasks] - start[op_tasks]
    costs = built.costs.copy()
    op_device = assign_devices(trace, system, plan)
    for device in np.unique(op_device):
        rows = np.flatnonzero(op_device == device)
        rows = rows[np.argsort(op_start[rows], kind="stable")]
        here = power_capped(built.costs.iloc[rows], trace.ops.iloc[rows], system.device, op_start[rows],
                            op_busy[rows], periodic=True)
        costs.iloc[rows] = here.to_numpy()
    return None if costs.equals(built.costs) else costs


def build_graph(trace: Trace, system: System, plan: Plan, topo: Topology, costs: pd.DataFrame | None = None) -> Built:
    """The task graph of `trace` under `plan`, where each tensor lives, and the data movement added
    (ops priced by price_ops unless `costs` are given)."""
    ops = trace.ops
    n = len(ops)
    builder = GraphBuilder(list(topo.tier_channel))
    if costs is None:
        costs = price_ops(ops, system.device, links=system.links.values())
    op_device = assign_devices(trace, system, plan)
    device_code, devices = pd.factorize(op_device, sort=True)
    lane = device_code * plan.compute_streams + ops["stream"].to_numpy() % plan.compute_streams
    lanes, lane_code = np.unique(lane, return_inverse=True)
    stream_of_lane = np.array([builder.stream(f"{devices[code // plan.compute_streams]}.compute"
                                              f"{code % plan.compute_streams}") for code in lanes], dtype=np.int64)
    stream_index = stream_of_lane[lane_code] if n else np.zeros(0, np.int64)
    # Each device has its own host process issuing its ops in order.
    rank_on_device = np.arange(n) if len(devices) <= 1 else pd.Series(device_code).groupby(device_code).cumcount()
    issue = dispatch_overhead(system.device) * (np.asarray(rank_on_device) + 1)
    op_task = builder.add_tasks(n, "op", stream_index, op_row=np.arange(n), issue_s=issue,
                                overhead_s=costs["overhead_s"].to_numpy())
    compute_tier = {device: topo.compute_tier(device) for device in devices}
    op_tier = np.array([compute_tier[device] for device in devices], dtype=object)[device_code]
    first_use = np.clip(trace.tensors["first_op"].to_numpy(), 0, max(n - 1, 0))
    default = op_tier[first_use] if n else np.full(len(trace.tensors), topo.compute_tier(system.main_instance))
    home = home_tiers(trace.tensors, plan, default, list(topo.tier_channel))
    shares = [(home, 1.0)]
    if plan.tensor_parallel is not None:
        members = plan.tensor_parallel.devices
        shares = [(np.where(home == compute_tier[members[0]], topo.compute_tier(member), home), 1.0 / len(members))
                  for member in members]

    add_op_flows(builder, topo, plan, op_task, op_device, costs)
    producer, consumer, tensor_row = data_pairs(trace)
    same_device = op_device[producer] == op_device[consumer]
    cross_stream = same_device & (stream_index[producer] != stream_index[consumer])
    builder.depend(op_task[producer[cross_stream]], op_task[consumer[cross_stream]])
    movement = Movement()
    unit = main_compute_unit(system.device)
    add_transfers_between_devices(builder, topo, trace, op_task, op_device, producer, consumer, tensor_row, movement,
                                  op_overhead(unit, system.device, "p2p"))
    add_allreduces(builder, topo, plan, trace, op_task, movement, op_overhead(unit, system.device, "collective"))
    for tiers, fraction in shares:
        add_tensor_lifetimes(builder, trace, op_task, tiers, fraction)
    if plan.moves_data:
        add_movement(trace, builder, topo, plan, op_task, op_device, home, movement)
    if movement.starts_in:   # tensors that did not fit start in the spill tier (no tensor-parallel here)
        starts = home.copy()
        starts[list(movement.starts_in)] = list(movement.starts_in.values())
        shares = [(starts, 1.0)]
    return Built(builder.build(), home, shares, movement, op_tier, costs)


def data_pairs(trace: Trace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(producer op row, consumer op row, tensor row): each access paired with the last earlier write
    of its tensor, so an op waits for what it reads and does not overwrite what is being written."""
    access = trace.accesses
    n_ops = len(trace.ops)
    op = rows_of(access["op_id"].to_numpy(), trace.ops["op_id"].to_numpy())
    tensor = rows_of(access["tensor_id"].to_numpy(), trace.tensors["tensor_id"].to_numpy())
    order = np.lexsort((op, tensor))
    op, tensor, write = op[order], tensor[order], access["write"].to_numpy()[order]
    m = len(op)
    if not m:
        return op, op, tensor
    group = np.cumsum(np.r_[True, tensor[1:] != tensor[:-1]]) - 1
    # The last write at or before each access, within its tensor: a running max that restarts per tensor.
    offset = group * (n_ops + 2)
    last_write = np.maximum.accumulate(offset + np.where(write, op, -1) + 1) - offset - 1
    # An op does not wait for itself: look just before the first access of its (tensor, op) block.
    block = np.r_[True, (tensor[1:] != tensor[:-1]) | (op[1:] != op[:-1])]
    before = np.maximum.accumulate(np.where(block, np.arange(m), 0)) - 1
    safe = np.maximum(before, 0)
    producer = np.where((before >= 0) & (group[safe] == group), last_write[safe], -1)
    keep = producer >= 0
    return producer[keep], op[keep], tensor[keep]


def add_tensor_lifetimes(builder: GraphBuilder, trace: Trace, op_task: np.ndarray, home: np.ndarray,
                         fraction: float = 1.0) -> None:
    """Tensors made during the step take room in their tier from their first op to the end of their last."""
    tensors = trace.tensors
    sizes = tensors["nbytes"].to_numpy(float) * fraction
    made = ~tensors["preexisting"].to_numpy()
    freed = made & ~tensors["alive_at_end"].to_numpy()
    first = tensors["first_op"].to_numpy()
    last = np.maximum(tensors["last_op"].to_numpy(), first)
    ids = tensors["tensor_id"].to_numpy()
    for tier in sorted(set(home)):
        here = home == tier
        builder.allocate(op_task[first[made & here]], tier, sizes[made & here], ids[made & here])
        builder.free(op_task[last[freed & here]], tier, sizes[freed & here])


def initial_occupancy(trace: Trace, shares: list[tuple[np.ndarray, float]], tiers: list[str]) -> np.ndarray:
    """Bytes in each tier before the step: the tensors that already exist (weights, caches, inputs)."""
    before = trace.tensors["preexisting"].to_numpy()
    sizes = trace.tensors["nbytes"].to_numpy(float)[before]
    totals: dict[str, float] = {}
    for home, fraction in shares:
        for tier, size in pd.Series(sizes * fraction).groupby(home[before]).sum().items():
            totals[tier] = totals.get(tier, 0.0) + float(size)
    return np.array([totals.get(tier, 0.0) for tier in tiers])


def overflow_error(trace: Trace, home: np.ndarray, tier: str, capacity: float, time_s: float, op: int) -> MemsimError:
    """A tier overflowed: name it, its capacity, the peak it needed, when, and what was live then."""
    occ = occupancy(trace, home)
    needed = occ.peak.get(tier, 0.0)
    tensors = trace.tensors
    start = np.where(tensors["preexisting"], 0, tensors["first_op"]).astype(int)
    end = np.where(tensors["alive_at_end"] | tensors["preexisting"], len(trace.ops), tensors["last_op"])
    live = tensors[(home == tier) & (start <= op) & (end >= op)].sort_values(["nbytes", "tensor_id"],
                                                                             ascending=[False, True])
    largest = ", ".join(f"{row.role} {row.name or f't{row.tensor_id}'} {units.format_bytes(row.nbytes)}"
                        for row in live.head(3).itertuples())
    name = trace.ops["name"].iat[op] if len(trace.ops) else "-"
    return MemsimError(
        f"does not fit: {tier} holds {units.format_bytes(capacity)} but the step needs "
        f"{units.format_bytes(max(needed, capacity))} at its peak; it overflows at "
        f"t={units.format_time(time_s)} (op {op} {name}) with largest tensors live: {largest}; "
        f"place some in a lower tier or evict (a plan with eviction: lru), use a smaller batch or "
        f"context, or a system with more memory")


def make_timeline(trace: Trace, graph: TaskGraph, topo: Topology, costs: pd.DataFrame, start, end,
                  last_flow) -> pd.DataFrame:
    """One row per task: op, stream, device, start, end, its uncontended costs, and what bound it.
    Op tasks come first, in trace order, so their text columns are the trace's own (no per-row
    Python strings)."""
    ops = trace.ops
    n_ops = len(ops)
    added = slice(n_ops, len(graph))
    text = pd.concat([
        ops[["op_id", "name", "category", "scope"]].reset_index(drop=True),
        pd.DataFrame({"op_id": np.full(len(graph) - n_ops, -1, np.int64), "name": graph.name[added],
                      "category": np.where(graph.kind[added] == "collective", "collective", "memcpy"),
                      "scope": ""}).astype({"name": ops["name"].dtype, "category": ops["category"].dtype,
                                            "scope": ops["scope"].dtype}),
    ], ignore_index=True)
    channel_kind = dict(zip(topo.names, topo.kind))
    labels = np.array(graph.labels + ["overhead"], dtype=object)
    bounds = np.array(["compute" if label == "compute" else "overhead" if label == "overhead" else
                       "memory" if channel_kind.get(label) == "memory" else "link" for label in labels], dtype=object)
    code = np.where(last_flow >= 0, graph.flow_label[np.maximum(last_flow, 0)], len(labels) - 1)
    streams = np.array(graph.streams, dtype=object)
    devices = np.array([stream.rsplit(".", 1)[0] for stream in graph.streams], dtype=object)
    is_op = graph.op_row >= 0
    op_bytes = (ops["bytes_read"] + ops["bytes_written"]).to_numpy(float)
    return text.assign(
        kind=graph.kind, stream=streams[graph.stream], device=devices[graph.stream],
        issue_s=graph.issue_s, start_s=start, end_s=end,
        compute_s=np.r_[costs["compute_s"].to_numpy(), np.zeros(len(graph) - n_ops)],
        memory_s=np.r_[costs["memory_s"].to_numpy(), np.zeros(len(graph) - n_ops)], overhead_s=graph.overhead_s,
        waited=np.where(is_op & (start == graph.issue_s) & (graph.issue_s > 0), "host", ""),
        bound=bounds[code], bound_by=labels[code],
        flops=np.r_[ops["flops"].to_numpy(float), np.zeros(len(graph) - n_ops)],
        bytes=np.r_[op_bytes, _task_bytes(graph)[added]])[
        ["op_id", "name", "kind", "category", "scope", "stream", "device", "issue_s", "start_s", "end_s",
         "compute_s", "memory_s", "overhead_s", "waited", "bound", "bound_by", "flops", "bytes"]]


def _task_bytes(graph: TaskGraph) -> np.ndarray:
    """Bytes of each task's first flow (the transfer of a copy task)."""
    first = graph.flow_ptr[:-1]
    has = graph.flow_ptr[1:] > first
    out = np.zeros(len(graph))
    out[has] = graph.flow_volume[first[has]]
    return out


def bytes_moved(trace: Trace, op_tier: np.ndarray, movement: Movement) -> dict[str, float]:
    """Bytes through each tier: ops' own traffic on the tier they compute from, plus copies at both ends."""
    op_bytes = trace.ops["bytes_read"].to_numpy(float) + trace.ops["bytes_written"].to_numpy(float)
    moved = {tier: float(size) for tier, size in pd.Series(op_bytes).groupby(op_tier).sum().items()}
    for route, size in movement.bytes_by_route.items():
        for tier in route.split("->"):
            moved[tier] = moved.get(tier, 0.0) + size
    return moved
