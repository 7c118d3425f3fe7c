"""The recurrent and memory families: fast forms equal their slow references, prefill then
decode equals a longer prefill, the decode state has the size its config says, and every
registered config traces on meta tensors."""
import pytest
import torch

from memsim.trace.workload import StepSpec, resolve, trace_workload, workloads
from memsim.workloads import linear_attention, mamba, mamba2, memory_transformer, moe, rwkv, samba, titans, xlstm

FP32 = dict(rtol=1e-4, atol=1e-5)


def seeded(seed: int = 0) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def prefill_then_decode_vs_longer_prefill(model, prompt: int, batch: int = 2, steps: int = 1):
    """Logits of `steps` decode steps after a prefill, and of prefills that end at the same tokens."""
    model = model.float().eval()
    tokens = torch.randint(0, model.embed.num_embeddings, (batch, prompt + steps))
    with torch.no_grad():
        states = model.new_states(batch, prompt + steps, "cpu", torch.float32)
        model(tokens[:, :prompt], states, 0)
        decoded = [model(tokens[:, prompt + i:prompt + i + 1], states, prompt + i) for i in range(steps)]
        prefilled = []
        for i in range(steps):
            fresh = model.new_states(batch, prompt + i + 1, "cpu", torch.float32)
            prefilled.append(model(tokens[:, :prompt + i + 1], fresh, 0))
    return torch.cat(decoded, 1), torch.cat(prefilled, 1)


SHALLOW = {"layers": "4"}
"""Full-width layers, but only a few of them: state formulas are per layer, and this is quicker
(test_config_traces decodes every full-size config with all its layers)."""


def decode_state(name: str, context: int, role: str = "state", overrides=SHALLOW):
    """The decode trace of a full-width config and its tensors of one role."""
    trace = trace_workload(name, StepSpec(phase="decode", batch=2, context=context), overrides)
    tensors = trace.tensors[trace.tensors.role == role]
    return trace, tensors


def assert_read_and_written_whole(trace, tensors):
    """Each state tensor is read whole and written whole by the decode step."""
    accesses = trace.accesses[trace.accesses.tensor_id.isin(tensors.tensor_id)]
    size = tensors.set_index("tensor_id").nbytes
    read = accesses[~accesses.write].groupby("tensor_id").nbytes.max()
    written = accesses[accesses.write].groupby("tensor_id").nbytes.max()
    assert (read.reindex(size.index, fill_value=0) == size).all()
    assert (written.reindex(size.index, fill_value=0) == size).all()


# --- Mamba ---------------------------------------------------------------------------------

def test_mamba_parallel_scan_equals_the_recurrence():
    seeded()
    decay = torch.rand(2, 37, 5, 3) * 0.5 + 0.5
    drive = torch.randn(2, 37, 5, 3)
    reference = mamba.sequential_scan(decay, drive, torch.zeros(2, 5, 3))
    assert torch.allclose(mamba.parallel_scan(decay, drive), reference, **FP32)


@pytest.mark.parametrize("module, name", [(mamba, "mamba-tiny"), (mamba2, "mamba2-tiny")])
def test_ssm_prefill_then_decode_equals_longer_prefill(module, name):
    seeded()
    _, cfg = resolve(name)
    model = mamba.mamba_model(cfg) if module is mamba else mamba2.mamba2_model(cfg)
    decoded, prefilled = prefill_then_decode_vs_longer_prefill(model, prompt=9, steps=3)
    assert torch.allclose(decoded, prefilled, **FP32)


def test_mamba2_chunked_ssd_equals_the_recurrence():
    seeded()
    b, l, h, p, n = 2, 11, 3, 4, 5  # 11 tokens: two whole chunks of 4 and a padded one
    X, B, C = torch.randn(b, l, h, p), torch.randn(b, l, h, n), torch.randn(b, l, h, n)
    A = -torch.rand(b, l, h)
    initial = torch.randn(b, h, p, n)
    state = initial.clone()
    reference = torch.stack([mamba2.ssd_step(X[:, t], A[:, t], B[:, t], C[:, t], state) for t in range(l)], 1)
    Y, final = mamba2.ssd_chunked(X, A, B, C, 4, initial)
    assert torch.allclose(Y, reference, **FP32)
    assert torch.allclose(final, state, **FP32)


