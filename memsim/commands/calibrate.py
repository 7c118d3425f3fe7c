"""memsim calibrate: fit a machine's handful of global constants and write a calibrated YAML.

Two sources: this machine, measured now with torch (--device cpu|cuda), or a file measured on
the machine by someone else (--from FILE, with the datasheet config of that machine, --hw).
"""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import yaml

from memsim.errors import MemsimError

if TYPE_CHECKING:
    from memsim.hardware.schema import Calibration

DEFAULT_BASE = {"cpu": "generic-x86-cpu"}
CUDA_BASES = (("H200", "nvidia-h200"), ("H100", "nvidia-h100-sxm"), ("A100", "nvidia-a100-80gb-sxm"))


def add_parser(commands) -> None:
    calibrate = commands.add_parser("calibrate", help="fit a machine's efficiencies and overheads; write a calibrated YAML")
    source = calibrate.add_mutually_exclusive_group(required=True)
    source.add_argument("--device", choices=["cpu", "cuda"], help="measure this machine's device with torch")
    source.add_argument("--from", dest="measured", metavar="MEASURED", action="append",
                        help="fit to a file measured on the machine (repeat to fit several, e.g. a layer "
                             "profile and an attention profile)")
    calibrate.add_argument("--hw", metavar="BASE.yaml", help="the machine's datasheet config (default for --device "
                           "cpu: generic-x86-cpu; for cuda: chosen by the GPU's name)")
    calibrate.add_argument("--format", help="format of MEASURED (default: detected)")
    calibrate.add_argument("--fit-half", action="store_true",
                           help="fit on every other size only (e.g. token count), keeping the rest held out")
    calibrate.add_argument("--out", required=True, metavar="FILE.yaml")
    calibrate.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args) -> int:
    from memsim.validate.measure import stderr_progress

    if args.measured:
        if not args.hw:
            raise MemsimError("calibrate --from needs --hw BASE.yaml (the datasheet config of the measured machine)")
        (calibration, links), base = calibrate_from_file(args.measured, args.hw, args.format, args.fit_half,
                                                         stderr_progress)
        path = write_calibrated(base, calibration, args.out, links=links)
    else:
        machine = calibrate_this_machine(args.device, args.hw, stderr_progress)
        calibration, links = machine.calibration, {}
        path = write_measured(machine, args.out)
    print(f"wrote {path}")
    if args.device == "cpu" and not args.hw:
        print(f"  peaks: {_peaks_source(machine.core_peaks)}")
        if machine.stream_bandwidth:
            print(f"  memory: {machine.stream_bandwidth / 1e9:.1f} GB/s streamed (the largest micro-benchmarks)")
    for name, link in links.items():
        print(f"  link {name}: efficiency {link.efficiency:.3f}, latency {link.latency * 1e6:.2f} us")
    for name, value in calibration.residuals.items():
        print(f"  {name}: {value:.1%}")
    return 0


def _peaks_source(core_peaks: dict | None) -> str:
    if core_peaks:
        return core_peaks["source"]
    return (f"{DEFAULT_BASE['cpu']}'s, as this CPU's /proc/cpuinfo gives no vector width or clock "
            "(pass --hw BASE.yaml with its datasheet)")


def calibrate_from_file(measured: str | list[str], hw: str, format: str | None, fit_half: bool, progress=None):
    """(FittedMachine, base config path) fitted to one or more files measured on the same machine
    (each read in its own format, halved on its own sizes); see memsim.validate.fit."""
    import pandas as pd

    from memsim.hardware import load_system
    from memsim.hardware.load import resolve_path
    from memsim.validate.fit import FittedMachine, calibration_half, fit_calibration
    from memsim.validate.readers import read_measured

    system = load_system(hw)
    frames, described, device_name = [], [], ""
    for path in [measured] if isinstance(measured, str) else measured:
        data = read_measured(path, format)
        ops = data.ops[calibration_half(data.ops["size"])] if fit_half else data.ops
        frames.append(ops)
        described.append(f"{Path(path).name} ({data.format}, {'every other size' if fit_half else 'all rows'})")
        device_name = device_name or data.device_name
    ops = pd.concat(frames, ignore_index=True)
    if progress:
        progress(f"fitting {len(ops)} measured ops of {', '.join(name.split(' (')[0] for name in described)}")
    described = " + ".join(described)
    calibration, links = fit_calibration(ops, system.device, f"fitted to {described}", system.links,
                                         fitted_on=described, progress=progress)
    return FittedMachine(calibration.model_copy(update={"device_name": device_name}), links), resolve_path(hw)


