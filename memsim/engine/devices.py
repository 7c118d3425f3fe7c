"""Ops on devices: each op's compute and memory flows, and the traffic between devices.

One device by default. A plan's `stages` put layers on devices (a pipeline): a tensor made on
one device and read on another crosses the link between them as a point-to-point transfer. A
plan's `tensor_parallel` runs every op on a group of devices at once, each doing 1/N of its
arithmetic and bytes, and sums the outputs of the named row-parallel ops with a ring all-reduce:
each device sends 2 (N - 1) / N of the output to its neighbour, all N transfers at once. (The
ring's 2 (N - 1) steps are folded into one flow per ring edge: with equal shares on every edge
they take the same time as the steps taken one by one.)
"""
from __future__ import annotations

import fnmatch

import numpy as np
import pandas as pd

from memsim.cost.kernels import collective_times, collective_wire_bytes
from memsim.cost.model import collective_algorithm
from memsim.engine.movement import Movement
from memsim.engine.tasks import GraphBuilder
from memsim.engine.topology import Hop, Topology
from memsim.errors import MemsimError
from memsim.hardware.schema import System
from memsim.plan.placement import layer_numbers
from memsim.plan.schema import Plan, parse_layers
from memsim.trace.table import Trace


def assign_devices(trace: Trace, system: System, plan: Plan) -> np.ndarray:
    """The device instance each op runs on (the group leader for tensor-parallel ops)."""
    instances = system.instances()
    n = len(trace.ops)

    def check(name: str, key: str) -> str:
        if name not in instances or not instances[name].compute:
            known = [d for d, dev in instances.items() if dev.compute]
            raise MemsimError(f"{plan.origin}: plan key {key}: '{name}' names no device with compute "
                              f"(known: {', '.join(known)})")
        return name

    if plan.tensor_parallel is not None:
        for index, name in enumerate(plan.tensor_parallel.devices):
            check(name, f"tensor_parallel.devices.{index}")
        if plan.moves_data or plan.stages:
            raise MemsimError(f"{plan.origin}: tensor_parallel cannot yet be combined with placement, "
                              f"eviction or stages")
        return np.full(n, plan.tensor_parallel.devices[0], dtype=object)
    if not plan.stages:
        return np.full(n, system.main_instance, dtype=object)
    layers = layer_numbers(trace.ops["scope"])
    device = pd.Series([None] * n, dtype=object)
    for index, stage in enumerate(plan.stages):
        check(stage.device, f"stages.{index}.device")
        device[np.isin(layers, list(parse_layers(stage.layers)))] = stage.device
    # Ops outside any layer (embedding, final norm, head) run beside their neighbours.
    device = device.ffill().bfill().fillna(plan.stages[0].device)
    return device.to_numpy(dtype=object)


def add_op_flows(builder: GraphBuilder, topo: Topology, plan: Plan, op_task: np.ndarray, op_device: np.ndarray,
                 costs: pd.DataFrame) -> None:
    """Each op's arithmetic on its device's compute unit and its bytes on the tier it reads."""
    compute = costs["compute_s"].to_numpy()
    memory = costs["memory_s"].to_numpy()
    group = plan.tensor_parallel.devices if plan.tensor_parallel is not None else None
    for device in sorted(set(op_device)):
        here = op_device == device
        members = group or [device]
        share = 1.0 / len(members)
        for member in members:
            tier = topo.tier_channel[topo.compute_tier(member)]
            builder.add_flows(op_task[here], compute[here] * share, [Hop(topo.compute_channel[member], 1.0)],
                              "compute")
            builder.add_flows(op_task[here], memory[here] * share * topo.capacity[tier], [Hop(tier, 1.0)],
                              topo.names[tier])


