"""Analytical kernel models: pure numba functions over arrays, one entry per (op, hardware) pair.

Every function takes arrays of problem sizes and arrays of hardware rates of the same length, so
one call prices a whole trace on one machine, or one op on thousands of hardware variants (repeat
the op, vary the rates). Seconds, bytes and FLOP/s throughout; nothing here knows about traces.
"""
from __future__ import annotations

import math

import numba
import numpy as np

# Output tile shapes (rows, cols) a GEMM library chooses among; CUTLASS/cuBLAS ship these sizes.
GEMM_TILES = np.array([[256.0, 128.0], [128.0, 256.0], [128.0, 192.0], [128.0, 128.0], [128.0, 64.0],
                       [64.0, 128.0], [64.0, 64.0]])
# Largest power of two looked for in a row's length (1 MiB); no partition map repeats beyond it.
MAX_PITCH_POWER = 2.0 ** 20
# Smallest K slice worth splitting a GEMM over (split-K), as cuBLAS heuristics do.
MIN_SPLIT_K = 256.0
# Query rows one FlashAttention thread block keeps on chip at most (FlashAttention-2's Br).
FLASH_MAX_BLOCK_ROWS = 128.0
# Keys' worth of work a block of query rows pays besides its K/V steps: loading its Q tile,
# rescaling and writing its O tile cost about one step. FlashAttention-2 at head dim 64 on an
# H100 runs at 180 TFLOP/s for 512 causal tokens and 282 non-causal, against 299 and 324 at
# 16k (FlashAttention-3 paper, Fig. 4): 2.5 and 4 steps per block plus ~one each.
FLASH_BLOCK_SETUP_KEYS = 128.0
# Query rows per thread block of FlashAttention-2's KV-cache (split-KV) kernel, and its blocks
# resident per SM (flash-attn's num_splits heuristic counts two).
KV_APPEND_BLOCK_ROWS = 64.0
KV_CACHE_BLOCKS_PER_UNIT = 2.0


@numba.njit(cache=True)
def overlapped(compute_s, memory_s, overlap_loss):
    """Time of a kernel that pipelines its arithmetic with its memory traffic imperfectly.

    Idea: the roofline takes max(compute, memory), i.e. perfect overlap; real pipelines stall
    at their start and end and on bank conflicts, so a fraction of the shorter side shows
    (the "overlap" correction of e.g. Yang et al.'s hierarchical roofline practice).
        time = max(c, m) + overlap_loss * min(c, m)
    """
    return max(compute_s, memory_s) + overlap_loss * min(compute_s, memory_s)


@numba.njit(cache=True)
def gemm_times(batch, m, n, k, bytes_moved, matrix_peak, units, bandwidth, overhead, overlap_loss,
               first_wave_exposure, wave_quantization, elem_bytes, operand_bandwidth):
    """GEMM time from output tiles run in waves over the compute units (wave quantisation).

    Idea: the tile/wave model of NVIDIA's "Matrix multiplication background" guide and of
    LLMCompass (Zhang et al., ISCA 2024). The output (batch x m x n) is cut into tiles of
    tm x tn; each unit computes one tile at a time, so a GEMM takes w = ceil(tiles / units)
    waves of 2*r*tn*K / (peak/units) each, with r = min(tm, m) rows (skinny GEMMs run as
    GEMV-like kernels that do not pad). With fewer tiles than units, K is split over s idle
    units (split-K). Operands are reused through L2, so HBM sees the op's bytes once. The first
    wave cannot hide the loads that start its pipeline: a share e of one wave's worth of the
    shorter side shows (e = 1 when each unit fetches all its operands before it computes; a
    multi-stage pipeline starts computing sooner, so a calibration fits e). Later waves prefetch
    while earlier ones compute, so that exposed share falls as e/w. A library picks among tiles,
    split-K and stream-K schedules by heuristics of its own, so where its wave steps fall (and
    whether it balances a partial last wave) is uncertain: a calibrated q in [0, 1] charges the
    whole last wave (q = 1, the tile/wave model) or only its share of the tiles (q = 0), so the
    steps the data does not show are not predicted. A tile's operands stream into its unit from
    the on-chip cache, (r + tn) elements of b bytes per step of K against 2*r*tn FLOPs, each
    unit drawing its share L/U of the cache's bandwidth: a small tile reuses each operand too few
    times to keep the matrix units busy, which is why libraries prefer large tiles (the
    arithmetic-intensity argument of NVIDIA's guide and of CUTLASS's tile sizes). The main loop
    runs at the slowest of its three streams (arithmetic, memory, cache feed); the pipeline's
    start and end expose the share above of the shorter of arithmetic and memory (the feed of a
    skinny GEMM's weights is their memory stream itself, so it is not counted twice). L = 0
    where no cache sits in front of the unit's memory. The library picks the tile that
    finishes first:

        w     = q * ceil(tiles*s / U) + (1 - q) * max(1, tiles*s / U)
        c_t   = w * 2*r*tn*ceil(K/s) / (P/U)
        f_t   = w * (r + tn)*b*ceil(K/s) / (L/U)
        m     = bytes_moved / B
        total = min over tiles of max(c_t, m, f_t) + max(overlap_loss, e/w) * min(c_t, m) + overhead

    Returns (compute_s, memory_s, total_s) of the chosen tile; compute_s is the longer of its
    arithmetic and its feed, the time its units are held.
    """
    count = m.shape[0]
    compute = np.zeros(count)
    memory = np.zeros(count)
    total = np.zeros(count)
    for i in range(count):
        base_memory = bytes_moved[i] / bandwidth[i] if bandwidth[i] > 0.0 else 0.0
        if m[i] <= 0 or n[i] <= 0 or k[i] <= 0 or matrix_peak[i] <= 0.0:
            memory[i] = base_memory
            total[i] = base_memory + overhead[i]
            continue
        per_unit_flops = matrix_peak[i] / units[i]
        problems = max(batch[i], 1.0)
        best = np.inf
        for t in range(GEMM_TILES.shape[0]):
            tm = GEMM_TILES[t, 0]
            tn = GEMM_TILES[t, 1]
            tiles = problems * math.ceil(m[i] / tm) * math.ceil(n[i] / tn)
            splits = 1.0
            if tiles < units[i]:
                splits = max(1.0, min(math.floor(units[i] / tiles), math.floor(k[i] / MIN_SPLIT_K)))
            k_slice = math.ceil(k[i] / splits)
            share = tiles * splits / units[i]
            q = wave_quantization[i]
            waves = q * math.ceil(share) + (1.0 - q) * max(1.0, share)
            rows = min(tm, m[i])
            arithmetic = waves * 2.0 * rows * tn * k_slice / per_unit_flops
            feed = 0.0
            if operand_bandwidth[i] > 0.0:
                feed = waves * (rows + tn) * elem_bytes[i] * k_slice / (operand_bandwidth[i] / units[i])
            exposed = max(overlap_loss[i], first_wave_exposure[i] / waves)
            candidate = max(arithmetic, base_memory, feed) + exposed * min(arithmetic, base_memory)
            if candidate < best:
                best = candidate
                compute[i] = max(arithmetic, feed)  # the units wait on the feed
                memory[i] = base_memory
        total[i] = best + overhead[i]
    return compute, memory, total


