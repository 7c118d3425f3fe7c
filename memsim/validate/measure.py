"""Measure the machine memsim runs on, the way a workload's ops are measured.

The micro-benchmarks are ordinary torch steps traced in real mode (memsim.trace.capture), so
each measured op carries exactly the FLOPs, bytes, dims and per-op timing (CPU wall clock with
ATen dispatch, or CUDA events) that a traced workload's ops carry; calibration fitted on them
therefore transfers to `memsim validate real`. Each op runs several times in several rounds and
the fastest run counts: on a shared machine the slower runs measure the neighbours, not the op.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import numpy as np
import pandas as pd
import torch

from memsim.cost.model import reuse_distance
from memsim.cost.op_arrays import since_reuse
from memsim.errors import MemsimError
from memsim.validate.readers import op_row

REPEATS = 5
# Rounds of REPEATS, one after another, until the ops' fastest times stop improving: a
# neighbour's burst of load can last several rounds (seconds on a shared machine), and the
# fastest of rounds on both sides of it is the op's own time. At least MIN_ROUNDS; it stops once
# the last SETTLED_ROUNDS took less than SETTLED_GAIN off the ops' fastest times on average (each
# op counts alike: a small op's fixed cost is what a small workload adds up), or at MAX_ROUNDS.
MIN_ROUNDS = 5
MAX_ROUNDS = 20
SETTLED_ROUNDS = 3
SETTLED_GAIN = 0.01
# (m, n, k): square, skinny (decode-like) and wide GEMMs; sizes scaled per device (on CUDA two
# small ones too, whose time is the kernel's fixed cost: a tiny model's GEMMs). On CUDA, rows
# of 2752 and 5504 fp16 elements (43 x 2^7 and 43 x 2^8 bytes, K = N so both operands share the
# pitch) beside the powers of two let the fit tell the row-pitch conflict cost from the peak.
GEMM_SHAPES = {"cpu": [(1, 256, 64), (64, 64, 64), (64, 128, 64), (1, 1024, 1024), (8, 2048, 512), (32, 256, 256),
                       (64, 512, 512), (128, 512, 1024), (256, 1024, 1024), (512, 512, 512), (256, 256, 2048),
                       (16, 4096, 256)],
               "cuda": [(1, 4096, 4096), (16, 8192, 4096), (128, 4096, 4096), (512, 4096, 4096),
                        (1024, 8192, 4096), (2048, 2048, 2048), (4096, 4096, 4096), (8192, 8192, 8192),
                        (2048, 2752, 2752), (4096, 5504, 5504), (16, 64, 4096), (64, 128, 2048)]}
# (batch, m, n, k) of batched matmuls: on CPU both sides of ATen's scalar-loop threshold (400
# multiply-adds per matrix; memsim.cost.model.scalar_loop_gemms), as chunked scans and grouped
# heads run them; on CUDA attention-like batches.
BMM_SHAPES = {"cpu": [(64, 4, 8, 8), (256, 6, 6, 8), (32, 7, 8, 7), (64, 8, 8, 8)],
              "cuda": [(64, 512, 512, 64), (512, 64, 64, 128)]}
# GEMMs whose operands fit in a core's L2 (1 MiB and more on current x86 and Arm cores) are
# measured as small ops; larger ones run last in each repeat, followed by SETTLE_OPS tiny ops
# (see _micro_step).
SMALL_GEMM_BYTES = 1 << 20
SETTLE_OPS = 8
ELEMENTS = {"cpu": [1, 1 << 10, 1 << 14, 1 << 17, 1 << 20, 1 << 22],
            "cuda": [1, 1 << 12, 1 << 16, 1 << 20, 1 << 24, 1 << 27]}
ROWS = {"cpu": 256, "cuda": 4096}
ROW_SHAPES = {"cpu": [(4, 64), (4, 4096), (4096, 4)], "cuda": []}
# (batch, heads, query length, key length, head_dim) of attention: causal prefill where the
# lengths are equal, decode (one query against a cache) where they are not
ATTENTION_SHAPES = {"cpu": [(1, 4, 64, 64, 16), (1, 8, 256, 256, 64), (2, 8, 512, 512, 64), (1, 4, 1, 64, 16),
                            (4, 4, 1, 256, 16), (8, 8, 1, 512, 64)],
                    "cuda": [(1, 4, 64, 64, 32), (1, 16, 512, 512, 64), (4, 32, 2048, 2048, 128),
                             (8, 32, 4096, 4096, 128), (4, 4, 1, 64, 32), (8, 32, 1, 1024, 128), (64, 32, 1, 4096, 128)]}
# Query heads per KV head of a decode measured besides (grouped-query attention, as the Llama
# workloads run it): (batch, heads, KV heads, key length, head_dim).
GQA_DECODE_SHAPES = {"cpu": [(8, 8, 4, 256, 32)], "cuda": [(32, 32, 8, 2048, 128)]}
# (batch, channels, length) of a depthwise causal conv1d of width 4, as Mamba-family blocks run
# on their inner channels: a library call whose fixed cost is its own (category 'conv').
CONV_SHAPES = {"cpu": [(1, 128, 4), (1, 256, 67), (2, 512, 259)],
               "cuda": [(8, 4096, 4), (4, 8192, 2051)]}
CONV_WIDTH = 4
COPY_BYTES = [1 << 12, 1 << 16, 1 << 20, 1 << 24, 1 << 27]


def _micro_step(device: str, dtype: torch.dtype):
    """One step that runs every micro-benchmark REPEATS times, on tensors made up front."""
    gemms = [(torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype))
             for m, n, k in GEMM_SHAPES[device]]
    batched = [(torch.randn(b, m, k, device=device, dtype=dtype), torch.randn(b, k, n, device=device, dtype=dtype))
               for b, m, n, k in BMM_SHAPES[device]]
    vectors = [torch.randn(count, device=device, dtype=dtype) for count in ELEMENTS[device]]
    rows = ROWS[device]
    matrices = [torch.randn(rows, count // rows or 1, device=device, dtype=dtype) for count in ELEMENTS[device][1:]]
    # and row-wise ops over few and many rows, which a row's own cost sets apart from an op's
    matrices += [torch.randn(shape, device=device, dtype=dtype) for shape in ROW_SHAPES[device]]
    table = torch.randn(32000, 256, device=device, dtype=dtype)
    ids = [torch.randint(0, 32000, (count,), device=device) for count in (1, 64, 4096)]
    attention = [(torch.randn(b, h, q, d, device=device, dtype=dtype), torch.randn(b, h, kv, d, device=device, dtype=dtype))
                 for b, h, q, kv, d in ATTENTION_SHAPES[device]]
    attention += [(torch.randn(b, h, 1, d, device=device, dtype=dtype),
                   torch.randn(b, kv_h, kv, d, device=device, dtype=dtype))
                  for b, h, kv_h, kv, d in GQA_DECODE_SHAPES[device]]
    convs = [(torch.randn(b, c, length, device=device, dtype=dtype), torch.randn(c, 1, CONV_WIDTH, device=device, dtype=dtype),
              torch.randn(c, device=device, dtype=dtype)) for b, c, length in CONV_SHAPES[device]]

    # the small ops of a transformer step: norms, rotary embedding, residuals, activations
    vector_ops = [lambda x: torch.add(x, x), lambda x: torch.mul(x, 2.0), lambda x: torch.div(x, 3.0),
                  lambda x: torch.pow(x, 2), torch.rsqrt, torch.cos, torch.neg, torch.nn.functional.silu,
                  lambda x: torch.arange(x.numel(), device=device), lambda x: torch.ones(x.shape, device=device),
                  torch.zeros_like, lambda x: torch.cat([x, x]),
                  lambda x: x.clone().add_(x)]
    # every other row, as a router picks tokens
    halves = {count: torch.arange(0, count, 2, device=device) for count in {m.shape[0] for m in matrices}}
    row_ops = [lambda x: torch.softmax(x, dim=-1), lambda x: torch.nn.functional.layer_norm(x, x.shape[-1:]),
               lambda x: x.mean(-1, keepdim=True), lambda x: torch.cat([x, x], dim=-1),
               lambda x: x * x[:1],  # strided: one operand broadcast over the rows (a scale per column)
               # a mixture of experts' routing: top-k, the picked rows, their outputs added back
               lambda x: torch.topk(x, 2, dim=-1), lambda x: x.index_select(0, halves[x.shape[0]]),
               lambda x: x.index_add_(0, halves[x.shape[0]], x[1::2])]
    # In a model step an op's input was just written by the op before it: its data sit in the
    # caches as far as their size allows, and so does the dispatcher's state. Each op here is
    # measured after an in-place write of its input. (A fixed buffer written before every op
    # measured a context of its own: after a 4 MiB write a 1024-element add took 7.9 us on a
    # Xeon with 2 MiB of L2, where a model step's ops of that size take 3-4; on a Zen 4 EPYC
    # with 1 MiB it had come close to them.)
    def produce(x):
        x.mul_(1)
    # A large GEMM leaves the next op on a CPU several times slower than a model step's small ops
    # run (a 1x64x256 mm: 44 us right after a 256x1024x1024 one, 6 us back to back): small GEMMs
    # are measured like the other small ops, the large ones last, and a few tiny ops after them
    # take that penalty instead of the next repeat's first op.
    small = [(a, b) for a, b in gemms if a.nbytes + b.nbytes <= SMALL_GEMM_BYTES]
    large = [(a, b) for a, b in gemms if a.nbytes + b.nbytes > SMALL_GEMM_BYTES]
    settle = torch.randn(16, device=device, dtype=dtype)

    def step():
        for _ in range(REPEATS):
            for a, b in small:
                produce(b)  # a small model's weights sit in the caches too
                produce(a)
                torch.mm(a, b)
            for a, b in batched:
                produce(a)
                torch.bmm(a, b)
            for x in vectors:
                for op in vector_ops:
                    produce(x)
                    op(x)
            for x in matrices:
                for op in row_ops:
                    produce(x)
                    op(x)
            for q, kv in attention:
                produce(q)
                torch.nn.functional.scaled_dot_product_attention(q, kv, kv, is_causal=q.shape[2] == kv.shape[2],
                                                                 enable_gqa=kv.shape[1] < q.shape[1])
            for index in ids:
                produce(index)
                torch.nn.functional.embedding(index, table)
            for x, weight, bias in convs:
                produce(x)
                torch.nn.functional.conv1d(x, weight, bias, groups=weight.shape[0])
            for a, b in large:
                torch.mm(a, b)
            for _ in range(SETTLE_OPS):
                torch.neg(settle)
    return step


def timed_ops(run, device: str, warmup: int) -> pd.DataFrame:
    """The ops of one run of `run` with their measured times (measured_s). On a CPU, each op
    as traced in real mode (memsim.trace.capture: wall clock with ATen dispatch). On a GPU,
    each kernel as the profiler timed it (memsim.trace.kineto), priced from its launching op's
    shapes: CUDA events around an op would also time the host's launch gaps, since a GPU that
    waits for the host runs the start event at once (on an H100 the micro-benchmarks' fitted
    fixed costs came to 36-100 us by events, 1-5 us by kernels)."""
    if device == "cuda":
        from memsim.trace.kineto import load_kineto, record_kineto

        with tempfile.TemporaryDirectory() as folder:
            return load_kineto(record_kineto(run, f"{folder}/run.json", warmup)).ops
    from memsim.trace.capture import capture

    return capture(run, mode="real", device=device, warmup=warmup).ops


def measure_device(device: str, progress=None) -> pd.DataFrame:
    """Measured ops (trace columns plus measured_s, label, size) of this machine's `device`."""
    check_device(device)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    step = _micro_step(device, dtype)
    # on a GPU an op may launch several kernels (a matmul and its split-K reduction): one row each
    keys = ["name", "shapes", "dtype"] + (["kernel"] if device == "cuda" else [])
    ops, fastest = fastest_of_rounds(lambda ops: ops.groupby(keys)["measured_s"].min(), step, device,
                                     f"ops on {device}", progress)
    # what ran since each op's kind last ran (memsim.cost.op_arrays.since_reuse): the typical of
    # its repeats, whose fastest time it keeps (the first repeat follows other kinds' ops)
    kinds_since, bytes_since = since_reuse(ops)
    warmth = (ops.assign(kinds_since_reuse=kinds_since, bytes_since_reuse=bytes_since)
              .groupby(keys)[["kinds_since_reuse", "bytes_since_reuse"]].median())
    ops = ops[ops["category"].isin(("gemm", "conv", "attention", "elementwise", "strided", "factory", "copy",
                                      "reduction", "norm", "gather"))]
    ops = (ops.drop_duplicates(keys).drop(columns="measured_s").merge(fastest.reset_index(), on=keys)
           .merge(warmth.reset_index(), on=keys))
    ops["label"] = ops["name"]
    ops["size"] = ops["bytes_read"] + ops["bytes_written"] + ops["flops"]
    if device == "cuda":
        ops = pd.concat([ops, pd.DataFrame(_host_copies(progress))], ignore_index=True)
    return ops.sort_values(["category", "name", "size"], kind="stable").reset_index(drop=True)


