"""More than one device: a two-stage pipeline and a tensor-parallel layer, timed by hand.

The toy node: GPUs with 1000 GB/s HBM and 1000 TFLOP/s (bf16 matrix), 1 us launch overhead and
5 us host dispatch, joined by a switch of 100 GB/s per GPU per direction (no latency).
"""
import pytest
from test_engine import synthetic_trace

from memsim.engine import simulate
from memsim.engine.topology import Topology
from memsim.hardware import load_system
from memsim.hardware.load import validate_system

US = 1e-6
MB = 1e6


def node(gpus: int) -> dict:
    return {
        "name": "toy node",
        "devices": {"gpu": {
            "kind": "gpu", "count": gpus, "dispatch_overhead": "5 us",
            "memories": {"hbm": {"kind": "hbm", "capacity": "80 GB", "bandwidth": "1000 GB/s"}},
            "compute": {"sm": {"kind": "sm", "matrix_flops": {"bf16": "1000 TFLOP/s"}, "op_overhead": "1 us"}}}},
        "links": {"switch": {"kind": "nvswitch", "between": ["gpu.hbm", "gpu.hbm"], "bandwidth": "100 GB/s"}},
    }


def two_layers(activation: float):
    """layers.0 makes an activation with 1e12 FLOPs (1 ms); layers.1 reads it with 1e12 FLOPs."""
    ops = [{"scope": "layers.0.mlp", "category": "gemm", "flops": 1e12},
           {"scope": "layers.1.mlp", "category": "gemm", "flops": 1e12}]
    return synthetic_trace(ops, [{"nbytes": activation}, {"nbytes": 1e3}], [(0, 0, True), (1, 0, False), (1, 1, True)])


def test_a_two_stage_pipeline_sends_the_activation_between_gpus():
    # gpu0: issued at 5 us, 1 us launch, then max(1 ms compute, 0.1 ms writing 100 MB) -> ends 1006 us.
    # The 100 MB activation crosses the switch in a send kernel (1 us launch) at 100 GB/s: 1 ms ->
    # 2007 us. gpu1's op (issued at 5 us by its own host process) then runs 1 us + 1 ms -> 3008 us.
    result = simulate(two_layers(100 * MB), validate_system(node(2)),
                      {"stages": [{"layers": "0", "device": "gpu0"}, {"layers": "1", "device": "gpu1"}]})
    timeline = result.timeline.set_index("kind")
    assert list(result.ops["device"]) == ["gpu0", "gpu1"]
    assert timeline.loc["p2p", "start_s"] == pytest.approx(1006 * US, rel=1e-9)
    assert timeline.loc["p2p", "end_s"] == pytest.approx(2007 * US, rel=1e-9)
    assert result.step_time_s == pytest.approx(3008 * US, rel=1e-9)
    assert result.peak_bytes()["gpu1.hbm"] == pytest.approx(100 * MB + 1e3)


def test_a_tensor_parallel_layer_splits_the_work_and_ring_all_reduces_the_output():
    # 4 GPUs: each does 1/4 of 4e12 FLOPs (1 ms) after 5 us dispatch + 1 us launch -> 1006 us.
    # Ring all-reduce of the 200 MB output: 1 us kernel launch, then each GPU sends 2 (4-1)/4 x
    # 200 MB = 300 MB over its own 100 GB/s port, all four at once: 3 ms -> 4007 us. The next op
    # (1e12 FLOPs / 4 = 0.25 ms) was issued at 10 us, so it ends 4007 + 1 + 250 = 4258 us.
    ops = [{"scope": "layers.0.attn.o_proj", "category": "gemm", "flops": 4e12},
           {"scope": "layers.0.mlp", "category": "gemm", "flops": 1e12}]
    trace = synthetic_trace(ops, [{"nbytes": 200 * MB}, {"nbytes": 1e3}], [(0, 0, True), (1, 0, False), (1, 1, True)])
    plan = {"tensor_parallel": {"devices": ["gpu0", "gpu1", "gpu2", "gpu3"], "allreduce_after": ["*.o_proj"]}}
    result = simulate(trace, validate_system(node(4)), plan)
    reduce = result.timeline[result.timeline["kind"] == "collective"].iloc[0]
    assert reduce["start_s"] == pytest.approx(1006 * US, rel=1e-9)
    assert reduce["end_s"] == pytest.approx(4007 * US, rel=1e-9)
    assert result.step_time_s == pytest.approx(4258 * US, rel=1e-9)
    assert result.utilisation["switch gpu2 out"] == pytest.approx(3000 / 4258, rel=1e-6)
    # Each GPU holds a quarter of the 200 MB output.
    assert result.peak_bytes()["gpu3.hbm"] == pytest.approx(50 * MB + 250, rel=1e-9)


