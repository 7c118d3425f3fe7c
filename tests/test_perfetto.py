"""The Perfetto export: valid JSON, one track per stream, events counted per track."""
import json
from collections import Counter

from test_engine import gpu_system, synthetic_trace

from memsim.engine import simulate
from memsim.hardware.load import validate_system
from memsim.report.perfetto import perfetto_trace


def streamed_trace(n: int):
    """n ops, each reading its own 1 MB weight (kept in host DDR by the plan) and writing a result."""
    tensors = [{"nbytes": 1e6, "role": "weight", "preexisting": True, "alive_at_end": True} for _ in range(n)]
    tensors += [{"nbytes": 1e3} for _ in range(n)]
    accesses = [(i, i, False) for i in range(n)] + [(i, n + i, True) for i in range(n)]
    return synthetic_trace([{"category": "gemm", "flops": 1e9} for _ in range(n)], tensors, accesses)


def test_a_track_per_stream_with_one_event_per_task_and_counters():
    n = 6
    result = simulate(streamed_trace(n), validate_system(gpu_system()),
                      {"placement": [{"role": "weight", "tier": "host.ddr"}], "copy_engines": 2})
    trace = json.loads(json.dumps(perfetto_trace(result)))
    events = trace["traceEvents"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["name"] == "thread_name"}
    processes = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    per_track = Counter(names[(e["pid"], e["tid"])] for e in events if e["ph"] == "X")
    assert per_track == {"compute0": n, "copy0": n}      # one fetch per op on the host-to-device engine
    assert set(processes.values()) == {"gpu", "host"}
    counters = Counter(e["name"] for e in events if e["ph"] == "C")
    # HBM: every op allocates its result at its start and each fetch its staging buffer; both are
    # freed at the op's end (results are not kept): 4 samples per op, plus the value at t=0.
    assert counters["gpu.hbm occupancy"] == 4 * n + 1
    assert counters["host.ddr occupancy"] == 1
    assert counters["pcie host.ddr->gpu.hbm utilisation"] >= 2
    assert all(e["dur"] >= 0 for e in events if e["ph"] == "X")


def test_memsim_run_writes_a_perfetto_file(run_cli, tmp_path):
    path = streamed_trace(3).save(tmp_path / "t.memtrace")
    hardware = tmp_path / "toy.yaml"
    hardware.write_text(json.dumps(gpu_system()))
    plan = tmp_path / "plan.yaml"
    plan.write_text("placement:\n  - {role: weight, tier: host.ddr}\nprefetch_depth: 1\n")
    out = tmp_path / "trace.json"
    run_cli("run", hardware, path, "--plan", plan, "--perfetto", out, "--json", check=True)
    events = json.loads(out.read_text())["traceEvents"]
    assert sum(e["ph"] == "X" for e in events) == 6
