"""The engine end to end: answers computed by hand from the trace and the hardware figures."""
import numpy as np
import pandas as pd
import pytest

from memsim.engine import simulate
from memsim.errors import MemsimError
from memsim.hardware import load_system
from memsim.hardware.load import validate_system
from memsim.trace.table import OP_COLUMNS, TENSOR_COLUMNS, Trace
from memsim.trace.workload import StepSpec, resolve, trace_workload

MB = 2**20


def synthetic_trace(ops: list[dict], tensors: list[dict], accesses: list[tuple[int, int, bool]]) -> Trace:
    """A trace from plain rows; first_op and last_op follow from the accesses (op, tensor, write)."""
    defaults = {"str": "", "int64": 0, "float64": 0.0}
    op_rows = [{name: op.get(name, np.nan if name == "measured_s" else defaults[kind])
                for name, kind in OP_COLUMNS.items()} | {"op_id": i} for i, op in enumerate(ops)]
    for row in op_rows:
        row["dtype"] = row["dtype"] or "bf16"
        row["category"] = row["category"] or "elementwise"
        row["name"] = row["name"] or f"kernel{row['op_id']}"
    access = pd.DataFrame(accesses, columns=["op_id", "tensor_id", "write"])
    sizes = {i: t["nbytes"] for i, t in enumerate(tensors)}
    access["nbytes"] = access["tensor_id"].map(sizes).astype(float)
    tensor_rows = []
    for i, tensor in enumerate(tensors):
        used = access.loc[access["tensor_id"] == i, "op_id"]
        tensor_rows.append({"tensor_id": i, "dtype": "bf16", "shape": "", "device": "meta", "name": f"t{i}",
                            "first_op": int(used.min()), "last_op": int(used.max()), "preexisting": False,
                            "alive_at_end": False, "role": "activation"} | tensor)
    ops_frame = pd.DataFrame(op_rows, columns=list(OP_COLUMNS))
    for kind_column in ("bytes_read", "bytes_written"):
        write = kind_column == "bytes_written"
        per_op = access[access["write"] == write].groupby("op_id")["nbytes"].sum()
        ops_frame[kind_column] = ops_frame["op_id"].map(per_op).fillna(0.0)
    return Trace(ops_frame, pd.DataFrame(tensor_rows, columns=list(TENSOR_COLUMNS)), access, {"tokens": 1})


def gpu_system(hbm: str = "80 GB", dispatch: str = "5 us", op_overhead: str = "1 us") -> dict:
    """One GPU (1000 GB/s HBM, 1000 TFLOP/s) and a host (100 GB/s DDR) on 50 GB/s PCIe."""
    return {
        "name": "toy",
        "devices": {
            "gpu": {"kind": "gpu", "dispatch_overhead": dispatch,
                    "memories": {"hbm": {"kind": "hbm", "capacity": hbm, "bandwidth": "1000 GB/s"}},
                    "compute": {"sm": {"kind": "sm", "matrix_flops": {"bf16": "1000 TFLOP/s"},
                                       "vector_flops": {"bf16": "100 TFLOP/s"}, "op_overhead": op_overhead}}},
            "host": {"kind": "cpu", "memories": {"ddr": {"kind": "ddr", "capacity": "1 TB", "bandwidth": "100 GB/s"}}},
        },
        "links": {"pcie": {"kind": "pcie", "between": ["host.ddr", "gpu.hbm"], "bandwidth": "50 GB/s"}},
    }


@pytest.fixture(scope="module")
def llama7b_decode():
    return trace_workload("llama2-7b", StepSpec(phase="decode", batch=1, context=1024))