@pytest.mark.parametrize("name", ["mamba-2.8b", "mamba2-2.7b"])
def test_ssm_decode_state_is_constant_in_context_and_matches_the_config(name):
    _, cfg = resolve(name, SHALLOW)
    batch, bf16 = 2, 2
    if name.startswith("mamba2"):
        per_layer = cfg.conv_channels * (cfg.conv_kernel - 1) + cfg.heads * cfg.head_dim * cfg.state_size
    else:
        per_layer = cfg.expand * cfg.hidden * (cfg.conv_kernel - 1 + cfg.state_size)
    expected = cfg.layers * batch * per_layer * bf16
    for context in (128, 8192):
        trace, states = decode_state(name, context)
        assert states.nbytes.sum() == expected
        assert len(states) == 2 * cfg.layers
        assert_read_and_written_whole(trace, states)


# --- gated linear attention and the gated delta rule ----------------------------------------

@pytest.mark.parametrize("rank_one", [False, True])
@pytest.mark.parametrize("per_dimension_decay", [False, True])
def test_chunked_linear_attention_equals_the_recurrence(rank_one, per_dimension_decay):
    seeded()
    B, H, L, dk, dv = 2, 3, 19, 6, 5  # 19 tokens: chunks of 8 with a padded last one
    r, k = torch.randn(B, H, L, dk), torch.randn(B, H, L, dk)
    v = torch.randn(B, H, L, dv)
    log_w = -torch.rand(B, H, L, dk if per_dimension_decay else 1) * 0.5
    a = torch.nn.functional.normalize(torch.randn(B, H, L, dk), dim=-1) if rank_one else None
    b = -torch.rand(B, H, L, 1) * a if rank_one else None
    initial = torch.randn(B, H, dk, dv)
    state = initial.clone()
    pick = lambda t, i: None if t is None else t[:, :, i]
    reference = torch.stack([linear_attention.recurrent_step(r[:, :, i], k[:, :, i], v[:, :, i], log_w[:, :, i],
                                                             state, pick(a, i), pick(b, i)) for i in range(L)], 2)
    chunked_state = initial.clone()
    out = linear_attention.chunked(r, k, v, log_w, chunked_state, 8, a, b)
    assert torch.allclose(out, reference, **FP32)
    assert torch.allclose(chunked_state, state, **FP32)


@pytest.mark.parametrize("size", [1, 2, 13, 16])
def test_unit_lower_solve_solves(size):
    seeded()
    strict = torch.randn(4, size, size).tril(-1) * 0.5
    rhs = torch.randn(4, size, 3)
    solution = linear_attention.unit_lower_solve(strict, rhs)
    assert torch.allclose((torch.eye(size) - strict) @ solution, rhs, **FP32)


@pytest.mark.parametrize("name", ["gla-tiny", "gated-deltanet-tiny"])
def test_linear_attention_prefill_then_decode_equals_longer_prefill(name):
    seeded()
    _, cfg = resolve(name)
    decoded, prefilled = prefill_then_decode_vs_longer_prefill(linear_attention.linear_attention_model(cfg),
                                                               prompt=10, steps=3)
    assert torch.allclose(decoded, prefilled, **FP32)


@pytest.mark.parametrize("name", ["gla-1.3b", "gated-deltanet-1.3b"])
def test_linear_attention_decode_state_is_dk_by_dv_per_head(name):
    _, cfg = resolve(name, SHALLOW)
    batch, bf16 = 2, 2
    per_layer = cfg.heads * cfg.key_dim * cfg.value_dim
    if cfg.rule == "delta":
        per_layer += cfg.heads * (2 * cfg.key_dim + cfg.value_dim) * (cfg.conv_kernel - 1)
    for context in (128, 8192):
        trace, states = decode_state(name, context)
        assert states.nbytes.sum() == cfg.layers * batch * per_layer * bf16
        assert_read_and_written_whole(trace, states)


# --- xLSTM ---------------------------------------------------------------------------------

