"""The training step: gradient and optimizer-state roles, their sizes from the config, the
optimizers against torch's, and peak memory from tensor lifetimes."""
import json
import math

import pytest
import torch

from memsim.errors import MemsimError
from memsim.trace import capture
from memsim.trace.lifetimes import live_bytes_by_role, peak_memory
from memsim.trace.training import AdamW, BlockwiseAdam8bit, OptimizerSpec, parse_optimizer
from memsim.trace.workload import StepSpec, resolve, trace_workload


def llama_parameter_sizes(cfg) -> list[int]:
    """Element count of every parameter of a Llama config, from its dimensions alone."""
    d = cfg.head_dim
    per_layer = [cfg.hidden, cfg.hidden * cfg.heads * d, cfg.hidden * cfg.kv_heads * d,
                 cfg.hidden * cfg.kv_heads * d, cfg.heads * d * cfg.hidden, cfg.hidden,
                 cfg.hidden * cfg.intermediate, cfg.hidden * cfg.intermediate, cfg.intermediate * cfg.hidden]
    return [cfg.vocab_size * cfg.hidden] + per_layer * cfg.layers + [cfg.hidden, cfg.vocab_size * cfg.hidden]


def test_real_train_step_peak_holds_weights_gradients_and_two_fp32_states():
    _, cfg = resolve("llama-tiny")
    params = sum(llama_parameter_sizes(cfg))
    trace = trace_workload("llama-tiny", StepSpec(phase="train", batch=2, context=16, device="cpu"), mode="real")
    peaks = peak_memory(trace)
    assert peaks["peak_by_role"]["weight"] == params * 4
    assert peaks["peak_by_role"]["gradient"] == params * 4
    assert peaks["peak_by_role"]["optimizer_state"] == params * 2 * 4
    assert peaks["peak_bytes"] >= params * 4 * 4
    grads = trace.tensors[trace.tensors.role == "gradient"]
    assert set(grads.name) == {f"{name}.grad" for name in trace.tensors[trace.tensors.role == "weight"].name}
    live = live_bytes_by_role(trace)
    assert live["gradient"].iloc[0] == 0  # gradients are made by backward, not before it
    assert (trace.ops.measured_s > 0).all()


def test_train_step_phases_and_fused_attention_backward():
    _, cfg = resolve("llama-tiny")
    trace = trace_workload("llama-tiny", StepSpec(phase="train", batch=2, context=16))
    scopes = list(trace.ops.scope)
    first = {name: scopes.index(name) for name in ("backward", "optimizer")}
    assert first["backward"] < first["optimizer"]
    assert max(i for i, s in enumerate(scopes) if s == "backward") < first["optimizer"]
    attention = trace.ops[trace.ops.category == "attention"]
    forward = attention[attention.name == "aten::_scaled_dot_product_flash_attention"]
    backward = attention[attention.name == "aten::_scaled_dot_product_flash_attention_backward"]
    assert len(forward) == len(backward) == cfg.layers
    assert backward.flops.sum() == pytest.approx(2.5 * forward.flops.sum())
    assert (backward.scope == "backward").all()
    optimizer = trace.ops[trace.ops.scope == "optimizer"]
    params = llama_parameter_sizes(cfg)
    assert list(optimizer.name) == ["memsim::fused_adamw"] * len(params)  # one fused kernel a parameter
    assert optimizer.bytes_read.sum() == sum(params) * (4 + 4 + 8)  # fp32 weight, gradient, two states
    assert optimizer.bytes_written.sum() == sum(params) * (4 + 8)
    # no attention matrix is kept for backward: no activation is batch x heads x 16 x 16
    shapes = set(trace.tensors[trace.tensors.role == "activation"].shape)
    assert str([2, cfg.heads, 16, 16]) not in shapes


def test_8bit_adam_state_bytes_follow_block_size_and_scale_dtype():
    _, cfg = resolve("llama-tiny")
    block = 64
    trace = trace_workload("llama-tiny", StepSpec(phase="train", context=8, optimizer=f"adam8bit:block={block},scale=bf16"))
    blocks = [math.ceil(n / block) for n in llama_parameter_sizes(cfg)]
    expected = sum(2 * (b * block * 1 + b * 2) for b in blocks)  # two moments: byte codes + bf16 scales
    assert trace.tensors[trace.tensors.role == "optimizer_state"].nbytes.sum() == expected
    assert trace.meta["optimizer"] == f"adam8bit:block={block},scale=bf16"


def one_step(optimizer_class, spec, seed=0):
    torch.manual_seed(seed)
    layer = torch.nn.Linear(300, 7)
    layer(torch.randn(5, 300)).square().sum().backward()
    optimizer = optimizer_class(list(layer.named_parameters()), spec)
    before = layer.weight.detach().clone()
    with torch.no_grad():
        optimizer.step()
    return before, layer.weight.detach()


def test_adamw_matches_torch_and_8bit_adam_stays_close():
    spec = OptimizerSpec(lr=1e-2, weight_decay=0.1)
    torch.manual_seed(0)
    layer = torch.nn.Linear(300, 7)
    layer(torch.randn(5, 300)).square().sum().backward()
    reference = torch.optim.AdamW(layer.parameters(), lr=spec.lr, betas=spec.betas, eps=spec.eps,
                                  weight_decay=spec.weight_decay)
    reference.step()
    before, ours = one_step(AdamW, spec)
    assert torch.allclose(ours, layer.weight.detach(), atol=1e-7)
    _, quantised = one_step(BlockwiseAdam8bit, OptimizerSpec(kind="adam8bit", block_size=128, lr=1e-2,
                                                            weight_decay=0.1))
    assert torch.allclose(quantised - before, ours - before, atol=2e-4)  # steps are ~1e-2