class MeasuredMachine(NamedTuple):
    calibration: Calibration
    base: Path
    threads: int | None
    """Cores the measurement ran on, where fewer than the base config's (a CPU)."""
    core_peaks: dict | None
    """One core's peaks read off this CPU (memsim.validate.measure.cpu_core_peaks), replacing the
    base config's where the base is the generic CPU one."""
    stream_bandwidth: float | None = None
    """Bytes/s this CPU's cores streamed at (memsim.validate.measure.streaming_bandwidth),
    replacing the base config's memory bandwidth where the base is the generic CPU one."""
    sustained_matrix_fraction: float | None = None
    """The share of its bf16 matrix peak a GPU held over back-to-back GEMMs at its power limit
    (memsim.validate.measure.sustained_matrix_rate): its unit's power_cap."""


def calibrate_this_machine(device: str, hw: str | None, progress=None) -> MeasuredMachine:
    """The calibration measured on this machine's `device`, with what writing it needs."""
    import torch

    from memsim.hardware import load_system
    from memsim.hardware.load import resolve_path
    from memsim.validate.fit import fit_calibration
    from memsim.cost.roofline import main_compute_unit
    from memsim.hardware.schema import Calibration
    from memsim.validate.measure import (at_achieved_peak, cpu_core_peaks, machine_description, measure_device,
                                         measure_warm_overhead, single_thread, streaming_bandwidth,
                                         sustained_matrix_rate)

    name = machine_description(device)
    base = hw or DEFAULT_BASE.get(device) or next((config for key, config in CUDA_BASES if key in name), None)
    if base is None:
        raise MemsimError(f"no shipped config matches '{name}'; pass --hw BASE.yaml")
    system = load_system(base)
    # the generic CPU config's peaks are one core design's; this CPU states its own
    core_peaks = cpu_core_peaks() if device == "cpu" and hw is None else None
    with single_thread(device) as threads:
        ops = measure_device(device, progress)
        # a CPU op's fixed cost is host work, faster where its code ran recently; a GPU kernel's is the device's
        warm, footprint = measure_warm_overhead(progress) if device == "cpu" else ({}, 0.0)
    sustained = None
    if device == "cuda":
        peak = main_compute_unit(system.device).matrix_flops.get("bf16")
        sustained = min(sustained_matrix_rate(progress) / peak, 1.0) if peak else None
    # at least as fast as its large GEMMs ran; and its memory streams as measured, where the generic
    # config's bandwidth is another host's
    core_peaks = at_achieved_peak(core_peaks, ops)
    stream = streaming_bandwidth(ops) if device == "cpu" and hw is None else None
    main = _measured_device(system.device, threads, core_peaks, stream)  # the cores and memory the fit sees
    if warm:  # the fit finds the fixed costs of cold ops, each measured op's warmth priced in
        stated = main.calibration or Calibration(source="measured")
        main = main.model_copy(update={"calibration": stated.model_copy(
            update={"warm_overhead": warm, "kind_footprint": footprint})})
    if progress:
        progress(f"fitting {len(ops)} measured ops")
    calibration, _ = fit_calibration(ops, main, f"memsim calibrate --device {device}", system.links,
                                     fitted_on=f"{len(ops)} micro-benchmarks on {device}", progress=progress)
    calibration = calibration.model_copy(update={
        "device_name": name, "torch_version": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")})
    return MeasuredMachine(calibration, resolve_path(base), threads, core_peaks, stream, sustained)


def _measured_unit(unit, threads: int | None, core_peaks: dict | None):
    """The main unit as measured: this CPU's own peaks per core, cut to the threads used."""
    if core_peaks:
        unit = unit.model_copy(update={key: {d: rate * unit.count for d, rate in core_peaks[key].items()}
                                       for key in ("matrix_flops", "vector_flops")})
    return on_cores(unit, threads) if threads is not None else unit


def _measured_device(device, threads: int | None, core_peaks: dict | None, stream: float | None):
    """The main device as measured: its main unit (_measured_unit) and, where measured, the
    bandwidth its cores streamed at as its default memory's."""
    unit_name = next(iter(device.compute))
    update = {"compute": {**device.compute, unit_name: _measured_unit(device.compute[unit_name], threads, core_peaks)}}
    if stream:
        tier = device.default_memory or next(iter(device.memories))
        update["memories"] = {**device.memories, tier: device.memories[tier].model_copy(
            update={"bandwidth": stream, "read_bandwidth": stream, "write_bandwidth": stream})}
    return device.model_copy(update=update)


def write_measured(machine: MeasuredMachine, out: str) -> Path:
    return write_calibrated(machine.base, machine.calibration, out, machine.threads, core_peaks=machine.core_peaks,
                            stream_bandwidth=machine.stream_bandwidth,
                            sustained_matrix_fraction=machine.sustained_matrix_fraction)


def on_cores(unit, cores: int):
    """A group of CPU cores cut to `cores` of them: peak rates are for the whole group."""
    scale = cores / unit.count
    return unit.model_copy(update={"count": cores,
                                   "matrix_flops": {d: r * scale for d, r in unit.matrix_flops.items()},
                                   "vector_flops": {d: r * scale for d, r in unit.vector_flops.items()}})


def write_calibrated(base: Path, calibration, out: str, threads: int | None = None, links: dict | None = None,
                     core_peaks: dict | None = None, stream_bandwidth: float | None = None,
                     sustained_matrix_fraction: float | None = None) -> Path:
    """The base YAML with a `calibration` section on its main device (and, for a CPU measured
    on fewer threads than it has cores, that thread count as its core count, with the peaks read
    off the CPU and the bandwidth its cores streamed at where given; for fitted links, their new
    efficiency and latency, and where those came from; for a GPU, the matrix rate it held at its
    power limit as its unit's power_cap)."""
    from memsim.hardware import load_system

    raw = yaml.safe_load(Path(base).read_text())
    system = load_system(base)
    device = raw["devices"][system.main_device]
    if threads is not None or core_peaks:
        name = next(iter(device["compute"]))
        unit = _measured_unit(system.device.compute[name], threads, core_peaks)
        device["compute"][name].update(count=unit.count, matrix_flops=dict(unit.matrix_flops),
                                       vector_flops=dict(unit.vector_flops))
    if core_peaks:
        device["source"] = f"{calibration.device_name or 'this CPU'}: {core_peaks['source']}"
    if stream_bandwidth:
        tier = device["memories"][system.device.default_memory or next(iter(device["memories"]))]
        for key in ("read_bandwidth", "write_bandwidth"):
            tier.pop(key, None)
        tier["bandwidth"] = stream_bandwidth
        device["source"] = (f"{device.get('source', '')}; memory streamed at {stream_bandwidth / 1e9:.1f} GB/s "
                            "(measured)").lstrip("; ")
    if sustained_matrix_fraction:
        unit = device["compute"][next(iter(device["compute"]))]
        unit["power_cap"] = {**(unit.get("power_cap") or {}),
                             "sustained_matrix_fraction": round(sustained_matrix_fraction, 4)}
    device["calibration"] = calibration.model_dump(mode="json", exclude_defaults=True)
    for name, link in (links or {}).items():
        raw["links"][name].update(efficiency=link.efficiency, latency=link.latency, source=link.source)
    raw["name"] = f"{raw.get('name', system.name)} (calibrated)"
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Calibrated from {Path(base).name} by memsim calibrate; constants in SI units.\n"
    path.write_text(header + yaml.safe_dump(raw, sort_keys=False, width=110))
    load_system(path)  # what we wrote must load
    return path
