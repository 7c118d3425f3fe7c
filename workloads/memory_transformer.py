"""A segment-recurrent memory transformer (Memformer / HMT style): each layer keeps a fixed set of
memory slots, read by every token as an attention prefix and written once per segment.

Inside a segment, attention is causal over the segment's own tokens plus the memory slots; when a
segment is complete, the slots attend to its keys and values and are updated. So the state is
constant in the context: the slots (and their keys and values) and the current segment's KV cache.
Prefill runs segment by segment and leaves an unfinished last segment in the cache; decode adds one
token to it and writes the memory when the token completes the segment.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memsim.trace.workload import StepSpec, WorkloadStep, register
from memsim.workloads.llama import MLP
from memsim.workloads.stack import MixerBlock, StackLM, build_stack_step, tagged_zeros


@dataclass(frozen=True)
class MemoryTransformerConfig:
    vocab_size: int = 32000
    hidden: int = 4096
    layers: int = 32
    heads: int = 32
    intermediate: int = 11008
    segment: int = 512
    memory_slots: int = 64
    norm_eps: float = 1e-5
    dtype: str = "bf16"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def segment_mask(prefix: int, blocks: int, length: int, device) -> torch.Tensor:
    """(length, prefix + blocks * length) attention mask: a prefix every query sees, then `blocks`
    groups of `length` keys, each causal with respect to the queries."""
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    visible = torch.ones(length, prefix, dtype=torch.bool, device=device)
    return torch.cat((visible, *(causal,) * blocks), dim=1)


def segment_pieces(start: int, length: int, segment: int):
    """Split positions start..start+length at segment boundaries: (first slot in the segment,
    slot after the last, slice of the input) for each piece."""
    position = start
    while position < start + length:
        slot = position % segment
        span = min(segment - slot, start + length - position)
        yield slot, slot + span, slice(position - start, position - start + span)
        position += span


class MemoryAttention(nn.Module):
    def __init__(self, cfg: MemoryTransformerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.write_q, self.write_o = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.initial_memory = nn.Parameter(torch.randn(cfg.memory_slots, d) * d ** -0.5)

    def heads(self, x):
        return x.unflatten(-1, (self.cfg.heads, -1)).transpose(1, 2)        # (B, H, L, dh)

    def new_state(self, batch: int, length: int, device, dtype, name: str):
        cfg = self.cfg
        slots = (batch, cfg.memory_slots, cfg.hidden)
        cached = (batch, cfg.heads, cfg.memory_slots, cfg.head_dim)
        segment = (batch, cfg.heads, cfg.segment, cfg.head_dim)
        return {"slots": tagged_zeros(slots, "memory", f"{name}.memory", device, dtype),
                "slot_k": tagged_zeros(cached, "memory", f"{name}.memory_k", device, dtype),
                "slot_v": tagged_zeros(cached, "memory", f"{name}.memory_v", device, dtype),
                "k": tagged_zeros(segment, "kv_cache", f"{name}.k_cache", device, dtype),
                "v": tagged_zeros(segment, "kv_cache", f"{name}.v_cache", device, dtype)}

    def write(self, state, keys, values):
        """The memory slots attend to a finished segment and are updated; their keys and values follow."""
        slots = state["slots"]
        read = F.scaled_dot_product_attention(self.heads(self.write_q(slots)), keys, values)
        slots.copy_(slots + self.write_o(read.transpose(1, 2).flatten(2)))
        state["slot_k"].copy_(self.heads(self.k_proj(slots)))
        state["slot_v"].copy_(self.heads(self.v_proj(slots)))

    def forward(self, x, state, start: int):
        cfg = self.cfg
        batch, length, _ = x.shape
        q, k, v = self.heads(self.q_proj(x)), self.heads(self.k_proj(x)), self.heads(self.v_proj(x))
        if start == 0:  # a fresh sequence starts from the learned memory
            state["slots"].copy_(self.initial_memory.expand(batch, -1, -1))
            state["slot_k"].copy_(self.heads(self.k_proj(state["slots"])))
            state["slot_v"].copy_(self.heads(self.v_proj(state["slots"])))
        outputs = []
        for slot, end, part in segment_pieces(start, length, cfg.segment):
            state["k"][:, :, slot:end] = k[:, :, part]
            state["v"][:, :, slot:end] = v[:, :, part]
            keys = torch.cat((state["slot_k"], state["k"][:, :, :end]), dim=2)
            values = torch.cat((state["slot_v"], state["v"][:, :, :end]), dim=2)
            mask = None
            if end - slot > 1:  # several new tokens: causal among them (all earlier ones are visible)
                mask = segment_mask(cfg.memory_slots + slot, 1, end - slot, x.device)
            outputs.append(F.scaled_dot_product_attention(q[:, :, part], keys, values, attn_mask=mask))
            if end == cfg.segment:
                self.write(state, state["k"], state["v"])
        out = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
        return self.o_proj(out.transpose(1, 2).flatten(2))


def memory_transformer_model(cfg: MemoryTransformerConfig) -> StackLM:
    blocks = [MixerBlock(cfg.hidden, cfg.norm_eps, MemoryAttention(cfg), MLP(cfg)) for _ in range(cfg.layers)]
    return StackLM(cfg.vocab_size, cfg.hidden, blocks, cfg.norm_eps)


def build(cfg: MemoryTransformerConfig, spec: StepSpec) -> WorkloadStep:
    return build_stack_step(lambda: memory_transformer_model(cfg), cfg.dtype, spec)


# Memformer-style read/write (Wu et al. 2022) on a Llama-2-7B-sized backbone, as HMT (He et al.
# 2024) does with Llama 2 7B; the segment length and the 64 slots per layer are this model's choice.
CONFIGS = {
    "memformer-7b": MemoryTransformerConfig(),
    "memformer-tiny": MemoryTransformerConfig(vocab_size=256, hidden=32, layers=2, heads=4, intermediate=64,
                                              segment=4, memory_slots=3, dtype="fp32"),
}

register("memformer", build, CONFIGS, phases=("prefill", "decode"),
         description="Segment-recurrent memory transformer: memory slots read every token, written per segment")