def test_a_switch_that_reduces_in_network_halves_the_bytes_of_a_large_all_reduce_and_adds_its_latency():
    # As above, but the switch reduces (NVLS) with 2 us per hop: each GPU sends its 200 MB once
    # (2 ms at 100 GB/s) while the reduced result comes back on the other direction, and the
    # all-reduce pays 2 x ceil(log2 4) x 2 us = 8 us of synchronisation and 1 us of launch.
    ops = [{"scope": "layers.0.attn.o_proj", "category": "gemm", "flops": 4e12},
           {"scope": "layers.0.mlp", "category": "gemm", "flops": 1e12}]
    trace = synthetic_trace(ops, [{"nbytes": 200 * MB}, {"nbytes": 1e3}], [(0, 0, True), (1, 0, False), (1, 1, True)])
    system = node(4)
    system["links"]["switch"].update(in_network_reduction=True, latency="2 us")
    plan = {"tensor_parallel": {"devices": ["gpu0", "gpu1", "gpu2", "gpu3"], "allreduce_after": ["*.o_proj"]}}
    result = simulate(trace, validate_system(system), plan)
    reduce = result.timeline[result.timeline["kind"] == "collective"].iloc[0]
    assert reduce["end_s"] - reduce["start_s"] == pytest.approx(2009 * US, rel=1e-9)


def test_the_hgx_node_routes_gpu_to_gpu_through_the_switch_ports():
    system = load_system("nvidia-hgx-h100-8gpu")
    assert sorted(system.instances()) == ["gpu0", "gpu1", "gpu2", "gpu3", "gpu4", "gpu5", "gpu6", "gpu7", "host"]
    topo = Topology.of(system)
    hops, _ = topo.route("gpu2.hbm", "gpu6.hbm")
    assert [topo.names[hop.channel] for hop in hops] == ["gpu2.hbm", "nvswitch gpu2 out", "nvswitch gpu6 in",
                                                          "gpu6.hbm"]
    assert topo.capacity[hops[1].channel] == pytest.approx(450e9 * 0.8)


def test_a_plan_naming_an_unknown_device_is_a_clear_error():
    from memsim.errors import MemsimError
    with pytest.raises(MemsimError, match="plan key stages.1.device: 'gpu9' names no device"):
        simulate(two_layers(1e3), validate_system(node(2)),
                 {"stages": [{"layers": "0", "device": "gpu0"}, {"layers": "1", "device": "gpu9"}]})


def test_memsim_run_pipelines_a_model_over_two_gpus_of_the_hgx_node(run_cli, tmp_path):
    import json
    plan = tmp_path / "pipeline.yaml"
    plan.write_text("stages:\n  - {layers: '0', device: gpu0}\n  - {layers: '1', device: gpu1}\n")
    summary = json.loads(run_cli("run", "nvidia-hgx-h100-8gpu", "llama-tiny", "--context", "16", "--plan", plan,
                                 "--json", check=True).stdout)
    # llama-tiny's hidden state is 64 fp32 values: at least that crosses from gpu0 to gpu1.
    assert summary["movement"]["bytes_by_route"]["gpu0.hbm->gpu1.hbm"] >= 64 * 4
    assert set(summary["peak_bytes"]) == {"gpu0.hbm", "gpu1.hbm"}
