"""A Llama-style decoder: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU MLP.

Inference keeps a KV cache per layer; prefill computes logits for the last position only.
The cache layout is a config option, one at a time:

- contiguous (default): a preallocated (batch, kv_heads, tokens, head_dim) tensor per layer,
  written one slice per step and read up to the current length, as serving engines do;
- ``sliding_window=W``: a ring buffer of W slots; attention sees the last W tokens;
- ``kv_block_size=B``: a paged cache (vLLM style): a pool of B-token blocks and a block table
  per sequence; decode attention is one fused kernel reading the blocks its sequence touches
  through the table;
- ``kv_budget=N``: heavy-hitter eviction (H2O style): at most N tokens per layer and head are
  kept; a new token evicts the one with the least accumulated attention;
- ``kv_bits=8|4``: a quantised cache: int8 codes (int4: two codes packed per byte) with one
  scale per token and head in the model dtype; decode attention is one fused kernel that
  dequantises as it reads.

``fused_kv_append=true`` (contiguous or paged cache) stores the new keys and values from inside
the attention kernel, as flash_attn_with_kvcache does when given them (sarathi-serve, and the
setup of Vidur's attention profiles), instead of copying them into the cache before it.

Training (phase 'train') runs the model over the whole sequence with a next-token loss,
through memsim.trace.training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memsim.errors import MemsimError
from memsim.trace import attention_window, run_fused, tag
from memsim.trace.ops import attention_flops
from memsim.trace.training import train_step
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
    sliding_window: int | None = None
    """Attend to the last W tokens only; the cache is a ring of W slots."""
    kv_block_size: int | None = None
    """Paged KV cache with blocks of this many tokens."""
    kv_budget: int | None = None
    """Keep at most this many tokens per layer and head, evicting by accumulated attention."""
    kv_bits: int | None = None
    """Quantise the KV cache to 8 or 4 bits (None: the model dtype)."""
    fused_kv_append: bool = False
    """Attention appends the new keys and values to the cache in its own kernel."""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def cache_options(self) -> list[str]:
        return [name for name in ("sliding_window", "kv_block_size", "kv_budget", "kv_bits")
                if getattr(self, name) is not None]


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


def window_mask(q_len: int, start: int, kv_len: int, window: int | None, device) -> torch.Tensor:
    """Boolean (q_len, kv_len) mask: query at position start+i sees keys in (pos-window, pos]."""
    query_pos = torch.arange(start, start + q_len, device=device).unsqueeze(1)
    key_pos = torch.arange(kv_len, device=device).unsqueeze(0)
    visible = key_pos <= query_pos
    if window is not None:
        visible &= key_pos > query_pos - window
    return visible


def sdpa(q, k, v, causal: bool, window: int | None = None):
    """Fused attention; with a `window`, causal attention to the last `window` keys of each query
    (the queries being the last of the keys)."""
    gqa = k.shape[1] != q.shape[1]
    if window is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
    q_len, kv_len = q.shape[2], k.shape[2]
    mask = window_mask(q_len, kv_len - q_len, kv_len, window, q.device)
    with attention_window(window):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def fused_decode_attention(name: str, q, kv_len: int, keys_values, reads: list, **attrs):
    """Decode attention as one kernel reading the cache in its stored form (`reads`: blocks
    through a table, int8 codes and scales), as paged and quantised-KV kernels do, instead of
    materialising a full-precision copy first. `keys_values()` gives the (keys, values) the
    readable torch code attends to; it runs on real tensors only."""
    batch, heads, length, dim = q.shape
    out = torch.empty_like(q)

    def attend():
        keys, values = keys_values()
        out.copy_(sdpa(q, keys, values, causal=False))

    run_fused(name, attend, reads=[q, *reads], writes=[out],
              flops=attention_flops(batch, heads, length, kv_len, dim, dim, causal=False),
              category="attention", dims=(batch * heads, length, kv_len, dim),
              attrs={"heads": heads, "value_dim": dim, "causal": False, **attrs})
    return out


def appending_attention(name: str, q, k, v, start: int, store, keys_values, reads: list, writes: list,
                        **attrs):
    """Attention that stores the new keys and values in the cache itself and then attends to
    every cached key, causally for several new tokens: flash_attn_with_kvcache given k and v.
    Recorded as one attention op marked `appends_kv`, which the cost model prices as that
    kernel, each block of query rows copying the new rows it sees before its main loop
    (kernels.appended_kv_copy_bytes). Memory sees the new k and v once, read from their own
    tensors; `reads` are the cached keys before them, `writes` the cache rows they fill.
    `store()` fills them and `keys_values()` gives the (keys, values) to attend to; both run on
    real tensors only."""
    batch, heads, length, dim = q.shape
    total = start + length
    out = torch.empty_like(q)

    def attend():
        store()
        keys, values = keys_values()
        visible = window_mask(length, start, total, None, q.device)
        out.copy_(F.scaled_dot_product_attention(q, keys, values, attn_mask=visible,
                                                 enable_gqa=keys.shape[1] != heads))

    run_fused(name, attend, reads=[q, k, v, *reads], writes=[out, *writes],
              flops=attention_flops(batch, heads, length, total, dim, dim, causal=length > 1),
              category="attention", dims=(batch * heads, length, total, dim),
              attrs={"heads": heads, "kv_heads": k.shape[1], "value_dim": dim, "causal": length > 1,
                     "appends_kv": True, **attrs})
    return out


def kv_pair(shape, layer: int, device, dtype, kind: str = "cache") -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed K and V tensors of one layer, tagged as KV cache ('layers.3.k_cache', ...)."""
    return tuple(tag(torch.zeros(shape, device=device, dtype=dtype), "kv_cache", f"layers.{layer}.{part}_{kind}")
                 for part in ("k", "v"))


