"""Movement of data between tiers: the copies a plan implies, added to the task graph.

Walking the ops in order (the warm-up pass PatrickStar makes), for each op:
- a tensor that lives in another tier than the op's compute tier is staged: the bytes the op
  reads are fetched before it, the bytes it writes are written back after it, and the staging
  buffer is held from the fetch's start to the op's (or the write-back's) end;
- a tensor that lives in the compute tier but was evicted is fetched back from the spill tier;
- when the compute tier would overflow and the plan has an eviction policy, resident tensors the
  op does not touch are evicted (LRU or furthest next use) to the spill tier, written back
  unless the spill tier already holds a clean copy.
Fetches run on copy engines ahead of compute, at most `prefetch_depth` consumers ahead: the
fetch for the k-th op that needs one starts once the (k - depth)-th has started. With two or
more copy engines the last one carries write-backs and evictions (device to host), the others
take fetches in turn (host to device), as a GPU's copy engines do.

The eviction pass counts each op's own staging buffers, not those of fetches running ahead of
it; the run itself tracks every tier over time and stops with the overflow error if prefetching
ever overfills one.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from memsim.engine.tasks import GraphBuilder, rows_of
from memsim.engine.topology import Topology
from memsim.plan.placement import victim_order
from memsim.plan.schema import Plan
from memsim.trace.table import Trace


@dataclass
class Movement:
    """Bytes moved by kind ('fetch', 'writeback', 'evict', 'refetch') and by route."""

    bytes_by_kind: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    bytes_by_route: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    evictions: int = 0
    starts_in: dict[int, str] = field(default_factory=dict)
    """Tensors (rows) that exist before the step but do not fit their tier: they start in the spill tier."""

    def add(self, kind: str, source: str, target: str, nbytes: float) -> None:
        self.bytes_by_kind[kind] += nbytes
        self.bytes_by_route[f"{source}->{target}"] += nbytes


class Mover:
    def __init__(self, builder: GraphBuilder, topo: Topology, plan: Plan, moved: Movement):
        self.builder, self.topo, self.plan, self.moved = builder, topo, plan, moved
        self._slots: dict[str, list[int]] = defaultdict(list)   # per device: consumer op tasks in order
        self._fetch_count: dict[str, int] = defaultdict(int)

    def engine(self, device: str, outbound: bool) -> str:
        engines = self.plan.copy_engines
        if engines == 1:
            return f"{device}.copy0"
        if outbound:
            return f"{device}.copy{engines - 1}"
        index = self._fetch_count[device] % (engines - 1)
        self._fetch_count[device] += 1
        return f"{device}.copy{index}"

    def copy(self, kind: str, label: str, source: str, target: str, nbytes: float, stream: str) -> int:
        hops, latency = self.topo.route(source, target)
        task = self.builder.add_task(label, kind, stream, overhead_s=latency)
        self.builder.add_flows(task, nbytes, hops, self.topo.slowest(hops))
        self.moved.add(kind, source, target, nbytes)
        return task

    def fetch_slot(self, device: str, consumer: int, previous_op: int | None) -> tuple[list[int], int]:
        """Register `consumer` (an op task) as the next op waiting for fetches. Returns what its
        fetches wait on, and the op task from whose start they may run ahead (`consumer` itself
        when they may not)."""
        slots = self._slots[device]
        if not slots or slots[-1] != consumer:
            slots.append(consumer)
        k = len(slots) - 1
        depth = self.plan.prefetch_depth
        if depth == 0:
            return ([] if previous_op is None else [previous_op]), consumer
        if k - depth < 0:
            return [], 0
        return [-1 - slots[k - depth]], slots[k - depth]   # negative: a start dependency


def add_movement(trace: Trace, builder: GraphBuilder, topo: Topology, plan: Plan, op_task: np.ndarray,
                 op_device: np.ndarray, home: np.ndarray, moved: Movement) -> None:
    """Add the copies `plan` implies to `builder`, counting the bytes they move in `moved`."""
    mover = Mover(builder, topo, plan, moved)
    tensors = trace.tensors
    nbytes = tensors["nbytes"].to_numpy(float)
    last_op = tensors["last_op"].to_numpy()
    first_op = tensors["first_op"].to_numpy()
    kept = (tensors["preexisting"] | tensors["alive_at_end"]).to_numpy()
    preexisting = tensors["preexisting"].to_numpy()
    compute_tier = {device: topo.compute_tier(device) for device in set(op_device)}
    device_tiers = set(compute_tier.values())
    access = trace.accesses
    op_rows = rows_of(access["op_id"].to_numpy(), trace.ops["op_id"].to_numpy())
    rows = rows_of(access["tensor_id"].to_numpy(), tensors["tensor_id"].to_numpy())
    writes = access["write"].to_numpy()
    sizes = access["nbytes"].to_numpy(float)
    op_names = trace.ops["name"].tolist()
    order = np.argsort(op_rows, kind="stable")
    bounds = np.searchsorted(op_rows[order], np.arange(len(trace.ops) + 1))

    uses: dict[int, list[int]] = defaultdict(list)
    for op, row in zip(op_rows[order], rows[order]):
        if not uses[row] or uses[row][-1] != op:
            uses[row].append(int(op))
    eviction = plan.eviction != "none"
    resident: dict[int, float] = {}
    occupied: dict[str, float] = defaultdict(float)
    evicted: dict[int, int | None] = {}  # tensor row -> the evict task that moved it out (None: never in)
    clean_copy: set[int] = set()          # tensors whose spill copy is valid (not written since it was made)
    if eviction:
        # What exists before the step fills its tier in order of first use; the rest starts spilled.
        first_use = {row: (found[0] if (found := uses.get(row)) else len(trace.ops)) for row in range(len(nbytes))}
        for row in sorted(np.flatnonzero(preexisting), key=lambda r: (first_use[r], r)):
            tier = home[row]
            if tier not in compute_tier.values():
                continue
            if occupied[tier] + nbytes[row] <= topo.tier_capacity(tier):
                resident[row] = nbytes[row]
                occupied[tier] += nbytes[row]
            else:
                mover.moved.starts_in[row] = plan.spill_tier or _nearest_other_tier(topo, tier)
                evicted[row] = None
                clean_copy.add(row)
    last_use: dict[int, int] = {}
    previous_on_device: dict[str, int] = {}
    freed: dict[str, float] = defaultdict(float)                 # bytes freed so far, per tier (op order)
    freed_before: dict[tuple[str, int], float] = {}             # ... before each op task

    for op in range(len(trace.ops)):
        device = op_device[op]
        ctier = compute_tier[device]
        task = int(op_task[op])
        here = order[bounds[op]:bounds[op + 1]]
        staged_reads: dict[str, float] = defaultdict(float)
        staged_writes: dict[str, float] = defaultdict(float)
        touched = []
        refetch = []
        for index in here:
            row = int(rows[index])
            tier = home[row]
            if tier != ctier:
                if tier in device_tiers and not preexisting[row]:
                    continue   # made on another device during the step: sent point to point
                (staged_writes if writes[index] else staged_reads)[tier] += sizes[index]
                continue
            touched.append(row)
            if writes[index]:
                clean_copy.discard(row)
            if row in evicted and row not in refetch:
                refetch.append(row)
        staged_writes = {tier: size for tier, size in staged_writes.items() if size > 0}
        wait, ahead_of = mover.fetch_slot(device, task, previous_on_device.get(device)) \
            if staged_reads or refetch else ([], task)
        room = []   # evictions that make room for this op: its fetches wait for them

        if eviction:
            created = [row for row in sorted(set(touched)) if first_op[row] == op and not preexisting[row]
                       and row not in resident]
            need = sum(nbytes[row] for row in created + refetch) + sum(staged_reads.values()) \
                + sum(staged_writes.values())
            capacity = topo.tier_capacity(ctier)
            if occupied[ctier] + need > capacity:
                spill = plan.spill_tier or _nearest_other_tier(topo, ctier)
                candidates = [row for row in resident if row not in touched and home[row] == ctier]
                next_use = {row: _next_use(uses[row], op) for row in candidates}
                for row in victim_order(plan.eviction, candidates, last_use, next_use):
                    if occupied[ctier] + need <= capacity:
                        break
                    if next_use[row] == np.inf and not kept[row]:
                        continue   # freed after its last use anyway
                    out = mover.copy("evict", f"evict t{row}", ctier, spill, 0.0 if row in clean_copy
                                     else nbytes[row], mover.engine(device, outbound=True))
                    if row in last_use:
                        builder.depend(int(op_task[last_use[row]]), out)
                    builder.free(out, ctier, nbytes[row])
                    if row not in clean_copy:
                        builder.allocate(out, spill, nbytes[row])
                    builder.depend(out, task)
                    room.append(out)
                    occupied[ctier] -= nbytes[row]
                    del resident[row]
                    evicted[row] = out
                    clean_copy.add(row)
                    mover.moved.evictions += 1
            for row in created + refetch:
                resident[row] = nbytes[row]
            occupied[ctier] += sum(nbytes[row] for row in created + refetch)
            # Fetches that run ahead start before the ops since `ahead_of` have freed what they free:
            # if that room is needed, they wait for the op before this one to end.
            not_yet_freed = freed[ctier] - freed_before.get((ctier, int(ahead_of)), freed[ctier])
            if (refetch or staged_reads) and occupied[ctier] + not_yet_freed > capacity \
                    and device in previous_on_device:
                room.append(previous_on_device[device])

        for row in refetch:
            spill = plan.spill_tier or _nearest_other_tier(topo, ctier)
            back = mover.copy("refetch", f"refetch t{row}", spill, ctier, nbytes[row], mover.engine(device, False))
            if (out := evicted.pop(row)) is not None:
                builder.depend(out, back)
            _wait(builder, wait + room, back)
            builder.allocate(back, ctier, nbytes[row], row)
            builder.depend(back, task)
        for tier, size in sorted(staged_reads.items()):
            fetch = mover.copy("fetch", f"fetch {op_names[op]}", tier, ctier, size,
                               mover.engine(device, False))
            _wait(builder, wait + room, fetch)
            builder.allocate(fetch, ctier, size)
            builder.depend(fetch, task)
            if tier not in staged_writes:
                builder.free(task, ctier, size)
        for tier, size in sorted(staged_writes.items()):
            if tier not in staged_reads:
                builder.allocate(task, ctier, size)
            back = mover.copy("writeback", f"write back {op_names[op]}", ctier, tier, size,
                              mover.engine(device, outbound=True))
            builder.depend(task, back)
            builder.free(back, ctier, size + staged_reads.get(tier, 0.0))

        freed_before[(ctier, task)] = freed[ctier]
        for row in touched:
            last_use[row] = op
            if eviction and last_op[row] == op and not kept[row] and row in resident:
                freed[ctier] += resident[row]
                occupied[ctier] -= resident.pop(row)
        previous_on_device[device] = task


def _wait(builder: GraphBuilder, wait: list[int], task: int) -> None:
    for before in wait:
        if before < 0:
            builder.depend_on_start(-1 - before, task)
        else:
            builder.depend(before, task)


def _next_use(uses: list[int], op: int) -> float:
    position = int(np.searchsorted(uses, op, side="right"))
    return float(uses[position]) if position < len(uses) else np.inf


def _nearest_other_tier(topo: Topology, tier: str) -> str:
    """The tier one link away from `tier` (host DDR for a GPU's HBM): where evicted data goes."""
    neighbours = topo.neighbours(tier)
    return neighbours[0] if neighbours else tier
