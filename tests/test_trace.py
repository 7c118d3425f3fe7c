"""Tracing through the dispatcher: ops, FLOPs, bytes, roles and lifetimes."""
import json

import numpy as np
import pytest
import torch

from memsim.errors import MemsimError
from memsim.trace import Trace, capture, tag
from memsim.trace.ops import categorize
from memsim.trace.workload import StepSpec, resolve, trace_workload


def matmul_params_per_layer(cfg) -> int:
    d = cfg.head_dim
    return cfg.hidden * cfg.heads * d * 2 + cfg.hidden * cfg.kv_heads * d * 2 + 3 * cfg.hidden * cfg.intermediate


def test_prefill_flops_match_parameter_count_and_attention_term():
    _, cfg = resolve("llama2-7b")
    tokens, batch = 2048, 1
    trace = trace_workload("llama2-7b", StepSpec(phase="prefill", batch=batch, context=tokens))
    dense = 2 * cfg.layers * matmul_params_per_layer(cfg) * tokens * batch
    lm_head = 2 * cfg.vocab_size * cfg.hidden * batch  # logits of the last position only
    causal_pairs = tokens * (tokens + 1) / 2
    attention = cfg.layers * 2 * batch * cfg.heads * causal_pairs * (2 * cfg.head_dim)
    expected = dense + lm_head + attention
    assert trace.total_flops == pytest.approx(expected, rel=0.02)
    gemm = trace.ops[trace.ops.category == "gemm"]
    assert gemm.flops.sum() == pytest.approx(dense + lm_head, rel=1e-9)


def test_decode_reads_every_weight_and_the_whole_kv_cache():
    _, cfg = resolve("llama2-7b")
    context = 4096
    trace = trace_workload("llama2-7b", StepSpec(phase="decode", batch=2, context=context))
    roles = trace.tensors.groupby("role")["nbytes"].sum()
    kv_bytes = 2 * cfg.layers * 2 * cfg.kv_heads * (context + 1) * cfg.head_dim * 2  # K and V, bf16
    assert roles["kv_cache"] == kv_bytes
    attention = trace.ops[trace.ops.category == "attention"]
    assert attention.bytes_read.sum() == pytest.approx(kv_bytes + 2 * cfg.layers * cfg.hidden * 2, rel=1e-3)
    reads = trace.accesses[~trace.accesses.write].merge(trace.tensors, on="tensor_id")
    weights_read = reads[reads.role == "weight"].groupby("tensor_id")["nbytes_x"].sum()
    weight_sizes = trace.tensors.set_index("tensor_id").loc[weights_read.index, "nbytes"]
    embedding = trace.tensors[trace.tensors.name == "embed.weight"].tensor_id.item()
    full = weights_read.drop(embedding) >= weight_sizes.drop(embedding)
    assert full.all(), "every weight but the embedding table is read whole"
    assert weights_read[embedding] == 2 * cfg.hidden * 2  # one row per sequence


def test_kv_cache_grows_with_context():
    small = trace_workload("llama-tiny", StepSpec(phase="decode", context=64))
    large = trace_workload("llama-tiny", StepSpec(phase="decode", context=128))
    kv = lambda t: t.tensors[t.tensors.role == "kv_cache"].nbytes.sum()
    assert kv(large) / kv(small) == pytest.approx(129 / 65)


def test_real_cpu_run_has_the_same_ops_as_meta_and_times_them():
    spec = dict(phase="decode", batch=2, context=16)
    meta = trace_workload("llama-tiny", StepSpec(**spec))
    real = trace_workload("llama-tiny", StepSpec(**spec, device="cpu"), mode="real")
    assert list(meta.ops.name) == list(real.ops.name)
    assert np.array_equal(meta.ops.bytes_read.to_numpy(), real.ops.bytes_read.to_numpy())
    assert meta.ops.measured_s.isna().all()
    assert (real.ops.measured_s > 0).all()


def test_collective_ops_are_collectives_and_sends_point_to_point():
    assert [categorize(name) for name in ("c10d::allreduce_", "_c10d_functional::all_gather_into_tensor",
                                          "c10d::send", "c10d::recv_")] == ["collective", "collective", "p2p", "p2p"]


