"""Gated linear attention (Yang et al. 2023) and the gated delta rule (Gated DeltaNet, Yang, Kautz
& Hatamizadeh 2024): attention replaced by a d_k x d_v state per head.

Both are one recurrence, which RWKV-7 shares (so it lives here, once):

    M_t = diag(w_t) M_{t-1} + b_t (a_t^T M_{t-1}) + k_t v_t^T,      o_t = M_t^T r_t

GLA has no rank-one term (a = b = 0) and a decay per key dimension. The gated delta rule has a
scalar decay per head and a = k, b = -alpha beta k. Prefill uses the chunked form: inside a chunk
everything is matmuls (the rank-one terms through a unit-lower-triangular solve), across chunks
the state is carried; decode applies the recurrence once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memsim.trace import run_fused
from memsim.trace.workload import StepSpec, WorkloadStep, register
from memsim.workloads.llama import MLP, RMSNorm
from memsim.workloads.mamba import causal_conv, parallel_scan
from memsim.workloads.stack import MixerBlock, StackLM, build_stack_step, require_choice, tagged_zeros


def recurrent_step(r, k, v, log_w, state, a=None, b=None):
    """One token: state (B, H, dk, dv) updated in place; r, k, a, b (B, H, dk), v (B, H, dv),
    log_w (B, H, dk) or (B, H, 1). Returns o = state^T r, (B, H, dv)."""
    updated = torch.exp(log_w).unsqueeze(-1) * state + k.unsqueeze(-1) * v.unsqueeze(-2)
    if a is not None:
        updated = updated + b.unsqueeze(-1) * torch.einsum("bhk,bhkv->bhv", a, state).unsqueeze(-2)
    state.copy_(updated)
    return torch.einsum("bhk,bhkv->bhv", r, state)


def unit_lower_solve(strict_lower: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Y with (I - N) Y = rhs, for strictly lower-triangular N (..., C, C): Y = (I + N + N^2 + ...) rhs,
    which ends at N^(C-1), applied as (I + N)(I + N^2)(I + N^4)... in 2 log2(C) matmuls."""
    power, terms = strict_lower, 1
    while terms < strict_lower.shape[-1]:
        rhs = rhs + power @ rhs
        terms *= 2
        if terms < strict_lower.shape[-1]:
            power = power @ power
    return rhs


def chunked(r, k, v, log_w, state, chunk: int, a=None, b=None):
    """Every output of the recurrence over (B, H, L, .) inputs, chunk by chunk, from `state`
    (B, H, dk, dv), which is left holding the final state. Returns (B, H, L, dv).

    With G_t the cumulative log decay inside a chunk, decay between positions s <= t factors as
    exp(G_t) * exp(-G_s), so intra-chunk work is masked matmuls of rescaled r, k, a, b; exp(-G)
    grows along a chunk, which is why chunks stay short (16 to 64 tokens).
    """
    batch, heads, length, _ = k.shape
    pad = -length % chunk
    if pad:  # zero keys, values and rank-one terms with w = 1 leave the state unchanged
        r, k, v, log_w = (F.pad(t, (0, 0, 0, pad)) for t in (r, k, v, log_w))
        a, b = (None if t is None else F.pad(t, (0, 0, 0, pad)) for t in (a, b))
    chunks = (length + pad) // chunk
    split = lambda t: None if t is None else t.reshape(batch, heads, chunks, chunk, t.shape[-1])
    r, k, v, log_w, a, b = map(split, (r, k, v, log_w, a, b))
    G = torch.cumsum(log_w, dim=-2)
    G_end = G[..., -1:, :]
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=k.device).tril()
    r_hat, k_hat = r * torch.exp(G), k * torch.exp(-G)
    within = (r_hat @ k_hat.transpose(-1, -2)).masked_fill(~causal, 0)
    outputs = within @ v                                                  # what each chunk adds alone
    carried = (k * torch.exp(G_end - G)).transpose(-1, -2) @ v           # (B, H, c, dk, dv)
    chunk_decay = torch.exp(G_end).transpose(-1, -2)                      # (B, H, c, dk or 1, 1)
    if a is not None:
        strict = torch.ones(chunk, chunk, dtype=torch.bool, device=k.device).tril(-1)
        a_bar, b_hat = a * torch.exp(G - log_w), b * torch.exp(-G)
        # u = reads_state M + u_alone: what the rank-one terms read, from the state and from the chunk
        rank_one = (a_bar @ b_hat.transpose(-1, -2)).masked_fill(~strict, 0)
        from_chunk = (a_bar @ k_hat.transpose(-1, -2)).masked_fill(~strict, 0) @ v
        reads_state, u_alone = unit_lower_solve(rank_one, torch.cat((a_bar, from_chunk), -1)).split(
            (a_bar.shape[-1], v.shape[-1]), dim=-1)
        r_to_b = (r_hat @ b_hat.transpose(-1, -2)).masked_fill(~causal, 0)
        b_end = (b * torch.exp(G_end - G)).transpose(-1, -2)
    # Each chunk maps the state it starts from linearly: M' = transition M + carried, and its
    # outputs are reads M + outputs. A parallel scan over chunks gives every starting state.
    reads, apply, transition = r_hat, torch.mul, chunk_decay
    if a is not None:  # the rank-one terms read the starting state through u
        dk = k.shape[-1]
        identity = (torch.arange(dk, device=k.device).unsqueeze(-1) == torch.arange(dk, device=k.device)).to(k.dtype)
        transition = chunk_decay * identity + b_end @ reads_state
        carried = carried + b_end @ u_alone
        reads = r_hat + r_to_b @ reads_state
        outputs = outputs + r_to_b @ u_alone
        apply = torch.matmul
    first = carried[:, :, :1] + apply(transition[:, :, :1], state.unsqueeze(2))   # fold in the initial state
    ends = parallel_scan(transition.transpose(1, 2), torch.cat((first, carried[:, :, 1:]), 2).transpose(1, 2), apply)
    ends = ends.transpose(1, 2)                                                   # state after each chunk
    starts = torch.cat((state.unsqueeze(2), ends[:, :, :-1]), dim=2)
    state.copy_(ends[:, :, -1])
    out = reads @ starts + outputs
    return out.reshape(batch, heads, chunks * chunk, -1)[:, :, :length]