@numba.njit(cache=True)
def _pitch_power(row_bytes):
    """Largest power of two dividing a row's length in bytes, at most MAX_PITCH_POWER (1 when
    the length is odd or fractional)."""
    power = 1.0
    while power < MAX_PITCH_POWER and row_bytes % (2.0 * power) == 0.0:
        power *= 2.0
    return power


@numba.njit(cache=True)
def aligned_fraction(k, n, elem_bytes, alignment):
    """Fraction of the matrix rate a GEMM keeps when its rows are not aligned to the load width.

    Idea: CUTLASS and cuBLAS kernels load operand tiles with vector loads of `alignment` bytes
    (a power of two: the kernels' alignment parameter, align8 for 16-bit types, align4 for
    fp32); when a row length (K for A, N for B and C, in bytes) is not a multiple of that, the
    library falls back to kernels that load as many bytes as the row length allows, issuing
    alignment/width times the load instructions, and the main loop is bound by issuing them.
        width    = largest power of two dividing both K*b and N*b, at most `alignment`
        fraction = width / alignment            (1 where alignment is 0: no requirement)
    """
    count = k.shape[0]
    out = np.ones(count)
    for i in range(count):
        if alignment[i] <= 0.0:
            continue
        width = min(alignment[i], _pitch_power(k[i] * elem_bytes[i]), _pitch_power(n[i] * elem_bytes[i]))
        out[i] = width / alignment[i]
    return out


@numba.njit(cache=True)
def pitch_conflict_fraction(k, elem_bytes, interleave, cost):
    """Fraction of the matrix rate a GEMM (or fused attention) keeps when its operands' row pitch
    is a multiple of a large power of two.

    Idea: memory is interleaved over partitions (DRAM channels, L2 slices) by address bits.
    Rows whose pitch is a multiple of 2^p differ only in the bits from p up, so the rows of a
    tile, loaded together, fall in fewer partitions the larger p is and queue there: the
    "partition camping" of Ruetsch and Micikevicius ("Optimizing Matrix Transpose in CUDA",
    NVIDIA, 2009), the reason BLAS libraries special-case leading dimensions that are multiples
    of 1024 (clBLAS, CLBlast). Partitions interleave at no finer than the memory's access
    granularity g, so pitches up to g spread like contiguous data; address hashing spreads most
    of the rest, so the loss grows step by step with p rather than at a cliff: c, calibrated per
    machine, is the extra main-loop time per doubling of the pitch's power of two beyond g. Both
    operands of a linear layer (x W^T) have rows of K elements; the K and V rows of fused
    attention are one token apart, kv_heads x head_dim elements (pass that as k).
        d        = log2(largest power of two dividing K*b / g), at least 0
        fraction = 1 / (1 + c * d)              (1 where g or c is 0)
    """
    return 1.0 / (1.0 + cost * pitch_doublings(k, elem_bytes, interleave))


