"""The channels of a System: every memory tier, compute unit and link direction, and routes.

A channel is anything whose capacity concurrent flows share: a memory tier (bytes/s, counted in
read-equivalent bytes so that a write weighs read_bandwidth / write_bandwidth), a compute unit
(capacity 1: a flow on it is seconds of arithmetic), a link direction (bytes/s). A half-duplex
link is one channel for both directions; a switch gives each copy of a device a port out and a
port in.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from memsim.cost.roofline import effective_bandwidth, main_compute_unit
from memsim.errors import MemsimError
from memsim.hardware.schema import Link, System


@dataclass
class Hop:
    """One step of a route: the channel and the weight a byte has on it."""

    channel: int
    weight: float


@dataclass
class Topology:
    system: System
    names: list[str] = field(default_factory=list)
    capacity: list[float] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    """'memory', 'compute' or 'link', per channel."""
    tier_channel: dict[str, int] = field(default_factory=dict)
    tier_write_weight: dict[str, float] = field(default_factory=dict)
    compute_channel: dict[str, int] = field(default_factory=dict)
    """Per device instance, the channel of its main compute unit."""
    latency: dict[int, float] = field(default_factory=dict)
    _edges: dict[str, list[tuple[str, list[int], float]]] = field(default_factory=dict)
    _direct: dict[tuple[str, str], Link] = field(default_factory=dict)

    @classmethod
    def of(cls, system: System) -> "Topology":
        topo = cls(system)
        for name, device in system.instances().items():
            for memory, tier in device.memories.items():
                read, write = effective_bandwidth(tier, device)
                key = f"{name}.{memory}"
                topo.tier_channel[key] = topo._add(key, read, "memory")
                topo.tier_write_weight[key] = read / write
                topo._edges.setdefault(key, [])
            if device.compute:
                topo.compute_channel[name] = topo._add(f"{name}.compute", 1.0, "compute")
        for link_name, link in system.links.items():
            rate = link.bandwidth * link.efficiency
            a, b = link.between
            if link.kind == "nvswitch":
                topo._add_switch(link_name, link, a, rate)
            elif link.duplex == "half":
                both = topo._add(f"{link_name}", rate, "link")
                topo._connect(a, b, [both], link)
                topo._connect(b, a, [both], link)
            else:
                topo._connect(a, b, [topo._add(f"{link_name} {a}->{b}", rate, "link")], link)
                topo._connect(b, a, [topo._add(f"{link_name} {b}->{a}", rate, "link")], link)
        return topo

    def _add(self, name: str, capacity: float, kind: str) -> int:
        self.names.append(name)
        self.capacity.append(capacity)
        self.kind.append(kind)
        return len(self.names) - 1

    def _connect(self, a: str, b: str, channels: list[int], link: Link) -> None:
        self._edges[a].append((b, channels, link.latency))
        self._direct[(a, b)] = link

    def direct_link(self, a: str, b: str) -> Link | None:
        """The link joining two tiers without a tier between them, if any."""
        return self._direct.get((a, b))

    def _add_switch(self, link_name: str, link: Link, endpoint: str, rate: float) -> None:
        device, _, memory = endpoint.partition(".")
        copies = self.system.instance_names(device)
        ports = {copy: (self._add(f"{link_name} {copy} out", rate, "link"),
                        self._add(f"{link_name} {copy} in", rate, "link")) for copy in copies}
        for a in copies:
            for b in copies:
                if a != b:
                    self._connect(f"{a}.{memory}", f"{b}.{memory}", [ports[a][0], ports[b][1]], link)

    def route(self, source: str, target: str) -> tuple[list[Hop], float]:
        """The fewest-hop path from one tier to another, as hops over channels, and its latency.

        Intermediate tiers are crossed (an NVMe read to HBM bounces through host DDR), so the
        transfer is limited by the slowest channel on its path.
        """
        if source not in self._edges or target not in self._edges:
            raise MemsimError(f"no tier named {source if source not in self._edges else target!r} "
                              f"(known tiers: {', '.join(self._edges)})")
        previous: dict[str, tuple[str, list[int], float] | None] = {source: None}
        queue = deque([source])
        while queue and target not in previous:
            here = queue.popleft()
            for there, channels, latency in self._edges[here]:
                if there not in previous:
                    previous[there] = (here, channels, latency)
                    queue.append(there)
        if target not in previous:
            raise MemsimError(f"no link path from {source} to {target} in {self.system.name}; "
                              f"add a link between them under 'links'")
        hops: list[Hop] = [Hop(self.tier_channel[target], self.tier_write_weight[target])]
        latency = 0.0
        node = target
        while previous[node] is not None:
            here, channels, link_latency = previous[node]
            hops[:0] = [Hop(channel, 1.0) for channel in channels]
            if here != source:
                hops.insert(0, Hop(self.tier_channel[here], 1.0 + self.tier_write_weight[here]))
            latency += link_latency
            node = here
        hops.insert(0, Hop(self.tier_channel[source], 1.0))
        return hops, latency

    def slowest(self, hops: list[Hop]) -> str:
        """The channel that limits a flow over `hops` when it is alone: what bounds a transfer."""
        return self.names[min(hops, key=lambda hop: (self.capacity[hop.channel] / hop.weight, hop.channel)).channel]

    def neighbours(self, tier: str) -> list[str]:
        """Tiers one link away, in the order the links are listed."""
        return [there for there, _, _ in self._edges.get(tier, [])]

    def compute_tier(self, instance: str) -> str:
        """The tier a device's main compute unit reads: where tensors must be to be used."""
        device = self.system.instances()[instance]
        unit = main_compute_unit(device)
        return f"{instance}.{unit.memory or device.default_memory}"

    def capacities(self) -> np.ndarray:
        return np.asarray(self.capacity, dtype=np.float64)

    def tier_capacity(self, tier: str) -> float:
        device, _, memory = tier.partition(".")
        return self.system.instances()[device].memories[memory].capacity
