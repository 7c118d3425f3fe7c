"""The Kineto importer on small traces written here, and on the ground-truth traces."""
import gzip
import json

import pytest

from conftest import ground_truth
from memsim.errors import MemsimError
from memsim.trace.kineto import load_kineto

BERT = "AMD-AGI/TraceLens/tests/traces/h100/gaunernst_bert-small-uncased__1016001.json.gz"
QWEN = "AMD-AGI/TraceLens/tests/traces/h100/Qwen_Qwen1.5-0.5B-Chat__1016005.json.gz"


def cpu_op(name, ts, dur, dims, types, concrete=None, strides=None):
    args = {"Input Dims": dims, "Input type": types}
    if concrete:
        args["Concrete Inputs"] = concrete
    if strides:
        args["Input Strides"] = strides
    return {"ph": "X", "cat": "cpu_op", "name": name, "pid": 1, "tid": 1, "ts": ts, "dur": dur, "args": args}


def launch(ts, correlation, api="cuda_runtime"):
    name = "cudaLaunchKernel" if api == "cuda_runtime" else "cuLaunchKernel"
    return {"ph": "X", "cat": api, "name": name, "pid": 1, "tid": 1, "ts": ts, "dur": 2,
            "args": {"correlation": correlation}}


def kernel(name, ts, dur, correlation, stream=7, grid=(1, 1, 1)):
    return {"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": stream, "ts": ts, "dur": dur,
            "args": {"correlation": correlation, "stream": stream, "grid": list(grid), "block": [128, 1, 1]}}


def small_trace():
    bf16 = "c10::BFloat16"
    return {"deviceProperties": [{"name": "Toy GPU"}], "traceEvents": [
        cpu_op("aten::linear", 100, 50, [[64, 128], [256, 128]], [bf16, bf16]),
        cpu_op("aten::mm", 105, 40, [[64, 128], [128, 256]], [bf16, bf16]),  # innermost: its dims count
        launch(110, 1),
        cpu_op("aten::scaled_dot_product_attention", 200, 50,
               [[2, 4, 32, 16], [2, 2, 48, 16], [2, 2, 48, 16], [], [], []],
               [bf16, bf16, bf16, "", "Scalar", "Scalar"], ["", "", "", "", "0.", "True"]),
        cpu_op("aten::_scaled_dot_product_flash_attention", 205, 40,
               [[2, 4, 32, 16], [2, 2, 48, 16], [2, 2, 48, 16]], [bf16, bf16, bf16]),
        launch(210, 2),
        kernel("sm90_xmma_gemm_bf16", 300, 10.0, 1),
        kernel("flash_fwd_kernel", 320, 4.0, 2),
        kernel("sm90_xmma_gemm_bf16", 340, 10.0, 99),  # launch cut off; same launch shape as correlation 1
        kernel("some_kernel", 360, 1.0, 98, grid=(7, 1, 1)),  # launch cut off, no twin
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD (Pageable -> Device)", "pid": 0, "tid": 8, "ts": 400,
         "dur": 3.0, "args": {"correlation": 5, "stream": 8, "bytes": 4096}},
        {"ph": "X", "cat": "gpu_memset", "name": "Memset (Device)", "pid": 0, "tid": 7, "ts": 410, "dur": 1.0,
         "args": {"correlation": 6, "stream": 7, "bytes": 512}},
    ]}


def write_trace(tmp_path, events):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"traceEvents": events}))
    return path


def test_a_gather_reads_the_rows_it_picks_and_an_expanded_index_once(tmp_path):
    # torch's embedding of 24 tokens on CUDA: gather(table, 0, index expanded over the row, out)
    fp16, index = "c10::Half", "long int"
    path = write_trace(tmp_path, [
        cpu_op("aten::gather", 100, 20, [[32000, 4096], [], [24, 4096], [], [24, 4096]],
               [fp16, "Scalar", index, "Scalar", fp16], strides=[[4096, 1], [], [1, 0], [], [4096, 1]]),
        launch(105, 1), kernel("vectorized_gather_kernel", 200, 2.0, 1)])
    gather = load_kineto(path).ops.iloc[0]
    picked = 24 * 4096 * 2
    assert gather["bytes_written"] == picked
    assert gather["bytes_read"] == picked + 24 * 8  # not the 262 MB table, nor 24 x 4096 indices


def test_a_trace_without_gpu_work_is_a_one_line_error(tmp_path):
    path = write_trace(tmp_path, [cpu_op("aten::mm", 100, 20, [[4, 4], [4, 4]], ["float", "float"])])
    with pytest.raises(MemsimError, match="no GPU kernel"):
        load_kineto(path)