@numba.njit(cache=True)
def pitch_doublings(k, elem_bytes, interleave):
    """d of pitch_conflict_fraction: doublings of the power of two in K*b beyond the interleave
    (0 where the interleave is 0)."""
    count = k.shape[0]
    out = np.zeros(count)
    for i in range(count):
        if interleave[i] > 0.0:
            out[i] = max(0.0, math.log2(_pitch_power(k[i] * elem_bytes[i]) / interleave[i]))
    return out


@numba.njit(cache=True)
def _flash_passes(q_len, head_dim, elem_bytes, sram_per_unit):
    """Passes a fused attention kernel makes over K and V: one per block of Br query rows, with
    Br = min(128, SRAM / (4 * d * b)) (see flash_attention_bytes)."""
    rows = FLASH_MAX_BLOCK_ROWS
    if sram_per_unit > 0.0:
        rows = max(16.0, min(FLASH_MAX_BLOCK_ROWS, math.floor(sram_per_unit / (4.0 * head_dim * elem_bytes))))
    return math.ceil(max(q_len, 1.0) / rows)


@numba.njit(cache=True)
def flash_attention_bytes(problems, q_len, kv_len, head_dim, value_dim, kv_heads_ratio, elem_bytes, sram_per_unit):
    """HBM bytes of a fused, tiled attention kernel (FlashAttention IO analysis).

    Idea: Dao et al., "FlashAttention" (NeurIPS 2022), Theorem 2: Q and O cross HBM once, while
    K and V are streamed once per block of Br query rows kept in SRAM, Br = min(128, SRAM /
    (4 * d * b)) (Q block, O accumulator and the K, V blocks on chip). With grouped-query
    attention (kv_heads_ratio = kv_heads / heads) the K, V bytes shrink by that ratio. Decode
    (one query row) therefore reads the KV cache exactly once: the KV-read-bound case.

        bytes = P*b*(q*d + q*dv) + P*r*b*kv*(d + dv) * ceil(q / Br)
    """
    count = problems.shape[0]
    out = np.zeros(count)
    for i in range(count):
        passes = _flash_passes(q_len[i], head_dim[i], elem_bytes[i], sram_per_unit[i])
        q_o = problems[i] * elem_bytes[i] * q_len[i] * (head_dim[i] + value_dim[i])
        k_v = problems[i] * kv_heads_ratio[i] * elem_bytes[i] * kv_len[i] * (head_dim[i] + value_dim[i])
        out[i] = q_o + k_v * passes
    return out


@numba.njit(cache=True)
def flash_attention_cached_rereads(problems, q_len, kv_len, head_dim, value_dim, kv_heads_ratio, elem_bytes,
                                   sram_per_unit, units, cache_bytes):
    """Bytes of a fused attention kernel's K/V re-reads (the passes after the first, see
    flash_attention_bytes) that the last-level cache serves instead of memory.

    Idea: the FlashAttention IO bound counts SRAM only. On a GPU with an L2 the query blocks of
    one head run at the same time on different units and read the same K and V, so after the
    first pass they hit the L2 as long as the K/V of the heads in flight fit in it. About U
    blocks are in flight, i.e. ceil(U / blocks_per_head) heads:
        in_flight = min(P, ceil(U / ceil(q / Br)))
        cached    = (passes - 1) * K/V bytes  if in_flight * r * kv * (d + dv) * b <= cache else 0
    """
    count = problems.shape[0]
    out = np.zeros(count)
    for i in range(count):
        passes = _flash_passes(q_len[i], head_dim[i], elem_bytes[i], sram_per_unit[i])
        per_head = kv_heads_ratio[i] * elem_bytes[i] * kv_len[i] * (head_dim[i] + value_dim[i])
        in_flight = min(max(problems[i], 1.0), math.ceil(units[i] / passes))
        if passes > 1 and in_flight * per_head <= cache_bytes[i]:
            out[i] = (passes - 1) * max(problems[i], 1.0) * per_head
    return out


@numba.njit(cache=True)
def _kv_cache_key_block(head_dim):
    """Keys per block of FlashAttention-2's KV-cache kernel: 256, 128 or 64 for head dims up to
    64, up to 128 and beyond (flash-attn's kernel traits)."""
    return 256.0 if head_dim <= 64.0 else (128.0 if head_dim <= 128.0 else 64.0)


@numba.njit(cache=True)
def appended_kv_copy_bytes(problems, q_len, kv_len, head_dim, value_dim, elem_bytes):
    """Bytes a fused attention kernel moves when it appends the new keys and values to the KV
    cache itself, each query block copying the ones it sees before its main loop.

    Idea: FlashAttention-2's KV-cache kernel (flash_attn_with_kvcache given k and v, as
    sarathi-serve and Vidur's profiler call it) writes the new K/V rows into the cache from every
    thread block that reads them: one block per Bm = 64 query rows of each query head ("all
    threadblocks responsible for the same KV head are writing ... the same content", flash-attn
    source), each copying, before its main loop, the new rows from the first key block holding one
    up to the end of the last key block its causal limit reaches (Bn keys, _kv_cache_key_block),
    so its copies grow with the square of the new tokens.
    Each row is read and written once per copy. With c = kv - q cached keys, block j's rows end
    at key e_j = c + min((j + 1) * Bm, q):
        rows_j = min(ceil(e_j / Bn) * Bn, kv) - c
        bytes  = P * sum_j rows_j * (d + dv) * b * 2
    """
    count = problems.shape[0]
    out = np.zeros(count)
    for i in range(count):
        q = max(q_len[i], 1.0)
        cached = max(kv_len[i] - q, 0.0)
        key_block = _kv_cache_key_block(head_dim[i])
        rows = 0.0
        for j in range(int(math.ceil(q / KV_APPEND_BLOCK_ROWS))):
            end = cached + min((j + 1) * KV_APPEND_BLOCK_ROWS, q)
            rows += min(math.ceil(end / key_block) * key_block, kv_len[i]) - cached
        out[i] = max(problems[i], 1.0) * rows * (head_dim[i] + value_dim[i]) * elem_bytes[i] * 2.0
    return out


