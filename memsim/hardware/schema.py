"""The hardware description: one pydantic schema for a system of devices, tiers, units and links.

Quantities are written with units in YAML and stored as SI floats (see memsim.units). Every
model forbids unknown keys and suggests the closest known one, because a misspelt key that is
silently ignored is how simulator results go wrong.
"""
from __future__ import annotations

import difflib
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from memsim import units


def _quantity(kind: str):
    return Annotated[float, BeforeValidator(lambda value: units.parse(value, kind)),
                     Field(json_schema_extra={"example": units.KINDS[kind][1]})]


Bytes = _quantity("bytes")
Bandwidth = _quantity("bandwidth")
FlopRate = _quantity("flops")
Time = _quantity("time")
Frequency = _quantity("frequency")
Fraction = Annotated[float, Field(gt=0.0, le=1.0, json_schema_extra={"example": "0.85"})]
PositiveInt = Annotated[int, Field(ge=1, json_schema_extra={"example": "132"})]

DType = Literal["fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4"]
MemoryKind = Literal["hbm", "sram", "ddr", "lpddr", "gddr", "dram", "cxl", "flash", "nvme", "mram"]
ComputeKind = Literal["sm", "core", "pcu", "pim", "npu", "vector", "tensor"]
OpCategory = Literal["gemm", "conv", "attention", "elementwise", "strided", "factory", "reduction", "norm", "copy",
                     "gather", "scan", "chunked_scan", "memcpy", "collective", "p2p", "other"]
DeviceKind = Literal["gpu", "cpu", "dataflow", "soc", "npu", "pim"]
LinkKind = Literal["pcie", "nvlink", "nvswitch", "cxl", "c2c", "ddr", "nvme", "internal", "network"]


class Spec(BaseModel):
    """Base of every schema node: frozen, unknown keys rejected with a did-you-mean."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data):
        if isinstance(data, dict):
            known = list(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    close = difflib.get_close_matches(str(key), known, n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(known)})"
                    raise PydanticCustomError("unknown_key", "unknown key{hint}", {"key": str(key), "hint": hint})
        return data


class MemoryTier(Spec):
    """A level of memory: HBM, on-chip SRAM, host DDR, CXL memory, flash, NVMe."""

    kind: MemoryKind
    capacity: Bytes
    bandwidth: Bandwidth | None = None
    """Shorthand for read_bandwidth and write_bandwidth when both are the same."""
    read_bandwidth: Bandwidth | None = None
    write_bandwidth: Bandwidth | None = None
    latency: Time = 0.0
    """Time to first byte of one request."""
    granularity: Bytes = 64.0
    """Smallest unit of access; smaller accesses cost a whole one."""
    queue_depth: PositiveInt = 1
    """Requests in flight at once: with latency it bounds the bandwidth of small reads."""
    efficiency: Fraction = 1.0
    """Achievable fraction of the bandwidth on streaming access (a measured figure, cited)."""
    internal_bandwidth: Bandwidth | None = None
    """Bandwidth inside the memory, seen by compute attached to it (processing in memory)."""
    source: str = ""

    @model_validator(mode="after")
    def _bandwidths(self):
        if self.bandwidth is None and self.read_bandwidth is None:
            raise PydanticCustomError("missing_bandwidth", "needs 'bandwidth' or 'read_bandwidth' (e.g. '3.35 TB/s')")
        read = self.read_bandwidth if self.read_bandwidth is not None else self.bandwidth
        write = self.write_bandwidth if self.write_bandwidth is not None else (self.bandwidth or read)
        object.__setattr__(self, "read_bandwidth", read)
        object.__setattr__(self, "write_bandwidth", write)
        return self


class PowerCap(Spec):
    """How the unit's power limit slows sustained matrix work (kernels.power_capped_seconds):
    once compute-bound matrix kernels fill more than `engage_duty` of the last `window`, the clock
    drops and a matrix op runs at no more than `sustained_matrix_fraction` of its dtype's peak."""

    sustained_matrix_fraction: Fraction
    """Matrix rate the unit holds at its power limit, as a fraction of the peak: measured by
    running large GEMMs back to back for a second or more."""
    engage_duty: Fraction = 0.55
    """Share of recent time in matrix kernels at which the cap engages."""
    window: Time = 0.1
    """Averaging window of the power controller."""


