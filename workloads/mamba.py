"""Mamba (Gu & Dao 2023): a selective state-space model with an O(1) recurrent state.

Each layer keeps a convolution state (the last conv_kernel-1 inputs) and an SSM state
(d_inner x state_size) per sequence. Prefill computes every hidden state at once with a parallel
(Hillis-Steele) scan over time, log2(L) steps; decode advances the state by one token. Either way
the selective scan is traced as the one fused kernel Mamba runs (selective_scan in mamba_ssm):
it reads its inputs and the state once and writes the output and the state once, keeping the
(batch, L, d_inner, state_size) intermediates on chip.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memsim.trace import run_fused
from memsim.trace.workload import StepSpec, WorkloadStep, register
from memsim.workloads.stack import Residual, StackLM, build_stack_step, tagged_zeros


@dataclass(frozen=True)
class MambaConfig:
    vocab_size: int = 50280
    hidden: int = 2560
    layers: int = 64
    state_size: int = 16
    conv_kernel: int = 4
    expand: int = 2
    dt_rank: int = 160
    norm_eps: float = 1e-5
    dtype: str = "bf16"

    @property
    def inner(self) -> int:
        return self.expand * self.hidden


def parallel_scan(decay: torch.Tensor, drive: torch.Tensor, apply=torch.mul) -> torch.Tensor:
    """Every h_t of h_t = decay_t * h_{t-1} + drive_t (h_{-1} = 0) along dim 1, in log2(L) steps.

    Step j combines each position with the one 2^j earlier: (a, b) o (a', b') = (a a', a b' + b).
    `apply` is how a decay acts: elementwise, or torch.matmul for a linear map per step.
    """
    length, offset = decay.shape[1], 1
    while offset < length:
        drive = torch.cat((drive[:, :offset], drive[:, offset:] + apply(decay[:, offset:], drive[:, :-offset])), dim=1)
        decay = torch.cat((decay[:, :offset], apply(decay[:, offset:], decay[:, :-offset])), dim=1)
        offset *= 2
    return drive


def sequential_scan(decay: torch.Tensor, drive: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """The reference recurrence, one step per token: every h_t, starting from `state`."""
    states = []
    for t in range(decay.shape[1]):
        state = decay[:, t] * state + drive[:, t]
        states.append(state)
    return torch.stack(states, dim=1)


# Arithmetic per (token, channel, state) element of the fused scan: discretise (2), drive (2),
# update the state (2), project it with C (2) and the skip connection, as counted by Gu & Dao.
SCAN_FLOPS_PER_ELEMENT = 9.0


def selective_scan(u, dt, A, B, C, D, z, ssm_state: torch.Tensor) -> torch.Tensor:
    """y = (C h_t + D u_t) * silu(z_t) with h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, from ssm_state;
    ssm_state is left holding the last h. Recorded as one fused scan kernel."""
    batch, length, inner = u.shape
    y = torch.empty_like(u)

    def compute():
        decay = torch.exp(dt.unsqueeze(-1) * A)                         # (batch, L, inner, N)
        drive = (dt * u).unsqueeze(-1) * B.unsqueeze(2)
        first = drive[:, :1] + decay[:, :1] * ssm_state.unsqueeze(1)
        states = first if length == 1 else parallel_scan(decay, torch.cat((first, drive[:, 1:]), dim=1))
        ssm_state.copy_(states[:, -1])
        y.copy_((torch.einsum("blin,bln->bli", states, C) + u * D) * F.silu(z))

    state_elements = batch * inner * A.shape[-1]
    run_fused("memsim::selective_scan", compute, reads=[u, dt, A, B, C, D, z, ssm_state], writes=[y, ssm_state],
              flops=SCAN_FLOPS_PER_ELEMENT * state_elements * length, category="scan",
              attrs={"steps": length, "state_bytes": state_elements * ssm_state.element_size()})
    return y


def causal_conv(u: torch.Tensor, conv_state: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Depthwise causal conv over (batch, channels, L) that continues from the stored last inputs."""
    window = torch.cat((conv_state, u), dim=-1)
    conv_state.copy_(window[..., -conv_state.shape[-1]:])
    return F.conv1d(window, conv.weight, conv.bias, groups=conv.groups)


class MambaMixer(nn.Module):
    """Input projection, causal depthwise conv, selective SSM, gated output projection."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        inner, n = cfg.inner, cfg.state_size
        self.in_proj = nn.Linear(cfg.hidden, 2 * inner, bias=False)
        self.conv1d = nn.Conv1d(inner, inner, cfg.conv_kernel, groups=inner)
        self.x_proj = nn.Linear(inner, cfg.dt_rank + 2 * n, bias=False)
        self.dt_proj = nn.Linear(cfg.dt_rank, inner)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, cfg.hidden, bias=False)

    def new_state(self, batch: int, length: int, device, dtype, name: str):
        cfg = self.cfg
        conv = tagged_zeros((batch, cfg.inner, cfg.conv_kernel - 1), "state", f"{name}.conv_state", device, dtype)
        ssm = tagged_zeros((batch, cfg.inner, cfg.state_size), "state", f"{name}.ssm_state", device, dtype)
        return conv, ssm

    def forward(self, x, state, start: int):
        conv_state, ssm_state = state
        cfg = self.cfg
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u = F.silu(causal_conv(u.transpose(1, 2), conv_state, self.conv1d)).transpose(1, 2)
        dt, B, C = self.x_proj(u).split((cfg.dt_rank, cfg.state_size, cfg.state_size), dim=-1)
        dt = F.softplus(self.dt_proj(dt))                               # (batch, L, inner)
        A = -torch.exp(self.A_log)                                      # (inner, N)
        y = selective_scan(u, dt, A, B, C, self.D, z, ssm_state)
        return self.out_proj(y)


def mamba_model(cfg: MambaConfig) -> StackLM:
    blocks = [Residual(cfg.hidden, cfg.norm_eps, MambaMixer(cfg)) for _ in range(cfg.layers)]
    return StackLM(cfg.vocab_size, cfg.hidden, blocks, cfg.norm_eps, tie_embeddings=True)


def build(cfg: MambaConfig, spec: StepSpec) -> WorkloadStep:
    return build_stack_step(lambda: mamba_model(cfg), cfg.dtype, spec)


# Sizes from Gu & Dao 2023 (Table 12 / the released state-spaces/mamba-* checkpoints);
# dt_rank = ceil(hidden / 16).
CONFIGS = {
    "mamba-130m": MambaConfig(hidden=768, layers=24, dt_rank=math.ceil(768 / 16)),
    "mamba-1.4b": MambaConfig(hidden=2048, layers=48, dt_rank=math.ceil(2048 / 16)),
    "mamba-2.8b": MambaConfig(hidden=2560, layers=64, dt_rank=math.ceil(2560 / 16)),
    "mamba-tiny": MambaConfig(vocab_size=256, hidden=32, layers=2, state_size=4, dt_rank=4, dtype="fp32"),
}

register("mamba", build, CONFIGS, phases=("prefill", "decode"),
         description="Mamba selective SSM: parallel scan prefill, O(1)-state recurrent decode")