def test_views_are_folded_and_scopes_recorded():
    trace = trace_workload("llama-tiny", StepSpec(phase="prefill", context=8))
    names = set(trace.ops.name)
    assert not names & {"aten::view", "aten::transpose", "aten::t", "aten::_unsafe_view", "aten::expand"}
    assert "layers.1.mlp.down_proj" in set(trace.ops.scope)


def test_elementwise_ops_over_non_contiguous_operands_are_strided():
    x = torch.zeros(64, 32, device="meta")
    scale = torch.zeros(64, 1, device="meta")

    def step():
        a = x * 2                    # contiguous: vectorised loads
        b = x.t() * 2                # transposed operand
        c = x * scale                # broadcast operand
        d = x[:, :16].contiguous()   # copy out of a strided view
        return a, b, c, d, x * 3.0   # a Python scalar is passed by value

    categories = list(capture(step).ops.category)
    assert categories == ["elementwise", "strided", "strided", "strided", "elementwise"]


def test_python_numbers_an_op_wraps_into_tensors_are_counted():
    x = torch.zeros(8, device="meta")

    def step():
        x * 0.5            # a number where a tensor is taken
        1 - x              # rsub.Scalar: wrapped, then rsub.Tensor
        x > 0              # gt.Scalar, likewise
        x * x              # two tensors
        x.pow(2)           # pow.Tensor_Scalar: the exponent is a parameter, not an operand
        torch.clamp(x, min=0.0)
        x.fill_(1.0)       # a fill only writes the number

    wrapped = [json.loads(a).get("wrapped_scalars", 0) if a else 0 for a in capture(step).ops["attrs"]]
    assert wrapped == [1, 1, 1, 0, 0, 0, 0]


def test_row_wise_ops_count_the_rows_they_reduce():
    x = torch.zeros(6, 4, 8, device="meta")

    def step():
        x.softmax(-1)                                 # 6 x 4 rows of 8
        torch.nn.functional.layer_norm(x, (8,))       # likewise (its mean per row: 24)
        x.sum(-1)                                     # 24 sums
        x.mean(0)                                     # 32 means, one per column
        x.log_softmax(1)                              # 6 x 8 rows of 4
        x * x                                         # not row-wise

    rows = [json.loads(a).get("rows", 0) if a else 0 for a in capture(step).ops["attrs"]]
    assert rows == [24, 24, 24, 32, 48, 0]


def test_cpu_ops_are_timed_by_the_threads_cpu_time_when_torch_runs_one_thread():
    import time

    from memsim.trace.capture import _Timer
    from memsim.validate.measure import single_thread

    with single_thread("cpu"):
        assert _Timer("real", "cpu").clock is time.thread_time  # other processes' time is not counted
    if torch.get_num_threads() > 1:
        assert _Timer("real", "cpu").clock is time.perf_counter  # a parallel op spans several threads


def test_unfused_attention_records_the_score_matrix_kernels_instead_of_one_fused_op():
    spec = dict(phase="prefill", batch=2, context=64, dtype="bf16")
    fused = trace_workload("llama-tiny", StepSpec(**spec)).ops
    unfused = trace_workload("llama-tiny", StepSpec(**spec, attention="unfused")).ops
    assert (fused["category"] == "attention").sum() > 0 and (unfused["category"] == "attention").sum() == 0
    layers = (fused["category"] == "attention").sum()
    assert (unfused["name"] == "aten::_softmax").sum() == layers
    assert (unfused["name"] == "aten::bmm").sum() == 2 * layers
    qk, softmax = unfused[unfused["name"] == "aten::bmm"].iloc[0], unfused[unfused["name"] == "aten::_softmax"].iloc[0]
    # QK^T writes the 64 x 64 scores of every (batch, head) in bf16; softmax works on them in fp32
    assert (qk["m"], qk["n"], qk["dtype"]) == (64, 64, "bf16") and qk["bytes_written"] == qk["batch"] * 64 * 64 * 2
    assert softmax["dtype"] == "fp32" and softmax["bytes_read"] == qk["batch"] * 64 * 64 * 4
    assert unfused["bytes_read"].sum() > fused["bytes_read"].sum()
    with pytest.raises(MemsimError, match="attention form"):
        trace_workload("llama-tiny", StepSpec(**spec, attention="sparse"))


