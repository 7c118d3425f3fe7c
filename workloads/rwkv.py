"""RWKV-7 "Goose" (Peng et al. 2025): time mixing by a generalised delta rule with a constant-size
state, and a squared-ReLU channel mix; both see the previous token through a token shift.

Per head, with M the (head_size x head_size) state read by the receptance r:

    M_t = diag(w_t) M_{t-1} - (kk_t * a_t) (kk_t^T M_{t-1}) + k_t v_t^T,      o_t = M_t^T r_t

which is the recurrence of linear_attention with the rank-one pair (a, b) = (-kk, kk * a), so
prefill runs its chunked form and decode its single step. The state per layer is the wkv matrix
per head plus the last token of each mixer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memsim.trace.workload import StepSpec, WorkloadStep, register
from memsim.workloads.linear_attention import fused_chunked, recurrent_step
from memsim.workloads.stack import StackLM, build_stack_step, tagged_zeros


@dataclass(frozen=True)
class RWKV7Config:
    vocab_size: int = 65536
    hidden: int = 2048
    layers: int = 24
    head_size: int = 64
    intermediate: int = 8192
    decay_rank: int = 96
    a_rank: int = 96
    gate_rank: int = 256
    chunk_size: int = 16
    norm_eps: float = 1e-5
    dtype: str = "bf16"

    @property
    def heads(self) -> int:
        return self.hidden // self.head_size


def token_shift(x, last):
    """The previous token of every position (the stored last token for the first); stores the new last."""
    previous = torch.cat((last.unsqueeze(1), x[:, :-1]), dim=1)
    last.copy_(x[:, -1])
    return previous


def low_rank(rank: int, features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, rank, bias=False), nn.Tanh(), nn.Linear(rank, features))


class TimeMix(nn.Module):
    def __init__(self, cfg: RWKV7Config):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.mix = nn.Parameter(torch.full((6, d), 0.5))              # r, w, k, v, a, g interpolation
        self.receptance, self.key, self.value = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.output = nn.Linear(d, d, bias=False)
        self.decay = low_rank(cfg.decay_rank, d)
        self.learning_rate = low_rank(cfg.a_rank, d)
        self.gate = nn.Sequential(nn.Linear(d, cfg.gate_rank, bias=False), nn.Sigmoid(),
                                  nn.Linear(cfg.gate_rank, d, bias=False))
        self.k_k = nn.Parameter(torch.full((d,), 0.85))
        self.k_a = nn.Parameter(torch.ones(d))
        self.r_k = nn.Parameter(torch.zeros(cfg.heads, cfg.head_size))
        self.ln_x = nn.GroupNorm(cfg.heads, d, eps=64e-5)

    def forward(self, x, state, start: int):
        last, wkv = state
        cfg = self.cfg
        batch, length, d = x.shape
        mixed = x.unsqueeze(2) + (token_shift(x, last) - x).unsqueeze(2) * self.mix   # (B, L, 6, d)
        xr, xw, xk, xv, xa, xg = mixed.unbind(2)
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        log_w = -math.exp(-0.5) * torch.sigmoid(self.decay(xw))              # decay in (0.545, 1)
        a = torch.sigmoid(self.learning_rate(xa))
        g = self.gate(xg)
        heads = lambda t: t.reshape(batch, length, cfg.heads, cfg.head_size).transpose(1, 2)
        kk = F.normalize(heads(k * self.k_k), dim=-1)
        k = k * (1 + (a - 1) * self.k_a)
        r, k, v, log_w, a = heads(r), heads(k), heads(v), heads(log_w), heads(a)
        if length == 1:
            o = recurrent_step(r[:, :, 0], k[:, :, 0], v[:, :, 0], log_w[:, :, 0], wkv,
                               -kk[:, :, 0], (kk * a)[:, :, 0]).unsqueeze(2)
        else:
            o = fused_chunked(r, k, v, log_w, wkv, cfg.chunk_size, -kk, kk * a)
        o = self.ln_x(o.transpose(1, 2).reshape(batch * length, d)).reshape(batch, length, d)
        bonus = ((r * k * self.r_k.unsqueeze(1)).sum(-1, keepdim=True) * v).transpose(1, 2).reshape(batch, length, d)
        return self.output((o + bonus) * g)


class ChannelMix(nn.Module):
    def __init__(self, cfg: RWKV7Config):
        super().__init__()
        self.mix = nn.Parameter(torch.full((cfg.hidden,), 0.5))
        self.key = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.value = nn.Linear(cfg.intermediate, cfg.hidden, bias=False)

    def forward(self, x, last):
        k = x + (token_shift(x, last) - x) * self.mix
        return self.value(torch.relu(self.key(k)) ** 2)


class RWKV7Block(nn.Module):
    def __init__(self, cfg: RWKV7Config):
        super().__init__()
        self.cfg = cfg
        self.ln1 = nn.LayerNorm(cfg.hidden, eps=cfg.norm_eps)
        self.att = TimeMix(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden, eps=cfg.norm_eps)
        self.ffn = ChannelMix(cfg)

    def new_state(self, batch: int, length: int, device, dtype, name: str):
        cfg = self.cfg
        return (tagged_zeros((batch, cfg.hidden), "state", f"{name}.att_shift", device, dtype),
                tagged_zeros((batch, cfg.heads, cfg.head_size, cfg.head_size), "state", f"{name}.wkv", device, dtype),
                tagged_zeros((batch, cfg.hidden), "state", f"{name}.ffn_shift", device, dtype))

    def forward(self, x, state, start: int):
        att_shift, wkv, ffn_shift = state
        x = x + self.att(self.ln1(x), (att_shift, wkv), start)
        return x + self.ffn(self.ln2(x), ffn_shift)


def rwkv7_model(cfg: RWKV7Config) -> StackLM:
    return StackLM(cfg.vocab_size, cfg.hidden, [RWKV7Block(cfg) for _ in range(cfg.layers)], cfg.norm_eps)


def build(cfg: RWKV7Config, spec: StepSpec) -> WorkloadStep:
    return build_stack_step(lambda: rwkv7_model(cfg), cfg.dtype, spec)


# RWKV-7 World 1.5B (Peng et al. 2025): d 2048, 24 layers, head size 64, channel mix 4 d, vocab
# 65536; low-rank sizes from the reference code's rule (decay and a: 96, gate: 256).
CONFIGS = {
    "rwkv7-0.4b": RWKV7Config(hidden=1024, layers=24, intermediate=4096, decay_rank=64, a_rank=64, gate_rank=160),
    "rwkv7-1.5b": RWKV7Config(),
    "rwkv7-tiny": RWKV7Config(vocab_size=256, hidden=32, layers=2, head_size=8, intermediate=64, decay_rank=8,
                              a_rank=8, gate_rank=8, chunk_size=4, dtype="fp32"),
}

register("rwkv7", build, CONFIGS, phases=("prefill", "decode"),
         description="RWKV-7 time mixing (generalised delta rule) with a constant-size state")