class ComputeUnit(Spec):
    """A group of identical compute units: GPU SMs, CPU cores, dataflow PCUs, PIM units.

    Peak rates are for the whole group (datasheet figures), not per unit.
    """

    kind: ComputeKind
    count: PositiveInt = 1
    clock: Frequency | None = None
    matrix_flops: dict[DType, FlopRate] = Field(default_factory=dict)
    """Peak dense matrix rate per dtype (tensor cores, systolic arrays)."""
    vector_flops: dict[DType, FlopRate] = Field(default_factory=dict)
    """Peak rate of elementwise and reduction work per dtype."""
    matrix_efficiency: Fraction = 1.0
    vector_efficiency: Fraction = 1.0
    attention_efficiency: Fraction = 1.0
    """Fraction of the GEMM rate (peak x matrix efficiency) that fused attention kernels reach on
    long sequences: softmax, rescaling and the dependency between the two matmuls of each block
    cost them what a GEMM does not pay (a published kernel benchmark, cited)."""
    sram_per_unit: Bytes = 0.0
    """On-chip memory each unit can tile into (shared memory, PMU, scratchpad)."""
    load_alignment: Bytes = 0.0
    """Width of the vector loads that feed the matrix units at full rate (16 B on NVIDIA GPUs):
    a matmul whose rows are not a multiple of it loads narrower. 0: no such requirement."""
    op_overhead: Time = 0.0
    """Fixed cost of every op on this unit: kernel launch, pipeline fill."""
    packs_gemm_operands: bool | None = None
    """Whether its GEMM library copies each operand panel into a contiguous buffer before the
    microkernel runs (GotoBLAS-style CPU BLAS: MKL, oneDNN, OpenBLAS), so that a GEMM moves its
    operands twice where a GEMV (one row or column) streams them once. Default: on CPU cores."""
    scalar_loop_macs: float | None = Field(None, ge=0)
    """Multiply-adds per matrix below which the framework runs a batched matmul as a plain loop of
    scalar multiply-adds rather than a BLAS call (ATen on CPU: 400). Default: 400 on CPU cores,
    0 (never) elsewhere."""
    block_bandwidth: Bandwidth | None = None
    """What one thread block streams on its own: its loads in flight per memory latency (Little's
    law). A kernel lasts at least as long as one block takes over its share of the bytes."""
    power_cap: PowerCap | None = None
    """Sustained matrix work slows at the power limit; None: the unit runs at its clock throughout."""
    memory: str | None = None
    """The tier this unit reads directly; defaults to the device's default memory. A PIM
    unit names the tier it sits in and uses that tier's internal bandwidth."""

    @model_validator(mode="after")
    def _some_peak(self):
        if not self.matrix_flops and not self.vector_flops:
            raise PydanticCustomError("missing_peak", "needs 'matrix_flops' or 'vector_flops' (e.g. {bf16: '989 TFLOP/s'})")
        return self