class ContiguousKV:
    """One (batch, kv_heads, capacity, head_dim) tensor each for K and V."""

    def __init__(self, cfg: LlamaConfig, batch: int, capacity: int, layer: int, device, dtype):
        shape = (batch, cfg.kv_heads, capacity, cfg.head_dim)
        self.k, self.v = kv_pair(shape, layer, device, dtype)
        self.fused_append = cfg.fused_kv_append

    @classmethod
    def over(cls, k: torch.Tensor, v: torch.Tensor) -> "ContiguousKV":
        """A cache over K and V tensors made (and tagged) by another model."""
        cache = cls.__new__(cls)
        cache.k, cache.v, cache.fused_append = k, v, False
        return cache

    def attend(self, q, k, v, start: int):
        length = k.shape[2]
        end = start + length
        if self.fused_append:
            def store():
                self.k[:, :, start:end], self.v[:, :, start:end] = k, v

            return appending_attention("memsim::flash_attn_with_kvcache", q, k, v, start, store,
                                       lambda: (self.k[:, :, :end], self.v[:, :, :end]),
                                       reads=[self.k[:, :, :start], self.v[:, :, :start]] if start else [],
                                       writes=[self.k[:, :, start:end], self.v[:, :, start:end]])
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        if start == 0:  # prefill: the new keys are all there is
            return sdpa(q, k, v, causal=length > 1)
        return sdpa(q, self.k[:, :, :end], self.v[:, :, :end], causal=False)


class SlidingWindowKV:
    """A ring of `window` slots: token at position p lives in slot p % window."""

    def __init__(self, cfg: LlamaConfig, batch: int, capacity: int, layer: int, device, dtype):
        self.window = cfg.sliding_window
        shape = (batch, cfg.kv_heads, min(capacity, self.window), cfg.head_dim)
        self.k, self.v = kv_pair(shape, layer, device, dtype)

    def attend(self, q, k, v, start: int):
        length, slots = k.shape[2], self.k.shape[2]
        kept = min(length, slots)  # only the last `window` new tokens can be seen again
        positions = torch.arange(start + length - kept, start + length, device=k.device)
        self.k.index_copy_(2, positions % self.window, k[:, :, -kept:])
        self.v.index_copy_(2, positions % self.window, v[:, :, -kept:])
        if start == 0:
            return sdpa(q, k, v, causal=True, window=self.window)
        if length != 1:
            raise ValueError("a sliding-window cache extends one token at a time after prefill")
        filled = min(start + 1, slots)  # every stored token is inside the window of the new one
        return sdpa(q, self.k[:, :, :filled], self.v[:, :, :filled], causal=False)