def test_kernels_get_shapes_from_their_launching_op(tmp_path):
    path = tmp_path / "trace.json.gz"
    with gzip.open(path, "wt") as handle:
        json.dump(small_trace(), handle)
    trace = load_kineto(path)
    ops = trace.ops
    assert trace.meta["device_name"] == "Toy GPU"
    assert trace.meta["unlinked_kernels"] == 1
    assert list(ops["measured_s"]) == pytest.approx([10e-6, 4e-6, 10e-6, 1e-6, 3e-6, 1e-6])
    gemm = ops.iloc[0]
    assert (gemm["category"], gemm["name"], gemm["dtype"]) == ("gemm", "aten::mm", "bf16")
    assert (gemm["m"], gemm["n"], gemm["k"]) == (64, 256, 128)
    assert gemm["flops"] == 2 * 64 * 256 * 128
    assert gemm["bytes_read"] == (64 * 128 + 128 * 256) * 2 and gemm["bytes_written"] == 64 * 256 * 2
    # the twin of kernel 1 gets its costs and keeps its own time
    assert ops.iloc[2]["flops"] == gemm["flops"] and ops.iloc[2]["measured_s"] == pytest.approx(10e-6)
    attention = ops.iloc[1]
    assert attention["category"] == "attention"
    assert (attention["batch"], attention["m"], attention["n"], attention["k"]) == (8, 32, 48, 16)
    attrs = json.loads(attention["attrs"])
    assert attrs == {"heads": 4, "kv_heads": 2, "value_dim": 16, "causal": True}
    # causal with 32 queries aligned to the end of 48 keys: 32*48 - 31*32/2 = 1040 pairs
    assert attention["flops"] == 2 * 2 * 4 * 1040 * (16 + 16)
    memcpy = ops.iloc[4]
    assert memcpy["category"] == "memcpy" and memcpy["stream"] == 8
    assert json.loads(memcpy["attrs"]) == {"direction": "HtoD", "pinned": False}
    assert ops.iloc[5]["bytes_written"] == 512


def test_kernels_launched_through_the_driver_api_are_linked(tmp_path):
    bf16 = "c10::BFloat16"
    path = tmp_path / "driver.json"
    path.write_text(json.dumps({"traceEvents": [
        cpu_op("aten::addmm", 100, 50, [[512], [141, 512], [512, 2048], [], []], [bf16, bf16, bf16, "Scalar", "Scalar"]),
        launch(110, 7, api="cuda_driver"),
        kernel("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x6_tn_align8>", 300, 6.0, 7),
    ]}))
    trace = load_kineto(path)
    gemm = trace.ops.iloc[0]
    assert trace.meta["unlinked_kernels"] == 0
    assert (gemm["category"], gemm["m"], gemm["n"], gemm["k"]) == ("gemm", 141, 2048, 512)


def test_fp32_gemm_kernels_on_tensor_cores_are_tf32(tmp_path):
    path = tmp_path / "tf32.json"
    dims, types = [[64, 4096], [4096, 100]], ["float", "float"]
    path.write_text(json.dumps({"traceEvents": [
        cpu_op("aten::mm", 100, 20, dims, types), launch(105, 1),
        cpu_op("aten::mm", 200, 20, dims, types), launch(205, 2),
        kernel("void cutlass::Kernel<cutlass_80_tensorop_s1688gemm_64x64_16x6_nn_align4>", 300, 12.0, 1),
        kernel("ampere_sgemm_128x64_nn", 320, 30.0, 2),
    ]}))
    assert list(load_kineto(path).ops["dtype"]) == ["tf32", "fp32"]


def test_nccl_kernels_are_collectives_and_their_sends_point_to_point(tmp_path):
    path = tmp_path / "nccl.json"
    path.write_text(json.dumps({"traceEvents": [
        kernel("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevComm*, unsigned long, ncclWork*)", 100, 30.0, 1),
        kernel("ncclDevKernel_SendRecv(ncclDevComm*, unsigned long, ncclWork*)", 140, 8.0, 2),
        kernel("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclDevComm*, unsigned long, ncclWork*)", 150, 8.0, 3),
    ]}))
    assert list(load_kineto(path).ops["category"]) == ["collective", "p2p", "p2p"]


def test_a_split_k_reduction_is_priced_as_a_reduction_not_as_a_second_gemm(tmp_path):
    path = tmp_path / "splitk.json"
    path.write_text(json.dumps({"traceEvents": [
        cpu_op("aten::mm", 100, 30, [[64, 4096], [4096, 100]], ["float", "float"]),
        launch(105, 1), launch(110, 2),
        kernel("void cutlass::Kernel<cutlass_80_tensorop_s1688gemm_64x64_16x6_nn_align4>", 300, 9.0, 1),
        kernel("void splitKreduce_kernel<float, float, float, float, true, false>(cublasSplitKParams<float>)", 310,
               3.0, 2),
    ]}))
    gemm, reduce = load_kineto(path).ops.itertuples()
    assert (gemm.category, gemm.m, gemm.flops) == ("gemm", 64, 2 * 64 * 100 * 4096)
    assert (reduce.category, reduce.m, reduce.flops) == ("reduction", 0, 64 * 100)
    assert reduce.bytes_read == 2 * 64 * 100 * 4 and reduce.bytes_written == 64 * 100 * 4


