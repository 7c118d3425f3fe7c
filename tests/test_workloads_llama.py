"""The Llama KV-cache options: each cache layout against the plain full-sequence model, and the
traced KV bytes per token against formulas from the config."""
import math

import pandas as pd
import pytest
import torch

from conftest import HWCONFIGS
from memsim.cost.model import price_ops
from memsim.errors import MemsimError
from memsim.hardware import load_system
from memsim.trace.workload import StepSpec, resolve, trace_workload
from memsim.validate.readers import attention_row
from memsim.workloads.llama import Llama, new_kv_cache


def prefill_then_decode(cfg, tokens):
    """Logits of the last token, computed by a prefill of all but it and one decode step."""
    torch.manual_seed(0)
    model = Llama(cfg).eval()
    batch, length = tokens.shape
    caches = new_kv_cache(cfg, batch, length, "cpu", torch.float32)
    with torch.no_grad():
        model(tokens[:, :-1], caches, 0)
        cached = model(tokens[:, -1:], caches, length - 1)
        torch.manual_seed(0)
        reference = Llama(cfg).eval()(tokens)  # the whole sequence at once, no cache
    return cached, reference


@pytest.mark.parametrize("options, tolerance", [
    ({}, 1e-5),
    ({"kv_block_size": "4"}, 1e-5),
    ({"sliding_window": "5"}, 1e-5),
    ({"kv_budget": "64"}, 1e-5),   # a budget above the length evicts nothing: exact
    ({"kv_bits": "8"}, 0.05),
    ({"kv_bits": "4"}, 0.5),
    ({"fused_kv_append": "true"}, 1e-5),
    ({"fused_kv_append": "true", "kv_block_size": "4"}, 1e-5),
])
def test_every_cache_layout_decodes_like_the_full_sequence(options, tolerance):
    _, cfg = resolve("llama-tiny", options)
    tokens = torch.randint(0, cfg.vocab_size, (2, 13), generator=torch.Generator().manual_seed(1))
    cached, reference = prefill_then_decode(cfg, tokens)
    assert torch.allclose(cached, reference, atol=tolerance, rtol=0), (cached - reference).abs().max()