class Calibration(Spec):
    """Constants fitted from measurements of this machine; they override the datasheet."""

    source: str
    device_name: str = ""
    torch_version: str = ""
    date: str = ""
    matrix_efficiency: dict[DType, Fraction] = Field(default_factory=dict)
    """Achieved fraction of the matrix peak per dtype, for the tile/wave GEMM model."""
    vector_efficiency: Fraction | None = None
    attention_efficiency: Fraction | None = None
    """Fraction of the GEMM rate that fused attention kernels reach, fitted on attention data."""
    memory_efficiency: Fraction | None = None
    """Achieved fraction of the main tier's bandwidth on streaming access."""
    bandwidth_efficiency: dict[OpCategory, Fraction] = Field(default_factory=dict)
    """Achieved fraction of bandwidth per op category where kernels differ (norms, gathers)."""
    overlap_loss: float = Field(0.0, ge=0.0, le=1.0)
    """Fraction of the shorter of compute and memory time that a tiled kernel fails to hide."""
    first_wave_exposure: Fraction = 1.0
    """Share of one wave's memory (or compute) time a GEMM's first wave cannot hide: 1 when
    every unit loads its operands before computing; less with deep load pipelines."""
    wave_quantization: float = Field(1.0, ge=0.0, le=1.0)
    """Share of a GEMM's partial last wave charged as a whole wave: 1 is the tile/wave model; less
    where the library's schedules (tile choice, split-K, stream-K) do not show its steps."""
    pitch_conflict_cost: float = Field(0.0, ge=0.0, le=1.0)
    """Extra main-loop time of tensor-core GEMMs and fused attention per doubling of the power of
    two in their operands' row pitch beyond the memory's access granularity: such rows share
    memory partitions (kernels.pitch_conflict_fraction)."""
    block_bandwidth: dict[OpCategory, Bandwidth] = Field(default_factory=dict)
    """What one thread block streams on its own, per category of kernels whose ops say how many
    blocks they run (vLLM's one-block-per-token kernels differ in the loads each thread keeps
    in flight), and for 'attention' FlashAttention-2's KV-cache kernel, whose blocks load whole
    K/V tiles (used only where calibrated)."""
    launch_overhead: Time | None = None
    """Fixed device-side cost of every kernel: launch and pipeline fill."""
    category_overhead: dict[OpCategory, Time] = Field(default_factory=dict)
    """Fixed cost per op category where kernel families differ (a CPU GEMM's library setup)."""
    wrapped_scalar_cost: Time = 0.0
    """Host time an op spends per Python number passed where it takes a tensor (x * 0.5): each is
    wrapped into a 0-d tensor first. Part of a CPU op's time; a GPU kernel takes the number as an
    argument, so its time does not include it."""
    scalar_loop_flops: FlopRate | None = None
    """FLOP/s of one core (thread) running a batched matmul as a scalar loop (see
    ComputeUnit.scalar_loop_macs); without it, one multiply-add per clock."""
    row_cost: dict[OpCategory, Time] = Field(default_factory=dict)
    """Time per row of a row-wise kernel (a softmax's, a norm's, a reduction's: the op's attrs
    `rows`), per category: a CPU kernel sets up each row on its own (ATen's softmax over rows of
    4 values takes 72 ns a row on a Sapphire Rapids core, a sum's 2-3 ns). Where calibrated."""
    warm_overhead: dict[Annotated[int, Field(ge=0)], Fraction] = Field(default_factory=dict)
    """An op's fixed cost by how much ran since its kind last ran, as a fraction of a cold
    op's: {reuse distance in bytes: fraction}, linear between the distances given and the last
    fraction beyond. The distance is the bytes the ops between moved plus kind_footprint per
    distinct kind among them (memsim.cost.kernels.since_reuse): a CPU core dispatches an op
    whose code and state are still in its caches faster. Empty where not measured, as for GPU
    kernels, whose fixed cost is the device's."""
    kind_footprint: Bytes = 0.0
    """What one distinct op kind run between counts toward warm_overhead's reuse distance: the
    code and dispatch state it brings into the caches."""
    dispatch_overhead: Time | None = None
    """Host time to issue one op (framework + driver); the engine charges it, not price_ops."""
    fitted_on: str = ""
    """What the constants were fitted on (file and rows), so held-out errors can be told apart."""
    residuals: dict[str, float] = Field(default_factory=dict)
    """Fit quality (e.g. MAPE per category), recorded so a user can judge the calibration."""


class Device(Spec):
    """One chip or host: its memory tiers and compute units."""

    kind: DeviceKind
    count: PositiveInt = 1
    """Identical copies of this device (GPUs in a node); links name copies as gpu0, gpu1..."""
    memories: dict[str, MemoryTier]
    compute: dict[str, ComputeUnit] = Field(default_factory=dict)
    default_memory: str | None = None
    """Where tensors live unless a plan says otherwise; defaults to the first tier listed."""
    dispatch_overhead: Time = 0.0
    """Host time to issue one op to this device (framework + driver)."""
    calibration: Calibration | None = None
    source: str = ""

    @model_validator(mode="after")
    def _references(self):
        if not self.memories:
            raise PydanticCustomError("no_memory", "needs at least one entry under 'memories'")
        if self.default_memory is None:
            object.__setattr__(self, "default_memory", next(iter(self.memories)))
        elif self.default_memory not in self.memories:
            raise _unknown_name("default_memory", self.default_memory, self.memories)
        for name, unit in self.compute.items():
            if unit.memory is not None and unit.memory not in self.memories:
                raise _unknown_name(f"compute.{name}.memory", unit.memory, self.memories)
        return self


