"""The one entry point the engine uses to price ops on a device.

price_ops returns, per op, compute_s (the arithmetic, tile and wave losses included, or a
GEMM's operand feed from the on-chip cache where that is longer),
memory_s (moving the op's bytes through the unit's own memory tier, uncontended; reads the
on-chip cache serves count at the cache's rate: an op's rereads of the op before it, fused
attention's K/V re-reads), overhead_s (fixed per-op cost) and
duration_s (the uncontended prediction). The engine turns memory_s into flows that can be
slowed by contention. Each category goes to its model in memsim.cost.kernels.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from memsim.cost import kernels
from memsim.cost.op_arrays import OpArrays
from memsim.cost.roofline import main_compute_unit, on_matrix_units, per_op_rates
from memsim.hardware.schema import ComputeUnit, Device, Link, MemoryTier

COST_COLUMNS = ("compute_s", "memory_s", "overhead_s", "duration_s")
HOST_LINK_KINDS = ("pcie", "c2c", "cxl", "ddr")
PEER_LINK_KINDS = ("nvlink", "nvswitch", "network", "pcie")
COLLECTIVE_BYTES_FACTOR = {"all_reduce": 2.0, "allreduce": 2.0}
POINT_TO_POINT_KINDS = ("send_recv", "send", "recv", "p2p")
# Categories priced over the peer link: collectives, and point-to-point sends (p2p), which have a
# fixed cost of their own: a collective's includes waiting for every rank, a send's does not.
LINK_CATEGORIES = ("collective", "p2p")


def price_ops(ops: pd.DataFrame | OpArrays, device: Device, unit: ComputeUnit | None = None,
              links: Iterable[Link] = ()) -> pd.DataFrame:
    """Price every op of a trace's ops table (or of the table read once into OpArrays) on `unit`
    (default: the device's main unit).

    `links` are the system's links: host-device copies (memcpy) use the first host link,
    collectives the first peer link; without them both run at the tier's own bandwidth.
    """
    ops = ops if isinstance(ops, OpArrays) else OpArrays.from_table(ops)
    unit = unit or main_compute_unit(device)
    tier = device.memories[unit.memory or device.default_memory]
    count = len(ops)
    category, dtype, flops, read, written = ops.category, ops.dtype, ops.flops, ops.read, ops.written
    peak, read_bw, overhead = per_op_rates(ops.kinds, ops.kind_codes, unit, device, tier)
    overhead = overhead * ops.launches
    if device.calibration and device.calibration.wrapped_scalar_cost:
        overhead = overhead + device.calibration.wrapped_scalar_cost * ops.column("wrapped_scalars")
    if device.calibration and device.calibration.warm_overhead:
        overhead = overhead * warm_fraction(ops, device.calibration)
    if device.calibration and device.calibration.row_cost:
        per_row = np.array([device.calibration.row_cost.get(kind, 0.0) for kind, _ in ops.kinds])[ops.kind_codes]
        overhead = overhead + per_row * ops.column("rows")
    write_ratio = tier.write_bandwidth / tier.read_bandwidth
    moved = read + written
    # one bandwidth per op such that moved / bandwidth = read / B_read + written / B_write
    with np.errstate(invalid="ignore", divide="ignore"):
        bandwidth = np.where(moved > 0, moved / (read / read_bw + written / (read_bw * write_ratio)), read_bw)
    overlap = np.full(count, device.calibration.overlap_loss if device.calibration else 0.0)
    exposure = np.full(count, device.calibration.first_wave_exposure if device.calibration else 1.0)
    quantization = np.full(count, device.calibration.wave_quantization if device.calibration else 1.0)
    streamed = moved - _cache_saving(ops, tier, device, unit)
    compute, memory, total = kernels.streaming_times(flops, streamed, peak, bandwidth, overhead)
    _bound_by_block_rows(ops, moved, overhead, unit, device, compute, memory, total)

    units = np.full(count, float(unit.count))
    elem_bytes = ops.elem_bytes
    dims = {"batch": ops.batch, "m": ops.m, "n": ops.n, "k": ops.k}

    # a GEMM or attention op without its problem dimensions keeps the streaming price above
    gemms = (category == "gemm") & (dims["m"] > 0) & (dims["n"] > 0) & (dims["k"] > 0)
    loops = gemms & scalar_loop_gemms(dims, unit, device)
    rows = np.flatnonzero(loops)
    if rows.size:
        macs = dims["m"][rows] * dims["n"][rows] * dims["k"][rows]
        rate = scalar_loop_flops(unit, device) * scalar_loop_threads(dims["batch"][rows], macs, unit)
        _put(rows, kernels.streaming_times(flops[rows], streamed[rows], rate, bandwidth[rows], overhead[rows]),
             compute, memory, total)
    rows = np.flatnonzero(gemms & ~loops)
    if rows.size:
        gemm_moved = moved[rows] + packed_operand_bytes(read[rows], dims["m"][rows], dims["n"][rows], unit)
        alignment = load_alignment(dtype[rows], unit)
        aligned = kernels.aligned_fraction(dims["k"][rows], dims["n"][rows], elem_bytes[rows], alignment)
        aligned = aligned * _pitch_fraction(dims["k"][rows], elem_bytes[rows], alignment, tier, device)
        cache = cache_tier(device, unit)
        result = kernels.gemm_times(dims["batch"][rows], dims["m"][rows], dims["n"][rows], dims["k"][rows],
                                    gemm_moved, peak[rows] * aligned, units[rows], bandwidth[rows], overhead[rows],
                                    overlap[rows], exposure[rows], quantization[rows], elem_bytes[rows],
                                    np.full(rows.size, cache.read_bandwidth if cache is not None else 0.0))
        _put(rows, result, compute, memory, total)

    rows = np.flatnonzero((category == "attention") & (dims["m"] > 0) & (dims["n"] > 0) & (dims["k"] > 0))
    if rows.size:
        _price_attention(ops, rows, dims, elem_bytes, peak, units, bandwidth, overhead, overlap, tier, device, unit,
                         compute, memory, total)

    rows = np.flatnonzero((category == "scan") | (category == "chunked_scan"))
    if rows.size:
        steps, state = ops.column("steps", 1.0)[rows], ops.column("state_bytes")[rows]
        on_chip = np.full(rows.size, unit.sram_per_unit * unit.count)
        result = kernels.scan_times(steps, state, moved[rows], flops[rows], peak[rows], bandwidth[rows],
                                    on_chip, overhead[rows])
        _put(rows, result, compute, memory, total)

    links = list(links)
    rows = np.flatnonzero(category == "memcpy")
    if rows.size:
        _price_memcpy(ops, rows, moved, bandwidth, overhead, links, compute, memory, total)
    rows = np.flatnonzero(np.isin(category, LINK_CATEGORIES))
    if rows.size:
        _price_collectives(ops, rows, category[rows], read, written, bandwidth, overhead, links, compute, memory,
                           total)
    return pd.DataFrame({"compute_s": compute, "memory_s": memory, "overhead_s": total - np.maximum(compute, memory),
                         "duration_s": total}, index=ops.index)


def power_capped(costs: pd.DataFrame, ops: pd.DataFrame, device: Device, start_s, busy_s, periodic: bool,
                 unit: ComputeUnit | None = None) -> pd.DataFrame:
    """`costs` with the compute-bound GEMMs that run under the unit's power cap slowed to its
    sustained rate.

    Whether the cap is engaged depends on what ran before, so the caller gives each op's start
    and busy time (measured, or simulated): ops in start order; `periodic` where they are one
    step of many run back to back, not a run from idle. Without a power_cap, `costs`."""
    unit = unit or main_compute_unit(device)
    cap = unit.power_cap
    if cap is None or not len(ops):
        return costs
    gemm, capped_rate = _matrix_rates(ops, unit)
    capped = kernels.power_capped_seconds(np.asarray(start_s, dtype=float), np.asarray(busy_s, dtype=float),
                                          gemm & _compute_bound(costs), ops["flops"].to_numpy(dtype=float),
                                          costs["duration_s"].to_numpy(), capped_rate, cap.engage_duty,
                                          cap.window, periodic)
    return _slowed(costs, capped)


class MeasuredPowerState:
    """The power state a measurement left the device in, read once from its table (a calibration
    prices the same ops thousands of times): that of its own timeline (`start_s`: a profiler
    trace, from idle), or that of a group of ops run back to back as one pass, several times
    (`pass_group`, the rows of a group together, with `passes_before` passes before the one
    measured, from idle: a profiler timing the median of a model's identical layers, as
    Vidur's does). A table with neither, or a unit without a power_cap, leaves costs as they are."""

    def __init__(self, ops: pd.DataFrame, device: Device):
        self.unit = main_compute_unit(device)
        self.cap = self.unit.power_cap
        self.timeline = "start_s" in ops
        self.active = self.cap is not None and len(ops) > 0 and (self.timeline or "pass_group" in ops)
        if not self.active:
            return
        self.gemm, self.capped_rate = _matrix_rates(ops, self.unit)
        self.flops = ops["flops"].to_numpy(dtype=float)
        self.busy = ops["measured_s"].to_numpy(dtype=float)
        if self.timeline:
            self.start = ops["start_s"].to_numpy(dtype=float)
        else:
            self.group = pd.factorize(ops["pass_group"])[0]
            self.passes_before = ops["passes_before"].to_numpy(dtype=float)

    def apply(self, costs: pd.DataFrame) -> pd.DataFrame:
        """`costs` (of the table's ops, in its order) with the GEMMs the cap held slowed."""
        if not self.active:
            return costs
        matrix = self.gemm & _compute_bound(costs)
        duration = costs["duration_s"].to_numpy()
        if self.timeline:
            return _slowed(costs, kernels.power_capped_seconds(self.start, self.busy, matrix, self.flops, duration,
                                                               self.capped_rate, self.cap.engage_duty,
                                                               self.cap.window, False))
        duty = kernels.repeated_pass_duty(self.group, self.passes_before, self.busy, matrix, self.cap.window)
        held = self.flops / np.where(matrix, self.capped_rate, np.inf)  # matrix ops have a rate
        return _slowed(costs, np.where(matrix & (duty >= self.cap.engage_duty), np.maximum(duration, held), duration))


def _matrix_rates(ops: pd.DataFrame, unit: ComputeUnit) -> tuple[np.ndarray, np.ndarray]:
    """Which ops are GEMMs on the unit's matrix units, and the FLOP/s each holds under its cap."""
    codes, dtypes = pd.factorize(ops["dtype"])
    peaks = np.array([unit.matrix_flops.get(dtype, 0.0) for dtype in dtypes] + [0.0])[codes]  # code -1: none
    return (ops["category"] == "gemm").to_numpy() & (peaks > 0), peaks * unit.power_cap.sustained_matrix_fraction


def _compute_bound(costs: pd.DataFrame) -> np.ndarray:
    """Ops that keep the matrix units busy and draw the power a cap limits (a GEMV streams its
    weights instead)."""
    return (costs["compute_s"] >= costs["memory_s"]).to_numpy()


def _slowed(costs: pd.DataFrame, capped: np.ndarray) -> pd.DataFrame:
    """`costs` with the ops whose capped time is longer slowed to it: arithmetic at the lower
    clock, so compute grows and the fixed cost stays."""
    slower = capped > costs["duration_s"].to_numpy()
    if not slower.any():
        return costs
    out = costs.copy()
    out.loc[slower, "compute_s"] = capped[slower] - costs["overhead_s"].to_numpy()[slower]
    out.loc[slower, "duration_s"] = capped[slower]
    return out


def packed_operand_bytes(read, m, n, unit: ComputeUnit) -> np.ndarray:
    """Bytes a GEMM library that packs its operands moves besides the GEMM's own: a copy of the
    operands it reads (written, then read by the microkernel from the cache), except in a GEMV
    (one row or one column), which streams them once. On a Sapphire Rapids core an 8- or
    16-row fp32 GEMM of a 4 MiB weight takes 585-704 us, a 1-row GEMV of it 291."""
    packs = unit.packs_gemm_operands if unit.packs_gemm_operands is not None else unit.kind == "core"
    return read * ((m > 1) & (n > 1)) if packs else np.zeros_like(read)


# ATen's parallel_for grain (at::internal::GRAIN_SIZE): a scalar loop splits its batch over threads
# in chunks of at least this many multiply-adds.
ATEN_GRAIN_SIZE = 32768.0
ATEN_SCALAR_LOOP_MACS = 400.0


def warm_fraction(ops: OpArrays, calibration) -> np.ndarray:
    """Each op's share of a cold op's fixed cost (Calibration.warm_overhead) at its reuse
    distance: the bytes moved since its kind last ran plus the kinds between times their
    footprint (inf, the last share, for a kind never run before)."""
    distance = reuse_distance(ops.kinds_since_reuse, ops.bytes_since_reuse, calibration.kind_footprint)
    points = sorted(calibration.warm_overhead)
    return np.interp(distance, np.array(points, float), [calibration.warm_overhead[point] for point in points])


def reuse_distance(kinds_since: np.ndarray, bytes_since: np.ndarray, kind_footprint: float) -> np.ndarray:
    """Bytes since an op's kind last ran, each kind between counting its footprint (inf: never)."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(bytes_since), bytes_since + kind_footprint * kinds_since, np.inf)


def scalar_loop_gemms(dims: dict, unit: ComputeUnit, device: Device) -> np.ndarray:
    """Which GEMMs the framework runs as a plain loop of scalar multiply-adds: batched matmuls of
    fewer multiply-adds per matrix than the unit's threshold (ATen's bmm on CPU: 400; there a
    batch of 7x7x8 matrices takes six times as long as one of 8x8x8 on a Sapphire Rapids core,
    0.85 ns per multiply-add against a BLAS call's 0.1). Priced only where a rate is known (a
    calibrated one, or the unit's clock)."""
    if not scalar_loop_flops(unit, device):
        return np.zeros(len(dims["m"]), bool)
    threshold = unit.scalar_loop_macs if unit.scalar_loop_macs is not None else (
        ATEN_SCALAR_LOOP_MACS if unit.kind == "core" else 0.0)
    return (dims["batch"] > 1) & (dims["m"] * dims["n"] * dims["k"] < threshold)


def scalar_loop_flops(unit: ComputeUnit, device: Device) -> float:
    """FLOP/s of one thread running a scalar loop of multiply-adds: calibrated, else one
    multiply-add per clock (0 where the unit states no clock)."""
    calibrated = device.calibration.scalar_loop_flops if device.calibration else None
    return calibrated or 2.0 * (unit.clock or 0.0)


def scalar_loop_threads(batch, macs_per_matrix, unit: ComputeUnit) -> np.ndarray:
    """Threads a scalar loop runs on: ATen splits its batch in chunks of at least ATEN_GRAIN_SIZE
    multiply-adds, over at most the unit's cores."""
    return np.clip(np.ceil(batch * macs_per_matrix / ATEN_GRAIN_SIZE), 1.0, float(unit.count))


def block_bandwidth(category: str, unit: ComputeUnit, device: Device) -> float:
    """What one thread block of a category's kernels streams on its own: calibrated, else the
    unit's datasheet estimate (0: unknown)."""
    calibrated = device.calibration.block_bandwidth.get(category) if device.calibration else None
    return calibrated or unit.block_bandwidth or 0.0


def _bound_by_block_rows(ops: OpArrays, moved, overhead, unit: ComputeUnit, device: Device, compute, memory,
                         total) -> None:
    """Streaming ops whose attrs give their thread blocks last at least as long as one block takes
    to stream its share (kernels.block_row_seconds), counted as memory time."""
    rows = np.flatnonzero(ops.column("blocks") > 0)
    blocks = ops.column("blocks")[rows]
    if not rows.size:
        return
    names, codes = np.unique(ops.category[rows], return_inverse=True)
    rates = np.array([block_bandwidth(name, unit, device) for name in names])[codes]
    limited = kernels.block_row_seconds(moved[rows], blocks, rates)
    memory[rows] = np.maximum(memory[rows], limited)
    total[rows] = np.maximum(compute[rows], memory[rows]) + overhead[rows]


def load_alignment(dtype: np.ndarray, unit: ComputeUnit) -> np.ndarray:
    """Load width (bytes) each GEMM's kernel needs: the unit's on its matrix units (tensor
    cores); vector-unit (SIMT) kernels need none (0)."""
    names, codes = np.unique(dtype, return_inverse=True)
    return np.array([unit.load_alignment if on_matrix_units(unit, d) else 0.0 for d in names], dtype=float)[codes]


def pitch_interleave(alignment: np.ndarray, tier: MemoryTier) -> np.ndarray:
    """Interleave from which row-pitch conflicts count (kernels.pitch_conflict_fraction): memory
    partitions interleave at no finer than the tier's access granularity. Only kernels that need
    aligned loads (tensor cores; `alignment` from load_alignment) are charged, the ones the effect
    was measured on; 0 elsewhere."""
    return np.where(alignment > 0, tier.granularity, 0.0)


def _pitch_fraction(row_elements, elem_bytes, alignment, tier: MemoryTier, device: Device) -> np.ndarray:
    """Share of the matrix rate kept by kernels whose operand rows are `row_elements` apart, at
    the device's calibrated row-pitch conflict cost (kernels.pitch_conflict_fraction)."""
    cost = np.full(len(alignment), device.calibration.pitch_conflict_cost if device.calibration else 0.0)
    return kernels.pitch_conflict_fraction(row_elements, elem_bytes, pitch_interleave(alignment, tier), cost)


def _price_attention(ops, rows, dims, elem_bytes, peak, units, bandwidth, overhead, overlap, tier, device, unit,
                     compute, memory, total) -> None:
    """Fused attention: FlashAttention's HBM traffic less the K/V re-reads the cache serves, and
    its blocks of query rows scheduled over the units (kernels.attention_times)."""
    heads, kv_heads = ops.column("heads", 1.0)[rows], ops.column("kv_heads")[rows]
    ratio = np.where(kv_heads > 0, kv_heads, heads) / heads
    value_dim = ops.column("value_dim")[rows]
    value_dim = np.where(value_dim > 0, value_dim, dims["k"][rows])
    causal = ops.column("causal")[rows] > 0
    shape = (dims["batch"][rows], dims["m"][rows], dims["n"][rows], dims["k"][rows], value_dim, ratio,
             elem_bytes[rows], np.full(rows.size, unit.sram_per_unit))
    traffic = kernels.flash_attention_bytes(*shape)
    cache = cache_tier(device, unit)
    if cache is not None:
        usable = np.full(rows.size, cache.capacity * kernels.CACHE_REUSE_FRACTION)
        cached = kernels.flash_attention_cached_rereads(*shape, units[rows], usable)
        traffic = traffic - cached * _cache_discount(tier, cache)
    # K and V rows are one token's kv_heads x head_dim elements apart, and pay row-pitch conflicts
    # as a GEMM's operand rows do
    rate = peak[rows] * _pitch_fraction(ratio * heads * dims["k"][rows], elem_bytes[rows],
                                        load_alignment(ops.dtype[rows], unit),
                                        tier, device)
    # only FlashAttention-2's KV-cache kernel appends the new keys itself
    appends = ops.column("appends_kv")[rows] > 0
    # FlashAttention-2's KV-cache kernel: blocks that each stream their split of the keys, at a
    # calibrated rate only. The unit's datasheet rate is that of kernels loading an element per
    # thread; this kernel's blocks load whole K/V tiles asynchronously (Vidur's A100 profile:
    # 14.8 GB/s a block, where the datasheet figure is 5.9).
    calibrated = device.calibration.block_bandwidth.get("attention", 0.0) if device.calibration else 0.0
    per_block = np.where(appends, calibrated, 0.0)
    streaming = bandwidth[rows].copy()
    cpu = np.flatnonzero(runs_aten_cpu_flash(appends, unit))
    if cpu.size:
        # ATen's CPU kernel: tasks run one per core at a time, each streaming its slice's K/V at
        # what one task streams (calibrated; else the memory's rate), with no cache sharing
        streamed, seconds = kernels.aten_cpu_flash_traffic(
            *(value[cpu] for value in shape[:4]), value_dim[cpu], causal[cpu], elem_bytes[rows][cpu],
            units[rows][cpu], streaming[cpu], np.full(cpu.size, calibrated))
        # priced at the rate that streams those bytes in that time
        traffic[cpu] = streamed
        streaming[cpu] = np.divide(streamed, seconds, out=streaming[cpu], where=seconds > 0)
    result = kernels.attention_times(dims["batch"][rows], dims["m"][rows], dims["n"][rows], dims["k"][rows],
                                     value_dim, causal, ops.flops[rows], traffic, rate,
                                     units[rows], streaming, overhead[rows], overlap[rows], appends, ratio,
                                     per_block)
    _put(rows, result, compute, memory, total)
    if appends.any():
        # each block copies the new K/V it sees before its main loop, so the copy adds to the
        # kernel's time; its re-reads and rewrites of the same rows stay in the cache
        copied = kernels.appended_kv_copy_bytes(*shape[:5], elem_bytes[rows]) * appends
        copy_rate = bandwidth[rows] * ((cache.read_bandwidth / tier.read_bandwidth) if cache is not None else 1.0)
        memory[rows] += copied / copy_rate
        total[rows] += copied / copy_rate


def runs_aten_cpu_flash(appends_kv: np.ndarray, unit: ComputeUnit) -> np.ndarray:
    """Which fused attention ops run ATen's CPU flash kernel (kernels.aten_cpu_flash_traffic):
    those on CPU cores, but FlashAttention-2's KV-cache kernel, which only a GPU runs."""
    return ~appends_kv & (unit.kind == "core")


def cache_tier(device: Device, unit: ComputeUnit) -> MemoryTier | None:
    """The on-chip cache in front of the unit's memory (a device's SRAM tier, e.g. the GPU L2)."""
    own = unit.memory or device.default_memory
    caches = [tier for name, tier in device.memories.items() if tier.kind == "sram" and name != own]
    return max(caches, key=lambda tier: tier.capacity) if caches else None


def _cache_saving(ops: OpArrays, tier: MemoryTier, device: Device, unit: ComputeUnit):
    """Bytes of memory time saved per op by rereads the cache serves (see _cache_discount); an op
    of several kernels holds one kernel's share of its bytes in the cache at a time. Not
    for kernels bound by issuing loads (category 'strided': one element per thread), which run
    no faster from the cache: Vidur's rotary and SiLU-and-mul kernels keep one rate across the
    L2 size, where its vectorised add and norms speed up below it."""
    cache = cache_tier(device, unit)
    if cache is None or ops.reread is None:
        return np.zeros(len(ops))
    reread = np.where(ops.category == "strided", 0.0, np.minimum(ops.reread, ops.read))
    usable = np.full(len(ops), cache.capacity * kernels.CACHE_REUSE_FRACTION)
    hit = kernels.cached_read_bytes(reread, (ops.read + ops.written) / ops.launches, usable)
    return hit * _cache_discount(tier, cache)


def _cache_discount(tier: MemoryTier, cache: MemoryTier) -> float:
    """Share of a byte's memory time saved when the cache serves it instead of the tier."""
    return max(0.0, 1.0 - tier.read_bandwidth / cache.read_bandwidth)


def storage_read_seconds(nbytes, tier: MemoryTier, request_bytes=None) -> np.ndarray:
    """Seconds to read `nbytes` (array) from a storage tier (flash, NVMe) in requests of
    `request_bytes` (default: the tier's granularity; never smaller than it), with the tier's
    latency overlapped `queue_depth` deep: see kernels.transfer_times."""
    nbytes = np.atleast_1d(np.asarray(nbytes, dtype=float))
    request = np.full(nbytes.shape, max(float(request_bytes or 0.0), tier.granularity))
    return kernels.transfer_times(nbytes, np.full(nbytes.shape, tier.read_bandwidth * tier.efficiency),
                                  np.full(nbytes.shape, tier.latency), request,
                                  np.full(nbytes.shape, float(tier.queue_depth)))


def _put(rows, result, compute, memory, total) -> None:
    compute[rows], memory[rows], total[rows] = result


def _first_link(links: Iterable[Link], kinds: tuple[str, ...]) -> Link | None:
    return next((link for link in links if link.kind in kinds), None)


def peer_link(links: Iterable[Link]) -> Link | None:
    """The link collectives cross: the first of a kind that joins devices (NVLink, NVSwitch,
    network, PCIe; on a single-GPU config that is its host PCIe link)."""
    return _first_link(links, PEER_LINK_KINDS)


def _price_memcpy(ops, rows, moved, bandwidth, overhead, links, compute, memory, total) -> None:
    """Host-device copies cross the host link (pageable at half rate); device copies the tier."""
    link = _first_link(links, HOST_LINK_KINDS)
    attrs = ops.attrs_of(rows)
    crossing = np.array([a.get("direction", "DtoD") in ("HtoD", "DtoH") for a in attrs]) & (link is not None)
    nbytes = np.where(crossing, moved[rows] / 2.0, moved[rows])  # a crossing copy's bytes cross once
    rate = bandwidth[rows].copy()
    latency = np.zeros(rows.size)
    if link is not None:
        pinned = np.array([bool(a.get("pinned", True)) for a in attrs])
        link_rate = link.bandwidth * link.efficiency * np.where(pinned, 1.0, kernels.PAGEABLE_FRACTION)
        rate = np.where(crossing, link_rate, rate)
        latency = np.where(crossing, link.latency, 0.0)
    seconds = kernels.transfer_times(nbytes, rate, latency, nbytes, np.ones(rows.size))
    compute[rows] = 0.0
    memory[rows] = seconds
    total[rows] = seconds + overhead[rows]


def _price_collectives(ops, rows, categories, read, written, bandwidth, overhead, links, compute, memory,
                       total) -> None:
    """Collectives and sends over the first peer link; attrs name ranks, kind (all_reduce,
    all_gather, reduce_scatter, send_recv, ...) and optionally the algorithm (ring or tree).
    Without one an all-reduce reduces in the switch where the link can, else runs as a ring, as
    NCCL chooses for large messages."""
    link = peer_link(links)
    attrs = ops.attrs_of(rows)
    ranks = np.array([float(a.get("ranks") or 1) for a in attrs])
    kinds = [str(a.get("kind", "send_recv" if category == "p2p" else "all_reduce"))
             for a, category in zip(attrs, categories)]
    algorithm = np.array([collective_algorithm(a.get("algorithm"), kind, link)
                          for a, kind in zip(attrs, kinds)], dtype=np.int64)
    factor = np.array([COLLECTIVE_BYTES_FACTOR.get(kind, 1.0) for kind in kinds])
    rate = np.full(rows.size, link.bandwidth * link.efficiency) if link is not None else bandwidth[rows]
    latency = np.full(rows.size, link.latency if link is not None else 0.0)
    # S of the formulas is the whole buffer: an all-reduce's input (= output), an all-gather's
    # gathered output, a reduce-scatter's input, i.e. the larger of the op's reads and writes
    payload = np.maximum(read[rows], written[rows])
    seconds = kernels.collective_times(payload, ranks, rate, latency, algorithm, factor)
    compute[rows] = 0.0
    memory[rows] = seconds
    total[rows] = seconds + overhead[rows]


def collective_algorithm(named: str | None, kind: str, link: Link | None) -> int:
    """The algorithm code (kernels.RING, TREE, IN_NETWORK, POINT_TO_POINT) of one collective over `link`."""
    if kind in POINT_TO_POINT_KINDS:
        return kernels.POINT_TO_POINT
    if named == "tree":
        return kernels.TREE
    if named != "ring" and COLLECTIVE_BYTES_FACTOR.get(kind) == 2.0 and link is not None \
            and link.in_network_reduction:
        return kernels.IN_NETWORK
    return kernels.RING