def test_fp32_matmuls_are_tf32_only_where_the_program_allows_it():
    a, b = torch.zeros(64, 32, device="meta"), torch.zeros(32, 16, device="meta")
    assert list(capture(lambda: a @ b).ops["dtype"]) == ["fp32"]
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        assert list(capture(lambda: (a @ b) * 2).ops["dtype"]) == ["tf32", "fp32"]
    finally:
        torch.set_float32_matmul_precision(previous)


def test_reread_bytes_count_reads_of_what_the_op_just_before_wrote():
    x = torch.zeros(64, 32, device="meta")
    w = torch.zeros(32, 32, device="meta")

    def step():
        y = x * 2        # reads x, written by no op
        z = y + x        # rereads y (8 KiB); x is not fresh
        h = x @ w        # reads nothing z's op wrote
        return z, h.relu(), y * 3  # relu rereads h; y was written three ops ago

    trace = capture(step)
    assert list(trace.ops["reread_bytes"]) == [0.0, 64 * 32 * 4, 0.0, 64 * 32 * 4, 0.0]


def test_lifetimes_distinguish_temporaries_from_persistent_tensors():
    weight = torch.zeros(8, 8, device="meta")
    cache = tag(torch.zeros(4, 8, device="meta"), "kv_cache", "cache")

    def step():
        hidden = torch.ones(4, 8, device="meta") @ weight   # temporary
        cache.copy_(hidden.relu())
        return (hidden * 2).sum()

    trace = capture(step, meta={"tokens": 4})
    tensors = trace.tensors.set_index("tensor_id")
    roles = dict(zip(tensors.role, tensors.preexisting))
    assert roles["kv_cache"] is True or roles["kv_cache"] == np.True_
    assert tensors[tensors.role == "activation"].alive_at_end.sum() == 1  # the returned sum
    copy = trace.ops[trace.ops.name == "aten::copy_"].iloc[0]
    assert copy.bytes_written == 4 * 8 * 4 and copy.bytes_read == 4 * 8 * 4


def test_trace_file_round_trip_and_corrupt_file(tmp_path):
    trace = trace_workload("llama-tiny", StepSpec(phase="decode", context=16))
    path = trace.save(tmp_path / "tiny.memtrace")
    loaded = Trace.load(path)
    assert loaded.ops.equals(trace.ops)
    assert loaded.tensors.equals(trace.tensors)
    assert loaded.meta["workload"] == "llama-tiny"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(MemsimError, match="corrupt or truncated"):
        Trace.load(path)


def test_unknown_workload_and_config_key_suggest_close_matches():
    with pytest.raises(MemsimError, match="did you mean llama2-7b"):
        resolve("llama2-7")
    with pytest.raises(MemsimError, match="did you mean kv_heads"):
        resolve("llama2-7b", {"kv_head": "8"})
    _, cfg = resolve("llama2-7b", {"kv_heads": "8"})
    assert cfg.kv_heads == 8


def test_live_bytes_over_time_follow_first_write_and_last_use():
    from memsim.trace.lifetimes import live_bytes_by_role, peak_memory

    weight = torch.zeros(8, 8, device="meta")  # 256 bytes, there before the step

    def step():
        a = torch.ones(4, 8, device="meta")  # op 0: 128 bytes, last used by op 1
        b = a @ weight                      # op 1: 128 bytes, last used by op 2
        c = b.relu()                        # op 2: 128 bytes, last used by op 3
        return c.sum()                      # op 3: 4 bytes, returned

    trace = capture(step)
    assert list(trace.ops.name) == ["aten::ones", "aten::mm", "aten::relu", "aten::sum"]
    live = live_bytes_by_role(trace)
    assert list(live["input"]) == [256] * 4
    assert list(live["activation"]) == [128, 256, 256, 132]
    peak = peak_memory(trace)
    assert peak["peak_bytes"] == 512 and peak["peak_op"] == 1
    assert peak["peak_by_role"] == {"activation": 256, "input": 256}