def test_7b_decode_with_weights_streamed_over_pcie_runs_at_the_slower_of_compute_and_pcie(llama7b_decode):
    trace = llama7b_decode
    system = load_system("nvidia-h100-sxm")
    in_hbm = simulate(trace, system)
    plan = {"placement": [{"role": "weight", "tier": "host.ddr"}], "prefetch_depth": 2, "copy_engines": 2}
    streamed = simulate(trace, system, plan)
    # Weight bytes the step reads: every weight but the embedding table, of which it reads one row.
    _, cfg = resolve("llama2-7b")
    d = cfg.head_dim
    per_layer = (cfg.hidden * cfg.heads * d * 2 + cfg.hidden * cfg.kv_heads * d * 2
                 + 3 * cfg.hidden * cfg.intermediate + 2 * cfg.hidden)
    weight_bytes = 2 * (cfg.vocab_size * cfg.hidden + cfg.layers * per_layer + cfg.hidden + cfg.hidden)
    link = system.links["pcie"]
    pcie = link.bandwidth * link.efficiency
    expected = max(in_hbm.step_time_s, weight_bytes / pcie)
    assert streamed.step_time_s == pytest.approx(expected, rel=0.05)
    assert streamed.movement["bytes_by_kind"]["fetch"] == pytest.approx(weight_bytes, rel=0.001)
    assert streamed.utilisation["pcie host.ddr->gpu.hbm"] > 0.95
    # Without prefetch the copies no longer hide the compute: slower than with it.
    on_demand = simulate(trace, system, {**plan, "prefetch_depth": 0})
    assert on_demand.step_time_s > streamed.step_time_s + 0.5 * in_hbm.step_time_s


def test_a_trace_of_1000_tiny_kernels_is_bound_by_host_dispatch():
    n = 1000
    trace = synthetic_trace([{"flops": 1e3} for _ in range(n)], [{"nbytes": 4096} for _ in range(n)],
                            [(i, i, True) for i in range(n)])
    system = validate_system(gpu_system(dispatch="5 us", op_overhead="1 us"))
    result = simulate(trace, system)
    gpu_time = n * (1e-6 + 4096 / 1000e9)          # launch overhead + writing 4 KB, per kernel
    host_time = n * 5e-6
    last_kernel = 1e-6 + 4096 / 1000e9
    assert result.step_time_s == pytest.approx(host_time + last_kernel, rel=1e-9)
    assert result.step_time_s > 4 * gpu_time
    shares = result.time_shares()
    # The GPU idles from each kernel's end to the next issue (and for the first issue from t=0).
    assert shares["host_wait"] == pytest.approx((host_time - (n - 1) * last_kernel) / result.step_time_s, rel=1e-9)
    assert (result.ops["waited"] == "host").all()


def overflow_trace() -> Trace:
    """Three 40 MiB weights read in the order A B C A, on a GPU with 100 MiB of HBM."""
    weights = [{"nbytes": 40 * MB, "role": "weight", "preexisting": True, "alive_at_end": True, "name": name}
               for name in ("A", "B", "C")]
    return synthetic_trace([{"category": "gemm", "flops": 1e6} for _ in range(4)], weights,
                           [(0, 0, False), (1, 1, False), (2, 2, False), (3, 0, False)])


def test_a_tier_overflow_names_the_tier_capacity_peak_time_and_largest_tensors():
    system = validate_system(gpu_system(hbm="100 MiB"))
    with pytest.raises(MemsimError) as error:
        simulate(overflow_trace(), system)
    message = str(error.value)
    assert "gpu.hbm holds 100 MiB" in message
    assert "needs 120 MiB at its peak" in message
    assert "t=0" in message
    assert "weight A 40 MiB" in message and "weight B 40 MiB" in message


def test_with_an_lru_plan_the_same_run_completes_and_moves_the_bytes_expected():
    # A and B fit, C starts in host DDR. Before op 2, C comes back (40 MiB) and LRU evicts A,
    # which has no other copy, so it is written out (40 MiB). Before op 3, A comes back (40 MiB)
    # and LRU evicts B (40 MB written out). Moved: 80 MiB in, 80 MiB out.
    system = validate_system(gpu_system(hbm="100 MiB"))
    result = simulate(overflow_trace(), system, {"eviction": "lru", "prefetch_depth": 1})
    moved = result.movement["bytes_by_kind"]
    assert moved["refetch"] == pytest.approx(80 * MB)
    assert moved["evict"] == pytest.approx(80 * MB)
    assert result.peak_bytes()["gpu.hbm"] <= 100 * MB
    # Next use (PatrickStar): before op 2 it evicts B, never needed again, and A stays.
    patrick = simulate(overflow_trace(), system, {"eviction": "next_use"})
    assert patrick.movement["bytes_by_kind"]["refetch"] == pytest.approx(40 * MB)
    assert patrick.movement["bytes_by_kind"]["evict"] == pytest.approx(40 * MB)
    assert patrick.step_time_s < result.step_time_s


