"""Shared bandwidth as flows: answers computed by hand from the channel rates below.

The machine: NVMe (30 GB/s read) -- 20 GB/s bus -- host DDR (100 GB/s) -- 50 GB/s PCIe -- HBM
(1000 GB/s). All efficiencies are 1, so a channel's rate is its datasheet figure.
"""
import numpy as np
import pytest

from memsim.engine.core import fair_rates
from memsim.engine.replay import run_graph
from memsim.engine.tasks import GraphBuilder
from memsim.engine.topology import Topology
from memsim.hardware.load import validate_system

GB = 1e9
SYSTEM = {
    "name": "toy",
    "devices": {
        "gpu": {"kind": "gpu", "memories": {"hbm": {"kind": "hbm", "capacity": "80 GB", "bandwidth": "1000 GB/s"}},
                "compute": {"sm": {"kind": "sm", "matrix_flops": {"bf16": "1000 TFLOP/s"}}}},
        "host": {"kind": "cpu", "memories": {
            "ddr": {"kind": "ddr", "capacity": "1 TB", "bandwidth": "100 GB/s"},
            "nvme": {"kind": "nvme", "capacity": "4 TB", "read_bandwidth": "30 GB/s", "write_bandwidth": "30 GB/s"}}},
    },
    "links": {"pcie": {"kind": "pcie", "between": ["host.ddr", "gpu.hbm"], "bandwidth": "50 GB/s"},
              "bus": {"kind": "nvme", "between": ["host.nvme", "host.ddr"], "bandwidth": "20 GB/s"}},
}


def run(transfers, system=SYSTEM):
    """Run copies [(source, target, bytes, start_s)] at once; returns their (start, end) times."""
    topo = Topology.of(validate_system(system))
    builder = GraphBuilder(list(topo.tier_channel))
    for index, (source, target, nbytes, at) in enumerate(transfers):
        hops, _ = topo.route(source, target)
        stream = builder.stream(f"engine{index}")
        task = int(builder.add_tasks(1, "copy", stream, names=[f"copy {index}"], issue_s=at)[0])
        builder.add_flows(task, nbytes, hops, topo.slowest(hops))
    graph = builder.build()
    tiers = list(topo.tier_channel)
    start, end, *_ = run_graph(graph, topo, np.full(len(tiers), np.inf), np.zeros(len(tiers)))
    return start, end


def test_one_transfer_over_pcie_takes_bytes_over_the_link_rate():
    _, end = run([("host.ddr", "gpu.hbm", 1 * GB, 0.0)])
    assert end[0] == pytest.approx(1 / 50, rel=1e-12)


def test_two_equal_transfers_on_one_link_take_twice_as_long_as_one():
    _, end = run([("host.ddr", "gpu.hbm", 1 * GB, 0.0), ("host.ddr", "gpu.hbm", 1 * GB, 0.0)])
    assert end == pytest.approx([2 / 50, 2 / 50], rel=1e-12)


def test_a_transfer_across_links_of_different_bandwidth_runs_at_the_slowest():
    # NVMe 30 GB/s -> bus 20 GB/s -> DDR 100 GB/s -> PCIe 50 GB/s -> HBM: the bus limits it to 20 GB/s.
    _, end = run([("host.nvme", "gpu.hbm", 1 * GB, 0.0)])
    assert end[0] == pytest.approx(1 / 20, rel=1e-12)


def test_a_flow_joining_mid_way_slows_the_first_and_both_rates_change():
    # A: 1 GB from t=0 at 50 GB/s; at 10 ms it has 0.5 GB left. B (0.25 GB) joins: both at 25 GB/s.
    # B ends 10 ms later (t=20 ms); A has 0.25 GB left, alone again at 50 GB/s: 5 ms more (t=25 ms).
    start, end = run([("host.ddr", "gpu.hbm", 1 * GB, 0.0), ("host.ddr", "gpu.hbm", 0.25 * GB, 0.010)])
    assert start[1] == pytest.approx(0.010)
    assert end[1] == pytest.approx(0.020, rel=1e-12)
    assert end[0] == pytest.approx(0.025, rel=1e-12)


def test_a_flow_limited_elsewhere_leaves_the_rest_of_a_shared_channel_to_others():
    # Max-min, not equal split: the PCIe copy can use only 50 GB/s of HBM, so a 0.95 GB HBM-only
    # flow started beside it gets the other 950 GB/s and ends at 1 ms.
    topo = Topology.of(validate_system(SYSTEM))
    hops, _ = topo.route("host.ddr", "gpu.hbm")
    hbm = topo.tier_channel["gpu.hbm"]
    channels = [hop.channel for hop in hops] + [hbm]
    weights = [hop.weight for hop in hops] + [1.0]
    hop_ptr = np.array([0, len(hops), len(hops) + 1])
    rate = np.zeros(2)
    n = len(topo.names)
    fair_rates(np.array([0, 1]), 2, hop_ptr, np.array(channels), np.array(weights), topo.capacities(), rate,
               np.zeros(n), np.zeros(n), np.zeros(2, dtype=bool), np.zeros(n, dtype=np.int64))
    assert rate == pytest.approx([50 * GB, 950 * GB], rel=1e-12)


def test_a_half_duplex_link_is_shared_by_both_directions():
    half = {**SYSTEM, "links": {"pcie": {**SYSTEM["links"]["pcie"], "duplex": "half"}}}
    _, end = run([("host.ddr", "gpu.hbm", 1 * GB, 0.0), ("gpu.hbm", "host.ddr", 1 * GB, 0.0)], half)
    assert end == pytest.approx([2 / 50, 2 / 50], rel=1e-12)
    _, end = run([("host.ddr", "gpu.hbm", 1 * GB, 0.0), ("gpu.hbm", "host.ddr", 1 * GB, 0.0)])
    assert end == pytest.approx([1 / 50, 1 / 50], rel=1e-12)


def test_no_route_is_a_clear_error():
    from memsim.errors import MemsimError
    alone = {**SYSTEM, "links": {}}
    with pytest.raises(MemsimError, match="no link path from host.ddr to gpu.hbm"):
        Topology.of(validate_system(alone)).route("host.ddr", "gpu.hbm")