def add_allreduces(builder: GraphBuilder, topo: Topology, plan: Plan, trace: Trace, op_task: np.ndarray,
                   moved: Movement, call_overhead: float) -> None:
    """An all-reduce of the output of every op whose scope matches `allreduce_after`: in the
    switch where the ranks' link reduces in network (NVLS), else as a ring. Each rank sends its
    wire bytes to the next and the task pays the algorithm's latency (kernels.collective_times)
    plus a collective kernel's fixed cost, as price_ops does."""
    if plan.tensor_parallel is None or not plan.tensor_parallel.allreduce_after:
        return
    members = plan.tensor_parallel.devices
    n = len(members)
    scopes = trace.ops["scope"].fillna("").to_numpy()
    written = trace.ops["bytes_written"].to_numpy(float)
    matched = np.zeros(len(scopes), dtype=bool)
    for pattern in plan.tensor_parallel.allreduce_after:
        matched |= np.array([fnmatch.fnmatchcase(scope, pattern) for scope in scopes], dtype=bool)
    first, second = topo.compute_tier(members[0]), topo.compute_tier(members[1 % n])
    algorithm = collective_algorithm(None, "all_reduce", topo.direct_link(first, second))
    _, latency = topo.route(first, second)
    rows = np.flatnonzero(matched)
    shape = (rows.size,)
    ranks, codes, factor = np.full(shape, float(n)), np.full(shape, algorithm, dtype=np.int64), np.full(shape, 2.0)
    shares = collective_wire_bytes(written[rows], ranks, codes, factor)
    # the latency term alone: the bytes' time comes from the flows
    latencies = collective_times(np.zeros(shape), ranks, np.ones(shape), np.full(shape, latency), codes, factor)
    for op, share, wait in zip(rows, shares, latencies):
        task = builder.add_task(f"all-reduce {scopes[op]}", "collective", f"{members[0]}.collective",
                                overhead_s=float(wait) + call_overhead)
        for rank, member in enumerate(members):
            source, target = topo.compute_tier(member), topo.compute_tier(members[(rank + 1) % n])
            hops, _ = topo.route(source, target)
            builder.add_flows(task, share, hops, topo.slowest(hops))
            moved.add("allreduce", source, target, share)
        builder.depend(op_task[op], task)
        if op + 1 < len(op_task):
            builder.depend(task, op_task[op + 1])


def add_transfers_between_devices(builder: GraphBuilder, topo: Topology, trace: Trace, op_task: np.ndarray,
                                  op_device: np.ndarray, producer: np.ndarray, consumer: np.ndarray,
                                  tensor_row: np.ndarray, moved: Movement, call_overhead: float) -> None:
    """A tensor written on one device and read on another is sent once per (producer, tensor, device).
    A send between copies of one device (a pipeline stage's activation over the switch) is a
    collective library's send kernel: it pays that kernel's fixed cost (category p2p), as
    price_ops does."""
    cross = op_device[producer] != op_device[consumer]
    if not cross.any():
        return
    sizes = trace.tensors["nbytes"].to_numpy(float)
    frame = pd.DataFrame({"producer": producer[cross], "consumer": consumer[cross], "tensor": tensor_row[cross],
                          "target": op_device[consumer[cross]]})
    for (source_op, tensor, target), group in frame.groupby(["producer", "tensor", "target"], sort=True):
        source = op_device[source_op]
        hops, latency = topo.route(topo.compute_tier(source), topo.compute_tier(target))
        link = topo.direct_link(topo.compute_tier(source), topo.compute_tier(target))
        fixed = call_overhead if link is not None and link.joins_copies else 0.0
        task = builder.add_task(f"send t{tensor} {source}->{target}", "p2p", f"{source}.p2p",
                                overhead_s=latency + fixed)
        builder.add_flows(task, sizes[tensor], hops, topo.slowest(hops))
        moved.add("p2p", topo.compute_tier(source), topo.compute_tier(target), sizes[tensor])
        builder.depend(op_task[source_op], task)
        builder.depend(task, op_task[group["consumer"].to_numpy()])
        builder.allocate(task, topo.compute_tier(target), sizes[tensor], tensor)
        builder.free(op_task[group["consumer"].max()], topo.compute_tier(target), sizes[tensor])