@numba.njit(cache=True)
def unfused_attention_bytes(problems, q_len, kv_len, head_dim, value_dim, kv_heads_ratio, elem_bytes):
    """HBM bytes of attention run as separate kernels: QK^T, softmax, PV.

    Idea: the standard-attention IO count of the FlashAttention paper (Algorithm 0): the q x kv
    score matrix S is written by QK^T, read and written by softmax (P), and read by PV, on top
    of reading Q, K, V once and writing O once.

        bytes = P*b*(q*d + r*kv*(d + dv) + q*dv) + 4*P*b*q*kv
    """
    count = problems.shape[0]
    out = np.zeros(count)
    for i in range(count):
        operands = problems[i] * elem_bytes[i] * (
            q_len[i] * head_dim[i] + kv_heads_ratio[i] * kv_len[i] * (head_dim[i] + value_dim[i]) + q_len[i] * value_dim[i])
        scores = 4.0 * problems[i] * elem_bytes[i] * q_len[i] * kv_len[i]
        out[i] = operands + scores
    return out


@numba.njit(cache=True)
def kv_cache_splits(blocks, units, kv_len, head_dim):
    """Key splits FlashAttention-2's KV-cache kernel runs each block of query rows in.

    Idea: flash-attn's num_splits heuristic (flash_api.cpp). With blocks enough to fill 80% of
    the 2U block slots (two 128-thread blocks per SM) it does not split; otherwise it computes
    the wave efficiency e_s = n / ceil(n) of n = blocks * s / 2U waves for each s up to
    min(128, 2U, key blocks) that changes the key blocks per split, and picks the smallest s
    within 85% of the best.
    """
    slots = KV_CACHE_BLOCKS_PER_UNIT * units
    if blocks >= 0.8 * slots:
        return 1.0
    key_blocks = math.ceil(max(kv_len, 1.0) / _kv_cache_key_block(head_dim))
    most = int(min(128.0, slots, key_blocks))
    efficiency = np.zeros(most + 1)  # 0 where a split count leaves the key blocks per split as they were
    for s in range(1, most + 1):
        if s == 1 or math.ceil(key_blocks / s) != math.ceil(key_blocks / (s - 1)):
            waves = blocks * s / slots
            efficiency[s] = waves / math.ceil(waves)
    for s in range(1, most + 1):
        if efficiency[s] > 0.0 and efficiency[s] >= 0.85 * efficiency.max():
            return float(s)
    return 1.0


