"""Samba (Ren et al. 2024): Mamba layers interleaved with sliding-window attention, each followed
by an MLP.

The Mamba layers keep their O(1) state; the attention layers keep a ring buffer of the last
`window` keys and values (rotary positions are applied before caching, so the order of the ring
does not matter). So the KV cache grows with the context up to the window, then stays constant.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from memsim.trace.workload import StepSpec, WorkloadStep, register
from memsim.workloads.llama import MLP, Attention, rotate_half
from memsim.workloads.mamba import MambaMixer
from memsim.workloads.stack import MixerBlock, StackLM, build_stack_step, rotary, tagged_zeros


@dataclass(frozen=True)
class SambaConfig:
    vocab_size: int = 32000
    hidden: int = 2048
    layers: int = 24
    """Mixer layers, alternately Mamba and sliding-window attention, each followed by an MLP."""
    intermediate: int = 8192
    heads: int = 32
    kv_heads: int = 4
    window: int = 2048
    rope_theta: float = 10000.0
    state_size: int = 16
    conv_kernel: int = 4
    expand: int = 2
    dt_rank: int = 128
    norm_eps: float = 1e-5
    dtype: str = "bf16"

    @property
    def inner(self) -> int:
        return self.expand * self.hidden

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


class SlidingWindowAttention(Attention):
    """Llama's projections; a ring-buffer KV cache of the last `window` tokens."""

    def new_state(self, batch: int, length: int, device, dtype, name: str):
        cfg = self.cfg
        shape = (batch, cfg.kv_heads, min(cfg.window, length), cfg.head_dim)
        return (tagged_zeros(shape, "kv_cache", f"{name}.k_cache", device, dtype),
                tagged_zeros(shape, "kv_cache", f"{name}.v_cache", device, dtype))

    def forward(self, x, state, start: int):
        cfg = self.cfg
        k_cache, v_cache = state
        batch, length, _ = x.shape
        heads = lambda t: t.unflatten(-1, (-1, cfg.head_dim)).transpose(1, 2)
        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        cos, sin = rotary(start, length, cfg.head_dim, cfg.rope_theta, x.device, x.dtype)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        slots = k_cache.shape[2]
        if length == 1:  # decode: overwrite the oldest slot, attend to every filled one
            slot, filled = start % slots, min(start + 1, slots)
            k_cache[:, :, slot], v_cache[:, :, slot] = k[:, :, 0], v[:, :, 0]
            out = F.scaled_dot_product_attention(q, k_cache[:, :, :filled], v_cache[:, :, :filled],
                                                 enable_gqa=cfg.kv_heads != cfg.heads)
        else:  # prefill from position 0: causal within the window, then keep the last `window` keys
            positions = torch.arange(length, device=x.device)
            distance = positions.unsqueeze(1) - positions.unsqueeze(0)
            band = (distance >= 0) & (distance < cfg.window)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=band, enable_gqa=cfg.kv_heads != cfg.heads)
            kept = torch.arange(length - min(length, slots), length, device=x.device)
            k_cache.index_copy_(2, kept % slots, k[:, :, kept])
            v_cache.index_copy_(2, kept % slots, v[:, :, kept])
        return self.o_proj(out.transpose(1, 2).flatten(2))


def samba_model(cfg: SambaConfig) -> StackLM:
    blocks = [MixerBlock(cfg.hidden, cfg.norm_eps, MambaMixer(cfg) if i % 2 == 0 else SlidingWindowAttention(cfg),
                         MLP(cfg)) for i in range(cfg.layers)]
    return StackLM(cfg.vocab_size, cfg.hidden, blocks, cfg.norm_eps)


def build(cfg: SambaConfig, spec: StepSpec) -> WorkloadStep:
    return build_stack_step(lambda: samba_model(cfg), cfg.dtype, spec)


# Samba-1.7B (Ren et al. 2024, Table 10): d 2048, 12 x [Mamba, MLP, SWA, MLP], MLP 8192, 32 query
# heads with 4 KV heads, window 2048, Mamba expand 2, state 16.
CONFIGS = {
    "samba-1.7b": SambaConfig(),
    "samba-tiny": SambaConfig(vocab_size=256, hidden=32, layers=4, intermediate=64, heads=4, kv_heads=2, window=6,
                              state_size=4, dt_rank=4, dtype="fp32"),
}

register("samba", build, CONFIGS, phases=("prefill", "decode"),
         description="Samba hybrid: Mamba layers interleaved with sliding-window attention")
