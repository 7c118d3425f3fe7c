"""Titans, memory as context (Behrouz, Zhong & Mirrokni 2024): attention over a segment, extended
by what a neural long-term memory recalls for it and by learned persistent tokens.

The long-term memory is a two-layer MLP per sequence whose weights are learned at test time: at
the end of every segment they take one gradient step on the associative loss ||M(k) - v||^2 of
the segment's outputs, with momentum and weight decay (torch.func.grad, so the trace holds the
backward and update ops). Within a segment the memory is fixed: it recalls h = M(q) for each
token, attention runs over [persistent, h, tokens] (causal in h and tokens), and the output is
gated by the memory's reading of the attention output. The state per layer is constant in the
context: memory weights, momentum, the segment's KV cache and its outputs awaiting the update.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memsim.trace.workload import StepSpec, WorkloadStep, register
from memsim.workloads.llama import MLP
from memsim.workloads.memory_transformer import segment_mask, segment_pieces
from memsim.workloads.stack import MixerBlock, StackLM, build_stack_step, tagged_zeros


@dataclass(frozen=True)
class TitansConfig:
    vocab_size: int = 32000
    hidden: int = 1280
    layers: int = 24
    heads: int = 16
    intermediate: int = 3456
    segment: int = 512
    persistent: int = 16
    memory_expand: int = 2
    memory_lr: float = 0.1
    """The largest step size the data-dependent learning rate of the memory can take."""
    norm_eps: float = 1e-5
    dtype: str = "bf16"

    @property
    def memory_hidden(self) -> int:
        return self.memory_expand * self.hidden


def recall(weights, x):
    """The memory MLP applied with per-sequence weights: (B, d, dm), (B, dm, d) on x (B, T, d)."""
    w1, w2 = weights
    return F.silu(x @ w1) @ w2


def associative_loss(weights, keys, values):
    """||M(k) - v||^2 averaged over a segment's tokens, summed over sequences (each has its own memory)."""
    return ((recall(weights, keys) - values) ** 2).sum(-1).mean(-1).sum()


class NeuralMemory(nn.Module):
    def __init__(self, cfg: TitansConfig):
        super().__init__()
        self.cfg = cfg
        d, dm = cfg.hidden, cfg.memory_hidden
        self.query, self.key, self.value = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.gates = nn.Linear(d, 3)                     # learning rate, momentum, forgetting, per segment
        self.initial = nn.ParameterList([nn.Parameter(torch.randn(d, dm) * d ** -0.5),
                                         nn.Parameter(torch.randn(dm, d) * dm ** -0.5)])

    def reset(self, weights, momentum):
        for stored, initial, velocity in zip(weights, self.initial, momentum):
            stored.copy_(initial.expand_as(stored))
            velocity.zero_()

    def update(self, weights, momentum, segment):
        """One test-time gradient step on the segment (B, T, d): S <- eta S - theta grad, W <- (1 - alpha) W + S."""
        keys, values = F.normalize(self.key(segment), dim=-1), self.value(segment)
        lr, eta, alpha = torch.sigmoid(self.gates(segment.mean(1))).unsqueeze(-1).unsqueeze(-1).unbind(1)
        grads = torch.func.grad(associative_loss)(tuple(weights), keys, values)
        for stored, velocity, grad in zip(weights, momentum, grads):
            velocity.copy_(eta * velocity - self.cfg.memory_lr * lr * grad)
            stored.copy_((1 - alpha) * stored + velocity)


