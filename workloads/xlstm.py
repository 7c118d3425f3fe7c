"""xLSTM (Beck et al. 2024): mLSTM blocks (a matrix memory per head, parallelisable) with an
sLSTM block (scalar memory, strictly sequential) every few blocks.

mLSTM state per head: C (d x d), normaliser n (d) and stabiliser m, with exponential input gates.
Prefill uses the parallel form (a decay-weighted, causally masked q k^T, like attention) and leaves
the final C, n, m for decode, which applies the recurrence once. The sLSTM has no parallel form:
its prefill loops over tokens. Any stabiliser m gives the same outputs, since C, n and the
denominator's floor exp(-m) are all scaled by it.
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
class XLSTMConfig:
    vocab_size: int = 50304
    hidden: int = 2048
    layers: int = 48
    heads: int = 4
    slstm_every: int = 8
    """An sLSTM block at every layer index i with i % slstm_every == slstm_every - 1; 0 for none."""
    up_factor: int = 2
    conv_kernel: int = 4
    qkv_block: int = 4
    slstm_intermediate: int = 2688
    norm_eps: float = 1e-5
    dtype: str = "bf16"

    @property
    def inner(self) -> int:
        return self.up_factor * self.hidden

    def is_slstm(self, index: int) -> bool:
        return self.slstm_every > 0 and index % self.slstm_every == self.slstm_every - 1


def mlstm_parallel(q, k, v, log_f, i_pre):
    """Outputs and final (C, n, m) of the mLSTM over (B, H, L, d) from an empty state.

    D[t, s] = sum_{s<j<=t} log f_j + i_s is the log weight of token s in the memory at t.
    """
    length = q.shape[-2]
    F_cum = torch.cumsum(log_f, dim=-1)                                      # (B, H, L)
    causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    D = (F_cum.unsqueeze(-1) - F_cum.unsqueeze(-2) + i_pre.unsqueeze(-2)).masked_fill(~causal, float("-inf"))
    m = D.amax(dim=-1)                                                       # (B, H, L)
    weights = torch.exp(D - m.unsqueeze(-1))
    scores = (q @ k.transpose(-1, -2)) * weights
    denominator = torch.maximum(scores.sum(-1).abs(), torch.exp(-m)).unsqueeze(-1)
    h = (scores @ v) / denominator
    last = weights[..., -1, :].unsqueeze(-1)                                  # (B, H, L, 1)
    return h, ((k * last).transpose(-1, -2) @ v, (k * last).sum(-2), m[..., -1])


def mlstm_step(q, k, v, log_f, i_pre, state):
    """One token: (C, n, m) updated in place; q, k, v (B, H, d), gates (B, H). Returns h (B, H, d)."""
    C, n, m = state
    m_new = torch.maximum(log_f + m, i_pre)
    i_gate, f_gate = torch.exp(i_pre - m_new), torch.exp(log_f + m - m_new)
    C.copy_(f_gate[..., None, None] * C + i_gate[..., None, None] * k.unsqueeze(-1) * v.unsqueeze(-2))
    n.copy_(f_gate.unsqueeze(-1) * n + i_gate.unsqueeze(-1) * k)
    m.copy_(m_new)
    numerator = torch.einsum("bhk,bhkv->bhv", q, C)
    denominator = torch.maximum(torch.einsum("bhk,bhk->bh", q, n).abs(), torch.exp(-m_new))
    return numerator / denominator.unsqueeze(-1)


class BlockDiagonal(nn.Module):
    """A linear map made of small independent blocks (xLSTM's headwise q, k, v projections)."""

    def __init__(self, features: int, block: int):
        super().__init__()
        self.block = block
        self.weight = nn.Parameter(torch.randn(features // block, block, block) / block ** 0.5)

    def forward(self, x):
        blocks = x.unflatten(-1, (-1, self.block))
        return torch.einsum("...ni,nio->...no", blocks, self.weight).flatten(-2)


class MLSTMLayer(nn.Module):
    """Pre up-projection block: up-project, conv, mLSTM cell, norm, skip, output gate, down-project."""

    def __init__(self, cfg: XLSTMConfig):
        super().__init__()
        self.cfg = cfg
        inner = cfg.inner
        self.up_proj = nn.Linear(cfg.hidden, 2 * inner, bias=False)
        self.conv1d = nn.Conv1d(inner, inner, cfg.conv_kernel, groups=inner)
        self.q_proj, self.k_proj, self.v_proj = (BlockDiagonal(inner, cfg.qkv_block) for _ in range(3))
        self.gates = nn.Linear(3 * inner, 2 * cfg.heads)
        self.cell_norm = RMSNorm(inner // cfg.heads, cfg.norm_eps)
        self.skip = nn.Parameter(torch.ones(inner))
        self.down_proj = nn.Linear(inner, cfg.hidden, bias=False)

    def new_state(self, batch: int, length: int, device, dtype, name: str):
        cfg = self.cfg
        d = cfg.inner // cfg.heads
        return (tagged_zeros((batch, cfg.heads, d, d), "state", f"{name}.C", device, dtype),
                tagged_zeros((batch, cfg.heads, d), "state", f"{name}.n", device, dtype),
                tagged_zeros((batch, cfg.heads), "state", f"{name}.m", device, dtype),
                tagged_zeros((batch, cfg.inner, cfg.conv_kernel - 1), "state", f"{name}.conv_state", device, dtype))

    def forward(self, x, state, start: int):
        cfg = self.cfg
        batch, length, _ = x.shape
        *cell, conv_state = state
        x_m, z = self.up_proj(x).chunk(2, dim=-1)
        x_c = F.silu(causal_conv(x_m.transpose(1, 2), conv_state, self.conv1d)).transpose(1, 2)
        q, k, v = self.q_proj(x_c), self.k_proj(x_c), self.v_proj(x_m)
        i_pre, f_pre = self.gates(torch.cat((q, k, v), dim=-1)).transpose(1, 2).chunk(2, dim=1)   # (B, H, L)
        log_f = F.logsigmoid(f_pre)
        heads = lambda t: t.reshape(batch, length, cfg.heads, -1).transpose(1, 2)
        q, k, v = heads(q), heads(k) * (cfg.inner // cfg.heads) ** -0.5, heads(v)
        if length == 1:
            h = mlstm_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], log_f[..., 0], i_pre[..., 0], cell).unsqueeze(2)
        else:
            h, final = mlstm_parallel(q, k, v, log_f, i_pre)
            for stored, value in zip(cell, final):
                stored.copy_(value)
        h = self.cell_norm(h.transpose(1, 2)).reshape(batch, length, cfg.inner)
        return self.down_proj((h + self.skip * x_c) * F.silu(z))


def slstm_cell(pre, recurrent, c, n, m, h):
    """One token of the sLSTM: input pre-activations (B, 4, H, d) plus the block-diagonal
    recurrent map (H, d, 4 d) of the previous h; returns the new (c, n, m, h), each (B, H, d)."""
    pre = pre + torch.einsum("bhd,hde->bhe", h, recurrent).unflatten(-1, (4, -1)).transpose(1, 2)
    z, i_pre, f_pre, o_pre = torch.tanh(pre[:, 0]), pre[:, 1], pre[:, 2], pre[:, 3]
    log_f = F.logsigmoid(f_pre)
    m_new = torch.maximum(log_f + m, i_pre)
    i_gate, f_gate = torch.exp(i_pre - m_new), torch.exp(log_f + m - m_new)
    c, n = f_gate * c + i_gate * z, f_gate * n + i_gate
    return c, n, m_new, torch.sigmoid(o_pre) * c / n


# Elementwise arithmetic per state element and token of the sLSTM cell (gates, stabiliser, update).
SLSTM_FLOPS_PER_ELEMENT = 20.0


def slstm_sequence(pre: torch.Tensor, recurrent: torch.Tensor, state: tuple) -> torch.Tensor:
    """Every h of the sLSTM over pre (B, L, 4, H, d) from `state` (c, n, m, h), left final.

    Recorded as one fused kernel, as FlashRNN (Poppel et al. 2024) runs it: the recurrent weights
    and the state stay on chip for the whole sequence, so it reads the input pre-activations once
    and writes every h once, instead of a round trip through memory per token.
    """
    batch, length, _, heads, head_dim = pre.shape
    h_all = torch.empty((batch, length, heads, head_dim), dtype=pre.dtype, device=pre.device)

    def compute():
        carried, outputs = state, []
        for t in range(length):
            carried = slstm_cell(pre[:, t], recurrent, *carried)
            outputs.append(carried[-1])
        for stored, value in zip(state, carried):
            stored.copy_(value)
        h_all.copy_(torch.stack(outputs, dim=1))

    elements = batch * heads * head_dim
    flops = length * (2.0 * elements * 4 * head_dim + SLSTM_FLOPS_PER_ELEMENT * elements)
    on_chip = recurrent.numel() * recurrent.element_size() + sum(t.numel() * t.element_size() for t in state)
    run_fused("memsim::slstm_sequence", compute, reads=[pre, recurrent, *state], writes=[h_all, *state],
              flops=flops, category="scan", attrs={"steps": length, "state_bytes": on_chip})
    return h_all


class SLSTMBlock(nn.Module):
    """Post up-projection block: the sLSTM cell over tokens, then a gated MLP, each residual."""

    def __init__(self, cfg: XLSTMConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden // cfg.heads
        self.input_gates = nn.Linear(cfg.hidden, 4 * cfg.hidden)
        self.recurrent = nn.Parameter(torch.randn(cfg.heads, d, 4 * d) / d ** 0.5)
        self.norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.cell_norm = RMSNorm(d, cfg.norm_eps)
        self.mlp_norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.gate_proj = nn.Linear(cfg.hidden, cfg.slstm_intermediate, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.slstm_intermediate, bias=False)
        self.down_proj = nn.Linear(cfg.slstm_intermediate, cfg.hidden, bias=False)

    def new_state(self, batch: int, length: int, device, dtype, name: str):
        cfg = self.cfg
        shape = (batch, cfg.heads, cfg.hidden // cfg.heads)
        return tuple(tagged_zeros(shape, "state", f"{name}.{part}", device, dtype) for part in "cnmh")

    def forward(self, x, state, start: int):
        cfg = self.cfg
        batch, length, _ = x.shape
        pre = self.input_gates(self.norm(x)).reshape(batch, length, 4, cfg.heads, -1)
        h = slstm_sequence(pre, self.recurrent, state)
        x = x + self.cell_norm(h).reshape(batch, length, cfg.hidden)
        y = self.mlp_norm(x)
        return x + self.down_proj(F.gelu(self.gate_proj(y)) * self.up_proj(y))


def xlstm_model(cfg: XLSTMConfig) -> StackLM:
    blocks = [SLSTMBlock(cfg) if cfg.is_slstm(i) else Residual(cfg.hidden, cfg.norm_eps, MLSTMLayer(cfg))
              for i in range(cfg.layers)]
    return StackLM(cfg.vocab_size, cfg.hidden, blocks, cfg.norm_eps)


def build(cfg: XLSTMConfig, spec: StepSpec) -> WorkloadStep:
    return build_stack_step(lambda: xlstm_model(cfg), cfg.dtype, spec)


# xLSTM[7:1] 1.3B (Beck et al. 2024, Table 8): d 2048, 48 blocks, one sLSTM in eight, 4 heads,
# mLSTM up-projection 2 with conv 4 and headwise q/k/v blocks of 4, sLSTM gated MLP of factor
# 1.3 rounded up to a multiple of 64.
CONFIGS = {
    "xlstm-1.3b": XLSTMConfig(),
    "xlstm-tiny": XLSTMConfig(vocab_size=256, hidden=32, layers=4, heads=2, slstm_every=2, slstm_intermediate=48,
                              dtype="fp32"),
}

register("xlstm", build, CONFIGS, phases=("prefill", "decode"),
         description="xLSTM: mLSTM matrix memory (parallel prefill) with sequential sLSTM blocks")