def test_mlstm_parallel_equals_the_recurrence():
    seeded()
    B, H, L, d = 2, 3, 12, 5
    q, k, v = torch.randn(B, H, L, d), torch.randn(B, H, L, d) / d ** 0.5, torch.randn(B, H, L, d)
    log_f = torch.nn.functional.logsigmoid(torch.randn(B, H, L) + 2)
    i_pre = torch.randn(B, H, L)
    state = (torch.zeros(B, H, d, d), torch.zeros(B, H, d), torch.zeros(B, H))
    reference = torch.stack([xlstm.mlstm_step(q[:, :, t], k[:, :, t], v[:, :, t], log_f[..., t], i_pre[..., t], state)
                             for t in range(L)], 2)
    h, (C, n, m) = xlstm.mlstm_parallel(q, k, v, log_f, i_pre)
    assert torch.allclose(h, reference, **FP32)
    # the stabilisers may differ; the unstabilised memories agree
    unscale = lambda x, stabiliser: x * torch.exp(stabiliser).reshape(*stabiliser.shape, *(1,) * (x.dim() - 2))
    assert torch.allclose(unscale(C, m), unscale(state[0], state[2]), **FP32)
    assert torch.allclose(unscale(n, m), unscale(state[1], state[2]), **FP32)


def test_xlstm_prefill_then_decode_equals_longer_prefill():
    seeded()
    _, cfg = resolve("xlstm-tiny")
    decoded, prefilled = prefill_then_decode_vs_longer_prefill(xlstm.xlstm_model(cfg), prompt=7, steps=3)
    assert torch.allclose(decoded, prefilled, **FP32)


def test_xlstm_decode_state_is_constant_in_context_and_matches_the_config():
    eight = {"layers": "8"}  # one sLSTM block in eight
    _, cfg = resolve("xlstm-1.3b", eight)
    batch, bf16, d = 2, 2, cfg.inner // cfg.heads
    mlstm = cfg.heads * (d * d + d + 1) + cfg.inner * (cfg.conv_kernel - 1)
    slstm = 4 * cfg.hidden
    n_slstm = cfg.layers // cfg.slstm_every
    expected = batch * bf16 * ((cfg.layers - n_slstm) * mlstm + n_slstm * slstm)
    for context in (128, 8192):
        trace, states = decode_state("xlstm-1.3b", context, overrides=eight)
        assert states.nbytes.sum() == expected
        assert_read_and_written_whole(trace, states)


# --- RWKV-7 --------------------------------------------------------------------------------

def test_rwkv7_chunked_prefill_then_decode_equals_longer_prefill():
    seeded()
    _, cfg = resolve("rwkv7-tiny")  # chunks of 4: prompts of 9..11 tokens end mid-chunk
    decoded, prefilled = prefill_then_decode_vs_longer_prefill(rwkv.rwkv7_model(cfg), prompt=9, steps=3)
    assert torch.allclose(decoded, prefilled, **FP32)


def test_rwkv7_decode_state_is_constant_in_context_and_matches_the_config():
    _, cfg = resolve("rwkv7-1.5b", SHALLOW)
    batch, bf16 = 2, 2
    per_layer = 2 * cfg.hidden + cfg.heads * cfg.head_size ** 2  # two token shifts and the wkv matrices
    for context in (128, 8192):
        trace, states = decode_state("rwkv7-1.5b", context)
        assert states.nbytes.sum() == cfg.layers * batch * per_layer * bf16
        assert_read_and_written_whole(trace, states)


# --- segment-recurrent memory transformer --------------------------------------------------

def test_memory_transformer_prefill_then_decode_equals_longer_prefill_across_a_memory_write():
    seeded()
    _, cfg = resolve("memformer-tiny")  # segments of 4: decoding tokens 9..12 completes the third one
    decoded, prefilled = prefill_then_decode_vs_longer_prefill(memory_transformer.memory_transformer_model(cfg),
                                                               prompt=9, steps=4)
    assert torch.allclose(decoded, prefilled, **FP32)


def test_memory_transformer_writes_memory_only_when_a_segment_completes():
    _, cfg = resolve("memformer-7b", SHALLOW)
    for context, writes in ((cfg.segment * 3 + 5, False), (cfg.segment * 3 - 1, True)):
        trace, memory = decode_state("memformer-7b", context, role="memory")
        slots = memory[memory.name.str.endswith(".memory")]
        written = trace.accesses[trace.accesses.write & trace.accesses.tensor_id.isin(slots.tensor_id)]
        assert written.tensor_id.nunique() == (cfg.layers if writes else 0)


