"""The task graph the event loop runs, built as a struct of arrays.

Tasks are added in bulk (a trace's ops) or one by one (copies, collectives); on build, tasks on
the same stream are chained in the order they were added, and every list becomes a CSR array so
the loop touches no Python object per task.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memsim.engine.topology import Hop

ONE = (int, np.integer)
"""A single task id (the builder's cheap path) rather than an array of them."""


@dataclass
class TaskGraph:
    name: np.ndarray
    kind: np.ndarray
    stream: np.ndarray
    streams: list[str]
    op_row: np.ndarray
    """The trace row of an op task, -1 for tasks the engine added (copies, collectives)."""
    issue_s: np.ndarray
    overhead_s: np.ndarray
    flow_ptr: np.ndarray
    flow_volume: np.ndarray
    flow_label: np.ndarray
    """Per flow, an index into `labels`: what bounds it when it is the last to end."""
    labels: list[str]
    """'compute', a tier or a link channel's name."""
    hop_ptr: np.ndarray
    hop_channel: np.ndarray
    hop_weight: np.ndarray
    succ_ptr: np.ndarray
    succ: np.ndarray
    start_succ_ptr: np.ndarray
    start_succ: np.ndarray
    indegree: np.ndarray
    alloc_ptr: np.ndarray
    alloc_tier: np.ndarray
    alloc_bytes: np.ndarray
    alloc_tensor: np.ndarray
    free_ptr: np.ndarray
    free_tier: np.ndarray
    free_bytes: np.ndarray

    def __len__(self) -> int:
        return len(self.issue_s)


def _csr(owner: np.ndarray, n: int, *columns: np.ndarray):
    """Group rows by owner (stable): returns ptr and the columns reordered."""
    order = np.argsort(owner, kind="stable")
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(owner, minlength=n), out=ptr[1:])
    return (ptr, *(column[order] for column in columns))