@numba.njit(cache=True)
def attention_times(problems, q_len, kv_len, head_dim, value_dim, causal, flops, bytes_moved, matrix_peak, units,
                    bandwidth, overhead, overlap_loss, kv_cache_kernel, kv_head_ratio, block_bandwidth):
    """Fused attention time: blocks of Br query rows per (batch, head), spread over the units.

    Idea: FlashAttention-2 (Dao 2023) gives each block of query rows to one unit, which walks
    the key/value blocks that block sees: all of them, or with a causal mask (queries aligned
    to the end of the keys) only those up to its last row, so later blocks work longer. The
    work is scheduled like jobs on U machines, whose makespan is at least the mean load and at
    least the longest job (Graham's list-scheduling bound); few or unequal blocks (short
    prompts, decode, causal) leave units idle, unless there are fewer blocks than units: then
    the kernel splits each block's keys over s = floor(U / (P * blocks)) units (split-KV, as
    flash-decoding does). FlashAttention-2's KV-cache kernel (kv_cache_kernel) runs blocks of
    Br = 64 rows and picks s by its own heuristic (kv_cache_splits); its forward kernel's Br is
    128. For a decode (one query row) it runs the query heads that share a KV head as the rows of
    one block (flash-attn's seqlenq_ngroups_swapped): P * kv_heads / heads blocks. Its blocks,
    two per unit, each stream their split of the keys at most at `block_bandwidth`, so its
    memory time is block_wave_seconds over those blocks (the tier's rate alone where that is
    0). Each unit runs at 1/U of `matrix_peak` (the attention rate: see
    roofline.per_op_rates). The work executed is the blocks' whole tiles (masked parts of
    diagonal tiles included), or the op's own FLOPs F where they are more (a backward pass does
    ~2.5x the forward's matmuls), plus each block's setup of about one K/V step
    (FLASH_BLOCK_SETUP_KEYS = k0), which short sequences feel:
        w_j     = 2 * rows_j * visible_j * (d + dv)       (QK^T and PV of block j)
        c_j     = 2 * rows_j * k0 * (d + dv)              (its Q load and O write)
        E       = max(F, P * sum_j w_j) + P * sum_j c_j
        compute = max(E / U, E * max_j (w_j + c_j) / (P * sum_j (w_j + c_j) * s)) / (peak / U)
        total   = overlapped(compute, bytes / B, overlap_loss) + overhead
    """
    count = problems.shape[0]
    compute = np.zeros(count)
    memory = np.zeros(count)
    total = np.zeros(count)
    for i in range(count):
        memory[i] = bytes_moved[i] / bandwidth[i] if bandwidth[i] > 0.0 else 0.0
        q = max(q_len[i], 1.0)
        problem_count = max(problems[i], 1.0)
        splits = 1.0
        if kv_cache_kernel[i]:
            packed = q <= 1.0 and kv_head_ratio[i] < 1.0
            thread_blocks = problem_count * kv_head_ratio[i] if packed else problem_count * math.ceil(
                q / KV_APPEND_BLOCK_ROWS)
            splits = kv_cache_splits(thread_blocks, units[i], kv_len[i], head_dim[i])
            memory[i] = block_wave_seconds(bytes_moved[i], thread_blocks * splits, KV_CACHE_BLOCKS_PER_UNIT * units[i],
                                           bandwidth[i], block_bandwidth[i])
        if matrix_peak[i] > 0.0 and flops[i] > 0.0:
            br = KV_APPEND_BLOCK_ROWS if kv_cache_kernel[i] else FLASH_MAX_BLOCK_ROWS
            blocks = math.ceil(q / br)
            work = 0.0
            setup = 0.0
            longest = 0.0
            for j in range(int(blocks)):
                rows = min(br, q - j * br)
                visible = kv_len[i]
                if causal[i]:
                    visible = min(kv_len[i], kv_len[i] - q + min((j + 1) * br, q))
                block = 2.0 * rows * visible * (head_dim[i] + value_dim[i])
                fixed = 2.0 * rows * FLASH_BLOCK_SETUP_KEYS * (head_dim[i] + value_dim[i])
                work += block
                setup += fixed
                longest = max(longest, block + fixed)
            # too few blocks to fill the units: the kernel splits each block's keys over idle units
            if not kv_cache_kernel[i]:
                splits = max(1.0, math.floor(units[i] / (problem_count * blocks)))
            # whole tiles, masked ones included, or the op's own FLOPs (a backward pass), + setup
            executed = max(flops[i], problem_count * work) + problem_count * setup
            longest_share = longest / (problem_count * (work + setup))
            load = max(executed / units[i], executed * longest_share / splits)
            compute[i] = load / (matrix_peak[i] / units[i])
        total[i] = overlapped(compute[i], memory[i], overlap_loss[i]) + overhead[i]
    return compute, memory, total


@numba.njit(cache=True)
def streaming_times(flops, bytes_moved, peak, bandwidth, overhead):
    """Bandwidth-bound kernels (elementwise, norms, softmax, reductions, copies) with a floor.

    Idea: the roofline (Williams et al., CACM 2009) plus a fixed per-kernel latency, which is
    what a kernel on a handful of elements costs (Vidur and LLMCompass both show this floor).
        total = max(flops / P, bytes / B) + overhead
    """
    count = flops.shape[0]
    compute = np.zeros(count)
    memory = np.zeros(count)
    total = np.zeros(count)
    for i in range(count):
        compute[i] = flops[i] / peak[i] if peak[i] > 0.0 else 0.0
        memory[i] = bytes_moved[i] / bandwidth[i] if bandwidth[i] > 0.0 else 0.0
        total[i] = max(compute[i], memory[i]) + overhead[i]
    return compute, memory, total


@numba.njit(cache=True)
def since_reuse(codes, moved, most_ops, most_bytes):
    """Per op, what ran since the last op of its own kind: the distinct kinds and the bytes the
    ops between moved (both inf for its kind's first op, or past `most_ops` ops or `most_bytes`).

    Why: a core's caches keep the code, dispatch state and data an op kind used only until
    other work pushes them out, so an op finds them warm by how much ran since its kind last
    ran: its LRU stack distance (Mattson et al. 1970), here the bytes the ops between moved plus
    a footprint per distinct kind among them (Calibration.kind_footprint). Kinds are integer
    codes, one per op name.
    """
    count = codes.shape[0]
    kinds_between = np.full(count, np.inf)
    bytes_between = np.full(count, np.inf)
    kinds = 0
    for i in range(count):
        kinds = max(kinds, codes[i] + 1)
    last = np.full(kinds, -1)
    stamp = np.full(kinds, -1)
    for i in range(count):
        code = codes[i]
        start = last[code]
        last[code] = i
        if start < 0 or i - start - 1 > most_ops:
            continue
        seen = 0
        total = 0.0
        for j in range(i - 1, start, -1):
            total += moved[j]
            if total > most_bytes:
                break
            if stamp[codes[j]] != i:
                stamp[codes[j]] = i
                seen += 1
        if total <= most_bytes:
            kinds_between[i] = seen
            bytes_between[i] = total
    return kinds_between, bytes_between