def test_memory_transformer_decode_state_is_constant_in_context_and_matches_the_config():
    _, cfg = resolve("memformer-7b", SHALLOW)
    batch, bf16 = 2, 2
    memory = batch * cfg.layers * 2 * cfg.memory_slots * cfg.hidden * bf16   # the slots' keys and values
    kv = batch * cfg.layers * 2 * cfg.segment * cfg.hidden * bf16
    for context in (100, 10_000):  # mid-segment: the slots themselves are not touched, their keys and values are
        trace, slots = decode_state("memformer-7b", context, role="memory")
        cache = trace.tensors[trace.tensors.role == "kv_cache"]
        assert slots.nbytes.sum() == memory
        assert cache.nbytes.sum() == kv
        attention = trace.ops[trace.ops.category == "attention"]
        keys = cfg.memory_slots + context % cfg.segment + 1
        assert attention.bytes_read.sum() == pytest.approx(cfg.layers * batch * (2 * keys + 1) * cfg.hidden * bf16)


# --- Titans (memory as context) ------------------------------------------------------------

def test_titans_memory_update_is_a_hand_derived_gradient_step_with_momentum_and_decay():
    seeded()
    _, cfg = resolve("titans-tiny")
    memory = titans.NeuralMemory(cfg)
    B, T, d, dm = 2, 4, cfg.hidden, cfg.memory_hidden
    w1, w2 = torch.randn(B, d, dm) * 0.3, torch.randn(B, dm, d) * 0.3
    s1, s2 = torch.randn(B, d, dm) * 0.1, torch.randn(B, dm, d) * 0.1
    segment = torch.randn(B, T, d)
    weights, momentum = (w1.clone(), w2.clone()), (s1.clone(), s2.clone())
    with torch.no_grad():
        memory.update(weights, momentum, segment)
        # the gradient of mean_t ||silu(k W1) W2 - v||^2, by hand
        k, v = torch.nn.functional.normalize(memory.key(segment), dim=-1), memory.value(segment)
        pre = k @ w1
        hidden = torch.nn.functional.silu(pre)
        error = 2 * (hidden @ w2 - v) / T
        silu_slope = torch.sigmoid(pre) * (1 + pre * (1 - torch.sigmoid(pre)))
        g2 = hidden.transpose(1, 2) @ error
        g1 = k.transpose(1, 2) @ ((error @ w2.transpose(1, 2)) * silu_slope)
        lr, eta, alpha = (torch.sigmoid(memory.gates(segment.mean(1)))[:, i, None, None] for i in range(3))
    for w, s, g, new_w, new_s in ((w1, s1, g1, weights[0], momentum[0]), (w2, s2, g2, weights[1], momentum[1])):
        expected_s = eta * s - cfg.memory_lr * lr * g
        assert torch.allclose(new_s, expected_s, **FP32)
        assert torch.allclose(new_w, (1 - alpha) * w + expected_s, **FP32)


def test_titans_prefill_then_decode_equals_longer_prefill_across_a_memory_update():
    seeded()
    _, cfg = resolve("titans-tiny")  # segments of 4: decoding tokens 9..12 runs the third segment's update
    decoded, prefilled = prefill_then_decode_vs_longer_prefill(titans.titans_model(cfg), prompt=9, steps=4)
    assert torch.allclose(decoded, prefilled, **FP32)


def test_titans_decode_state_is_constant_and_the_segment_end_runs_backward_and_update():
    _, cfg = resolve("titans-mac-0.8b", SHALLOW)
    batch, bf16 = 2, 2
    weights = batch * cfg.layers * 2 * cfg.hidden * cfg.memory_hidden * bf16
    cache = batch * cfg.layers * 4 * cfg.segment * cfg.hidden * bf16
    for context in (100, 10_000):
        trace, memory = decode_state("titans-mac-0.8b", context, role="memory")
        assert memory.nbytes.sum() == weights
        assert trace.tensors[trace.tensors.role == "kv_cache"].nbytes.sum() == cache
        assert not trace.tensors.name.str.contains("momentum").any()  # mid-segment: no update
    mid, _ = decode_state("titans-mac-0.8b", 2 * cfg.segment)
    end, memory = decode_state("titans-mac-0.8b", 3 * cfg.segment - 1, role="memory")
    written = end.accesses[end.accesses.write & end.accesses.tensor_id.isin(memory.tensor_id)]
    assert written.tensor_id.nunique() == 2 * cfg.layers
    momentum = end.tensors[end.tensors.name.str.contains("momentum")]
    assert momentum.nbytes.sum() == weights
    # the update adds, over the segment's tokens, the memory MLP's two forward matmuls and three
    # backward ones (the gradients of both weights and of the hidden layer), T * params FLOPs each
    segment_gemm = lambda t: t.ops[(t.ops.category == "gemm") & t.ops.scope.str.endswith("attn")].flops.sum()
    params = weights / bf16
    assert segment_gemm(end) - segment_gemm(mid) == pytest.approx(5 * cfg.segment * params, rel=1e-9)