def test_same_inputs_give_a_bit_identical_timeline_with_movement(llama7b_decode):
    system = load_system("nvidia-h100-sxm")
    plan = {"placement": [{"role": "weight", "tier": "host.ddr", "layer": "0-15"}], "prefetch_depth": 3}
    first = simulate(llama7b_decode, system, plan)
    second = simulate(llama7b_decode, system, plan)
    assert first.timeline.equals(second.timeline)
    assert np.array_equal(first.timeline["end_s"].to_numpy(), second.timeline["end_s"].to_numpy())
    assert first.occupancy_over_time.equals(second.occupancy_over_time)


def test_two_compute_streams_share_the_compute_unit_and_a_consumer_waits_for_both():
    # Two independent GEMMs of 1 ms each (1e12 FLOPs at 1000 TFLOP/s) on two streams, issued at 5
    # and 10 us, computing after a 1 us launch: the first runs alone from 6 to 11 us (995 us left),
    # then both at half speed; the first ends 2 x 995 us later (2001 us), the second has 5 us left,
    # alone again (2006 us). The third op reads both outputs: 2006 + 1 + 1000 = 3007 us.
    ops = [{"category": "gemm", "flops": 1e12, "stream": 0}, {"category": "gemm", "flops": 1e12, "stream": 1},
           {"category": "gemm", "flops": 1e12, "stream": 0}]
    trace = synthetic_trace(ops, [{"nbytes": 1e3}, {"nbytes": 1e3}, {"nbytes": 1e3}],
                            [(0, 0, True), (1, 1, True), (2, 0, False), (2, 1, False), (2, 2, True)])
    result = simulate(trace, validate_system(gpu_system()), {"compute_streams": 2})
    end = result.ops["end_s"].to_numpy()
    assert end == pytest.approx([2001e-6, 2006e-6, 3007e-6], rel=1e-6)
    assert list(result.ops["stream"]) == ["gpu.compute0", "gpu.compute1", "gpu.compute0"]


def test_an_evicted_tensor_written_since_it_came_back_is_written_out_again():
    # A and B fit; C starts in DDR (a clean copy there). op2 brings C back (40) and evicts A, which
    # has no copy (40 out). op3 writes C. op4 brings A back (40), evicting B (no copy: 40 out).
    # op5 brings B back (40), evicting C: written at op3, so its DDR copy is stale (40 out).
    weights = [{"nbytes": 40 * MB, "role": "weight", "preexisting": True, "alive_at_end": True, "name": name}
               for name in ("A", "B", "C")]
    trace = synthetic_trace([{"category": "gemm", "flops": 1e6} for _ in range(6)], weights,
                            [(0, 0, False), (1, 1, False), (2, 2, False), (3, 2, True), (4, 0, False), (5, 1, False)])
    result = simulate(trace, validate_system(gpu_system(hbm="100 MiB")), {"eviction": "lru"})
    assert result.movement["bytes_by_kind"]["refetch"] == pytest.approx(120 * MB)
    assert result.movement["bytes_by_kind"]["evict"] == pytest.approx(120 * MB)
    assert result.movement["evictions"] == 3


def test_a_calibrated_dispatch_overhead_overrides_the_datasheet_one():
    n = 100
    trace = synthetic_trace([{"flops": 1e3} for _ in range(n)], [{"nbytes": 4096} for _ in range(n)],
                            [(i, i, True) for i in range(n)])
    config = gpu_system(dispatch="5 us")
    config["devices"]["gpu"]["calibration"] = {"source": "a test", "dispatch_overhead": "20 us"}
    result = simulate(trace, validate_system(config))
    assert result.step_time_s == pytest.approx(n * 20e-6 + 1e-6 + 4096 / 1000e9, rel=1e-9)


@pytest.mark.parametrize("policy", ["lru", "next_use"])
def test_eviction_keeps_a_prefill_within_a_tier_too_small_for_it(policy):
    trace = trace_workload("llama-tiny", StepSpec(phase="prefill", context=64, batch=2))
    needed = simulate(trace, load_system("nvidia-h100-sxm")).peak_bytes()["gpu.hbm"]
    small = load_system("nvidia-h100-sxm", {"devices.gpu.memories.hbm.capacity": f"{int(0.6 * needed)} B"})
    with pytest.raises(MemsimError, match="does not fit: gpu.hbm"):
        simulate(trace, small)
    result = simulate(trace, small, {"eviction": policy, "prefetch_depth": 2})
    assert result.peak_bytes()["gpu.hbm"] <= int(0.6 * needed)
    assert result.movement["bytes_by_kind"]["evict"] > 0