def fused_chunked(r, k, v, log_w, state, chunk: int, a=None, b=None):
    """`chunked` as the one fused kernel that chunked linear-attention libraries (flash-linear-
    attention's chunk kernels) run: the chunk scores, decays and per-chunk states stay on chip, so it
    reads r, k, v, the decays, the rank-one terms and the state once and writes the outputs and the
    final state once. FLOPs are those of its matmuls: scores and their product with v inside each
    chunk (C (dk + dv) per token and head), and reading and updating the state (2 dk dv); the
    rank-one (delta) terms add C (3 dk + 2 dv) + 2 dk dv."""
    batch, heads, length, key_dim = k.shape
    value_dim = v.shape[-1]
    out = torch.empty_like(v)

    def compute():
        out.copy_(chunked(r, k, v, log_w, state, chunk, a, b))

    width = min(chunk, length)
    per_token = width * (key_dim + value_dim) + 2 * key_dim * value_dim
    if a is not None:
        per_token += width * (3 * key_dim + 2 * value_dim) + 2 * key_dim * value_dim
    extra = [t for t in (a, b) if t is not None]
    run_fused("memsim::chunked_linear_attention", compute, reads=[r, k, v, log_w, state, *extra],
              writes=[out, state], flops=2.0 * batch * heads * length * per_token, category="chunked_scan",
              attrs={"steps": -(-length // chunk), "state_bytes": state.numel() * state.element_size()})
    return out


GATE_LOGIT_NORMALIZER = 16.0
"""GLA divides the log decay by 16 so that decays start close to one (Yang et al. 2023)."""
RULES = ("gla", "delta")


@dataclass(frozen=True)
class LinearAttentionConfig:
    rule: str = "gla"
    """'gla' (decay per key dimension, no rank-one term) or 'delta' (gated delta rule)."""
    vocab_size: int = 32000
    hidden: int = 2048
    layers: int = 24
    heads: int = 4
    key_dim: int = 256
    value_dim: int = 512
    intermediate: int = 5632
    gate_rank: int = 16
    conv_kernel: int = 4
    chunk_size: int = 64
    norm_eps: float = 1e-6
    dtype: str = "bf16"

    @property
    def delta(self) -> bool:
        return self.rule == "delta"


class LinearAttention(nn.Module):
    """Projections, the gated recurrence, a per-head norm and an output gate."""

    def __init__(self, cfg: LinearAttentionConfig):
        super().__init__()
        self.cfg = cfg
        h, dk, dv = cfg.heads, cfg.key_dim, cfg.value_dim
        self.q_proj = nn.Linear(cfg.hidden, h * dk, bias=False)
        self.k_proj = nn.Linear(cfg.hidden, h * dk, bias=False)
        self.v_proj = nn.Linear(cfg.hidden, h * dv, bias=False)
        self.g_proj = nn.Linear(cfg.hidden, h * dv, bias=False)
        if cfg.delta:  # scalar decay alpha and write strength beta per head; short convs on q, k, v
            self.a_proj = nn.Linear(cfg.hidden, h, bias=False)
            self.b_proj = nn.Linear(cfg.hidden, h, bias=False)
            self.A_log = nn.Parameter(torch.log(torch.linspace(1.0, 16.0, h)))
            self.dt_bias = nn.Parameter(torch.zeros(h))
            channels = h * (2 * dk + dv)
            self.conv1d = nn.Conv1d(channels, channels, cfg.conv_kernel, groups=channels, bias=False)
        else:  # low-rank decay per key dimension
            self.gk_proj = nn.Sequential(nn.Linear(cfg.hidden, cfg.gate_rank, bias=False),
                                         nn.Linear(cfg.gate_rank, h * dk))
        self.o_norm = RMSNorm(dv, cfg.norm_eps)
        self.o_proj = nn.Linear(h * dv, cfg.hidden, bias=False)

    def new_state(self, batch: int, length: int, device, dtype, name: str):
        cfg = self.cfg
        memory = tagged_zeros((batch, cfg.heads, cfg.key_dim, cfg.value_dim), "state", f"{name}.state", device, dtype)
        if not cfg.delta:
            return memory, None
        channels = cfg.heads * (2 * cfg.key_dim + cfg.value_dim)
        conv = tagged_zeros((batch, channels, cfg.conv_kernel - 1), "state", f"{name}.conv_state", device, dtype)
        return memory, conv

    def forward(self, x, state, start: int):
        memory, conv_state = state
        cfg = self.cfg
        batch, length, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if cfg.delta:
            qkv = F.silu(causal_conv(torch.cat((q, k, v), -1).transpose(1, 2), conv_state, self.conv1d))
            q, k, v = qkv.transpose(1, 2).split((cfg.heads * cfg.key_dim,) * 2 + (cfg.heads * cfg.value_dim,), -1)
        heads = lambda t: t.reshape(batch, length, cfg.heads, -1).transpose(1, 2)   # (B, H, L, d)
        q, k, v = heads(q), heads(k), heads(v)
        if cfg.delta:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            log_w = heads(-torch.exp(self.A_log) * F.softplus(self.a_proj(x) + self.dt_bias))    # (B, H, L, 1)
            beta = heads(torch.sigmoid(self.b_proj(x)))
            a, b, k = k, -torch.exp(log_w) * beta * k, beta * k
        else:
            log_w = heads(F.logsigmoid(self.gk_proj(x)) / GATE_LOGIT_NORMALIZER)
            a = b = None
        q = q * cfg.key_dim ** -0.5
        if length == 1:
            pick = lambda t: None if t is None else t[:, :, 0]
            o = recurrent_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], log_w[:, :, 0], memory, pick(a), pick(b))
            o = o.unsqueeze(2)
        else:
            o = fused_chunked(q, k, v, log_w, memory, cfg.chunk_size, a, b)
        o = self.o_norm(o.transpose(1, 2)).reshape(batch, length, -1) * F.silu(self.g_proj(x))
        return self.o_proj(o)


def linear_attention_model(cfg: LinearAttentionConfig) -> StackLM:
    blocks = [MixerBlock(cfg.hidden, cfg.norm_eps, LinearAttention(cfg), MLP(cfg)) for _ in range(cfg.layers)]
    return StackLM(cfg.vocab_size, cfg.hidden, blocks, cfg.norm_eps)


def build(cfg: LinearAttentionConfig, spec: StepSpec) -> WorkloadStep:
    require_choice("linear attention", "rule", cfg.rule, RULES)
    return build_stack_step(lambda: linear_attention_model(cfg), cfg.dtype, spec)


# GLA-1.3B (Yang et al. 2023, Table 2 setting): d 2048, 24 layers, 4 heads, key dim d/2 and value
# dim d over the heads, SwiGLU MLP 5632. Gated DeltaNet 1.3B (Yang, Kautz & Hatamizadeh 2024, the
# fla reference layer): 6 heads of key dim 256 and value dim 512 (0.75 d and 1.5 d in all), short
# convolutions; 21 layers bring it to about 1.3B parameters with the same MLP.
GLA_CONFIGS = {
    "gla-1.3b": LinearAttentionConfig(),
    "gla-tiny": LinearAttentionConfig(vocab_size=256, hidden=32, layers=2, heads=2, key_dim=8, value_dim=16,
                                      intermediate=64, gate_rank=4, chunk_size=4, dtype="fp32"),
}
DELTA_CONFIGS = {
    "gated-deltanet-1.3b": LinearAttentionConfig(rule="delta", layers=21, heads=6, key_dim=256, value_dim=512),
    "gated-deltanet-tiny": LinearAttentionConfig(rule="delta", vocab_size=256, hidden=32, layers=2, heads=2,
                                                 key_dim=8, value_dim=16, intermediate=64, chunk_size=4,
                                                 dtype="fp32"),
}

register("gla", build, GLA_CONFIGS, phases=("prefill", "decode"),
         description="Gated linear attention: chunked prefill, d_k x d_v state per head")
register("gated-deltanet", build, DELTA_CONFIGS, phases=("prefill", "decode"),
         description="Gated delta rule (Gated DeltaNet): chunked prefill with a WY-style inverse, recurrent decode")