# --- Samba ---------------------------------------------------------------------------------

def test_samba_prefill_then_decode_equals_longer_prefill_past_the_window():
    seeded()
    _, cfg = resolve("samba-tiny")  # window 6: the prompt of 9 already wraps the ring buffer
    decoded, prefilled = prefill_then_decode_vs_longer_prefill(samba.samba_model(cfg), prompt=9, steps=3)
    assert torch.allclose(decoded, prefilled, **FP32)


def test_samba_kv_cache_grows_to_the_window_and_the_mamba_state_is_constant():
    _, cfg = resolve("samba-1.7b", SHALLOW)
    batch, bf16 = 2, 2
    attention_layers = cfg.layers // 2
    mamba_state = batch * (cfg.layers - attention_layers) * cfg.inner * (cfg.conv_kernel - 1 + cfg.state_size) * bf16
    for context in (100, cfg.window, 4 * cfg.window):
        trace, states = decode_state("samba-1.7b", context)
        cache = trace.tensors[trace.tensors.role == "kv_cache"]
        kept = min(context + 1, cfg.window)
        assert cache.nbytes.sum() == batch * attention_layers * 2 * cfg.kv_heads * kept * cfg.head_dim * bf16
        assert states.nbytes.sum() == mamba_state


# --- mixture of experts and product-key memory ---------------------------------------------

def test_moe_dispatch_and_gather_equal_every_expert_on_every_token():
    seeded()
    _, cfg = resolve("moe-tiny")  # capacity factor experts / top_k: no token is dropped
    layer = moe.MixtureOfExperts(cfg)
    with torch.no_grad():
        for count in (2, 29):
            tokens = torch.randn(count, cfg.hidden)
            weights, chosen = layer.route(tokens)
            every = torch.stack([layer.expert_mlp(tokens, layer.w_gate[e], layer.w_up[e], layer.w_down[e])
                                 for e in range(cfg.experts)], dim=1)                   # (T, E, d)
            picked = every.gather(1, chosen.unsqueeze(-1).expand(-1, -1, cfg.hidden))
            reference = (picked * weights.unsqueeze(-1)).sum(1)
            assert torch.allclose(layer.dispatched(tokens, weights, chosen), reference, **FP32)
            assert torch.allclose(layer.gathered(tokens, weights, chosen), reference, **FP32)


def test_product_keys_find_the_same_top_k_as_scoring_every_key():
    seeded()
    heads, n, half, k = 3, 7, 4, 5
    query, subkeys = torch.randn(6, heads, 2, half), torch.randn(heads, 2, n, half)
    scores, rows = moe.product_key_topk(query, subkeys, k)
    full_keys = torch.cat((subkeys[:, 0].repeat_interleave(n, 1), subkeys[:, 1].repeat(1, n, 1)), -1)  # (H, n*n, dk)
    every = torch.einsum("thd,hnd->thn", query.flatten(-2), full_keys)
    best, best_rows = every.topk(k, dim=-1)
    assert torch.allclose(scores, best, **FP32)
    assert torch.equal(rows, best_rows)


@pytest.mark.parametrize("name", ["moe-tiny", "pkm-tiny"])
def test_sparse_prefill_then_decode_equals_longer_prefill(name):
    seeded()
    _, cfg = resolve(name)
    decoded, prefilled = prefill_then_decode_vs_longer_prefill(moe.sparse_model(cfg), prompt=8, steps=2)
    assert torch.allclose(decoded, prefilled, **FP32)


def kv_bytes(cfg, batch: int, context: int, bf16: int = 2) -> int:
    return batch * cfg.layers * 2 * cfg.kv_heads * (context + 1) * cfg.head_dim * bf16