class PagedKV:
    """A pool of fixed-size blocks and a block table mapping each sequence's blocks into it.

    Sequences get interleaved blocks (sequence b owns blocks b, b+batch, ...), so reads really
    go through the table. The pool is (blocks, block_size, kv_heads, head_dim) so a token's
    slot is block * block_size + offset.
    """

    def __init__(self, cfg: LlamaConfig, batch: int, capacity: int, layer: int, device, dtype):
        self.block_size = cfg.kv_block_size
        per_sequence = math.ceil(capacity / self.block_size)
        shape = (batch * per_sequence, self.block_size, cfg.kv_heads, cfg.head_dim)
        self.k, self.v = kv_pair(shape, layer, device, dtype, kind="pool")
        table = torch.arange(per_sequence * batch, device=device).view(per_sequence, batch).t().contiguous()
        self.table = tag(table, "input", f"layers.{layer}.block_table")
        self.fused_append = cfg.fused_kv_append

    def attend(self, q, k, v, start: int):
        batch, heads, length, dim = k.shape
        total = start + length

        def store():
            positions = torch.arange(start, total, device=k.device)
            slots = self.table[:, positions // self.block_size] * self.block_size + positions % self.block_size
            for pool, new in ((self.k, k), (self.v, v)):
                pool.view(-1, heads, dim).index_copy_(0, slots.reshape(-1), new.transpose(1, 2).reshape(-1, heads, dim))

        touched = self.table[:, : math.ceil(total / self.block_size)]

        def keys_values():
            return (pool[touched].flatten(1, 2)[:, :total].transpose(1, 2) for pool in (self.k, self.v))

        block_bytes = self.k[0].numel() * self.k.element_size()
        if self.fused_append:
            cached = self.table[:, : math.ceil(start / self.block_size)].numel() * block_bytes
            new_bytes = k.numel() * k.element_size()
            return appending_attention("memsim::flash_attn_with_kvcache", q, k, v, start, store, keys_values,
                                       reads=[(self.k, cached), (self.v, cached), touched],
                                       writes=[(self.k, new_bytes), (self.v, new_bytes)],
                                       block_size=self.block_size)
        store()
        if start == 0:
            return sdpa(q, k, v, causal=length > 1)
        return fused_decode_attention(
            "memsim::paged_attention", q, total, keys_values,
            reads=[(self.k, touched.numel() * block_bytes), (self.v, touched.numel() * block_bytes), touched],
            kv_heads=heads, block_size=self.block_size)


class HeavyHitterKV:
    """At most `budget` tokens per layer and head; a new token evicts the least-attended one.

    Attention is computed explicitly here because eviction needs the attention weights: each
    cached token accumulates the weight every query head of its group gives it.
    """

    def __init__(self, cfg: LlamaConfig, batch: int, capacity: int, layer: int, device, dtype, filled: int):
        self.budget = cfg.kv_budget
        shape = (batch, cfg.kv_heads, min(capacity, self.budget), cfg.head_dim)
        self.k, self.v = kv_pair(shape, layer, device, dtype)
        self.score = tag(torch.zeros(shape[:3], device=device, dtype=torch.float32), "state",
                         f"layers.{layer}.kv_score")
        self.filled = min(filled, self.budget)

    @staticmethod
    def attention(q, k, v, mask=None):
        """Output and, per key, the attention summed over the queries and heads of its group."""
        batch, heads, length, dim = q.shape
        kv_heads, keys = k.shape[1], k.shape[2]
        grouped = q.reshape(batch, kv_heads, heads // kv_heads * length, dim)
        scores = (grouped @ k.transpose(-1, -2)) / math.sqrt(dim)
        if mask is not None:
            scores = scores.view(batch, kv_heads, -1, length, keys).masked_fill(~mask, float("-inf")).flatten(2, 3)
        weights = scores.float().softmax(dim=-1)
        out = (weights.to(v.dtype) @ v).view(batch, heads, length, dim)
        return out, weights.sum(dim=2)

    def attend(self, q, k, v, start: int):
        length = k.shape[2]
        if start == 0:
            out, received = self.attention(q, k, v, mask=window_mask(length, 0, length, None, q.device))
            keep = min(length, self.budget)
            chosen = received.topk(keep, dim=-1).indices.sort(dim=-1).values
            index = chosen.unsqueeze(-1).expand(-1, -1, -1, k.shape[-1])
            self.k[:, :, :keep] = k.gather(2, index)
            self.v[:, :, :keep] = v.gather(2, index)
            self.score[:, :, :keep] = received.gather(2, chosen)
            self.filled = keep
            return out
        if length != 1:
            raise ValueError("a heavy-hitter cache extends one token at a time after prefill")
        n = self.filled
        keys = torch.cat((self.k[:, :, :n], k), dim=2)
        values = torch.cat((self.v[:, :, :n], v), dim=2)
        out, received = self.attention(q, keys, values)
        self.score[:, :, :n] += received[:, :, :n]
        if n < self.budget:
            self.k[:, :, n:n + 1], self.v[:, :, n:n + 1] = k, v
            self.score[:, :, n:n + 1] = received[:, :, n:]
            self.filled += 1
        else:
            victim = self.score.argmin(dim=-1, keepdim=True)
            index = victim.unsqueeze(-1).expand(-1, -1, -1, k.shape[-1])
            self.k.scatter_(2, index, k)
            self.v.scatter_(2, index, v)
            self.score.scatter_(2, victim, received[:, :, n:])
        return out


class QuantizedKV:
    """K and V as int8 codes (int4: two per byte) with one absmax scale per token and head."""

    def __init__(self, cfg: LlamaConfig, batch: int, capacity: int, layer: int, device, dtype):
        self.bits, self.dtype = cfg.kv_bits, dtype
        self.levels = 2 ** (self.bits - 1) - 1
        code_dtype, width = (torch.int8, cfg.head_dim) if self.bits == 8 else (torch.uint8, cfg.head_dim // 2)
        shape = (batch, cfg.kv_heads, capacity)
        self.codes, self.scales = {}, {}
        for part in ("k", "v"):
            self.codes[part] = tag(torch.zeros((*shape, width), device=device, dtype=code_dtype), "kv_cache",
                                   f"layers.{layer}.{part}_codes")
            self.scales[part] = tag(torch.zeros((*shape, 1), device=device, dtype=dtype), "kv_cache",
                                    f"layers.{layer}.{part}_scales")

    def quantize(self, x):
        scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8) / self.levels
        lowest = -8 if self.bits == 4 else -self.levels  # int4 uses the full -8..7 range
        codes = (x / scale).round().clamp(lowest, self.levels)
        if self.bits == 8:
            return codes.to(torch.int8), scale
        unsigned = (codes + 8).to(torch.uint8)  # int4 codes -8..7 stored as 0..15, two per byte
        return unsigned[..., 0::2] | (unsigned[..., 1::2] << 4), scale

    def dequantize(self, codes, scale):
        if self.bits == 4:
            shifts = torch.tensor([0, 4], dtype=torch.uint8, device=codes.device)  # low nibble, high nibble
            codes = ((codes.unsqueeze(-1) >> shifts) & 15).flatten(-2).to(self.dtype) - 8
        return codes.to(self.dtype) * scale

    def attend(self, q, k, v, start: int):
        length = k.shape[2]
        for part, new in (("k", k), ("v", v)):
            codes, scale = self.quantize(new)
            self.codes[part][:, :, start:start + length] = codes
            self.scales[part][:, :, start:start + length] = scale
        if start == 0:  # prefill attends to the exact keys it just computed
            return sdpa(q, k, v, causal=length > 1)
        end = start + length
        stored = [(self.codes[part][:, :, :end], self.scales[part][:, :, :end]) for part in ("k", "v")]
        return fused_decode_attention(
            f"memsim::int{self.bits}_kv_attention", q, end,
            lambda: (self.dequantize(codes, scales) for codes, scales in stored),
            reads=[tensor for pair in stored for tensor in pair], kv_heads=k.shape[1], kv_bits=self.bits)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden, cfg.heads * d, bias=False)
        self.k_proj = nn.Linear(cfg.hidden, cfg.kv_heads * d, bias=False)
        self.v_proj = nn.Linear(cfg.hidden, cfg.kv_heads * d, bias=False)
        self.o_proj = nn.Linear(cfg.heads * d, cfg.hidden, bias=False)

    def forward(self, x, cos, sin, cache, start: int):
        batch, length, _ = x.shape
        cfg, d = self.cfg, self.cfg.head_dim
        q = self.q_proj(x).view(batch, length, cfg.heads, d).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, cfg.kv_heads, d).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, cfg.kv_heads, d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            out = cache.attend(q, k, v, start)
        elif cfg.sliding_window is not None:
            out = sdpa(q, k, v, causal=True, window=cfg.sliding_window)
        else:
            out = sdpa(q, k, v, causal=length > 1)
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

    def forward(self, tokens, caches=None, start: int = 0, all_logits: bool = False):
        """Logits of the last position (or of every position), extending `caches` if given."""
        x = self.embed(tokens)
        cos, sin = self.rope(start, tokens.shape[1], x.device, x.dtype)
        for layer, cache in zip(self.layers, caches or [None] * len(self.layers)):
            x = layer(x, cos, sin, cache, start)
        return self.lm_head(self.norm(x if all_logits else x[:, -1:, :]))