def test_plain_json_and_bad_files(tmp_path):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(small_trace()))
    assert len(load_kineto(path).ops) == 6
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MemsimError, match="bad.json"):
        load_kineto(bad)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(MemsimError, match="traceEvents"):
        load_kineto(tmp_path / "list.json")


def test_ground_truth_qwen_trace():
    path = ground_truth(QWEN)
    with gzip.open(path, "rt") as handle:
        events = json.load(handle)["traceEvents"]
    gpu_events = sum(1 for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"))
    trace = load_kineto(path)
    assert len(trace.ops) == gpu_events
    assert "H100" in trace.meta["device_name"]
    gemms = trace.ops[trace.ops["category"] == "gemm"]
    assert len(gemms) > 200 and (gemms["m"] > 0).mean() > 0.95
    attention = trace.ops[trace.ops["category"] == "attention"]
    assert len(attention) > 0 and (attention["flops"] > 0).all()
    # PyTorch's non-vectorised kernels (strided or broadcast operands) are told apart by name
    strided = trace.ops[trace.ops["category"] == "strided"]
    assert len(strided) > 100 and not strided["kernel"].str.contains("vectorized_elementwise_kernel").any()
    vectorized = trace.ops[trace.ops["kernel"].str.contains("vectorized_elementwise_kernel")]
    assert len(vectorized) > 100 and not (vectorized["category"] == "strided").any()
    total = sum(e["dur"] for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")) * 1e-6
    assert trace.ops["measured_s"].sum() == pytest.approx(total)


def test_ground_truth_bert_trace_links_every_gemm():
    """BERT-small's CUTLASS GEMMs are launched through the driver API (cuLaunchKernel)."""
    trace = load_kineto(ground_truth(BERT))
    gemm_kernels = trace.ops[trace.ops["kernel"].str.contains("gemm")]
    assert len(gemm_kernels) == 26 and (gemm_kernels["category"] == "gemm").all() and (gemm_kernels["m"] == 141).all()
    assert trace.meta["unlinked_kernels"] == 0


def test_memsim_trace_imports_a_measured_kineto_file(run_cli, tmp_path):
    path = ground_truth(QWEN)
    out = tmp_path / "qwen.memtrace"
    run_cli("trace", path, "--out", out, check=True)
    with gzip.open(path, "rt") as handle:
        kernels = [e for e in json.load(handle)["traceEvents"] if e.get("cat") == "kernel"]
    from memsim.trace import Trace
    ops = Trace.load(out).ops
    assert (ops["measured_s"] > 0).sum() >= len(kernels)
    gemm = ops[(ops["category"] == "gemm") & (ops["m"] > 0)]
    assert gemm["flops"].to_numpy() == pytest.approx(2.0 * gemm["batch"] * gemm["m"] * gemm["n"] * gemm["k"])


def test_a_kernel_of_an_op_inside_attention_is_that_ops(tmp_path):
    # SDPA's math fallback: its bmm kernel is priced as the bmm, not as the whole attention
    fp32 = "float"
    path = write_trace(tmp_path, [
        cpu_op("aten::scaled_dot_product_attention", 100, 50, [[1, 2, 8, 4], [1, 2, 8, 4], [1, 2, 8, 4]],
               [fp32, fp32, fp32]),
        cpu_op("aten::_scaled_dot_product_attention_math", 102, 45, [[1, 2, 8, 4], [1, 2, 8, 4], [1, 2, 8, 4]],
               [fp32, fp32, fp32]),
        cpu_op("aten::bmm", 110, 10, [[2, 8, 4], [2, 4, 8]], [fp32, fp32]),
        launch(112, 1), kernel("gemm_kernel", 200, 2.0, 1)])
    bmm = load_kineto(path).ops.iloc[0]
    assert (bmm["name"], bmm["category"], bmm["batch"], bmm["m"], bmm["n"], bmm["k"]) == ("aten::bmm", "gemm", 2, 8, 8, 4)


def test_a_convolution_kernel_is_priced_from_aten_convolution(tmp_path):
    # Mamba's causal depthwise conv1d: width 4 over 1027 padded steps, 4352 channels, bf16
    bf16, inputs = "c10::BFloat16", [[2, 4352, 1027], [4352, 1, 4], [4352], [], [], [], [], [], []]
    types = [bf16, bf16, bf16, "ScalarList", "ScalarList", "ScalarList", "Scalar", "ScalarList", "Scalar"]
    path = write_trace(tmp_path, [
        cpu_op("aten::convolution", 100, 50, inputs, types, ["", "", "", "[1]", "[0]", "[1]", "False", "[0]", "4352"]),
        cpu_op("aten::_conv_depthwise2d", 110, 30, [[2, 4352, 1, 1027], [4352, 1, 1, 4]], [bf16, bf16]),
        launch(112, 1), kernel("conv_depthwise2d_forward_kernel", 200, 95.0, 1)])
    conv = load_kineto(path).ops.iloc[0]
    assert (conv["name"], conv["category"]) == ("aten::convolution", "conv")
    outputs = 2 * 4352 * 1024  # 1027 - (4 - 1) steps
    assert conv["flops"] == 2 * outputs * 4
    assert conv["bytes_written"] == outputs * 2
    assert conv["bytes_read"] == (2 * 4352 * 1027 + 4352 * 4 + 4352) * 2


def test_a_copy_within_the_device_is_a_device_copy_and_one_from_the_host_a_transfer(tmp_path):
    def memcpy(name, ts, correlation):
        return {"ph": "X", "cat": "gpu_memcpy", "name": name, "pid": 0, "tid": 8, "ts": ts, "dur": 3.0,
                "args": {"correlation": correlation, "stream": 8, "bytes": 1 << 20}}
    path = write_trace(tmp_path, [memcpy("Memcpy DtoD (Device -> Device)", 100, 1),
                                  memcpy("Memcpy HtoD (Pinned -> Device)", 200, 2)])
    ops = load_kineto(path).ops
    assert list(ops["category"]) == ["copy", "memcpy"]
    assert list(ops["bytes_read"]) == [1 << 20, 1 << 20]


def test_a_norm_kernel_counts_its_thread_blocks_from_its_grid(tmp_path):
    # torch's RMSNorm of 3 rows of 8192: one block per row, which bounds it at few rows
    bf16 = "c10::BFloat16"
    path = write_trace(tmp_path, [
        cpu_op("aten::_fused_rms_norm", 100, 20, [[3, 8192], [], [8192], []], [bf16, "ScalarList", bf16, ""]),
        launch(105, 1), kernel("vectorized_layer_norm_kernel", 200, 5.0, 1, grid=(3, 1, 1))])
    norm = load_kineto(path).ops.iloc[0]
    assert norm["category"] == "norm" and json.loads(norm["attrs"])["blocks"] == 3


def test_a_convolution_backward_kernel_is_not_priced_as_a_forward_convolution(tmp_path):
    # convolution_backward(grad_output, input, weight, ...): its arguments are not a forward's
    bf16 = "c10::BFloat16"
    path = write_trace(tmp_path, [
        cpu_op("aten::convolution_backward", 100, 50, [[2, 64, 30], [2, 64, 33], [64, 1, 4]], [bf16, bf16, bf16]),
        cpu_op("aten::_conv_depthwise2d_backward", 110, 30, [[2, 64, 1, 30], [2, 64, 1, 33]], [bf16, bf16]),
        launch(112, 1), kernel("conv_depthwise2d_backward_kernel", 200, 9.0, 1)])
    row = load_kineto(path).ops.iloc[0]
    assert row["category"] != "conv" and row["flops"] == 0


def test_gemm_kernels_after_a_tenth_of_a_second_of_gemms_are_priced_at_the_power_capped_rate(tmp_path):
    from memsim.hardware import load_system
    from memsim.validate.report import predict

    bf16 = "c10::BFloat16"
    events = []
    for i in range(60):  # 60 back-to-back 8192^3 bf16 GEMMs of 2 ms each
        events += [cpu_op("aten::mm", 10 * i, 5, [[8192, 8192], [8192, 8192]], [bf16, bf16]), launch(10 * i + 1, i),
                   kernel("sm90_xmma_gemm_bf16", 1000 + 2000 * i, 2000.0, i)]
    ops = load_kineto(write_trace(tmp_path, events)).ops
    assert list(ops["start_s"][:2]) == pytest.approx([0.0, 2e-3])
    system = load_system("nvidia-h100-sxm")
    unit = system.device.compute["sm"]
    capped = unit.power_cap.sustained_matrix_fraction * unit.matrix_flops["bf16"]
    rate = ops["flops"] / predict(ops, system)["predicted_s"]
    # the GPU starts idle: the first GEMMs run at full clock; once 55% of the last 0.1 s was
    # GEMM time (1 - e^(-t / 0.1 s) = 0.55 at t = 80 ms: the 41st GEMM) they run at the capped rate
    assert rate.iloc[:40].min() > 1.05 * capped
    assert rate.iloc[40:].to_numpy() == pytest.approx(capped)