def test_moe_decode_loads_top_k_experts_and_a_growing_kv_cache():
    _, cfg = resolve("mixtral-8x7b", SHALLOW)
    bf16 = 2
    for context in (128, 4096):
        trace = trace_workload("mixtral-8x7b", StepSpec(phase="decode", batch=1, context=context), SHALLOW)
        assert trace.tensors[trace.tensors.role == "kv_cache"].nbytes.sum() == kv_bytes(cfg, 1, context)
        experts = trace.tensors[trace.tensors.name.str.contains(r"mlp\.w_(?:gate|up|down)$")]
        reads = trace.accesses[~trace.accesses.write & trace.accesses.tensor_id.isin(experts.tensor_id)]
        assert reads.nbytes.sum() == cfg.layers * 3 * cfg.top_k * cfg.hidden * cfg.intermediate * bf16
        assert experts.nbytes.sum() == cfg.layers * 3 * cfg.experts * cfg.hidden * cfg.intermediate * bf16


def test_pkm_decode_reads_top_k_rows_of_the_value_table_and_a_growing_kv_cache():
    _, cfg = resolve("pkm-12l")
    batch, bf16 = 2, 2
    for context in (128, 4096):
        trace = trace_workload("pkm-12l", StepSpec(phase="decode", batch=batch, context=context))
        assert trace.tensors[trace.tensors.role == "kv_cache"].nbytes.sum() == kv_bytes(cfg, batch, context)
        table = trace.tensors[trace.tensors.name == f"layers.{cfg.memory_layer}.mlp.values.weight"]
        assert table.role.item() == "weight"
        assert table.nbytes.item() == cfg.memory_keys ** 2 * cfg.hidden * bf16
        reads = trace.accesses[~trace.accesses.write & (trace.accesses.tensor_id == table.tensor_id.item())]
        assert reads.nbytes.sum() == batch * cfg.memory_heads * cfg.memory_topk * cfg.hidden * bf16


# --- every registered config ---------------------------------------------------------------

FAMILIES = ("mamba", "mamba2", "gla", "gated-deltanet", "xlstm", "rwkv7", "titans", "memformer", "samba", "moe", "pkm")
CONFIGS = sorted(name for name, (family, _) in workloads().items() if family.name in FAMILIES)


@pytest.mark.parametrize("name, key", [("gla-tiny", "rule"), ("pkm-tiny", "sparse")])
def test_an_unknown_variant_is_one_line_and_exit_2(run_cli, name, key):
    proc = run_cli("run", "nvidia-h100-sxm", name, "--config", f"{key}=lstm")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and f"config key '{key}' is 'lstm'; expected one of" in proc.stderr


def test_every_family_has_a_tiny_config_and_a_full_size_one():
    families = {family.name: [] for family, _ in workloads().values()}
    for name in CONFIGS:
        families[workloads()[name][0].name].append(name)
    for family in FAMILIES:
        assert any(name.endswith("-tiny") for name in families[family]), family
        assert any(not name.endswith("-tiny") for name in families[family]), family


@pytest.mark.parametrize("name", CONFIGS)
def test_config_traces(name):
    """Tiny configs run for real on the CPU (prefill and decode); full-size ones decode on meta."""
    if name.endswith("-tiny"):
        for phase in ("prefill", "decode"):
            trace = trace_workload(name, StepSpec(phase=phase, batch=2, context=9, device="cpu"), mode="real")
            assert (trace.ops.measured_s > 0).all()
    else:
        trace = trace_workload(name, StepSpec(phase="decode", context=64))
        assert trace.ops.measured_s.isna().all()
    assert trace.total_flops > 0
    assert trace.tensors.role.isin(["state", "kv_cache", "memory"]).any()


def test_mamba_prefill_scan_is_one_fused_kernel_that_keeps_its_intermediates_on_chip():
    overrides = {"state_size": "16"}  # makes a (batch, L, inner, N) tensor the largest a trace could hold
    _, cfg = resolve("mamba-tiny", overrides)
    batch, length, e = 2, 32, 4  # fp32
    trace = trace_workload("mamba-tiny", StepSpec(phase="prefill", batch=batch, context=length), overrides)
    scans = trace.ops[trace.ops.name == "memsim::selective_scan"]
    assert len(scans) == cfg.layers and (scans.category == "scan").all()
    activations = trace.tensors[trace.tensors.role == "activation"]
    assert activations.nbytes.max() < batch * length * cfg.inner * cfg.state_size * e
    # IO of one scan: u, dt and z in, y out, the state read and written, and the B and C columns
    # (views into the x_proj output, which they span), A and D
    core = e * (4 * batch * length * cfg.inner + 2 * batch * cfg.inner * cfg.state_size)
    views = e * (2 * batch * length * (cfg.dt_rank + 2 * cfg.state_size) + cfg.inner * cfg.state_size + cfg.inner)
    moved = scans.bytes_read + scans.bytes_written
    assert ((moved >= core) & (moved <= core + views)).all()
    expected_flops = 9.0 * batch * length * cfg.inner * cfg.state_size
    assert scans.flops.to_numpy() == pytest.approx(expected_flops)


