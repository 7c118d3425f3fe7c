"""Mamba-2 (Dao & Gu 2024): the state-space dual (SSD) layer with a scalar decay per head.

The state of a head is headdim x state_size. Prefill uses the chunked SSD form: quadratic
attention-like work inside each chunk, a short recurrence across chunk states, then the state's
contribution to every output; decode advances the state by one token. The chunked SSD is traced
as one fused kernel (as mamba_ssm's chunked-scan kernels keep the chunk scores and per-head copies
of B and C on chip), priced on the matrix units.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memsim.trace import run_fused
from memsim.trace.workload import StepSpec, WorkloadStep, register
from memsim.workloads.llama import RMSNorm
from memsim.workloads.mamba import causal_conv
from memsim.workloads.stack import Residual, StackLM, build_stack_step, tagged_zeros


@dataclass(frozen=True)
class Mamba2Config:
    vocab_size: int = 50280
    hidden: int = 2560
    layers: int = 64
    state_size: int = 128
    head_dim: int = 64
    groups: int = 1
    conv_kernel: int = 4
    expand: int = 2
    chunk_size: int = 256
    norm_eps: float = 1e-5
    dtype: str = "bf16"

    @property
    def inner(self) -> int:
        return self.expand * self.hidden

    @property
    def heads(self) -> int:
        return self.inner // self.head_dim

    @property
    def conv_channels(self) -> int:
        return self.inner + 2 * self.groups * self.state_size


def segment_sums(x: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T): out[i, j] = x[j+1] + ... + x[i] for j <= i, -inf above the diagonal."""
    length = x.shape[-1]
    below = torch.ones(length, length, dtype=torch.bool, device=x.device).tril(-1)
    on_or_below = torch.ones(length, length, dtype=torch.bool, device=x.device).tril(0)
    x = x.unsqueeze(-1).expand(*x.shape, length).masked_fill(~below, 0)
    return torch.cumsum(x, dim=-2).masked_fill(~on_or_below, float("-inf"))


def ssd_chunked(X, A, B, C, chunk: int, initial: torch.Tensor):
    """Outputs and final state of h_t = exp(A_t) h_{t-1} + X_t B_t^T, y_t = h_t C_t, chunk by chunk.

    X (b, l, h, p), A (b, l, h), B and C (b, l, h, n), initial (b, h, p, n). The sequence is
    padded to whole chunks with A = 0 and X = 0, which leaves the state unchanged.
    """
    batch, length, heads, _ = X.shape
    pad = -length % chunk
    if pad:
        X, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (X, B, C))
        A = F.pad(A, (0, 0, 0, pad))
    chunks = (length + pad) // chunk
    X, A, B, C = (t.reshape(batch, chunks, chunk, *t.shape[2:]) for t in (X, A, B, C))
    A = A.permute(0, 3, 1, 2)                                               # (b, h, c, l)
    A_cum = torch.cumsum(A, dim=-1)
    # 1. within each chunk: masked, decayed C B^T applied to X
    scores = torch.einsum("bclhn,bcshn->bhcls", C, B) * torch.exp(segment_sums(A))
    Y_diag = torch.einsum("bhcls,bcshp->bclhp", scores, X)
    # 2. the state each chunk adds, decayed to its end
    to_end = torch.exp(A_cum[..., -1:] - A_cum).permute(0, 2, 3, 1).unsqueeze(-1)  # (b, c, l, h, 1)
    chunk_states = torch.einsum("bclhn,bclhp->bchpn", B * to_end, X)
    # 3. the recurrence across chunks, from the initial state
    chunk_states = torch.cat((initial.unsqueeze(1), chunk_states), dim=1)
    across = torch.exp(segment_sums(F.pad(A_cum[..., -1], (1, 0))))        # (b, h, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", across, chunk_states)
    # 4. each chunk's starting state, decayed to every position in it
    from_start = torch.exp(A_cum).permute(0, 2, 3, 1).unsqueeze(-1)
    Y_off = torch.einsum("bclhn,bchpn->bclhp", C, states[:, :-1]) * from_start
    Y = (Y_diag + Y_off).reshape(batch, chunks * chunk, heads, -1)[:, :length]
    return Y, states[:, -1]