@numba.njit(cache=True)
def block_row_seconds(bytes_moved, blocks, block_bandwidth):
    """Least time of a kernel whose thread blocks each stream their own share of its bytes.

    Idea: Little's law (as in Volkov's "Understanding latency hiding on GPUs", 2016): a thread
    block keeps only so many loads in flight, so it streams at most b = bytes in flight / memory
    latency, however fast the memory is, and the kernel lasts at least as long as one block
    takes over its share. Kernels that launch one block per row (vLLM's rotary, SiLU-and-mul
    and RMSNorm launch one per token) have few, long blocks at small batches, which this bounds;
    with many blocks the memory's own rate governs.
        time = (bytes / blocks) / b      (0 where blocks or b is 0)
    """
    count = bytes_moved.shape[0]
    out = np.zeros(count)
    for i in range(count):
        if blocks[i] > 0.0 and block_bandwidth[i] > 0.0:
            out[i] = bytes_moved[i] / blocks[i] / block_bandwidth[i]
    return out


@numba.njit(cache=True)
def _matrix_duty(start_s, busy_s, matrix, window_s, duty, i, last_end):
    """The duty after op i ran: decayed over the idle gap before it, then towards 1 or 0 over it."""
    gap = start_s[i] - last_end
    if gap > 0.0:
        duty *= math.exp(-gap / window_s)
    running = 1.0 if matrix[i] else 0.0
    return running + (duty - running) * math.exp(-busy_s[i] / window_s), max(last_end, start_s[i] + busy_s[i])


@numba.njit(cache=True)
def power_capped_seconds(start_s, busy_s, matrix, flops, seconds, capped_rate, engage_duty, window_s, periodic):
    """Each op's time once the device's power limit has lowered its clock, in start order.

    Idea: a GPU's power controller averages its power over a window of about 0.1 s and, when
    the average would pass the limit, lowers the SM clock until it does not. Matrix kernels at
    full clock draw more than the limit; memory-bound kernels do not. So the clock drops once the
    share of recent time spent in matrix kernels passes a threshold, and a matrix op then runs
    at the rate the unit holds at its limit (measured on an H100 at 700 W: GEMMs of every shape
    ran at 659-724 TFLOP/s once capped, against 755-802 before; with copies between GEMMs, the
    clock began to fall at 44-52% GEMM time in three runs).
        duty(t) = exponential average over window_s of [a matrix op runs at t], from busy_s
        capped  = matrix op and duty at its start >= engage_duty
        time    = max(seconds, flops / capped_rate) if capped else seconds
    The history is given (start_s, busy_s): measured for a measured trace, simulated in the
    engine. `periodic`: the ops repeat back to back (one step of many), so the duty they start
    with is the cycle's steady state, d = a / (1 - exp(-span / window_s)), where a is the duty
    one pass leaves from an idle start (the average is linear in its start); else 0 (idle).
    """
    count = seconds.shape[0]
    out = seconds.copy()
    duty = 0.0
    if count == 0:
        return out
    if periodic:
        last_end = start_s[0]
        for i in range(count):
            duty, last_end = _matrix_duty(start_s, busy_s, matrix, window_s, duty, i, last_end)
        span = last_end - start_s[0]
        duty = duty / (1.0 - math.exp(-span / window_s)) if span > 0.0 else 0.0
    last_end = start_s[0]
    for i in range(count):
        gap = start_s[i] - last_end
        starting = duty * math.exp(-gap / window_s) if gap > 0.0 else duty
        if matrix[i] and starting >= engage_duty and capped_rate[i] > 0.0:
            out[i] = max(seconds[i], flops[i] / capped_rate[i])
        duty, last_end = _matrix_duty(start_s, busy_s, matrix, window_s, duty, i, last_end)
    return out


@numba.njit(cache=True)
def repeated_pass_duty(group, passes_before, busy_s, matrix, window_s):
    """The matrix duty (see power_capped_seconds) at the start of each op's measured run, where
    each group of ops (consecutive rows with one group number) runs as one pass, back to back,
    passes_before + 1 times from idle, and the last pass is measured: a profiler timing a layer
    repeated in a model. The duty is linear in where it starts, so P passes from idle leave
        d_P = a * (1 - r^P) / (1 - r),   r = exp(-T / window_s)
    with a the duty one pass of length T leaves from idle; the last pass then runs from d_P.
    """
    count = busy_s.shape[0]
    out = np.zeros(count)
    first = 0
    while first < count:
        end = first
        while end < count and group[end] == group[first]:
            end += 1
        left, span = 0.0, 0.0  # the duty one pass leaves from idle, and its length
        for i in range(first, end):
            running = 1.0 if matrix[i] else 0.0
            left = running + (left - running) * math.exp(-busy_s[i] / window_s)
            span += busy_s[i]
        decay = math.exp(-span / window_s)
        passes = passes_before[first]
        duty = left * passes if decay >= 1.0 else left * (1.0 - decay ** passes) / (1.0 - decay)
        for i in range(first, end):
            out[i] = duty
            running = 1.0 if matrix[i] else 0.0
            duty = running + (duty - running) * math.exp(-busy_s[i] / window_s)
        first = end
    return out


