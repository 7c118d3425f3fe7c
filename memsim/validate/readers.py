"""Readers of measured op times published by other projects, as memsim ops tables.

Each reader returns a Measured: an ops table with the trace columns (memsim.trace.table) that
the cost models price, the measured seconds in `measured_s`, the source's own op name in
`label` and a `size` column (tokens, M, elements) by which calibration splits rows into
halves. Shapes become FLOPs and bytes here, the same way a traced op's would.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from memsim.cost.model import POINT_TO_POINT_KINDS
from memsim.errors import MemsimError
from memsim.trace.ops import attention_flops

FORMATS = ("kineto", "vidur-mlp", "vidur-attention", "vidur-collective", "llmcompass", "tracelens-gemm")
BYTES = {"fp16": 2, "bf16": 2, "fp32": 4, "fp8": 1}
TORCH_TYPES = {"c10::BFloat16": "bf16", "c10::Half": "fp16", "float": "fp32", "c10::Float8_e4m3fn": "fp8"}


@dataclass
class Measured:
    """Measured op times from one file, with the shapes memsim needs to price them."""

    ops: pd.DataFrame
    format: str
    path: str
    device_name: str = ""
    meta: dict = field(default_factory=dict)


def op_row(label: str, category: str, dtype: str, flops: float, bytes_read: float, bytes_written: float,
           measured_s: float, size: float, batch=0, m=0, n=0, k=0, attrs: dict | None = None,
           reread: float = 0.0) -> dict:
    return {"name": label, "label": label, "category": category, "dtype": dtype, "flops": float(flops),
            "bytes_read": float(bytes_read), "bytes_written": float(bytes_written), "batch": int(batch),
            "m": int(m), "n": int(n), "k": int(k), "attrs": json.dumps(attrs, sort_keys=True) if attrs else "",
            "shapes": "", "measured_s": float(measured_s), "size": float(size), "reread_bytes": float(reread)}


def gemm_row(label: str, dtype: str, batch: int, m: int, n: int, k: int, measured_s: float, size: float,
             bias: bool = False) -> dict:
    b = BYTES[dtype]
    read = batch * (m * k + k * n) * b + (n * b if bias else 0)
    return op_row(label, "gemm", dtype, 2.0 * batch * m * n * k, read, batch * m * n * b, measured_s, size,
                  batch, m, n, k)


def attention_row(label: str, dtype: str, batch: int, heads: int, kv_heads: int, q_len: int, kv_len: int,
                  head_dim: int, causal: bool, measured_s: float, size: float, appends_kv: bool = False) -> dict:
    """A fused attention op; `appends_kv`: the kernel writes the new keys and values into the KV
    cache itself (flash_attn_with_kvcache given k and v)."""
    b = BYTES[dtype]
    flops = attention_flops(batch, heads, q_len, kv_len, head_dim, head_dim, causal)
    read = batch * (heads * q_len + 2 * kv_heads * kv_len) * head_dim * b
    attrs = {"heads": heads, "kv_heads": kv_heads, "value_dim": head_dim, "causal": causal}
    if appends_kv:
        attrs["appends_kv"] = True
    return op_row(label, "attention", dtype, flops, read, batch * heads * q_len * head_dim * b, measured_s, size,
                  batch * heads, q_len, kv_len, head_dim, attrs)


def _table(rows: list[dict], path: Path, what: str) -> pd.DataFrame:
    if not rows:
        raise MemsimError(f"{path}: no measured {what} found")
    return pd.DataFrame(rows)


def _columns(frame: pd.DataFrame, path: Path, numbers: list[str], text: tuple[str, ...] = ()) -> None:
    """Check a profile's columns: present, and numbers (with every time_stats.* column) numeric,
    which converts them in place; a bad cell is named by line and column."""
    missing = [name for name in [*numbers, *text] if name not in frame.columns]
    if missing:
        raise MemsimError(f"{path}: missing column(s) {', '.join(missing)}")
    for name in numbers + [column for column in frame.columns if column.startswith("time_stats.")]:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() & frame[name].notna().to_numpy())
        if bad.size:
            raise MemsimError(f"{path}: line {bad[0] + 2}, column {name}: expected a number, "
                              f"got {frame[name].iloc[bad[0]]!r}")
        frame[name] = values


# Vidur's profiler (vidur/profiling/mlp/mlp_wrapper.py, record_function method) builds a model of
# ACTIVE_STEPS = 20 identical layers, runs it once untimed, then once under the profiler, and
# reports each op's median over the 20 timed layers: 20 + 10 layers run back to back before the
# median one. That sets the power state each row was measured in (a GPU's power cap engages
# after ~0.1 s of matrix work: memsim.cost.MeasuredPowerState).
VIDUR_PASSES_BEFORE_MEDIAN = 30


def read_vidur_mlp(path: Path) -> Measured:
    """Vidur's per-layer profile (mlp.csv): one row per (tokens, tensor parallel degree).

    Op shapes follow Vidur's profiled block (vidur/profiling/mlp/mlp_impl.py) with weights split
    over the TP workers; times are medians in ms; models are fp16, as Vidur profiles them.
    Rotary embedding and a gated MLP's SiLU-and-mul are category 'strided': their operands are
    strided views (q and k of the fused qkv output, the gate and up halves of one tensor) and the
    Sarathi/vLLM kernels that Vidur times load them one element per thread. A plain MLP's GELU
    (torch.nn.GELU) and the residual add are contiguous, vectorised torch ops. A file without a
    post-attention norm is a parallel block (attention and MLP both read the input norm, as in
    phi-2), whose timed add sums three tensors: two add kernels. vLLM's rotary and SiLU-and-mul
    kernels run one thread block per token (attrs `blocks`), which bounds them at small batches
    (kernels.block_row_seconds).
    """
    frame = pd.read_csv(path)
    _columns(frame, path, ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "num_tokens",
                           "num_tensor_parallel_workers"])
    parallel_block = "time_stats.post_attention_layernorm.median" not in frame.columns
    rows = []
    dtype, b = "fp16", 2
    for group, rec in enumerate(frame.to_dict("records")):
        tp = int(rec["num_tensor_parallel_workers"])
        t, e = int(rec["num_tokens"]), int(rec["n_embd"])
        head_dim = e // int(rec["n_head"])
        q, kv = int(rec["n_head"]) // tp, max(int(rec["n_kv_head"]) // tp, 1)
        gated = str(rec.get("use_gated_mlp", True)).lower() == "true"
        f = int(rec["n_expanded_embd"]) // tp
        up = 2 * f if gated else f

        def time(op):
            return rec.get(f"time_stats.{op}.median", np.nan) * 1e-3

        tokens = t * e
        adds = 2 if parallel_block else 1
        if gated:
            act = op_row("mlp_act", "strided", dtype, 5 * t * f, t * up * b, t * f * b, time("mlp_act"), t,
                         reread=t * up * b)
        else:
            act = op_row("mlp_act", "elementwise", dtype, 8 * t * f, t * f * b, t * f * b, time("mlp_act"), t,
                         reread=t * f * b)
        # in the order the profiled layer runs them (attention itself is profiled apart)
        candidates = [
            op_row("emb", "gather", dtype, 0, tokens * b + t * 8, tokens * b, time("emb"), t),
            op_row("input_layernorm", "norm", dtype, 4 * tokens, (tokens + e) * b, tokens * b,
                   time("input_layernorm"), t, reread=tokens * b),
            gemm_row("attn_pre_proj", dtype, 1, t, (q + 2 * kv) * head_dim, e, time("attn_pre_proj"), t),
            op_row("attn_rope", "strided", dtype, 3 * t * (q + kv) * head_dim, t * (q + kv) * head_dim * b + t * 8,
                   t * (q + kv) * head_dim * b, time("attn_rope"), t, reread=t * (q + kv) * head_dim * b),
            gemm_row("attn_post_proj", dtype, 1, t, e, q * head_dim, time("attn_post_proj"), t),
            op_row("post_attention_layernorm", "norm", dtype, 4 * tokens, (tokens + e) * b, tokens * b,
                   time("post_attention_layernorm"), t, reread=tokens * b),
            gemm_row("mlp_up_proj", dtype, 1, t, up, e, time("mlp_up_proj"), t),
            act,
            gemm_row("mlp_down_proj", dtype, 1, t, e, f, time("mlp_down_proj"), t),
            # each add kernel reads two tensors, one of them just written (the MLP's output, then
            # the first add's sum), and writes one
            op_row("add", "elementwise", dtype, adds * tokens, 2 * adds * tokens * b, adds * tokens * b,
                   time("add"), t, reread=adds * tokens * b),
        ]
        # vLLM's rotary and SiLU-and-mul kernels launch one thread block per token
        per_token = {"attn_rope", "mlp_act"} if gated else {"attn_rope"}  # else torch's GELU
        for row in candidates:
            attrs = {"tp": tp}
            if row["label"] == "add" and adds > 1:
                attrs["kernels"] = adds
            if row["label"] in per_token:
                attrs["blocks"] = t
            row["attrs"] = json.dumps(attrs)
            # the layer's ops run as one pass, VIDUR_PASSES_BEFORE_MEDIAN times before the median one
            row["pass_group"], row["passes_before"] = group, VIDUR_PASSES_BEFORE_MEDIAN
            if np.isfinite(row["measured_s"]) and row["measured_s"] > 0:
                rows.append(row)
    return Measured(_table(rows, path, "Vidur layer ops"), "vidur-mlp", str(path))


def read_vidur_attention(path: Path) -> Measured:
    """Vidur's attention profile: FlashAttention prefill (one sequence, a chunk of new tokens
    after kv_cache_size cached ones) and decode (batch_size sequences of kv_cache_size, plus the
    new token). Its profiler runs sarathi-serve's wrapper, which passes the new keys and values
    to flash_attn_with_kvcache: the kernel appends them to the paged cache itself."""
    frame = pd.read_csv(path)
    _columns(frame, path, ["n_embd", "n_q_head", "n_kv_head", "num_tensor_parallel_workers", "batch_size",
                           "prefill_chunk_size", "kv_cache_size"], text=("is_prefill",))
    rows = []
    for rec in frame.to_dict("records"):
        tp = int(rec["num_tensor_parallel_workers"])
        head_dim = int(rec["n_embd"]) // int(rec["n_q_head"])
        heads, kv_heads = int(rec["n_q_head"]) // tp, max(int(rec["n_kv_head"]) // tp, 1)
        cached, batch = int(rec["kv_cache_size"]), int(rec["batch_size"])
        if str(rec["is_prefill"]).lower() == "true":
            chunk = int(rec["prefill_chunk_size"])
            row = attention_row("attn_prefill", "fp16", batch, heads, kv_heads, chunk, cached + chunk, head_dim,
                                True, rec["time_stats.attn_prefill.median"] * 1e-3, chunk, appends_kv=True)
        else:
            row = attention_row("attn_decode", "fp16", batch, heads, kv_heads, 1, cached + 1, head_dim,
                                False, rec["time_stats.attn_decode.median"] * 1e-3, batch * max(cached, 1),
                                appends_kv=True)
        if np.isfinite(row["measured_s"]) and row["measured_s"] > 0:
            rows.append(row)
    return Measured(_table(rows, path, "attention times"), "vidur-attention", str(path))


def read_llmcompass(path: Path) -> Measured:
    """LLMCompass real-hardware CSVs (no header), fp16 as in the paper (Zhang et al. 2024):
    matmul (M, N, K, '0.19ms', 'TFLOPS'), softmax / layernorm (M, N, G elements/s),
    gelu (elements, G elements/s). The op is named by the file name."""
    kind = Path(path).name.split("_")[0].lower()
    with open(path, newline="") as handle:
        records = [[cell.strip() for cell in line] for line in csv.reader(handle) if line]
    rows = []
    b = 2
    try:
        for rec in records:
            if kind == "matmul":
                m, n, k = (int(x) for x in rec[:3])
                rows.append(gemm_row("matmul", "fp16", 1, m, n, k, float(rec[3].removesuffix("ms")) * 1e-3, m))
            elif kind in ("softmax", "layernorm"):
                m, n, rate = int(rec[0]), int(rec[1]), float(rec[2]) * 1e9
                category = "reduction" if kind == "softmax" else "norm"
                rows.append(op_row(kind, category, "fp16", 5 * m * n, m * n * b, m * n * b, m * n / rate, n))
            elif kind == "gelu":
                elements, rate = int(rec[0]), float(rec[1]) * 1e9
                rows.append(op_row("gelu", "elementwise", "fp16", 8 * elements, elements * b, elements * b,
                                   elements / rate, elements))
            else:
                raise MemsimError(f"{path}: LLMCompass file name must start with matmul, softmax, layernorm or gelu")
    except (ValueError, IndexError) as error:
        raise MemsimError(f"{path}: unreadable LLMCompass row ({error}); expected numbers as 'M, N, K, 0.19ms, ...'")
    return Measured(_table(rows, path, "LLMCompass rows"), "llmcompass", str(path))


def read_tracelens(path: Path) -> Measured:
    """TraceLens perf-report CSVs: GEMM.csv (B, M, N, K, dtype) or SDPA_fwd.csv (B, N_Q, H_Q,
    N_KV, H_KV, d_h, causal), with the median kernel time in microseconds."""
    frame = pd.read_csv(path)
    time_column = next((c for c in frame.columns if c.startswith("Kernel Time") and c.endswith("_median")), None)
    if time_column is None:
        raise MemsimError(f"{path}: no 'Kernel Time (µs)_median' column; expected a TraceLens perf-report CSV")
    rows = []
    for rec in frame.to_dict("records"):
        dtype = _tracelens_dtype(rec.get("param: dtype_A_B", ""))
        seconds = float(rec[time_column]) * 1e-6
        if "param: M" in rec:
            batch, m, n, k = (int(rec[f"param: {x}"]) for x in "BMNK")
            rows.append(gemm_row(rec["name"], dtype, batch, m, n, k, seconds, m,
                                 bias=str(rec.get("param: bias")).lower() == "true"))
        elif "param: N_Q" in rec:
            rows.append(attention_row(rec["name"], dtype, int(rec["param: B"]), int(rec["param: H_Q"]),
                                      int(rec["param: H_KV"]), int(rec["param: N_Q"]), int(rec["param: N_KV"]),
                                      int(rec["param: d_h_qk"]), str(rec["param: causal"]).lower() == "true",
                                      seconds, int(rec["param: N_Q"])))
    if not rows:
        raise MemsimError(f"{path}: neither GEMM (param: M, N, K) nor SDPA (param: N_Q) columns found")
    return Measured(pd.DataFrame(rows), "tracelens-gemm", str(path))


def _tracelens_dtype(text: str) -> str:
    for torch_name, name in TORCH_TYPES.items():
        if torch_name in str(text):
            return name
    return "bf16"


def read_kineto(path: Path) -> Measured:
    """GPU kernels of a PyTorch profiler trace, priced one by one (see memsim.trace.kineto)."""
    from memsim.trace.kineto import load_kineto

    trace = load_kineto(path)
    ops = trace.ops.copy()
    ops["label"] = ops["kernel"].where(ops["kernel"].astype(bool), ops["name"])
    ops["size"] = ops["bytes_read"] + ops["bytes_written"] + ops["flops"]
    return Measured(ops, "kineto", str(path), trace.meta.get("device_name", ""), dict(trace.meta))


def read_vidur_collective(path: Path) -> Measured:
    """Vidur's collective profile (network/<setup>/all_reduce.csv, send_recv.csv and kin): one row
    per (ranks, size) within one node; a send_recv row is rank 0 sending the buffer to rank 1.
    `size` is the bytes of one rank's fp16 buffer (Vidur's wrapper writes its element count times
    two, and its own predictor reads it back as bytes); times are medians in ms of the NCCL
    kernels in a Kineto trace. Rows whose ranks span several nodes
    (devices_per_node below num_workers) are left out and counted in meta['skipped']: memsim
    prices a collective over one peer link, not a hierarchy of them."""
    frame = pd.read_csv(path)
    _columns(frame, path, ["num_workers", "size"], text=("collective",))
    rows, skipped = [], 0
    for rec in frame.to_dict("records"):
        kind, ranks, payload = str(rec["collective"]), int(rec["num_workers"]), int(rec["size"])
        if int(rec.get("devices_per_node") or ranks) < ranks:
            skipped += 1
            continue
        seconds = rec.get(f"time_stats.{kind}.median", np.nan) * 1e-3
        written = payload * ranks if kind == "all_gather" else payload
        category = "p2p" if kind in POINT_TO_POINT_KINDS else "collective"
        row = op_row(f"{kind} x{ranks}", category, "fp16", 0.0, payload, written, seconds, payload,
                     attrs={"ranks": ranks, "kind": kind})
        if np.isfinite(seconds) and seconds > 0:
            rows.append(row)
    meta = {"skipped": f"{skipped} rows whose ranks span several nodes (priced only within a node)"} if skipped else {}
    return Measured(_table(rows, path, "Vidur collectives within one node"), "vidur-collective", str(path), meta=meta)


READERS = {"kineto": read_kineto, "vidur-mlp": read_vidur_mlp, "vidur-attention": read_vidur_attention,
           "vidur-collective": read_vidur_collective, "llmcompass": read_llmcompass, "tracelens-gemm": read_tracelens}


def detect_format(path: Path) -> str:
    """The format of a measured file, from its name and first line."""
    name = path.name.lower()
    if name.endswith((".json", ".json.gz")):
        return "kineto"
    if not name.endswith(".csv"):
        raise MemsimError(f"{path}: cannot tell the format; pass --format ({', '.join(FORMATS)})")
    with open(path, newline="") as handle:
        header = handle.readline()
    if "time_stats.attn_pre_proj" in header or "time_stats.mlp_up_proj" in header:
        return "vidur-mlp"
    if "time_stats.attn_prefill" in header or "time_stats.attn_decode" in header:
        return "vidur-attention"
    if "num_workers" in header and "collective" in header:
        return "vidur-collective"
    if "param: M" in header or "param: N_Q" in header:
        return "tracelens-gemm"
    if name.split("_")[0] in ("matmul", "softmax", "layernorm", "gelu"):
        return "llmcompass"
    raise MemsimError(f"{path}: cannot tell the format from its header; pass --format ({', '.join(FORMATS)})")


def read_measured(path: str | Path, format: str | None = None) -> Measured:
    path = Path(path)
    if not path.exists():
        raise MemsimError(f"{path}: no such file")
    format = format or detect_format(path)
    if format not in READERS:
        raise MemsimError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    return READERS[format](path)