def test_7b_training_step_on_meta_holds_weights_grads_and_fp32_states():
    _, cfg = resolve("llama2-7b")
    params = sum(llama_parameter_sizes(cfg))
    trace = trace_workload("llama2-7b", StepSpec(phase="train", context=512))
    roles = trace.tensors.groupby("role").nbytes.sum()
    assert roles["weight"] == roles["gradient"] == params * 2
    assert roles["optimizer_state"] == params * 8
    matmul_params = params - (2 * cfg.layers + 1) * cfg.hidden - cfg.vocab_size * cfg.hidden  # no norms, embedding
    gemm = trace.ops[trace.ops.category == "gemm"].flops.sum()
    assert gemm == pytest.approx(6 * matmul_params * 512, rel=1e-9)  # forward 2, input and weight gradients 2 + 2


@pytest.mark.parametrize("text, message", [("adam", "did you mean adamw"), ("adam8bit:block=0", "positive integer"),
                                           ("adam8bit:scale=int8", "fp32, bf16 or fp16"),
                                           ("adamw:block=4", "unknown option")])
def test_bad_optimizer_is_a_one_line_error(text, message):
    with pytest.raises(MemsimError, match=message):
        parse_optimizer(text)


# Measured on an H100 (torch 2.11): the prefill's peak, at layers.0.mlp's SiLU-times-up multiply,
# holds one [8, 512, 1024] tensor more than the trace's lifetimes (37.9 MB against 29.5 MB in
# bf16, 16.8 MB more in fp32), with the flash, cuDNN or efficient attention kernel alike.
PREFILL_PEAK_GAP = "the measured prefill peak holds one MLP-sized tensor more than the traced lifetimes; cause not found"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: compares with torch.cuda.max_memory_allocated")
@pytest.mark.parametrize("phase", [pytest.param("prefill", marks=pytest.mark.xfail(strict=True, reason=PREFILL_PEAK_GAP)),
                                   "train"])
def test_peak_from_lifetimes_matches_cuda_max_memory_allocated(phase):
    from memsim.trace.workload import build_step

    # bf16, as a GPU runs it: in fp32, grouped-query SDPA falls back to CUDA's math kernel, whose
    # score matrices the one traced attention op does not show (211 MB measured on an H100
    # against 59 MB traced); memsim prices the fused kernel, which makes none
    spec = StepSpec(phase=phase, batch=8, context=512, device="cuda", dtype="bf16")
    _, step = build_step("llama-tiny", spec, {"hidden": "512", "heads": "8", "kv_heads": "4",
                                               "intermediate": "1024", "vocab_size": "8192"})
    step.run()  # warm up: cuBLAS workspaces and first-call allocations happen here
    for param in step.module.parameters():
        param.grad = None  # as the step itself does first, so that `before` excludes them
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    trace = capture(step.run, module=step.module, mode="real", device="cuda")
    measured = torch.cuda.max_memory_allocated() - before
    live = live_bytes_by_role(trace).sum(axis=1)
    # the optimizer's torch code makes temporaries its fused kernel would not; here activations
    # (batch 8 x 512 tokens) outweigh them, so the peak must fall outside the optimizer
    assert trace.ops.scope.iloc[int(live.to_numpy().argmax())] != "optimizer"
    predicted = live.max() - trace.tensors[trace.tensors.preexisting].nbytes.sum()
    assert predicted == pytest.approx(measured, rel=0.05)


def test_meta_and_real_training_steps_do_the_same_ops_and_bytes():
    spec = dict(phase="train", batch=2, context=16)
    meta = trace_workload("llama-tiny", StepSpec(**spec))
    real = trace_workload("llama-tiny", StepSpec(**spec, device="cpu"), mode="real")
    # a fused kernel (the optimizer's) runs for real as the torch code inside it, recorded op by op
    # under the kernel's name; everything else is the same op for op
    fused = meta.ops.name.str.startswith("memsim::")
    inside = real.ops.scope.isin(set(meta.ops.name[fused]))
    assert fused.any() and inside.any() and not real.ops.name.isin(set(meta.ops.name[fused])).any()
    assert sorted(meta.ops.name[~fused]) == sorted(real.ops.name[~inside])  # backward may reorder
    for column in ("bytes_read", "bytes_written", "flops"):
        assert meta.ops.loc[~fused, column].sum() == real.ops.loc[~inside, column].sum()


def test_memsim_run_phase_train_replays_a_training_step(capsys):
    from memsim.cli import main

    assert main(["run", "nvidia-h100-sxm", "llama-tiny", "--phase", "train", "--context", "16",
                 "--optimizer", "adam8bit", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    roles = summary["peak_by_role"]["gpu.hbm"]
    assert roles["gradient"] == roles["weight"]  # every gradient is alive at the optimizer step
    assert 0 < roles["optimizer_state"] < roles["weight"]  # 8-bit states: about 2 bytes per fp32 weight