def fused_ssd(X, a, B, C, chunk: int, state: torch.Tensor) -> torch.Tensor:
    """ssd_chunked as one fused op: B and C come per group (b, l, g, n) and are shared by the
    heads of a group inside the kernel; `state` is read as the initial state and left final."""
    batch, length, heads, head_dim = X.shape
    groups, state_size = B.shape[2], B.shape[3]
    Y = torch.empty_like(X)

    def compute():
        per_head = [t.repeat_interleave(heads // groups, dim=2) for t in (B, C)]
        out, final = ssd_chunked(X, a, *per_head, chunk, state)
        Y.copy_(out)
        state.copy_(final)

    chunks = -(-length // chunk)
    within = 2.0 * batch * length * heads * chunk * (state_size + head_dim)    # C B^T, then applied to X
    across = 2.0 * batch * heads * head_dim * state_size * (2 * length + (chunks + 1) ** 2)
    run_fused("memsim::ssd_chunked_scan", compute, reads=[X, a, B, C, state], writes=[Y, state],
              flops=within + across, category="chunked_scan",
              attrs={"steps": chunks, "state_bytes": state.numel() * state.element_size()})
    return Y


def ssd_step(x, a, B, C, state):
    """One token: state (b, h, p, n) <- exp(a) state + x B^T in place; returns y = state C."""
    state.copy_(torch.exp(a)[..., None, None] * state + x.unsqueeze(-1) * B.unsqueeze(-2))
    return torch.einsum("bhpn,bhn->bhp", state, C)


class Mamba2Mixer(nn.Module):
    def __init__(self, cfg: Mamba2Config):
        super().__init__()
        self.cfg = cfg
        self.in_proj = nn.Linear(cfg.hidden, 2 * cfg.inner + 2 * cfg.groups * cfg.state_size + cfg.heads, bias=False)
        self.conv1d = nn.Conv1d(cfg.conv_channels, cfg.conv_channels, cfg.conv_kernel, groups=cfg.conv_channels)
        self.dt_bias = nn.Parameter(torch.zeros(cfg.heads))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, cfg.heads + 1, dtype=torch.float32)))
        self.D = nn.Parameter(torch.ones(cfg.heads))
        self.norm = RMSNorm(cfg.inner, cfg.norm_eps)
        self.out_proj = nn.Linear(cfg.inner, cfg.hidden, bias=False)

    def new_state(self, batch: int, length: int, device, dtype, name: str):
        cfg = self.cfg
        conv = tagged_zeros((batch, cfg.conv_channels, cfg.conv_kernel - 1), "state", f"{name}.conv_state",
                            device, dtype)
        ssm = tagged_zeros((batch, cfg.heads, cfg.head_dim, cfg.state_size), "state", f"{name}.ssm_state",
                           device, dtype)
        return conv, ssm

    def forward(self, x, state, start: int):
        conv_state, ssm_state = state
        cfg = self.cfg
        batch, length, _ = x.shape
        z, xBC, dt = self.in_proj(x).split((cfg.inner, cfg.conv_channels, cfg.heads), dim=-1)
        xBC = F.silu(causal_conv(xBC.transpose(1, 2), conv_state, self.conv1d)).transpose(1, 2)
        u, B, C = xBC.split((cfg.inner, cfg.groups * cfg.state_size, cfg.groups * cfg.state_size), dim=-1)
        u = u.reshape(batch, length, cfg.heads, cfg.head_dim)
        B, C = (t.reshape(batch, length, cfg.groups, cfg.state_size) for t in (B, C))
        dt = F.softplus(dt + self.dt_bias)                                   # (b, l, h)
        a = dt * -torch.exp(self.A_log)
        X = u * dt.unsqueeze(-1)
        if length == 1:
            per_group = cfg.heads // cfg.groups
            B, C = (t[:, 0].repeat_interleave(per_group, dim=1) for t in (B, C))
            y = ssd_step(X[:, 0], a[:, 0], B, C, ssm_state).unsqueeze(1)
        else:
            y = fused_ssd(X, a, B, C, cfg.chunk_size, ssm_state)
        y = (y + u * self.D.unsqueeze(-1)).reshape(batch, length, cfg.inner)
        return self.out_proj(self.norm(y * F.silu(z)))


def mamba2_model(cfg: Mamba2Config) -> StackLM:
    blocks = [Residual(cfg.hidden, cfg.norm_eps, Mamba2Mixer(cfg)) for _ in range(cfg.layers)]
    return StackLM(cfg.vocab_size, cfg.hidden, blocks, cfg.norm_eps, tie_embeddings=True)


def build(cfg: Mamba2Config, spec: StepSpec) -> WorkloadStep:
    return build_stack_step(lambda: mamba2_model(cfg), cfg.dtype, spec)


# Sizes from Dao & Gu 2024 (the released state-spaces/mamba2-* checkpoints): state 128,
# head dim 64, expand 2, one B/C group, chunk 256.
CONFIGS = {
    "mamba2-1.3b": Mamba2Config(hidden=2048, layers=48),
    "mamba2-2.7b": Mamba2Config(hidden=2560, layers=64),
    "mamba2-tiny": Mamba2Config(vocab_size=256, hidden=32, layers=2, state_size=8, head_dim=8, chunk_size=4,
                                dtype="fp32"),
}

register("mamba2", build, CONFIGS, phases=("prefill", "decode"),
         description="Mamba-2 SSD: chunked prefill, O(1)-state recurrent decode")