class GraphBuilder:
    """Collects tasks, flows, dependencies and allocations; `build` packs them into a TaskGraph.

    Bulk calls take arrays (one entry per task); calls about a single task (an int) go to plain
    lists, which are packed once at build, so adding copies one by one stays cheap.
    """

    def __init__(self, tiers: list[str]):
        self.tiers = {tier: index for index, tier in enumerate(tiers)}
        self.streams: dict[str, int] = {}
        self._count = 0
        self._tasks: list[tuple] = []
        self._single_tasks: list[tuple] = []
        self._flows: list[tuple] = []
        self._single_flows: list[tuple] = []
        self._edges: list[tuple[np.ndarray, np.ndarray]] = []
        self._single_edges: list[tuple[int, int]] = []
        self._start_edges: list[tuple[np.ndarray, np.ndarray]] = []
        self._single_start_edges: list[tuple[int, int]] = []
        self._allocs: list[tuple] = []
        self._single_allocs: list[tuple] = []
        self._frees: list[tuple] = []
        self._single_frees: list[tuple] = []

    def stream(self, name: str) -> int:
        return self.streams.setdefault(name, len(self.streams))

    def add_tasks(self, n: int, kind: str, stream, names=None, op_row=None, issue_s=0.0,
                  overhead_s=0.0) -> np.ndarray:
        """Add n tasks in bulk; returns their ids. Scalars are broadcast. Op tasks need no names
        (the timeline takes them from the trace)."""
        self._flush_tasks()
        names = np.full(n, None, dtype=object) if names is None else np.asarray(names, dtype=object)
        ids = np.arange(self._count, self._count + n)
        self._count += n
        full = lambda value, dtype: np.broadcast_to(np.asarray(value, dtype=dtype), (n,)).copy()  # noqa: E731
        self._tasks.append((names, np.full(n, kind, dtype=object), full(stream, np.int64),
                            full(-1 if op_row is None else op_row, np.int64), full(issue_s, float),
                            full(overhead_s, float)))
        return ids

    def add_task(self, name: str, kind: str, stream: str, overhead_s: float = 0.0) -> int:
        self._single_tasks.append((name, kind, self.stream(stream), overhead_s))
        self._count += 1
        return self._count - 1

    def _flush_tasks(self) -> None:
        if self._single_tasks:
            names, kinds, streams, overheads = zip(*self._single_tasks)
            n = len(names)
            self._tasks.append((np.array(names, dtype=object), np.array(kinds, dtype=object),
                                np.array(streams, np.int64), np.full(n, -1, np.int64), np.zeros(n),
                                np.array(overheads, float)))
            self._single_tasks = []

    def add_flows(self, tasks, volumes, hops: list[Hop], label: str) -> None:
        """One flow per task, all over the same hops (e.g. every op's compute, or one copy)."""
        if isinstance(tasks, ONE):
            if volumes > 0:
                self._single_flows.append((int(tasks), float(volumes), hops, label))
            return
        tasks = np.atleast_1d(np.asarray(tasks, np.int64))
        volumes = np.broadcast_to(np.asarray(volumes, float), tasks.shape)
        keep = volumes > 0
        if keep.any():
            self._flows.append((tasks[keep], volumes[keep].copy(), hops, label))

    def depend(self, before, after) -> None:
        """`after` starts only when `before` has ended (either side may be one task or many)."""
        if isinstance(before, ONE) and isinstance(after, ONE):
            self._single_edges.append((int(before), int(after)))
        else:
            self._edges.append(_pairs(before, after))

    def depend_on_start(self, before, after) -> None:
        """`after` starts only when `before` has begun."""
        if isinstance(before, ONE) and isinstance(after, ONE):
            self._single_start_edges.append((int(before), int(after)))
        else:
            self._start_edges.append(_pairs(before, after))

    def allocate(self, tasks, tier: str, nbytes, tensors=-1) -> None:
        """When each task begins, `nbytes` appear in `tier` (tensor ids kept for error messages)."""
        if isinstance(tasks, ONE):
            self._single_allocs.append((int(tasks), self.tiers[tier], float(nbytes), int(tensors)))
            return
        tasks = np.atleast_1d(np.asarray(tasks, np.int64))
        self._allocs.append((tasks, np.full(len(tasks), self.tiers[tier]),
                             np.broadcast_to(np.asarray(nbytes, float), tasks.shape).copy(),
                             np.broadcast_to(np.asarray(tensors, np.int64), tasks.shape).copy()))

    def free(self, tasks, tier: str, nbytes) -> None:
        """When each task ends, `nbytes` leave `tier`."""
        if isinstance(tasks, ONE):
            self._single_frees.append((int(tasks), self.tiers[tier], float(nbytes)))
            return
        tasks = np.atleast_1d(np.asarray(tasks, np.int64))
        self._frees.append((tasks, np.full(len(tasks), self.tiers[tier]),
                            np.broadcast_to(np.asarray(nbytes, float), tasks.shape).copy()))

    def _pack_singles(self) -> None:
        """Turn the one-task lists into array chunks like the bulk ones."""
        self._flush_tasks()
        for single, chunks in ((self._single_edges, self._edges), (self._single_start_edges, self._start_edges)):
            if single:
                pairs = np.array(single, np.int64)
                chunks.append((pairs[:, 0].copy(), pairs[:, 1].copy()))
                single.clear()
        for single, chunks, types in ((self._single_allocs, self._allocs, (np.int64, np.int64, float, np.int64)),
                                      (self._single_frees, self._frees, (np.int64, np.int64, float))):
            if single:
                chunks.append(tuple(np.array(column, dtype) for column, dtype in zip(zip(*single), types)))
                single.clear()

    def build(self) -> TaskGraph:
        self._pack_singles()
        n = self._count
        name, kind, stream, op_row, issue, overhead = (np.concatenate(parts) for parts in zip(*self._tasks))

        labels = sorted({f[3] for f in self._flows} | {f[3] for f in self._single_flows})
        code = {name: index for index, name in enumerate(labels)}
        singles = self._single_flows
        flow_task = np.concatenate([f[0] for f in self._flows] + [[f[0] for f in singles]]).astype(np.int64)
        volume = np.concatenate([f[1] for f in self._flows] + [[f[1] for f in singles]]).astype(float)
        label = np.concatenate([np.full(len(f[0]), code[f[3]]) for f in self._flows]
                               + [[code[f[3]] for f in singles]]).astype(np.int64)
        hop_count = np.concatenate([np.full(len(f[0]), len(f[2])) for f in self._flows]
                                   + [[len(f[2]) for f in singles]]).astype(np.int64)
        hop_channel = np.concatenate([np.tile([h.channel for h in f[2]], len(f[0])) for f in self._flows]
                                     + [[h.channel for f in singles for h in f[2]]]).astype(np.int64)
        hop_weight = np.concatenate([np.tile([h.weight for h in f[2]], len(f[0])) for f in self._flows]
                                    + [[h.weight for f in singles for h in f[2]]]).astype(float)
        flow_ptr, order = _csr(flow_task, n, np.arange(len(flow_task)))
        first_hop = np.concatenate([[0], np.cumsum(hop_count)])[:-1].astype(np.int64)
        counts = hop_count[order]
        hop_ptr = np.zeros(len(order) + 1, np.int64)
        np.cumsum(counts, out=hop_ptr[1:])
        gather = np.repeat(first_hop[order] - hop_ptr[:-1], counts) + np.arange(hop_ptr[-1])

        # Tasks on one stream run one after another, in the order they were added.
        by_stream = np.lexsort((np.arange(n), stream))
        same = stream[by_stream[1:]] == stream[by_stream[:-1]]
        self.depend(by_stream[:-1][same], by_stream[1:][same])
        succ_ptr, succ = _edges_csr(self._edges, n)
        start_succ_ptr, start_succ = _edges_csr(self._start_edges, n)
        indegree = np.bincount(succ, minlength=n) + np.bincount(start_succ, minlength=n)

        alloc_ptr, alloc_tier, alloc_bytes, alloc_tensor = _table_csr(self._allocs, n, 4)
        free_ptr, free_tier, free_bytes = _table_csr(self._frees, n, 3)
        return TaskGraph(name, kind, stream, list(self.streams), op_row, issue, overhead, flow_ptr,
                         volume[order], label[order], labels, hop_ptr, hop_channel[gather],
                         hop_weight[gather], succ_ptr, succ, start_succ_ptr, start_succ,
                         indegree.astype(np.int64), alloc_ptr, alloc_tier.astype(np.int64), alloc_bytes,
                         alloc_tensor.astype(np.int64), free_ptr, free_tier.astype(np.int64), free_bytes)