# The reuse-distance micro-benchmarks (Calibration.warm_overhead): small ops run again after an
# in-place write of this many bytes between, which pushes their code and state out of the caches
# as the write grows past them; and cycles of this many distinct small op kinds, which do so by
# kind alone (each kind run again after the others in its cycle), to weigh one kind in bytes.
WARMTH_WRITE_BYTES = (0, 1 << 16, 1 << 18, 1 << 19, 1 << 20, 3 << 19, 1 << 21, 3 << 20, 1 << 22, 3 << 21, 1 << 23,
                      3 << 22, 1 << 24, 1 << 25)
WARMTH_CYCLE_KINDS = (1, 2, 3, 5, 9, 17, 33)
WARMTH_REPEATS = 6
# Kinds' footprints tried when weighing one kind (bytes, geometric)
KIND_FOOTPRINTS = np.geomspace(1 << 10, 1 << 20, 61)


def _warmth_steps():
    """The two reuse-distance micro-benchmarks (written bytes, then kind cycles): small ops on
    4 x 64 values, the kinds a model step runs."""
    x = torch.rand(4, 64) * 0.8 + 0.1
    weight, ids, batched, mask = torch.rand(64, 64), torch.tensor([1, 2, 3]), torch.rand(4, 8, 8), x > 0.5
    functional = torch.nn.functional
    kinds = [lambda t: t + t, lambda t: t * t, lambda t: t - t, lambda t: t / t, torch.neg, torch.exp,
             lambda t: t.pow(2), torch.rsqrt, lambda t: t.mean(-1), lambda t: t.sum(-1), lambda t: torch.cat([t, t]),
             lambda t: t.clone(), lambda t: t.softmax(-1), functional.silu, torch.sigmoid, torch.tanh,
             lambda t: t.cumsum(-1), lambda t: t.masked_fill(mask, 0.0), lambda t: t.amax(-1), lambda t: t @ weight,
             lambda t: torch.bmm(batched, batched), lambda t: functional.embedding(ids, weight),
             lambda t: torch.arange(64), lambda t: torch.zeros(4, 64), lambda t: torch.ones(4, 64),
             lambda t: t.index_select(0, ids), lambda t: t.topk(2, -1).values, lambda t: t.clamp(0.2, 0.7),
             lambda t: torch.maximum(t, t), lambda t: t.lt(0.5), lambda t: t.eq(t),
             lambda t: functional.layer_norm(t, (64,)), torch.abs]
    buffers = [torch.rand(max(size // 4, 1)) for size in WARMTH_WRITE_BYTES]
    probes = kinds[:4]

    def written():
        for buffer in buffers:
            for _ in range(WARMTH_REPEATS):
                buffer.mul_(1.0)
                for op in probes:
                    op(x)

    def cycled():
        for count in WARMTH_CYCLE_KINDS:
            for _ in range(WARMTH_REPEATS):
                for op in kinds[:count]:
                    op(x)
    return written, cycled


def measure_warm_overhead(progress=None) -> tuple[dict[int, float], float]:
    """This CPU's Calibration.warm_overhead and kind_footprint from the reuse-distance
    micro-benchmarks (_warmth_steps), each timed in rounds until its fastest times settle."""
    tables = []
    for step in _warmth_steps():  # each op by its place in the run, which says what ran before it
        ops, fastest = fastest_of_rounds(lambda ops: pd.Series(ops["measured_s"].to_numpy(float)), step, "cpu",
                                         "op warmth on cpu", progress)
        tables.append(ops.assign(measured_s=fastest.to_numpy()))
    probes = _written_probes(tables[0])
    footprint = kind_footprint(probes, tables[1])
    distances, shares = warm_overhead_points(probes, footprint)
    return {int(distance): round(float(share), 4) for distance, share in zip(distances, shares)}, footprint


def _with_reuse(ops: pd.DataFrame, group_of) -> pd.DataFrame:
    """The ops of a micro-benchmark run in run order with their kinds and bytes since reuse, a
    group each (`group_of` those ops; -1 leaves one out), and their time as a share of their
    kind's median time in the last group (the coldest)."""
    kinds_since, bytes_since = since_reuse(ops)
    ops = ops.assign(kinds_since=kinds_since, bytes_since=bytes_since)
    ops = ops.assign(group=group_of(ops))
    ops = ops[ops["group"] >= 0]
    cold = ops[ops["group"] == ops["group"].max()].groupby("name")["measured_s"].median()
    return ops.assign(share=ops["measured_s"] / ops["name"].map(cold))


def _written_probes(written: pd.DataFrame) -> pd.DataFrame:
    """The written-bytes micro-benchmark's small ops after each write but its first of a size."""
    writes = np.cumsum(written["name"].to_numpy() == "aten::mul_")  # the repeat each op belongs to
    ops = _with_reuse(written.assign(repeat=writes - 1), lambda ops: ops["repeat"] // WARMTH_REPEATS)
    return ops[(ops["name"] != "aten::mul_") & (ops["repeat"] % WARMTH_REPEATS > 0)]


def warm_overhead_points(probes: pd.DataFrame, kind_footprint: float) -> tuple[np.ndarray, np.ndarray]:
    """(reuse distances in bytes, an op's time there as a share of a cold one's) from the
    written-bytes micro-benchmark's probes (_written_probes): per write size, the median distance
    and share of the small ops after it. Non-decreasing in the distance (more between never
    warms an op), at most 1."""
    probes = probes.assign(distance=reuse_distance(probes["kinds_since"], probes["bytes_since"], kind_footprint))
    points = probes.groupby("group")[["distance", "share"]].median().sort_values("distance")
    return points["distance"].to_numpy(), np.maximum.accumulate(np.minimum(points["share"].to_numpy(), 1.0))


def kind_footprint(probes: pd.DataFrame, cycled: pd.DataFrame) -> float:
    """The bytes one distinct kind run between weighs in an op's reuse distance: the footprint
    (of KIND_FOOTPRINTS) with which the written-bytes curve (warm_overhead_points) best predicts
    how the kind-cycle micro-benchmark's ops slow as their cycles grow (least squares of the
    log shares, up to a common factor: the largest cycle need not be as cold as the largest
    write)."""
    designed = [count - 1 for count in WARMTH_CYCLE_KINDS]
    ops = _with_reuse(cycled, lambda ops: ops["kinds_since"].where(ops["kinds_since"].isin(designed), -1.0))
    observed = ops.groupby("group")[["share", "kinds_since", "bytes_since"]].median()

    def misfit(footprint: float) -> float:
        distances, shares = warm_overhead_points(probes, footprint)
        at = reuse_distance(observed["kinds_since"].to_numpy(), observed["bytes_since"].to_numpy(), footprint)
        errors = np.log(observed["share"].to_numpy() / np.interp(at, distances, shares))
        return float(np.sum((errors - errors.mean()) ** 2))  # shares of either's own coldest: scale-free

    return float(min(KIND_FOOTPRINTS, key=misfit))


def fastest_of_rounds(times, step, device: str, what: str, progress=None) -> tuple[pd.DataFrame, pd.Series]:
    """The last round's timed ops of `step` and each op's fastest time over the rounds (`times`
    of a round's ops: one entry per op as the caller counts them), rounds run until settled."""
    ops, fastest = None, []
    while len(fastest) < MAX_ROUNDS and not settled(fastest):
        if progress:
            progress(f"measuring {what} (round {len(fastest) + 1}, at most {MAX_ROUNDS})")
        ops = timed_ops(step, device, warmup=1 if ops is None else 0)  # the same ops each round
        fastest.append(times(ops) if not fastest else np.fmin(fastest[-1], times(ops)))
    return ops, fastest[-1]


def settled(fastest: list[pd.Series]) -> bool:
    """Whether the last SETTLED_ROUNDS rounds took less than SETTLED_GAIN off the ops' fastest
    times on average (after MIN_ROUNDS at least)."""
    if len(fastest) < max(MIN_ROUNDS, SETTLED_ROUNDS + 1):
        return False
    gain = 1.0 - fastest[-1] / fastest[-1 - SETTLED_ROUNDS]
    return float(gain.mean()) < SETTLED_GAIN


def _host_copies(progress=None) -> list[dict]:
    """Pinned host-to-device copies by size, timed with CUDA events."""
    if progress:
        progress("measuring host-to-device copies")
    rows = []
    for nbytes in COPY_BYTES:
        host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        target = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
        times = []
        for _ in range(REPEATS + 1):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            target.copy_(host, non_blocking=True)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        seconds = sorted(times[1:])[len(times[1:]) // 2]
        row = op_row("Memcpy HtoD (Pinned -> Device)", "memcpy", "uint8", 0, nbytes, nbytes, seconds, nbytes,
                     attrs={"direction": "HtoD", "pinned": True})
        rows.append(row)
    return rows


# A GEMM large enough to keep every SM busy, run back to back long enough for the GPU's power
# controller (which averages over about 0.1 s) to settle at its limit.
SUSTAINED_GEMM = 8192
SUSTAINED_SECONDS = 1.5


def sustained_matrix_rate(progress=None) -> float:
    """bf16 FLOP/s of large GEMMs run back to back for SUSTAINED_SECONDS: the rate the GPU holds
    at its power limit (median of the last runs, each timed with CUDA events)."""
    if progress:
        progress(f"measuring {SUSTAINED_SECONDS:g} s of back-to-back GEMMs (the power-capped rate)")
    a, b = (torch.randn(SUSTAINED_GEMM, SUSTAINED_GEMM, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    keep_busy(lambda: a @ b, SUSTAINED_SECONDS)
    return 2.0 * SUSTAINED_GEMM ** 3 / sorted(event_seconds(lambda: a @ b, 2 * REPEATS))[REPEATS]


def keep_busy(run, seconds: float) -> None:
    """Run `run` back to back on the GPU for about `seconds` of wall time."""
    import time

    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        for _ in range(10):
            run()
        torch.cuda.synchronize()


def event_seconds(run, count: int, between=None) -> list[float]:
    """Seconds of `count` runs of `run` issued back to back on the GPU, each between two CUDA
    events (with `between`, untimed, after each)."""
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(count)]
    for start, end in events:
        start.record()
        run()
        end.record()
        if between:
            between()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / 1e3 for start, end in events]


def check_device(device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise MemsimError(f"--device {device!r}: expected cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise MemsimError("--device cuda: torch sees no CUDA device on this machine")


def machine_description(device: str) -> str:
    check_device(device)
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{_first_cpu().get('model name') or 'CPU'} ({os.cpu_count()} cores)"


def _first_cpu(cpuinfo: str | None = None) -> dict[str, str]:
    """The fields /proc/cpuinfo (or the text given) states of its first processor; {} without it."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as handle:
                cpuinfo = handle.read()
        except OSError:
            return {}
    fields = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_core_peaks(cpuinfo: str | None = None) -> dict | None:
    """One core's fp32 (and bf16) peaks from the CPU's own description (/proc/cpuinfo), or None
    where it does not say enough (not Linux on x86): the datasheet of the machine calibrated.

        fp32 matrix peak = FMA pipes x fp32 lanes per pipe x 2 FLOPs x clock
        vector peak      = half of it (elementwise ops issue one operation per lane, not two)
        bf16 matrix peak = twice the fp32 one where AVX512_BF16 dot products exist

    Lanes: 16 with AVX-512, 8 with AVX2, else 4. Pipes: 2 on Intel cores with AVX-512 (Xeon
    Scalable) and on any core with AVX2 only; 1 on AMD family 25 (Zen 4 runs a 512-bit FMA over
    its two 256-bit pipes); 2 on AMD family 26 (Zen 5). Clock: the reported one (a VM's
    nominal; at_achieved_peak raises the peaks where the cores boost past it). On a 2.6 GHz
    Sapphire Rapids vCPU this gives 166 GFLOP/s; one core's 256 x 1024 x 1024 fp32 matmul ran at
    160 in one session and 185-197 in another.
    """
    fields = _first_cpu(cpuinfo)
    flags = set(fields.get("flags", "").split())
    try:
        clock = float(fields["cpu MHz"]) * 1e6
    except (KeyError, ValueError):
        return None
    if not flags & {"avx512f", "avx2", "sse2"}:
        return None
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    family = int(fields.get("cpu family", "")) if fields.get("cpu family", "").isdigit() else 0
    pipes = 1 if fields.get("vendor_id") == "AuthenticAMD" and lanes == 16 and family < 26 else 2
    fp32 = pipes * lanes * 2.0 * clock
    matrix = {"fp32": fp32, **({"bf16": 2 * fp32} if "avx512_bf16" in flags else {})}
    return {"matrix_flops": matrix, "vector_flops": {"fp32": fp32 / 2},
            "source": f"{pipes} x {lanes * 32}-bit FMA pipes at {clock / 1e9:.2f} GHz per core (from /proc/cpuinfo)"}


# Micro-benchmarks that move at least this much (past a core's L2) show the rate a core streams.
STREAM_MIN_BYTES = 4 << 20


def streaming_bandwidth(ops: pd.DataFrame) -> float | None:
    """Bytes/s the fastest large elementwise op or copy of a CPU measurement moved, counting reads
    and writes (STREAM's idea): the rate this core's memory hierarchy streams at, which a generic
    config's datasheet figure cannot know (a 2-vCPU slice of a Sapphire Rapids host streams 42-57
    GB/s on one core, where generic-x86-cpu states 25 for two). None without such ops."""
    moved = ops["bytes_read"] + ops["bytes_written"]
    large = ops[(moved >= STREAM_MIN_BYTES) & ops["category"].isin(["elementwise", "copy"])
                & (ops["measured_s"] > 0)]
    if large.empty:
        return None
    return float(((large["bytes_read"] + large["bytes_written"]) / large["measured_s"]).max())


# GEMMs of at least this many FLOPs run long enough to show a core's sustained matrix rate.
PEAK_MIN_FLOPS = 1e8


def at_achieved_peak(core_peaks: dict | None, ops: pd.DataFrame) -> dict | None:
    """One core's peaks (cpu_core_peaks) raised to what its fastest large fp32 GEMM of the
    measurement reached, where that is more: a VM reports its nominal clock, and cores that boost
    past it outrun the peaks it gives (a Sapphire Rapids vCPU reported at 2.6 GHz ran a 256 x 1024
    x 1024 fp32 matmul at 185 GFLOP/s, over the 166 its two FMA pipes give at 2.6 GHz). Every
    peak scales alike, as a clock would; the empirical roofline's idea (the Empirical Roofline
    Toolkit measures a machine's peaks the same way)."""
    if not core_peaks:
        return core_peaks
    gemms = ops[(ops["category"] == "gemm") & (ops["dtype"] == "fp32") & (ops["flops"] >= PEAK_MIN_FLOPS)
                & (ops["measured_s"] > 0)]
    achieved = float((gemms["flops"] / gemms["measured_s"]).max()) if len(gemms) else 0.0
    scale = achieved / core_peaks["matrix_flops"]["fp32"]
    if scale <= 1.0:
        return core_peaks
    scaled = {key: {d: rate * scale for d, rate in core_peaks[key].items()} for key in ("matrix_flops", "vector_flops")}
    return {**scaled,
            "source": f"{core_peaks['source']}, raised to the {achieved / 1e9:.0f} GFLOP/s a large GEMM reached "
                      f"(the core runs {scale:.2f}x that clock)"}


def stderr_progress(message: str) -> None:
    print(f"memsim: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def single_thread(device: str):
    """On the CPU, run torch on one thread: on a shared machine a parallel region waits for
    every thread's core, so multi-threaded op times measure the neighbours' load. Yields the
    thread count used (None on a GPU)."""
    if device != "cpu":
        yield None
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield 1
    finally:
        torch.set_num_threads(before)
