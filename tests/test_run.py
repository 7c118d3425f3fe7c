"""memsim run end to end: predictions checked against figures computed from the config."""
import json

import numpy as np
import pytest

from memsim.engine import simulate
from memsim.hardware import load_system
from memsim.trace.workload import StepSpec, resolve, trace_workload


def llama_bytes(cfg, batch: int, context: int, bytes_per_value: int = 2) -> tuple[float, float]:
    """(weight bytes, KV-cache bytes) of a Llama config, from its dimensions alone."""
    d = cfg.head_dim
    per_layer = (cfg.hidden * cfg.heads * d * 2 + cfg.hidden * cfg.kv_heads * d * 2
                 + 3 * cfg.hidden * cfg.intermediate + 2 * cfg.hidden)
    params = 2 * cfg.vocab_size * cfg.hidden + cfg.layers * per_layer + cfg.hidden
    kv = 2 * cfg.layers * batch * cfg.kv_heads * context * d
    return params * bytes_per_value, kv * bytes_per_value


def test_decode_at_batch_1_is_memory_bound_near_the_bandwidth_limit(run_cli):
    context = 4096
    proc = run_cli("run", "nvidia-h100-sxm", "llama2-7b", "--phase", "decode", "--batch", "1",
                   "--context", context, "--json", check=True)
    summary = json.loads(proc.stdout)
    _, cfg = resolve("llama2-7b")
    weights, kv = llama_bytes(cfg, 1, context + 1)
    bandwidth = load_system("nvidia-h100-sxm").device.memories["hbm"].read_bandwidth
    floor = (weights + kv) / bandwidth
    assert floor <= summary["step_time_s"] <= 1.5 * floor
    assert summary["time_share"]["memory_bound"] > summary["time_share"]["compute_bound"]
    for key in ("step_time_s", "tokens_per_s", "peak_bytes", "bytes_moved", "ops", "hardware", "workload"):
        assert key in summary
    assert summary["peak_bytes"]["gpu.hbm"] == pytest.approx(weights + kv, rel=0.01)
    assert summary["tokens_per_s"] == pytest.approx(1 / summary["step_time_s"])


def test_prefill_of_a_long_prompt_is_compute_bound():
    system = load_system("nvidia-h100-sxm")
    result = simulate(trace_workload("llama2-7b", StepSpec(phase="prefill", context=4096)), system)
    shares = result.time_shares()
    assert shares["compute_bound"] > shares["memory_bound"]
    projections = result.timeline[(result.timeline.category == "gemm") & (result.timeline.scope != "lm_head")]
    assert (projections.bound == "compute").all()
    unit = system.device.compute["sm"]
    gemm_flops = result.timeline[result.timeline.category == "gemm"].flops.sum()
    assert result.step_time_s >= gemm_flops / unit.matrix_flops["bf16"]


def test_unfused_attention_of_a_long_prompt_is_slower_by_its_score_matrix_traffic(run_cli):
    args = ("run", "nvidia-h100-sxm", "llama2-7b", "--phase", "prefill", "--context", 4096, "--json")
    fused = json.loads(run_cli(*args, check=True).stdout)
    unfused = json.loads(run_cli(*args, "--attention", "unfused", check=True).stdout)
    _, cfg = resolve("llama2-7b")
    # each layer writes and reads the heads x 4096 x 4096 scores several times (bf16 and fp32)
    scores = cfg.layers * cfg.heads * 4096 * 4096 * 2
    hbm = load_system("nvidia-h100-sxm").device.memories["hbm"].read_bandwidth
    assert unfused["step_time_s"] - fused["step_time_s"] >= 4 * scores / hbm
    assert unfused["bytes_moved"]["gpu.hbm"] - fused["bytes_moved"]["gpu.hbm"] >= 4 * scores


def test_table_output_and_timeline_file(run_cli, tmp_path):
    proc = run_cli("run", "nvidia-a100-80gb-sxm", "llama-tiny", "--phase", "prefill", "--context", "32",
                   "--out", tmp_path, check=True)
    for text in ("step time", "tokens/s", "gpu.hbm", "most expensive ops", "memory-bound"):
        assert text in proc.stdout
    import pandas as pd
    timeline = pd.read_csv(tmp_path / "timeline.csv")
    assert {"op_id", "name", "start_s", "end_s", "bound"} <= set(timeline.columns)
    assert (timeline.end_s >= timeline.start_s).all()


def test_a_step_that_does_not_fit_says_so(run_cli):
    proc = run_cli("run", "nvidia-h100-sxm", "llama2-70b", "--phase", "decode", "--context", "4096")
    assert proc.returncode == 2
    assert "does not fit: gpu.hbm holds 80 GiB" in proc.stderr
    assert "weight" in proc.stderr and "Traceback" not in proc.stderr


def test_same_inputs_give_a_bit_identical_timeline():
    system = load_system("nvidia-h200")
    first = simulate(trace_workload("llama-tiny", StepSpec(phase="decode", batch=4, context=64)), system)
    second = simulate(trace_workload("llama-tiny", StepSpec(phase="decode", batch=4, context=64)), system)
    assert first.timeline.equals(second.timeline)
    assert np.array_equal(first.timeline.end_s.to_numpy(), second.timeline.end_s.to_numpy())


def test_run_accepts_a_saved_trace(run_cli, tmp_path):
    path = trace_workload("llama-tiny", StepSpec(phase="decode", context=32)).save(tmp_path / "t.memtrace")
    proc = run_cli("run", "nvidia-h100-sxm", path, "--json", check=True)
    assert json.loads(proc.stdout)["workload"]["workload"] == "llama-tiny"