def test_a_fused_scan_run_for_real_records_the_ops_that_ran_under_its_name():
    """Real tensors run the scan's readable torch code, not the fused kernel: each of its ops is
    timed and recorded on its own, so `memsim validate real` prices what it measured."""
    _, cfg = resolve("mamba-tiny")
    meta = trace_workload("mamba-tiny", StepSpec(phase="prefill", batch=2, context=9))
    real = trace_workload("mamba-tiny", StepSpec(phase="prefill", batch=2, context=9, device="cpu"), mode="real")
    assert (meta.ops.name == "memsim::selective_scan").sum() == cfg.layers
    assert not (real.ops.name == "memsim::selective_scan").any()
    inside = real.ops[real.ops.scope == "memsim::selective_scan"]
    assert "aten::exp" in set(inside.name)  # the decay exp(dt A), which the fused kernel keeps on chip
    assert len(inside) > 2 * cfg.layers and (inside.measured_s > 0).all()


def test_mamba2_chunked_scan_is_one_fused_matrix_kernel_without_per_head_copies():
    _, cfg = resolve("mamba2-tiny")
    batch, length = 2, 16
    trace = trace_workload("mamba2-tiny", StepSpec(phase="prefill", batch=batch, context=length))
    scans = trace.ops[trace.ops.name == "memsim::ssd_chunked_scan"]
    assert len(scans) == cfg.layers and (scans.category == "chunked_scan").all()
    chunks = length // cfg.chunk_size
    per_head_b = str([batch, length, cfg.heads, cfg.state_size])
    scores = str([batch, cfg.heads, chunks, cfg.chunk_size, cfg.chunk_size])
    assert not set(trace.tensors.shape) & {per_head_b, scores}


def test_slstm_runs_as_one_fused_kernel_so_the_trace_does_not_grow_with_the_prompt():
    _, cfg = resolve("xlstm-tiny")
    short, long = (trace_workload("xlstm-tiny", StepSpec(phase="prefill", context=length)) for length in (8, 64))
    assert len(short.ops) == len(long.ops)
    sequences = long.ops[long.ops.name == "memsim::slstm_sequence"]
    assert len(sequences) == sum(cfg.is_slstm(i) for i in range(cfg.layers))
    head_dim = cfg.hidden // cfg.heads
    per_token = 2.0 * cfg.hidden * 4 * head_dim + 20.0 * cfg.hidden  # recurrent map + cell, batch 1
    assert sequences.flops.to_numpy() == pytest.approx(64 * per_token)


@pytest.mark.parametrize("name, delta", [("gla-tiny", False), ("gated-deltanet-tiny", True)])
def test_chunked_linear_attention_is_one_fused_matrix_kernel(name, delta):
    _, cfg = resolve(name)
    batch, length = 2, 24
    trace = trace_workload(name, StepSpec(phase="prefill", batch=batch, context=length))
    fused = trace.ops[trace.ops.name == "memsim::chunked_linear_attention"]
    assert len(fused) == cfg.layers and (fused.category == "chunked_scan").all()
    dk, dv, width = cfg.key_dim, cfg.value_dim, min(cfg.chunk_size, length)
    per_token = width * (dk + dv) + 2 * dk * dv + (width * (3 * dk + 2 * dv) + 2 * dk * dv if delta else 0)
    assert fused.flops.to_numpy() == pytest.approx(2.0 * batch * cfg.heads * length * per_token)
    chunks = -(-length // cfg.chunk_size)
    scores = str([batch, cfg.heads, chunks, cfg.chunk_size, cfg.chunk_size])
    assert scores not in set(trace.tensors.shape)
