"""Sparse memory layers in a KV-cache transformer: each token touches a small part of a large table.

- Mixture of experts (Mixtral style): a router picks top_k of the experts' SwiGLU MLPs per token.
  With few tokens (decode) only the chosen experts' weights are loaded; with many (prefill) each
  expert takes up to `capacity` tokens in one batched matmul and the overflow is dropped (Switch
  Transformer), so shapes never depend on the routing.
- Product-key memory (Lample et al. 2019): a query per head is split in two halves, each scored
  against sqrt(N) sub-keys; the top k of each half give k^2 candidate keys of the N-row value
  table, of which the best k are read and mixed. It replaces the MLP of one layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memsim.trace.workload import StepSpec, WorkloadStep, register
from memsim.workloads.llama import MLP, Attention, ContiguousKV
from memsim.workloads.stack import MixerBlock, StackLM, build_stack_step, require_choice, rotary, tagged_zeros

LAYERS = ("moe", "pkm")


@dataclass(frozen=True)
class SparseConfig:
    sparse: str = "moe"
    """'moe' (experts in every layer) or 'pkm' (a product-key memory in layer memory_layer)."""
    vocab_size: int = 32000
    hidden: int = 4096
    layers: int = 32
    heads: int = 32
    kv_heads: int = 8
    intermediate: int = 14336
    rope_theta: float = 1e6
    experts: int = 8
    top_k: int = 2
    capacity_factor: float = 1.25
    memory_layer: int = 6
    memory_keys: int = 512
    """Sub-keys per half: the value table has memory_keys ** 2 rows."""
    memory_heads: int = 4
    memory_topk: int = 32
    key_dim: int = 512
    norm_eps: float = 1e-5
    dtype: str = "bf16"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


class CachedAttention(Attention):
    """Llama attention over a KV cache of the whole context, with its own rotary angles."""

    def new_state(self, batch: int, length: int, device, dtype, name: str):
        shape = (batch, self.cfg.kv_heads, length, self.cfg.head_dim)
        return ContiguousKV.over(tagged_zeros(shape, "kv_cache", f"{name}.k_cache", device, dtype),
                                 tagged_zeros(shape, "kv_cache", f"{name}.v_cache", device, dtype))

    def forward(self, x, state, start: int):
        cos, sin = rotary(start, x.shape[1], self.cfg.head_dim, self.cfg.rope_theta, x.device, x.dtype)
        return super().forward(x, cos, sin, state, start)


class MixtureOfExperts(nn.Module):
    def __init__(self, cfg: SparseConfig):
        super().__init__()
        self.cfg = cfg
        e, d, i = cfg.experts, cfg.hidden, cfg.intermediate
        self.router = nn.Linear(d, e, bias=False)
        self.w_gate = nn.Parameter(torch.randn(e, d, i) * d ** -0.5)
        self.w_up = nn.Parameter(torch.randn(e, d, i) * d ** -0.5)
        self.w_down = nn.Parameter(torch.randn(e, i, d) * i ** -0.5)

    @staticmethod
    def expert_mlp(x, gate, up, down):
        return (F.silu(x @ gate) * (x @ up)) @ down

    def route(self, tokens):
        """Top-k experts per token and their renormalised router weights, (T, k) each."""
        probs = torch.softmax(self.router(tokens).float(), dim=-1)
        weights, chosen = probs.topk(self.cfg.top_k, dim=-1)
        return (weights / weights.sum(-1, keepdim=True)).to(tokens.dtype), chosen

    def forward(self, x):
        tokens = x.flatten(0, 1)
        weights, chosen = self.route(tokens)
        if tokens.shape[0] * self.cfg.top_k <= self.cfg.experts:
            out = self.gathered(tokens, weights, chosen)
        else:
            out = self.dispatched(tokens, weights, chosen)
        return out.view_as(x)

    def gathered(self, tokens, weights, chosen):
        """Few tokens: load just the chosen experts' weights, one slice per (token, choice)."""
        k = self.cfg.top_k
        picks = chosen.flatten()
        gate, up, down = (w.index_select(0, picks) for w in (self.w_gate, self.w_up, self.w_down))
        y = self.expert_mlp(tokens.repeat_interleave(k, dim=0).unsqueeze(1), gate, up, down)
        return (y.view(-1, k, tokens.shape[-1]) * weights.unsqueeze(-1)).sum(1)

    def dispatched(self, tokens, weights, chosen):
        """Many tokens: every expert runs on a fixed-capacity buffer of the tokens routed to it."""
        cfg = self.cfg
        count, d = tokens.shape
        capacity = math.ceil(count * cfg.top_k / cfg.experts * cfg.capacity_factor)
        picks = chosen.flatten()                                              # token-major (T * k)
        one_hot = (picks.unsqueeze(-1) == torch.arange(cfg.experts, device=picks.device)).long()
        rank = ((torch.cumsum(one_hot, dim=0) - 1) * one_hot).sum(-1)         # arrival order at its expert
        kept = rank < capacity
        slot = picks * capacity + rank.clamp(max=capacity - 1)
        sent = tokens.repeat_interleave(cfg.top_k, dim=0) * kept.unsqueeze(-1)
        buffer = torch.zeros(cfg.experts * capacity, d, device=tokens.device, dtype=tokens.dtype)
        buffer.index_add_(0, slot, sent)
        out = self.expert_mlp(buffer.view(cfg.experts, capacity, d), self.w_gate, self.w_up, self.w_down)
        routed = out.flatten(0, 1).index_select(0, slot) * (weights.flatten() * kept).unsqueeze(-1)
        return routed.view(count, cfg.top_k, d).sum(1)