class Link(Spec):
    """A connection between two memory tiers, e.g. host DDR to GPU HBM over PCIe.

    An endpoint names a device (or one copy of a device with count > 1, as 'gpu0') and a
    memory. A switch (kind 'nvswitch') joins every copy of a device: `between` names the same
    'device.memory' twice, each copy gets a port of `bandwidth` per direction, and a transfer
    between two copies crosses the sender's port out and the receiver's port in.
    """

    kind: LinkKind
    between: tuple[str, str]
    """Two endpoints written 'device.memory', e.g. ['host.ddr', 'gpu.hbm'] or ['gpu0.hbm', 'gpu1.hbm']."""
    bandwidth: Bandwidth
    """Per direction."""
    latency: Time = 0.0
    duplex: Literal["full", "half"] = "full"
    efficiency: Fraction = 1.0
    in_network_reduction: bool = False
    """The switch reduces data itself (NVLink SHARP on third-generation NVSwitch, InfiniBand
    SHARP): an all-reduce sends each rank's data to it once and receives the result once."""
    source: str = ""

    @property
    def joins_copies(self) -> bool:
        """Both ends are one memory of copies of one device (a switch, GPU to GPU): a link that
        collectives run over, unlike a host link."""
        (first, _, first_memory), (second, _, second_memory) = (end.partition(".") for end in self.between)
        return first_memory == second_memory and first.rstrip("0123456789") == second.rstrip("0123456789")


class System(Spec):
    """A whole machine: devices and the links between their memories."""

    name: str
    description: str = ""
    devices: dict[str, Device]
    links: dict[str, Link] = Field(default_factory=dict)
    main_device: str | None = None
    """The device that runs the workload; defaults to the first device with compute units."""

    @model_validator(mode="after")
    def _references(self):
        if not self.devices:
            raise PydanticCustomError("no_device", "needs at least one entry under 'devices'")
        if self.main_device is None:
            with_compute = [name for name, dev in self.devices.items() if dev.compute]
            object.__setattr__(self, "main_device", (with_compute or list(self.devices))[0])
        elif self.main_device not in self.devices:
            raise _unknown_name("main_device", self.main_device, self.devices)
        instances = self.instances()
        for link_name, link in self.links.items():
            for endpoint in link.between:
                device, _, memory = endpoint.partition(".")
                if endpoint.partition(".")[0] in self.devices and link.kind == "nvswitch":
                    device = self.instance_names(device)[0]
                if device not in instances or memory not in instances[device].memories:
                    known = [f"{d}.{m}" for d, dev in instances.items() for m in dev.memories]
                    raise _unknown_name(f"links.{link_name}.between", endpoint, known)
        return self

    @property
    def device(self) -> Device:
        """The device that runs the workload."""
        return self.devices[self.main_device]

    def instance_names(self, device: str) -> list[str]:
        """The copies of a device: its own name when count is 1, else name0, name1, ..."""
        count = self.devices[device].count
        return [device] if count == 1 else [f"{device}{i}" for i in range(count)]

    def instances(self) -> dict[str, Device]:
        """Every physical device by name (copies of a device with count > 1 named name0, name1...)."""
        return {name: dev for device, dev in self.devices.items() for name in self.instance_names(device)}

    @property
    def main_instance(self) -> str:
        """The physical device that runs a single-device workload (the first copy of main_device)."""
        return self.instance_names(self.main_device)[0]


def _unknown_name(key: str, value: str, known) -> PydanticCustomError:
    close = difflib.get_close_matches(value, list(known), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(known)}"
    return PydanticCustomError("unknown_name", "{key}: '{value}' names nothing ({hint})",
                               {"key": key, "value": value, "hint": hint})
