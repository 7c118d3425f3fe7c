"""A Llama-style decoder: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU MLP.

The KV cache is a preallocated tensor per layer, written one slice per step and read whole by
attention, as serving engines do. Prefill computes logits for the last position only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memsim.trace import tag
from memsim.trace.workload import TORCH_DTYPES, StepSpec, WorkloadStep, register


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 32000
    hidden: int = 4096
    layers: int = 32
    heads: int = 32
    kv_heads: int = 32
    intermediate: int = 11008
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    dtype: str = "bf16"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rotate_half(x):
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden, cfg.heads * d, bias=False)
        self.k_proj = nn.Linear(cfg.hidden, cfg.kv_heads * d, bias=False)
        self.v_proj = nn.Linear(cfg.hidden, cfg.kv_heads * d, bias=False)
        self.o_proj = nn.Linear(cfg.heads * d, cfg.hidden, bias=False)

    def forward(self, x, cos, sin, cache: tuple[torch.Tensor, torch.Tensor], start: int):
        batch, length, _ = x.shape
        cfg, d = self.cfg, self.cfg.head_dim
        q = self.q_proj(x).view(batch, length, cfg.heads, d).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, cfg.kv_heads, d).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, cfg.kv_heads, d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k_cache, v_cache = cache
        k_cache[:, :, start:start + length] = k
        v_cache[:, :, start:start + length] = v
        if start == 0:  # prefill: the new keys are all there is
            keys, values, causal = k, v, length > 1
        else:
            keys, values, causal = k_cache[:, :, :start + length], v_cache[:, :, :start + length], False
        out = F.scaled_dot_product_attention(q, keys, values, is_causal=causal,
                                             enable_gqa=cfg.kv_heads != cfg.heads)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, cfg.heads * d))


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate, cfg.hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.input_norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.post_attn_norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, cache, start):
        x = x + self.attn(self.input_norm(x), cos, sin, cache, start)
        return x + self.mlp(self.post_attn_norm(x))


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)

    def rope(self, start: int, length: int, device, dtype):
        d = self.cfg.head_dim
        inv_freq = 1.0 / (self.cfg.rope_theta ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))
        positions = torch.arange(start, start + length, device=device, dtype=torch.float32)
        angles = torch.outer(positions, inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, tokens, caches, start: int):
        x = self.embed(tokens)
        cos, sin = self.rope(start, tokens.shape[1], x.device, x.dtype)
        for layer, cache in zip(self.layers, caches):
            x = layer(x, cos, sin, cache, start)
        return self.lm_head(self.norm(x[:, -1:, :]))


def new_kv_cache(cfg: LlamaConfig, batch: int, length: int, device, dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    caches = []
    for index in range(cfg.layers):
        shape = (batch, cfg.kv_heads, length, cfg.head_dim)
        k = tag(torch.zeros(shape, device=device, dtype=dtype), "kv_cache", f"layers.{index}.k_cache")
        v = tag(torch.zeros(shape, device=device, dtype=dtype), "kv_cache", f"layers.{index}.v_cache")
        caches.append((k, v))
    return caches


def build(cfg: LlamaConfig, spec: StepSpec) -> WorkloadStep:
    dtype = TORCH_DTYPES[spec.dtype or cfg.dtype]
    device = torch.device(spec.device)
    with device:
        model = Llama(cfg).to(dtype)
    model.eval()
    if spec.phase == "decode":
        start, length = spec.context, 1
    else:
        start, length = 0, spec.context
    caches = new_kv_cache(cfg, spec.batch, start + length, device, dtype)
    tokens = tag(torch.randint(0, cfg.vocab_size, (spec.batch, length), device=device), "input", "tokens")

    def run():
        with torch.no_grad():
            return model(tokens, caches, start)

    return WorkloadStep(run=run, module=model, spec=spec)


CONFIGS = {
    "llama2-7b": LlamaConfig(),
    "llama2-13b": LlamaConfig(hidden=5120, layers=40, heads=40, kv_heads=40, intermediate=13824),
    "llama2-70b": LlamaConfig(hidden=8192, layers=80, heads=64, kv_heads=8, intermediate=28672),
    "llama3-8b": LlamaConfig(vocab_size=128256, hidden=4096, layers=32, heads=32, kv_heads=8,
                             intermediate=14336, rope_theta=500000.0),
    "llama-tiny": LlamaConfig(vocab_size=256, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128,
                              dtype="fp32"),
}

register("llama", build, CONFIGS, phases=("prefill", "decode"),
         description="Llama-style decoder with a KV cache (RMSNorm, RoPE, GQA, SwiGLU)")
