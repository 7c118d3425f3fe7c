"""Readers of measured files, error metrics and `memsim validate`, on files written here."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import HWCONFIGS, ground_truth
from memsim.errors import MemsimError
from memsim.hardware import load_system
from memsim.validate.fit import calibration_half
from memsim.validate.metrics import error_summary, errors
from memsim.validate.readers import detect_format, read_measured
from memsim.validate.report import predict

OPS = ["emb", "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
       "mlp_up_proj", "mlp_act", "mlp_down_proj", "add"]


def write_vidur(path, tokens=(8, 16), tp=2):
    rows = []
    for t in tokens:
        row = {f"time_stats.{op}.median": 0.01 * (i + 1) for i, op in enumerate(OPS)}
        row.update(n_head=4, n_kv_head=2, n_embd=64, n_expanded_embd=128, vocab_size=1000, use_gated_mlp=True,
                   num_tokens=t, num_tensor_parallel_workers=tp)
        rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_vidur_mlp_shapes(tmp_path):
    data = read_measured(write_vidur(tmp_path / "mlp.csv"))
    assert data.format == "vidur-mlp"
    ops = data.ops[data.ops["size"] == 8].set_index("label")
    # TP 2: 2 query heads and 1 KV head of head_dim 64/4 = 16 -> QKV width (2 + 2*1) * 16 = 64
    pre = ops.loc["attn_pre_proj"]
    assert (pre["m"], pre["n"], pre["k"]) == (8, 64, 64)
    assert pre["flops"] == 2 * 8 * 64 * 64 and pre["measured_s"] == pytest.approx(0.03e-3)
    # gated MLP: up projection makes 2 * 128/2 columns; down projection reads 64
    assert (ops.loc["mlp_up_proj", "n"], ops.loc["mlp_down_proj", "k"]) == (128, 64)
    # residual add reads two 8x64 fp16 tensors and writes one
    assert (ops.loc["add", "bytes_read"], ops.loc["add", "bytes_written"]) == (2 * 8 * 64 * 2, 8 * 64 * 2)
    assert ops.loc["input_layernorm", "category"] == "norm" and ops.loc["emb", "category"] == "gather"


def test_vidur_parallel_block_sums_three_tensors_and_a_plain_mlp_runs_gelu_contiguously(tmp_path):
    # phi-2's block (no post-attention norm, no gated MLP): add = attention + MLP + residual
    path = write_vidur(tmp_path / "mlp.csv")
    frame = pd.read_csv(path).drop(columns=["time_stats.post_attention_layernorm.median"])
    frame.assign(use_gated_mlp=False).to_csv(path, index=False)
    ops = read_measured(path).ops
    ops = ops[ops["size"] == 8].set_index("label")
    assert "post_attention_layernorm" not in ops.index
    add = ops.loc["add"]
    # two add kernels, each reading two 8x64 fp16 tensors and writing one
    assert (add["bytes_read"], add["bytes_written"]) == (4 * 8 * 64 * 2, 2 * 8 * 64 * 2)
    assert json.loads(add["attrs"])["kernels"] == 2
    # GELU reads the 8 x 128/2 up-projection output once, contiguously
    act = ops.loc["mlp_act"]
    assert (act["category"], act["bytes_read"], act["bytes_written"]) == ("elementwise", 8 * 64 * 2, 8 * 64 * 2)


def test_vidur_rows_are_priced_in_the_power_state_of_the_layers_profiled_before_them(tmp_path):
    # Llama-2-70B's layer at TP 1: at 4096 tokens its GEMMs fill ~95% of 30 layers of ~10 ms
    # run before the median one, so an H100 runs them capped; at 64 tokens a layer is ~0.5 ms
    # of mostly weight streaming and nothing is capped
    rows = []
    for tokens, layer_ms in ((4096, (0.25, 0.12, 0.98, 0.1, 0.79, 0.12, 5.67, 0.36, 2.65, 0.06)),
                             (64, (0.01, 0.01, 0.06, 0.01, 0.05, 0.01, 0.25, 0.01, 0.12, 0.01))):
        row = {f"time_stats.{op}.median": ms for op, ms in zip(OPS, layer_ms)}
        row.update(n_head=64, n_kv_head=8, n_embd=8192, n_expanded_embd=28672, vocab_size=32000,
                   use_gated_mlp=True, num_tokens=tokens, num_tensor_parallel_workers=1)
        rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "mlp.csv", index=False)
    ops = read_measured(tmp_path / "mlp.csv").ops
    assert (ops.groupby("size")["pass_group"].nunique() == 1).all() and (ops["passes_before"] == 30).all()
    system = load_system("nvidia-h100-sxm")
    unit = system.device.compute["sm"]
    capped = predict(ops, system)
    free = predict(ops.drop(columns=["pass_group", "passes_before"]), system)
    large = (capped["size"] == 4096) & (capped["category"] == "gemm")
    held = capped["flops"] / (unit.power_cap.sustained_matrix_fraction * unit.matrix_flops["fp16"])
    assert (capped.loc[large, "predicted_s"] >= held[large] * 0.999).all()
    assert (capped.loc[large, "predicted_s"] > free.loc[large, "predicted_s"] * 1.02).all()
    small = capped["size"] == 64
    assert capped.loc[small, "predicted_s"].to_numpy() == pytest.approx(free.loc[small, "predicted_s"].to_numpy())


def test_vidur_collectives_are_priced_over_the_nodes_switch(run_cli, tmp_path):
    path = tmp_path / "all_reduce.csv"
    path.write_text(",time_stats.all_reduce.median,rank,num_workers,size,collective,devices_per_node\n"
                    "0,0.05,0,8,2097152,all_reduce,8\n1,0.3,0,4,134217728,all_reduce,4\n")
    data = read_measured(path)
    assert data.format == "vidur-collective"
    first = data.ops.iloc[0]
    # 2 MiB per rank (1 Mi fp16 elements), over 8 ranks
    assert (first["category"], first["bytes_read"], json.loads(first["attrs"])) == \
        ("collective", 2 * 2**20, {"kind": "all_reduce", "ranks": 8})
    result = json.loads(run_cli("validate", path, "--hw", "nvidia-hgx-h100-8gpu", "--json", check=True).stdout)
    predicted = result["groups"]["overall"]["predicted_s"]
    # ring over the HGX switch at 0.8 x 450 GB/s: 2 MiB over 8 ranks sends 2 x 7/8 of it in 14 steps
    # of 3 us; 128 MiB over 4 ranks, 2 x 3/4 of it in 6 steps; each with the 1 us kernel overhead
    assert predicted == pytest.approx(1.75 * 2**21 / 360e9 + 14 * 3e-6 + 1.5 * 2**27 / 360e9 + 6 * 3e-6 + 2e-6,
                                      rel=1e-6)
    # an all-gather of 2 MiB per rank moves the gathered 8 x 2 MiB through the ring:
    # 7 x (3 us + 16 MiB / 8 / 240 GB/s) + 1 us on the DGX A100 (300 GB/s x 0.8)
    path.write_text(",time_stats.all_gather.median,rank,num_workers,size,collective,devices_per_node\n"
                    "0,0.1,0,8,2097152,all_gather,8\n")
    result = json.loads(run_cli("validate", path, "--hw", "nvidia-dgx-a100-8gpu", "--json", check=True).stdout)
    assert result["groups"]["overall"]["predicted_s"] == pytest.approx(7 * (3e-6 + 2**24 / 8 / 240e9) + 1e-6)
    # a send from one GPU to another moves its 2 MiB once: 3 us + 2 MiB / 360 GB/s + 1 us
    path.write_text(",time_stats.send_recv.median,rank,num_workers,size,collective,devices_per_node\n"
                    "0,0.01,0,2,2097152,send_recv,2\n")
    result = json.loads(run_cli("validate", path, "--hw", "nvidia-hgx-h100-8gpu", "--json", check=True).stdout)
    assert result["groups"]["overall"]["predicted_s"] == pytest.approx(3e-6 + 2**21 / 360e9 + 1e-6)
    # a single-GPU config has no switch: the collectives' link is said on stderr
    single = run_cli("validate", path, "--hw", "nvidia-h100-sxm", check=True)
    assert "no link joins copies of a device" in single.stderr
    # ranks over two nodes are left out, and said so
    path.write_text(",time_stats.all_reduce.median,rank,num_workers,size,collective,devices_per_node\n"
                    "0,0.05,0,4,2048,all_reduce,2\n1,0.05,0,2,2048,all_reduce,2\n")
    data = read_measured(path)
    assert list(data.ops["label"]) == ["all_reduce x2"] and data.meta["skipped"].startswith("1 rows")


def test_other_formats(tmp_path):
    matmul = tmp_path / "matmul_A100.csv"
    matmul.write_text("64, 128, 256, 0.0100ms, 1.0Tflops\n")
    (op,) = read_measured(matmul).ops.to_dict("records")
    assert (op["m"], op["n"], op["k"], op["measured_s"]) == (64, 128, 256, pytest.approx(1e-5))
    gelu = tmp_path / "gelu_A100.csv"
    gelu.write_text("1000, 2.0\n")  # 1000 elements at 2 G elements/s = 0.5 us
    assert read_measured(gelu).ops["measured_s"][0] == pytest.approx(0.5e-6)
    gemm = tmp_path / "GEMM.csv"
    gemm.write_text("name,param: B,param: M,param: N,param: K,param: bias,param: dtype_A_B,Kernel Time (µs)_median\n"
                    "aten::mm,1,32,64,128,False,\"('c10::BFloat16', 'c10::BFloat16')\",5.0\n")
    data = read_measured(gemm)
    assert data.format == "tracelens-gemm"
    assert data.ops["dtype"][0] == "bf16" and data.ops["flops"][0] == 2 * 32 * 64 * 128
    assert detect_format(tmp_path / "trace.json.gz") == "kineto"


def test_unreadable_files_name_the_file(tmp_path):
    unknown = tmp_path / "numbers.csv"
    unknown.write_text("a,b\n1,2\n")
    with pytest.raises(MemsimError, match="numbers.csv.*--format"):
        read_measured(unknown)
    with pytest.raises(MemsimError, match="missing column"):
        read_measured(unknown, "vidur-mlp")
    with pytest.raises(MemsimError, match="no such file"):
        read_measured(tmp_path / "absent.csv")
    garbled = tmp_path / "all_reduce.csv"
    garbled.write_text(",time_stats.all_reduce.median,num_workers,size,collective\n0,0.05,8,2048,all_reduce\n"
                       "1,fast,8,4096,all_reduce\n")
    with pytest.raises(MemsimError, match=r"all_reduce.csv: line 3, column time_stats.all_reduce.median: "
                                          r"expected a number, got 'fast'"):
        read_measured(garbled)


def test_error_metrics_by_hand():
    # relative errors +10%, -20%, +50%, 0%
    measured = np.array([1.0, 1.0, 2.0, 4.0])
    predicted = np.array([1.1, 0.8, 3.0, 4.0])
    result = errors(measured, predicted)
    assert result["mape"] == pytest.approx((0.1 + 0.2 + 0.5 + 0) / 4)
    assert result["median_ape"] == pytest.approx(0.15)
    assert result["signed_mean"] == pytest.approx((0.1 - 0.2 + 0.5) / 4)
    assert result["sum_error"] == pytest.approx(8.9 / 8.0 - 1)
    frame = pd.DataFrame({"category": ["gemm", "norm", "memcpy", "collective"], "measured_s": measured,
                          "predicted_s": predicted})
    summary = error_summary(frame)
    assert list(summary) == ["gemm", "elementwise", "memcpy", "other", "overall"]
    assert summary["elementwise"]["mape"] == pytest.approx(0.2)


def test_validate_command(run_cli, tmp_path):
    path = write_vidur(tmp_path / "mlp.csv")
    html = tmp_path / "report.html"
    proc = run_cli("validate", path, "--hw", "nvidia-h100-sxm", "--json", "--html", html, check=True)
    result = json.loads(proc.stdout)
    assert result["groups"]["overall"]["count"] == 20
    assert set(result["ops"]) == set(OPS) | {"overall"}
    assert "memsim-validation" in html.read_text()
    bad = run_cli("validate", tmp_path / "absent.csv", "--hw", "nvidia-h100-sxm")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "absent.csv" in bad.stderr


def _calibrated_on_half_of_vidur_7b(run_cli, tmp_path, gpu: str, hw: str):
    """`memsim calibrate --fit-half` on Vidur's Llama-2-7B file of a GPU, then `validate
    --held-out` of the other half: the calibrated YAML and the validation's JSON."""
    path = ground_truth(f"microsoft/vidur/data/profiling/compute/{gpu}/meta-llama/Llama-2-7b-hf/mlp.csv")
    out = tmp_path / f"{gpu}.yaml"
    run_cli("calibrate", "--from", path, "--hw", HWCONFIGS / f"{hw}.yaml", "--fit-half", "--out", out, check=True)
    return out, json.loads(run_cli("validate", path, "--hw", out, "--held-out", "--json", check=True).stdout)


def _one_block_per_token_kernels_at_small_batches(calibrated, gpu: str) -> float:
    """MAPE of the held-out rotary and SiLU-and-mul kernels of at most 64 tokens: vLLM kernels of
    one thread block per token, bound by what so few blocks stream."""
    path = ground_truth(f"microsoft/vidur/data/profiling/compute/{gpu}/meta-llama/Llama-2-7b-hf/mlp.csv")
    ops = read_measured(path).ops
    small = ops[~calibration_half(ops["size"]) & (ops["size"] <= 64) & ops["label"].isin(["attn_rope", "mlp_act"])]
    priced = predict(small.reset_index(drop=True), load_system(calibrated))
    return float(np.mean(np.abs(priced["predicted_s"] / priced["measured_s"] - 1.0)))


def test_vidur_h100_calibration_generalises_to_held_out_sizes_and_to_kineto(run_cli, tmp_path):
    """The issue's targets: calibrated on every other token count, GEMMs of the other half have
    MAPE <= 8% and median error <= 5% (6.7% and 4.8%; 7.0% and 5.1% before small tiles waited
    for their operands from the L2, asserted near the level reached so that a regression
    fails); every op kind MAPE <= 10%; the Kineto Qwen trace, another setup on the same GPU,
    within 10% summed. All met."""
    out, result = _calibrated_on_half_of_vidur_7b(run_cli, tmp_path, "h100", "nvidia-h100-sxm")
    gemm = result["groups"]["gemm"]
    assert gemm["mape"] <= 0.070 and gemm["median_ape"] <= 0.050
    for kind, summary in result["ops"].items():
        assert summary["mape"] <= 0.10, kind
    # 13% (29% priced at the memory's rate alone)
    assert _one_block_per_token_kernels_at_small_batches(out, "h100") <= 0.16

    qwen = ground_truth("AMD-AGI/TraceLens/tests/traces/h100/Qwen_Qwen1.5-0.5B-Chat__1016005.json.gz")
    kineto = json.loads(run_cli("validate", qwen, "--hw", out, "--json", check=True).stdout)
    assert abs(kineto["groups"]["overall"]["sum_error"]) <= 0.10


def test_vidur_a100_calibration_generalises_to_held_out_sizes(run_cli, tmp_path):
    """The A100 half: GEMMs of the other half at MAPE 6.5%, median 5.3% (the median target,
    5%, missed), asserted near the level reached; with whole last waves (wave_quantization 1)
    they were 7.0% and 5.7%, and 6.6% and 5.4% before small tiles waited for their operands."""
    out, result = _calibrated_on_half_of_vidur_7b(run_cli, tmp_path, "a100", "nvidia-a100-80gb-sxm")
    gemm = result["groups"]["gemm"]
    assert gemm["mape"] <= 0.067 and gemm["median_ape"] <= 0.055
    for kind, summary in result["ops"].items():
        assert summary["mape"] <= 0.10, kind
    # 14% (35% priced at the memory's rate alone)
    assert _one_block_per_token_kernels_at_small_batches(out, "a100") <= 0.17


def test_vidur_a100_attention_calibrated_on_half_its_sizes(run_cli, tmp_path):
    """Vidur's A100 attention profile runs flash_attn_with_kvcache, whose blocks each copy the
    new keys they see and, in a decode, run the query heads of a KV head together, each block
    streaming its split of the keys at a calibrated rate: calibrated on every other size, the
    held-out prefill reaches 8.7% MAPE (24.1% when priced as the forward kernel, without the
    copies) and decode 9.0% (11.0% with the memory's rate alone)."""
    path = ground_truth("microsoft/vidur/data/profiling/a100/attention.csv")
    out = tmp_path / "attention.yaml"
    run_cli("calibrate", "--from", path, "--hw", HWCONFIGS / "nvidia-a100-80gb-sxm.yaml", "--fit-half", "--out", out,
            check=True)
    result = json.loads(run_cli("validate", path, "--hw", out, "--held-out", "--json", check=True).stdout)
    assert result["ops"]["attn_prefill"]["mape"] <= 0.09
    assert result["ops"]["attn_decode"]["mape"] <= 0.095


def _run_all():
    """validation/run_all.py as a module."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("run_all", REPO / "validation" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    return run_all


def test_a_readme_rewritten_without_the_vidur_clone_keeps_the_clones_rows_marked():
    run_all = _run_all()
    table = "| file | config | n |\n|---|---|---|\n"
    before = (f"# V\n\n{run_all.TARGETS_HEADING}\n\n| target | reached | |\n|---|---|---|\n"
              "| h100 Vidur held-out GEMMs: median <= 5% | 4.8% | met |\n"
              "| h100 Vidur Qwen-72B mlp.csv GEMMs (other model, same GPU): median <= 5% | 6.5% | missed |\n"
              "| this CPU, llama-tiny prefill: summed time within 15% | 4.6% | met |\n\nfindings\n\n"
              f"## Results\n\n{table}| h100 GEMM.csv | calibrated | 5 |\n| h100 Vidur Qwen-72B mlp.csv [gemm] | calibrated | 9 |\n"
              "| h100 gone.csv | calibrated | 1 |\n\n"
              f"{run_all.CPU_HEADING}\n\nmeasured here\n")
    after = (f"# V\n\n{run_all.TARGETS_HEADING}\n\n| target | reached | |\n|---|---|---|\n"
             "| h100 Vidur held-out GEMMs: median <= 5% | 4.7% | met |\n\nnew findings\n\n"
             f"## Results\n\n{table}| h100 GEMM.csv | calibrated | 6 |\n| h100 new.csv | calibrated | 2 |\n\n"
             f"{run_all.CPU_HEADING}\n\n(skipped: --no-cpu)\n")
    merged = run_all.kept_from(before, after)
    mark = run_all.KEPT_MARK
    assert "| h100 Vidur held-out GEMMs: median <= 5% | 4.7% | met |" in merged     # regenerated
    assert f"| h100 Vidur Qwen-72B mlp.csv GEMMs (other model, same GPU): median <= 5%{mark} | 6.5%" in merged
    assert "| this CPU, llama-tiny prefill: summed time within 15% | 4.6% | met |" in merged
    assert "| h100 GEMM.csv | calibrated | 6 |" in merged and "| h100 new.csv | calibrated | 2 |" in merged
    assert f"| h100 Vidur Qwen-72B mlp.csv [gemm]{mark} | calibrated | 9 |" in merged
    assert "gone.csv" not in merged and "new findings" in merged and "measured here" in merged
    assert merged.count(run_all.KEPT_NOTE) == 2
    assert run_all.kept_from(merged, after) == merged                            # marks are not doubled


def test_a_cpu_only_rewrite_replaces_the_cpu_rows_and_keeps_the_kept_rows_note(tmp_path):
    run_all = _run_all()
    readme = tmp_path / "README.md"
    readme.write_text(f"# V\n\n{run_all.TARGETS_HEADING}\n\n| target | reached | |\n|---|---|---|\n"
                      f"| h100 Vidur Qwen-72B mlp.csv GEMMs: median <= 5%{run_all.KEPT_MARK} | 6.5% | missed |\n"
                      "| this CPU, llama-tiny prefill: summed time within 15% | 4.25% | met |\n\n"
                      f"{run_all.KEPT_NOTE}\n\nold findings\n\n{run_all.FLOORS_HEADING}\n\nfloors\n\n"
                      f"{run_all.CPU_HEADING}\n\nmeasured before\n")
    run_all.refresh_cpu(readme, ["measured now"], [("this CPU, llama-tiny prefill: summed time within 15%", 0.2, 0.15)])
    text = readme.read_text()
    assert "| this CPU, llama-tiny prefill: summed time within 15% | 20.0% | missed |" in text and "4.25%" not in text
    assert text.count(run_all.KEPT_NOTE) == 1 and "6.5%" in text and "floors" in text
    assert run_all.FINDINGS in text and "old findings" not in text
    assert "measured now" in text and "measured before" not in text