def product_key_topk(query, subkeys, k: int):
    """The k best keys of the product key set and their scores. query (..., H, 2, dk/2), subkeys
    (H, 2, n, dk/2); key (i, j) = concat(subkey0_i, subkey1_j) has row index i * n + j."""
    n = subkeys.shape[-2]
    scores = torch.einsum("...hsk,hsnk->...hsn", query, subkeys)
    first, first_index = scores[..., 0, :].topk(k, dim=-1)
    second, second_index = scores[..., 1, :].topk(k, dim=-1)
    pair_scores = (first.unsqueeze(-1) + second.unsqueeze(-2)).flatten(-2)
    pair_rows = (first_index.unsqueeze(-1) * n + second_index.unsqueeze(-2)).flatten(-2)
    best, where = pair_scores.topk(k, dim=-1)
    return best, pair_rows.gather(-1, where)


class ProductKeyMemory(nn.Module):
    def __init__(self, cfg: SparseConfig):
        super().__init__()
        self.cfg = cfg
        half = cfg.key_dim // 2
        self.query = nn.Linear(cfg.hidden, cfg.memory_heads * cfg.key_dim, bias=False)
        self.subkeys = nn.Parameter(torch.randn(cfg.memory_heads, 2, cfg.memory_keys, half) * half ** -0.5)
        self.values = nn.Embedding(cfg.memory_keys ** 2, cfg.hidden)

    def forward(self, x):
        cfg = self.cfg
        query = self.query(x).unflatten(-1, (cfg.memory_heads, 2, cfg.key_dim // 2))
        scores, rows = product_key_topk(query, self.subkeys, cfg.memory_topk)    # (B, L, H, k)
        weights = torch.softmax(scores.float(), dim=-1).to(x.dtype)
        return (self.values(rows) * weights.unsqueeze(-1)).sum((2, 3))


def sparse_model(cfg: SparseConfig) -> StackLM:
    def feed_forward(index):
        if cfg.sparse == "moe":
            return MixtureOfExperts(cfg)
        return ProductKeyMemory(cfg) if index == cfg.memory_layer else MLP(cfg)

    blocks = [MixerBlock(cfg.hidden, cfg.norm_eps, CachedAttention(cfg), feed_forward(i)) for i in range(cfg.layers)]
    return StackLM(cfg.vocab_size, cfg.hidden, blocks, cfg.norm_eps)


def build(cfg: SparseConfig, spec: StepSpec) -> WorkloadStep:
    require_choice("sparse model", "sparse", cfg.sparse, LAYERS)
    return build_stack_step(lambda: sparse_model(cfg), cfg.dtype, spec)


# Mixtral 8x7B (Jiang et al. 2024): d 4096, 32 layers, 32 heads with 8 KV heads, 8 experts of
# SwiGLU 14336, top 2. PKM (Lample et al. 2019): 512^2 values, 4 memory heads, 32 keys per head,
# key dim 512, in place of the MLP of one layer of a 12-layer d-1024 transformer.
MOE_CONFIGS = {
    "mixtral-8x7b": SparseConfig(),
    "moe-tiny": SparseConfig(vocab_size=256, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, experts=4,
                             top_k=2, capacity_factor=2.0, dtype="fp32"),
}
PKM_CONFIGS = {
    "pkm-12l": SparseConfig(sparse="pkm", hidden=1024, layers=12, heads=16, kv_heads=16, intermediate=4096,
                            rope_theta=10000.0),
    "pkm-tiny": SparseConfig(sparse="pkm", vocab_size=256, hidden=32, layers=2, heads=4, kv_heads=2,
                             intermediate=64, memory_layer=1, memory_keys=8, memory_heads=2, memory_topk=3,
                             key_dim=8, rope_theta=10000.0, dtype="fp32"),
}

register("moe", build, MOE_CONFIGS, phases=("prefill", "decode"),
         description="Mixture-of-experts transformer: each token loads top_k of the experts")
register("pkm", build, PKM_CONFIGS, phases=("prefill", "decode"),
         description="Product-key memory layer: each token reads top-k rows of a large value table")