# ATen's CPU flash attention (FlashAttentionKernel.cpp) cuts each (batch, head)'s queries into
# slices of 32 rows, of 64 from 192 queries on and of 256 from 768, one task per slice.
ATEN_CPU_FLASH_SLICES = ((768.0, 256.0), (192.0, 64.0), (0.0, 32.0))


@numba.njit(cache=True)
def aten_cpu_flash_traffic(problems, q_len, kv_len, head_dim, value_dim, causal, elem_bytes, cores, bandwidth,
                           task_bandwidth):
    """(bytes, seconds) of ATen's CPU flash attention: one task per (batch, query head, query slice),
    each streaming the keys and values its slice sees (a group's query heads each their own
    pass over their KV head's: the tasks run one after another on a core), plus Q and O once.
    A decode of 8 sequences x 16 query heads over 8 KV heads of 257 keys (head dim 64, fp32) runs
    128 tasks of 131 KB on a Sapphire Rapids core in 912 us, as one of twice the KV heads would.
        tasks = P * ceil(q / slice),  bytes = P * sum_j visible_j * (d + dv) * b + P * q * (d + dv) * b
    Its tasks run `cores` at a time, each streaming at most `task_bandwidth` (block_wave_seconds;
    0: the memory's rate alone).
    """
    count = problems.shape[0]
    traffic = np.zeros(count)
    seconds = np.zeros(count)
    for i in range(count):
        q = max(q_len[i], 1.0)
        rows = 32.0
        for threshold, size in ATEN_CPU_FLASH_SLICES:
            if q >= threshold:
                rows = size
                break
        slices = math.ceil(q / rows)
        problem_count = max(problems[i], 1.0)
        width = (head_dim[i] + value_dim[i]) * elem_bytes[i]
        seen = 0.0
        for j in range(int(slices)):
            visible = kv_len[i]
            if causal[i]:
                visible = min(kv_len[i], kv_len[i] - q + min((j + 1) * rows, q))
            seen += visible
        traffic[i] = problem_count * (seen + q) * width
        seconds[i] = block_wave_seconds(traffic[i], problem_count * slices, cores[i], bandwidth[i], task_bandwidth[i])
    return traffic, seconds


@numba.njit(cache=True)
def block_wave_seconds(nbytes, jobs, slots, bandwidth, block_bandwidth):
    """Time to stream `nbytes` split evenly over `jobs` thread blocks that run `slots` at a time,
    each block streaming at most `block_bandwidth` (scalars).

    Idea: Little's law again (block_row_seconds): blocks in flight stream at most their number
    times b, and the memory at most B. Whole waves of `slots` blocks run at min(B, slots * b);
    a partial last wave of r blocks at min(B, r * b), so a kernel whose last wave holds a few
    long blocks pays their full length: flash-decoding at 51 sequences of 4 KV heads (204 blocks
    on 216 slots of an A100) takes 243 us for 4k keys, at 61 sequences (244 blocks) 402 us.
        t = floor(J/S) * S * (bytes/J) / min(B, S*b) + r * (bytes/J) / min(B, r*b),  r = J mod S
    """
    if bandwidth <= 0.0:
        return 0.0
    if jobs <= 0.0 or slots <= 0.0 or block_bandwidth <= 0.0:
        return nbytes / bandwidth
    per_job = nbytes / jobs
    full = math.floor(jobs / slots)
    last = jobs - full * slots
    seconds = full * slots * per_job / min(bandwidth, slots * block_bandwidth)
    if last > 0.0:
        seconds += last * per_job / min(bandwidth, last * block_bandwidth)
    return seconds


# Share of a last-level cache's nominal capacity that a streaming working set keeps: the rest
# holds other lines (the producer's inputs, weights) and is lost to set conflicts. Vidur's
# norms and adds on H100 (50 MB L2) and A100 (40 MB) slow once their footprint passes 0.6-0.8
# of the L2; 0.75 is the middle of that range, for both machines.
CACHE_REUSE_FRACTION = 0.75


@numba.njit(cache=True)
def cached_read_bytes(reread_bytes, footprint_bytes, cache_bytes):
    """Bytes of an op's reads served by the on-chip cache rather than by memory.

    Idea: an op that reads what the op just before it wrote finds it still in the last-level
    cache (write-back L2) if the working set fits: the reuse-distance view of caching (Mattson
    et al. 1970). Streaming kernels touch each byte once in order, so under LRU a producer's
    output that does not fit is evicted before it is reread: all or nothing, no partial hits.
    The working set is the consumer's own footprint (what it reads and writes), which is what
    passes through the cache while it runs. Vidur's H100 and A100 norms and adds show the step:
    they slow by ~1.4x once their footprint passes most of the L2. `cache_bytes` is the usable
    capacity (nominal times CACHE_REUSE_FRACTION).
        hit = reread if read + written <= cache_bytes else 0
    """
    count = reread_bytes.shape[0]
    out = np.zeros(count)
    for i in range(count):
        if footprint_bytes[i] <= cache_bytes[i]:
            out[i] = reread_bytes[i]
    return out