def _pairs(before, after) -> tuple[np.ndarray, np.ndarray]:
    before, after = np.broadcast_arrays(np.atleast_1d(np.asarray(before, np.int64)),
                                        np.atleast_1d(np.asarray(after, np.int64)))
    return before.copy(), after.copy()


def _edges_csr(edges: list[tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicated successor lists: ptr and successors sorted by (task, successor)."""
    if edges:
        before = np.concatenate([e[0] for e in edges])
        after = np.concatenate([e[1] for e in edges])
    else:
        before = after = np.zeros(0, np.int64)
    keys = np.sort(before * n + after)
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
    before, after = keys // n, keys % n
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(before, minlength=n), out=ptr[1:])
    return ptr, after.astype(np.int64)


def _table_csr(rows: list[tuple], n: int, width: int):
    if not rows:
        return (np.zeros(n + 1, np.int64), *(np.zeros(0) for _ in range(width - 1)))
    columns = [np.concatenate(parts) for parts in zip(*rows)]
    return _csr(columns[0], n, *columns[1:])


def rows_of(ids: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The row of each id in a table whose id column is `keys` (ids are usually the row numbers)."""
    if np.array_equal(keys, np.arange(len(keys))):
        return ids.astype(np.int64)
    sorter = np.argsort(keys, kind="stable")
    return sorter[np.searchsorted(keys, ids, sorter=sorter)]