def test_sliding_window_actually_limits_what_decode_sees():
    _, windowed = resolve("llama-tiny", {"sliding_window": "5"})
    _, full = resolve("llama-tiny")
    tokens = torch.randint(0, windowed.vocab_size, (1, 13), generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(prefill_then_decode(windowed, tokens)[0], prefill_then_decode(full, tokens)[0])


def test_heavy_hitters_keep_the_most_attended_tokens_at_prefill():
    _, cfg = resolve("llama-tiny", {"kv_budget": "4", "layers": "1"})
    cache = new_kv_cache(cfg, 1, 10, "cpu", torch.float32)[0]
    generator = torch.Generator().manual_seed(3)
    q = torch.randn(1, cfg.heads, 10, cfg.head_dim, generator=generator)
    k, v = (torch.randn(1, cfg.kv_heads, 10, cfg.head_dim, generator=generator) for _ in range(2))
    cache.attend(q, k, v, 0)
    group = cfg.heads // cfg.kv_heads
    for head in range(cfg.kv_heads):  # attention each key receives, by the textbook formula
        scores = q[0, head * group:(head + 1) * group] @ k[0, head].T / math.sqrt(cfg.head_dim)
        scores = scores.masked_fill(torch.ones(10, 10, dtype=torch.bool).triu(1), float("-inf"))
        received = scores.softmax(-1).sum(dim=(0, 1))
        expected = sorted(received.topk(4).indices.tolist())
        assert torch.equal(cache.k[0, head], k[0, head, expected])
        assert torch.allclose(cache.score[0, head], received[expected], atol=1e-5)


def test_heavy_hitters_evict_the_least_attended_token_when_full():
    _, cfg = resolve("llama-tiny", {"kv_budget": "4", "layers": "1"})
    cache = new_kv_cache(cfg, 1, 7, "cpu", torch.float32)[0]
    generator = torch.Generator().manual_seed(4)
    sample = lambda heads, length: torch.randn(1, heads, length, cfg.head_dim, generator=generator)
    cache.attend(sample(cfg.heads, 6), sample(cfg.kv_heads, 6), sample(cfg.kv_heads, 6), 0)
    kept, scores = cache.k.clone(), cache.score.clone()
    q, k, v = sample(cfg.heads, 1), sample(cfg.kv_heads, 1), sample(cfg.kv_heads, 1)
    cache.attend(q, k, v, 6)
    group = cfg.heads // cfg.kv_heads
    for head in range(cfg.kv_heads):
        keys = torch.cat((kept[0, head], k[0, head]))
        weights = (q[0, head * group:(head + 1) * group, 0] @ keys.T / math.sqrt(cfg.head_dim)).softmax(-1)
        received = weights.sum(dim=0)
        totals = scores[0, head] + received[:4]
        victim = int(totals.argmin())
        assert torch.equal(cache.k[0, head, victim], k[0, head, 0])
        others = [slot for slot in range(4) if slot != victim]
        assert torch.equal(cache.k[0, head, others], kept[0, head, others])
        assert cache.score[0, head, victim] == pytest.approx(float(received[4]), abs=1e-6)


def kv_tensor_bytes(trace) -> float:
    return trace.tensors[trace.tensors.role == "kv_cache"].nbytes.sum()


def kv_bytes_read(trace) -> float:
    reads = trace.accesses[~trace.accesses.write].merge(trace.tensors[["tensor_id", "role"]], on="tensor_id")
    return reads[reads.role == "kv_cache"].nbytes.sum()


def decode(options, batch=2, context=4000):
    return trace_workload("llama2-7b", StepSpec(phase="decode", batch=batch, context=context), options)


def test_paged_cache_reads_the_blocks_touched():
    _, cfg = resolve("llama2-7b")
    block, context, batch = 16, 4000, 2
    blocks = math.ceil((context + 1) / block)  # 251 blocks hold the 4001 tokens
    trace = decode({"kv_block_size": str(block)}, batch, context)
    per_block = block * cfg.kv_heads * cfg.head_dim * 2  # bf16
    assert kv_bytes_read(trace) == 2 * cfg.layers * batch * blocks * per_block
    assert kv_tensor_bytes(trace) == 2 * cfg.layers * batch * blocks * per_block
    attention = trace.ops[trace.ops.category == "attention"]  # one fused kernel a layer, no gathered copy
    query = batch * cfg.heads * cfg.head_dim * 2
    table = batch * blocks * 8  # the int64 block-table rows it follows
    assert len(attention) == cfg.layers
    assert attention.bytes_read.sum() == cfg.layers * (2 * batch * blocks * per_block + query + table)
    assert attention.bytes_written.sum() == cfg.layers * query


@pytest.mark.parametrize("bits", [8, 4])
def test_quantised_cache_bytes_follow_the_bit_width(bits):
    _, cfg = resolve("llama2-7b")
    context, batch = 4000, 2
    per_token_head = cfg.head_dim * bits / 8 + 2  # codes plus one bf16 scale
    expected = 2 * cfg.layers * batch * cfg.kv_heads * (context + 1) * per_token_head
    trace = decode({"kv_bits": str(bits)}, batch, context)
    assert kv_tensor_bytes(trace) == expected
    assert kv_bytes_read(trace) == expected  # decode reads every stored token once
    attention = trace.ops[trace.ops.category == "attention"]  # dequantised as read: no wide copy
    query = batch * cfg.heads * cfg.head_dim * 2
    assert attention.bytes_read.sum() == expected + cfg.layers * query


def test_sliding_window_and_budget_bound_the_cache_whatever_the_context():
    _, cfg = resolve("llama2-7b")
    per_token = 2 * cfg.layers * cfg.kv_heads * cfg.head_dim * 2  # K and V, bf16, batch 1
    for options, bound in (({"sliding_window": "1024"}, 1024), ({"kv_budget": "512"}, 512)):
        for context in (2000, 8000):
            trace = decode(options, batch=1, context=context)
            assert kv_tensor_bytes(trace) == per_token * bound
    scores = decode({"kv_budget": "512"}, batch=1, context=2000).tensors
    assert scores[scores.role == "state"].nbytes.sum() == cfg.layers * cfg.kv_heads * 512 * 4


def test_contiguous_cache_grows_with_context():
    _, cfg = resolve("llama2-7b")
    per_token = 2 * cfg.layers * cfg.kv_heads * cfg.head_dim * 2
    assert kv_tensor_bytes(decode({}, batch=1, context=2000)) == per_token * 2001


@pytest.mark.parametrize("options, message", [
    ({"kv_bits": "3"}, "'kv_bits' must be 8 or 4"),
    ({"kv_bits": "8", "kv_block_size": "16"}, "cannot be combined"),
    ({"sliding_window": "0"}, "must be a positive integer"),
    ({"fused_kv_append": "true", "kv_bits": "8"}, "fused_kv_append needs the contiguous or paged cache"),
])
def test_bad_cache_options_are_one_line_errors(options, message):
    with pytest.raises(MemsimError, match=message):
        decode(options, batch=1, context=8)


def test_sliding_window_prefill_counts_only_the_pairs_inside_the_window():
    _, cfg = resolve("llama-tiny", {"sliding_window": "16"})
    length, window, batch = 64, 16, 2
    pairs = window * (window + 1) / 2 + (length - window) * window  # 136 on the ramp, then 16 per query
    expected = cfg.layers * 2 * batch * cfg.heads * pairs * 2 * cfg.head_dim
    for mode, device in (("meta", "meta"), ("real", "cpu")):
        trace = trace_workload("llama-tiny", StepSpec(phase="prefill", batch=batch, context=length, device=device),
                               {"sliding_window": "16"}, mode=mode)
        attention = trace.ops[trace.ops.category == "attention"]
        assert attention.flops.sum() == expected
    train = trace_workload("llama-tiny", StepSpec(phase="train", batch=batch, context=length), {"sliding_window": "16"})
    attention = train.ops[train.ops.category == "attention"]
    assert attention.flops.sum() == pytest.approx(expected * 3.5)  # forward, and backward at 2.5 times


@pytest.mark.parametrize("options", [{"fused_kv_append": "true"}, {"fused_kv_append": "true", "kv_block_size": "4"}])
def test_attention_appending_the_cache_attends_chunks_causally_after_it(options):
    _, cfg = resolve("llama-tiny", options)
    tokens = torch.randint(0, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(4))
    torch.manual_seed(0)
    model = Llama(cfg).eval()
    caches = new_kv_cache(cfg, 2, 12, "cpu", torch.float32)
    with torch.no_grad():
        model(tokens[:, :5], caches, 0)
        chunk = model(tokens[:, 5:], caches, 5, all_logits=True)  # 7 new tokens after 5 cached
        torch.manual_seed(0)
        reference = Llama(cfg).eval()(tokens, all_logits=True)
    assert torch.allclose(chunk, reference[:, 5:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("phase, context", [("decode", 3000), ("prefill", 700)])
def test_fused_append_traces_one_kernel_priced_as_the_profiled_kv_cache_kernel(phase, context):
    """The traced op is the kernel Vidur's attention profiles time: it prices exactly as the
    reader's row of the same shape, and the cache copies before it are gone."""
    _, cfg = resolve("llama2-7b")
    batch = 2
    spec = StepSpec(phase=phase, batch=batch, context=context, dtype="fp16")
    fused = trace_workload("llama2-7b", spec, {"fused_kv_append": "true"})
    plain = trace_workload("llama2-7b", spec)
    assert len(plain.ops) - len(fused.ops) == 2 * cfg.layers  # no separate K and V copy per layer
    attention = fused.ops[fused.ops.category == "attention"]
    assert len(attention) == cfg.layers
    new, cached = (1, context) if phase == "decode" else (context, 0)
    row = attention_row("attn", "fp16", batch, cfg.heads, cfg.kv_heads, new, cached + new, cfg.head_dim,
                        new > 1, 1.0, 1, appends_kv=True)
    assert attention.bytes_read.iloc[0] == row["bytes_read"]  # the cached keys, then the new ones once
    device = load_system(HWCONFIGS / "nvidia-a100-80gb-sxm.yaml").device
    traced = price_ops(attention.iloc[:1].reset_index(drop=True), device)["duration_s"].iloc[0]
    profiled = price_ops(pd.DataFrame([row]), device)["duration_s"].iloc[0]
    assert traced == pytest.approx(profiled, rel=1e-12)
    unflagged = attention.iloc[:1].assign(attrs=attention["attrs"].iloc[0].replace('"appends_kv": true, ', ""))
    assert price_ops(unflagged.reset_index(drop=True), device)["duration_s"].iloc[0] < traced