@numba.njit(cache=True)
def scan_times(steps, state_bytes, bytes_moved, flops, peak, bandwidth, on_chip_bytes, overhead):
    """A recurrence (Mamba selective scan, delta rule, xLSTM) with its state on chip or spilled.

    Idea: the hardware-aware scan of Mamba (Gu and Dao 2023): when the recurrent state fits in
    on-chip memory it never touches HBM and the scan streams only its inputs and outputs; when
    it does not fit, every step reads and writes the state from HBM.
        bytes = bytes_moved + (state > SRAM ? 2 * state * steps : 0)
        total = max(flops / P, bytes / B) + overhead
    """
    traffic = bytes_moved.copy()
    for i in range(steps.shape[0]):
        if state_bytes[i] > on_chip_bytes[i]:
            traffic[i] += 2.0 * state_bytes[i] * max(steps[i], 1.0)
    return streaming_times(flops, traffic, peak, bandwidth, overhead)


@numba.njit(cache=True)
def transfer_times(nbytes, bandwidth, latency, request_bytes, queue_depth):
    """A copy over a link or a read from storage: per-request latency overlapped by queue depth.

    Idea: Little's law for storage (as in the FlashNeuron and "LLM in a flash", Alizadeh et al.
    2024, analyses): a read of S bytes in requests of r bytes issues ceil(S/r) requests, of
    which queue_depth are in flight, each paying the latency once; larger requests amortise
    the latency, which is why larger chunks read faster. A host-device copy is one request.
        total = ceil(ceil(S / r) / qd) * latency + S / B
    """
    count = nbytes.shape[0]
    out = np.zeros(count)
    for i in range(count):
        requests = math.ceil(nbytes[i] / request_bytes[i]) if request_bytes[i] > 0.0 else 1.0
        rounds = math.ceil(max(requests, 1.0) / max(queue_depth[i], 1.0))
        out[i] = rounds * latency[i] + (nbytes[i] / bandwidth[i] if bandwidth[i] > 0.0 else 0.0)
    return out


# Pageable host memory is staged through a pinned bounce buffer by the driver: two copies, the
# host-side one at memcpy speed; measured pageable HtoD runs at about half the pinned rate
# (NVIDIA "How to optimize data transfers in CUDA C/C++", Harris 2012).
PAGEABLE_FRACTION = 0.5


# Collective algorithms (collective_times' `algorithm`); POINT_TO_POINT is one rank's send to
# another (pipeline-parallel activations, NCCL send/recv).
RING, TREE, IN_NETWORK, POINT_TO_POINT = 0, 1, 2, 3


@numba.njit(cache=True)
def _collective_shape(ranks, algorithm, bytes_factor):
    """(share of a rank's bytes it sends over its link, latency steps) of one collective."""
    p = max(ranks, 1.0)
    if p <= 1.0:
        return 0.0, 0.0
    if algorithm == POINT_TO_POINT:
        return 1.0, 1.0
    if algorithm == RING:
        return bytes_factor * (p - 1.0) / p, bytes_factor * (p - 1.0)
    steps = bytes_factor * math.ceil(math.log2(p))
    if algorithm == TREE:
        return bytes_factor, steps
    return 1.0, steps


@numba.njit(cache=True)
def collective_wire_bytes(nbytes, ranks, algorithm, bytes_factor):
    """Bytes each rank sends over its link (and receives) in one collective of nbytes per rank.

    ring: bytes_factor * (p-1)/p * S; tree: bytes_factor * S; in-network reduction: S, sent
    once to the switch (which reduces it) while the result comes back on the other direction;
    point to point: S, once.
    """
    out = np.zeros(nbytes.shape[0])
    for i in range(nbytes.shape[0]):
        share, _ = _collective_shape(ranks[i], algorithm[i], bytes_factor[i])
        out[i] = share * nbytes[i]
    return out


@numba.njit(cache=True)
def collective_times(nbytes, ranks, bandwidth, latency, algorithm, bytes_factor):
    """Ring, tree or in-network collectives: the alpha-beta model of Thakur, Rabenseifner and
    Gropp (2005), and of NCCL's NVLS algorithm.

    algorithm RING: 2*(p-1) steps of size S/p for all-reduce (bytes_factor 2), p-1 steps for
    all-gather / reduce-scatter (bytes_factor 1):
        total = bytes_factor * (p-1) * (latency + S / (p * B))
    algorithm TREE (double binary tree of NCCL): 2*log2(p) latencies, 2*S over the link
    (pipelined) for all-reduce:
        total = bytes_factor * (ceil(log2 p) * latency + S / B)
    algorithm IN_NETWORK (a switch that reduces, NVLink SHARP on third-generation NVSwitch,
    which NCCL's NVLS all-reduce uses; InfiniBand SHARP): each rank sends its S to the switch
    and receives the reduced S on the other direction at the same time, with the tree's
    synchronisation depth:
        total = bytes_factor * ceil(log2 p) * latency + S / B
    algorithm POINT_TO_POINT (one rank sends S to another):
        total = latency + S / B
    Each is latency steps * latency + wire bytes / B (collective_wire_bytes).
    """
    out = np.zeros(nbytes.shape[0])
    for i in range(nbytes.shape[0]):
        share, steps = _collective_shape(ranks[i], algorithm[i], bytes_factor[i])
        out[i] = steps * latency[i] + share * nbytes[i] / bandwidth[i]
    return out