class MemoryAsContext(nn.Module):
    def __init__(self, cfg: TitansConfig):
        super().__init__()
        self.cfg = cfg
        d, dh = cfg.hidden, cfg.hidden // cfg.heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.persistent_k = nn.Parameter(torch.randn(cfg.heads, cfg.persistent, dh))
        self.persistent_v = nn.Parameter(torch.randn(cfg.heads, cfg.persistent, dh))
        self.memory = NeuralMemory(cfg)

    def heads(self, x):
        return x.unflatten(-1, (self.cfg.heads, -1)).transpose(1, 2)

    def new_state(self, batch: int, length: int, device, dtype, name: str):
        cfg = self.cfg
        d, dm = cfg.hidden, cfg.memory_hidden
        zeros = lambda shape, role, part: tagged_zeros(shape, role, f"{name}.{part}", device, dtype)
        cache = (batch, cfg.heads, cfg.segment, d // cfg.heads)
        return {"weights": (zeros((batch, d, dm), "memory", "memory_w1"),
                            zeros((batch, dm, d), "memory", "memory_w2")),
                "momentum": (zeros((batch, d, dm), "state", "momentum_w1"),
                             zeros((batch, dm, d), "state", "momentum_w2")),
                "cache": tuple(zeros(cache, "kv_cache", part) for part in ("recalled_k", "recalled_v", "k", "v")),
                "pending": zeros((batch, cfg.segment, d), "state", "pending")}

    def forward(self, x, state, start: int):
        cfg = self.cfg
        batch, length, _ = x.shape
        weights, momentum = state["weights"], state["momentum"]
        recalled_k, recalled_v, k_cache, v_cache = state["cache"]
        if start == 0:
            self.memory.reset(weights, momentum)
        persistent_k, persistent_v = (p.expand(batch, -1, -1, -1) for p in (self.persistent_k, self.persistent_v))
        outputs = []
        for slot, end, part in segment_pieces(start, length, cfg.segment):  # prefill: slot 0; decode: one token
            tokens = x[:, part]
            span = end - slot
            recalled = recall(weights, self.memory.query(tokens))
            recalled_k[:, :, slot:end] = self.heads(self.k_proj(recalled))
            recalled_v[:, :, slot:end] = self.heads(self.v_proj(recalled))
            k_cache[:, :, slot:end] = self.heads(self.k_proj(tokens))
            v_cache[:, :, slot:end] = self.heads(self.v_proj(tokens))
            keys = torch.cat((persistent_k, recalled_k[:, :, :end], k_cache[:, :, :end]), dim=2)
            values = torch.cat((persistent_v, recalled_v[:, :, :end], v_cache[:, :, :end]), dim=2)
            mask = segment_mask(cfg.persistent, 2, span, x.device) if span > 1 else None
            y = F.scaled_dot_product_attention(self.heads(self.q_proj(tokens)), keys, values, attn_mask=mask)
            y = self.o_proj(y.transpose(1, 2).flatten(2))
            outputs.append(y * torch.sigmoid(recall(weights, y)))
            state["pending"][:, slot:end] = y
            if end == cfg.segment:
                self.memory.update(weights, momentum, state["pending"])
        return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]


def titans_model(cfg: TitansConfig) -> StackLM:
    blocks = [MixerBlock(cfg.hidden, cfg.norm_eps, MemoryAsContext(cfg), MLP(cfg)) for _ in range(cfg.layers)]
    return StackLM(cfg.vocab_size, cfg.hidden, blocks, cfg.norm_eps)


def build(cfg: TitansConfig, spec: StepSpec) -> WorkloadStep:
    return build_stack_step(lambda: titans_model(cfg), cfg.dtype, spec)


# The paper trains MAC models up to 760M parameters; this layout (d 1280, 24 layers, a memory MLP
# of width 2 d, 16 persistent tokens, 512-token segments) has about 0.8B; widths are our choice.
CONFIGS = {
    "titans-mac-0.8b": TitansConfig(),
    "titans-tiny": TitansConfig(vocab_size=256, hidden=32, layers=2, heads=4, intermediate=64, segment=4,
                                persistent=2, dtype="fp32"),
}

register("titans", build, CONFIGS, phases=("prefill", "decode"),
         description="Titans memory-as-context: attention plus an MLP memory trained at test time per segment")