def new_kv_cache(cfg: LlamaConfig, batch: int, capacity: int, device, dtype, filled: int = 0) -> list:
    """One cache per layer, of the layout the config asks for, able to hold `capacity` tokens;
    `filled` says how many tokens it already holds (what a decode step starts from)."""
    if len(cfg.cache_options) > 1:
        raise MemsimError(f"llama: the KV-cache options {' and '.join(cfg.cache_options)} cannot be combined; "
                          f"set one of them")
    for name in cfg.cache_options:
        if getattr(cfg, name) < 1:
            raise MemsimError(f"llama: config key '{name}' must be a positive integer, not {getattr(cfg, name)}")
    if cfg.kv_bits not in (None, 8, 4):
        raise MemsimError(f"llama: config key 'kv_bits' must be 8 or 4, not {cfg.kv_bits}")
    if cfg.fused_kv_append and set(cfg.cache_options) - {"kv_block_size"}:
        raise MemsimError(f"llama: fused_kv_append needs the contiguous or paged cache, not "
                          f"{cfg.cache_options[0]}")
    if cfg.kv_bits == 4 and cfg.head_dim % 2:
        raise MemsimError(f"llama: kv_bits=4 packs two codes per byte and needs an even head_dim ({cfg.head_dim})")
    layout = {"sliding_window": SlidingWindowKV, "kv_block_size": PagedKV, "kv_bits": QuantizedKV}
    caches = []
    for layer in range(cfg.layers):
        if cfg.kv_budget is not None:
            caches.append(HeavyHitterKV(cfg, batch, capacity, layer, device, dtype, filled))
        else:
            kind = layout.get(cfg.cache_options[0], ContiguousKV) if cfg.cache_options else ContiguousKV
            caches.append(kind(cfg, batch, capacity, layer, device, dtype))
    return caches


def build(cfg: LlamaConfig, spec: StepSpec) -> WorkloadStep:
    dtype = TORCH_DTYPES[spec.dtype or cfg.dtype]
    device = torch.device(spec.device)
    with device:
        model = Llama(cfg).to(dtype)
    if spec.phase == "train":
        tokens = tag(torch.randint(0, cfg.vocab_size, (spec.batch, spec.context), device=device), "input", "tokens")
        targets = tag(torch.randint(0, cfg.vocab_size, (spec.batch, spec.context), device=device), "input",
                      "targets")

        def loss():
            logits = model(tokens, all_logits=True)
            return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

        return train_step(model, loss, spec)
    model.eval()
    start, length = (spec.context, 1) if spec.phase == "decode" else (0, spec.context)
    caches = new_kv_cache(cfg, spec.batch, start + length, device, dtype, filled=start)
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

register("llama", build, CONFIGS, phases=("prefill", "decode", "train"),
         description="Llama-style decoder: RMSNorm, RoPE, GQA, SwiGLU; KV cache contiguous, sliding-window, "
                     "paged, heavy-hitter or int8/int4")
