"""The language-model frame the recurrent and memory families share: embedding, a stack of
residual blocks that each carry their own state, a final norm and the head.

A block is an nn.Module with `forward(x, state, start)` and `new_state(batch, length, device,
dtype, name)`: the state is whatever that block keeps between steps (an SSM state, a KV cache,
memory slots), allocated and tagged by the block for `length` tokens in all and updated in place
by forward. Prefill runs from position 0 over the whole prompt and leaves the state ready for
decode; decode runs one token at position `start`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from memsim.errors import MemsimError
from memsim.trace import tag
from memsim.trace.workload import TORCH_DTYPES, StepSpec, WorkloadStep
from memsim.workloads.llama import RMSNorm


def tagged_zeros(shape: Sequence[int], role: str, name: str, device, dtype) -> torch.Tensor:
    """A zero tensor whose storage carries a trace role (state, memory, kv_cache)."""
    return tag(torch.zeros(tuple(shape), device=device, dtype=dtype), role, name)


class Residual(nn.Module):
    """x + mixer(norm(x)): a pre-norm residual block around a stateful mixer."""

    def __init__(self, hidden: int, norm_eps: float, mixer: nn.Module):
        super().__init__()
        self.norm = RMSNorm(hidden, norm_eps)
        self.mixer = mixer

    def new_state(self, batch, length, device, dtype, name):
        return self.mixer.new_state(batch, length, device, dtype, name)

    def forward(self, x, state, start: int):
        return x + self.mixer(self.norm(x), state, start)


class MixerBlock(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)): a transformer block whose token mixer (attention
    or a recurrent layer) keeps the state."""

    def __init__(self, hidden: int, norm_eps: float, attn: nn.Module, mlp: nn.Module):
        super().__init__()
        self.input_norm = RMSNorm(hidden, norm_eps)
        self.attn = attn
        self.post_attn_norm = RMSNorm(hidden, norm_eps)
        self.mlp = mlp

    def new_state(self, batch, length, device, dtype, name):
        return self.attn.new_state(batch, length, device, dtype, name)

    def forward(self, x, state, start: int):
        x = x + self.attn(self.input_norm(x), state, start)
        return x + self.mlp(self.post_attn_norm(x))


def rotary(start: int, length: int, head_dim: int, theta: float, device, dtype):
    """cos and sin of the rotary angles of positions start..start+length, (length, head_dim)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(start, start + length, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


class StackLM(nn.Module):
    def __init__(self, vocab_size: int, hidden: int, blocks: Sequence[nn.Module], norm_eps: float = 1e-5,
                 tie_embeddings: bool = False):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden)
        self.layers = nn.ModuleList(blocks)
        self.norm = RMSNorm(hidden, norm_eps)
        self.lm_head = nn.Linear(hidden, vocab_size, bias=False)
        if tie_embeddings:  # one table serves as embedding and output head
            self.lm_head.weight = self.embed.weight

    def new_states(self, batch: int, length: int, device, dtype) -> list:
        return [layer.new_state(batch, length, device, dtype, f"layers.{index}")
                for index, layer in enumerate(self.layers)]

    def forward(self, tokens, states, start: int):
        """Logits of the last position; `states` are updated in place."""
        x = self.embed(tokens)
        for layer, state in zip(self.layers, states):
            x = layer(x, state, start)
        return self.lm_head(self.norm(x[:, -1:, :]))


def require_choice(family: str, key: str, value: str, choices: Sequence[str]) -> None:
    """A config key that names one of a few variants: anything else is a user error."""
    if value not in choices:
        raise MemsimError(f"{family}: config key '{key}' is {value!r}; expected one of {', '.join(choices)}")


def build_stack_step(make_model: Callable[[], StackLM], dtype_name: str, spec: StepSpec) -> WorkloadStep:
    """One prefill (the whole prompt from position 0) or decode (one token after `context`) step."""
    dtype = TORCH_DTYPES[spec.dtype or dtype_name]
    device = torch.device(spec.device)
    with device:
        model = make_model().to(dtype)
    model.eval()
    start, length = (spec.context, 1) if spec.phase == "decode" else (0, spec.context)
    states = model.new_states(spec.batch, start + length, device, dtype)
    tokens = tag(torch.randint(0, model.embed.num_embeddings, (spec.batch, length), device=device), "input", "tokens")

    def run():
        with torch.no_grad():
            return model(tokens, states, start)

    return WorkloadStep(run=run, module=model, spec=spec)
