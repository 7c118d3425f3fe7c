"""Regenerate validation/README.md: memsim's errors on every measured file in ../shared/ground-truth.

    .venv/bin/python validation/run_all.py [--ground-truth DIR] [--out validation/README.md] [--no-cpu | --cpu-only]
                                           [--vidur VIDUR_CLONE]

Protocol (generalisation, never fit): each GPU is calibrated with `memsim calibrate --from` on
every other token count of its Vidur Llama-2-7B file (--fit-half); errors are reported on the
other half of that file and on every other file measured on the same GPU; with --vidur, also on
Vidur's profiles of other models (each also calibrated on the whole of itself: the floor the
model's form reaches there), and its DGX all-reduce and send/recv profiles are priced on the
8-GPU node configs. Each file is also priced with the datasheet config alone. Finally this CPU is calibrated (`memsim calibrate
--device cpu`) and every tiny workload run for real is compared with its prediction; --cpu-only
does that alone and rewrites only the CPU parts of an existing README (the GPU part needs --vidur).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memsim.commands.calibrate import (calibrate_from_file, calibrate_this_machine, write_calibrated,  # noqa: E402
                                       write_measured)
from memsim.cost import price_ops  # noqa: E402
from memsim.hardware import load_system  # noqa: E402
from memsim.validate.fit import calibration_half  # noqa: E402
from memsim.validate.measure import stderr_progress  # noqa: E402
from memsim.validate.readers import gemm_row, read_measured  # noqa: E402
from memsim.validate.report import predict, validation_result  # noqa: E402

VIDUR = "microsoft/vidur/data/profiling/compute/{gpu}/meta-llama/Llama-2-7b-hf/mlp.csv"
TRACELENS = "AMD-AGI/TraceLens/tests/traces/h100"
MACHINES = {
    "h100": {"hw": "nvidia-h100-sxm", "mamf": "NVIDIA H100 SXM", "files": [
        f"{TRACELENS}/Qwen_Qwen1.5-0.5B-Chat__1016005.json.gz",
        f"{TRACELENS}/gaunernst_bert-small-uncased__1016001.json.gz",
        f"{TRACELENS}/Qwen_Qwen1.5-0.5B-Chat__1016005_perf_report_csvs/GEMM.csv",
        f"{TRACELENS}/Qwen_Qwen1.5-0.5B-Chat__1016005_perf_report_csvs/SDPA_fwd.csv"]},
    "a100": {"hw": "nvidia-a100-80gb-sxm", "mamf": "NVIDIA A100 SXM", "files": [
        "microsoft/vidur/data/profiling/a100/attention.csv",
        "PrincetonUniversity/LLMCompass/ae/figure5/ab/real_hardware/matmul_A100.csv",
        "PrincetonUniversity/LLMCompass/ae/figure5/cf/real_hardware/softmax_A100.csv",
        "PrincetonUniversity/LLMCompass/ae/figure5/de/real_hardware/layernorm_A100.csv",
        "PrincetonUniversity/LLMCompass/ae/figure5/g/real_hardware/gelu_A100.csv",
        "facebookresearch/HolisticTraceAnalysis/tests/data/negative_queue_length_values_check/rank0.json.gz"]},
}
VIDUR_COMPUTE = "data/profiling/compute"
# Vidur's DGX collective profiles (all_reduce.csv, send_recv.csv) and the node configs they are priced on
VIDUR_NETWORK = {"h100": ("data/profiling/network/h100_dgx", "nvidia-hgx-h100-8gpu"),
                 "a100": ("data/profiling/network/a100_dgx", "nvidia-dgx-a100-8gpu")}
MAMF = "stas00/ml-engineering/compute/accelerator/README.MAMF_table_excerpt.md"
# Files also calibrated on every other size of their own, to separate what the model can fit
# (with constants of that setup) from what transfers between setups.
OWN_HALF = ("microsoft/vidur/data/profiling/a100/attention.csv",
            "PrincetonUniversity/LLMCompass/ae/figure5/ab/real_hardware/matmul_A100.csv")
# Every tiny workload (the configs that run for real on a CPU), one prefill and one decode step each
CPU_STEPS = (("prefill", 1, 64), ("decode", 4, 64))
CPU_RUNS = 3


def row(name: str, config: str, summary: dict) -> dict:
    return {"file": name, "config": config, "n": summary["count"], "MAPE": summary["mape"],
            "median": summary["median_ape"], "p90": summary["p90_ape"], "signed": summary["signed_mean"],
            "summed": summary["sum_error"]}


def price_file(path: Path, system, config: str, name: str, ops=None) -> tuple[list[dict], dict]:
    data = read_measured(path)
    priced = predict(data.ops if ops is None else ops, system)
    result = validation_result(priced, str(path), system.name)
    rows = [row(f"{name} [{group}]" if group != "overall" else name, config, summary)
            for group, summary in result["groups"].items()
            if group == "overall" or len(result["groups"]) > 2]
    return rows, result


def markdown(frame: pd.DataFrame) -> str:
    shown = frame.copy()
    for column in ("MAPE", "median", "p90"):
        shown[column] = shown[column].map("{:.1%}".format)
    for column in ("signed", "summed"):
        shown[column] = shown[column].map("{:+.1%}".format)
    header = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
    return header + "\n".join("| " + " | ".join(str(v) for v in values) + " |" for values in shown.to_numpy())


def mamf_rows(root: Path, calibrated: dict) -> list[str]:
    """Best-shape bf16 matmul TFLOP/s from the MAMF table vs memsim's prediction for that shape."""
    lines = []
    text = (root / MAMF).read_text()
    for gpu, spec in MACHINES.items():
        line = next((ln for ln in text.splitlines() if ln.startswith(f"| {spec['mamf']} ")), None)
        if line is None:
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        measured, (m, n, k) = float(cells[1]), (int(x) for x in cells[4].split("x"))
        op = pd.DataFrame([gemm_row("matmul", "bf16", 1, m, n, k, 0.0, m)])
        for config, system in (("datasheet", load_system(spec["hw"])), ("calibrated", calibrated[gpu])):
            seconds = price_ops(op, system.device)["duration_s"].iloc[0]
            predicted = 2.0 * m * n * k / seconds / 1e12
            lines.append(f"| {spec['mamf']} | {m}x{n}x{k} | {config} | {measured:.1f} | {predicted:.1f} | "
                         f"{predicted / measured - 1:+.1%} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ground-truth", default=str(REPO.parent / "shared" / "ground-truth"))
    parser.add_argument("--out", default=str(REPO / "validation" / "README.md"))
    parser.add_argument("--no-cpu", action="store_true", help="skip the real CPU run (machine-dependent)")
    parser.add_argument("--cpu-only", action="store_true",
                        help="run only the CPU rounds and rewrite only the CPU parts of an existing --out")
    parser.add_argument("--vidur", help="a clone of microsoft/vidur: its other models' profiles "
                        "(data/profiling/compute) and its DGX H100 and A100 all-reduce and send/recv profiles are validated too")
    args = parser.parse_args()
    root = Path(args.ground_truth)
    if not root.is_dir():
        print(f"run_all: {root}: no ground-truth folder", file=sys.stderr)
        return 2
    rows, calibrations, calibrated, targets = [], [], {}, []
    if args.cpu_only:
        with tempfile.TemporaryDirectory() as folder:
            refresh_cpu(Path(args.out), cpu_section(folder, targets), targets)
        print(f"rewrote the CPU parts of {args.out}")
        return 0
    transfer = {}  # (gpu, model) -> GEMM MAPE and median under the Llama-2-7B half calibration
    with tempfile.TemporaryDirectory() as folder:
        for gpu, spec in MACHINES.items():
            vidur = root / VIDUR.format(gpu=gpu)
            stderr_progress(f"{gpu}: calibrating on every other token count of {vidur.name}")
            system = calibrated_on_half(vidur, spec["hw"], f"{folder}/{gpu}.yaml")
            calibrated[gpu] = system
            calibrations.append((gpu, system.device.calibration))
            datasheet = load_system(spec["hw"])
            data = read_measured(vidur)
            held_out = data.ops[~calibration_half(data.ops["size"])].reset_index(drop=True)
            name = f"{gpu} Vidur Llama-2-7B mlp.csv (held-out half)"
            result = validation_result(predict(held_out, system), str(vidur), system.name)
            rows += [row(f"{name} [{op}]" if op != "overall" else name, "calibrated", s)
                     for op, s in result["ops"].items()]
            rows += [row(f"{name} [{g}]", "calibrated", s) for g, s in result["groups"].items() if g != "overall"]
            gemm = result["groups"]["gemm"]
            transfer[(gpu, "Llama-2-7b-hf")] = (vidur, spec["hw"], gemm["mape"], gemm["median_ape"])
            targets.append((f"{gpu} Vidur held-out GEMMs: median <= 5%", gemm["median_ape"], 0.05))
            targets.append((f"{gpu} Vidur held-out GEMMs: MAPE <= 8%", gemm["mape"], 0.08))
            targets += [(f"{gpu} Vidur held-out {op}: MAPE <= 10%", s["mape"], 0.10)
                        for op, s in result["ops"].items() if op != "overall"]
            rows += price_file(vidur, datasheet, "datasheet", f"{gpu} Vidur Llama-2-7B mlp.csv (all rows)",
                               data.ops)[0]
            for relative in spec["files"]:
                path = root / relative
                if not path.exists():
                    continue
                stderr_progress(f"{gpu}: {relative}")
                label = f"{gpu} {relative.split('/')[-1]}"
                found, result = price_file(path, system, "calibrated (Vidur half)", label)
                rows += found
                if "Qwen" in relative and relative.endswith(".json.gz"):
                    targets.append((f"{gpu} Kineto Qwen trace: summed GPU time within 10%",
                                    abs(result["groups"]["overall"]["sum_error"]), 0.10))
                if "gemm" in result["groups"] and "Vidur" not in label:
                    targets.append((f"{label} GEMMs (other file, same GPU): MAPE <= 8%",
                                    result["groups"]["gemm"]["mape"], 0.08))
                rows += price_file(path, datasheet, "datasheet", label)[0]
                if relative in OWN_HALF:
                    rows += own_half(path, spec["hw"], label, folder)
            for path in other_vidur_models(args.vidur, gpu):
                stderr_progress(f"{gpu}: Vidur {path.parent.name}")
                label = f"{gpu} Vidur {path.parent.name} mlp.csv"
                found, result = price_file(path, system, "calibrated (Vidur half)", label)
                rows += found
                gemm = result["groups"]["gemm"]
                transfer[(gpu, path.parent.name)] = (path, spec["hw"], gemm["mape"], gemm["median_ape"])
                targets.append((f"{label} GEMMs (other model, same GPU): median <= 5%", gemm["median_ape"], 0.05))
                targets.append((f"{label} GEMMs (other model, same GPU): MAPE <= 8%", gemm["mape"], 0.08))
        rows += collectives(args.vidur, folder)
        floors = fit_floors(transfer) if args.vidur else []
        cpu_lines = [] if args.no_cpu else cpu_section(folder, targets)
    mamf = mamf_rows(root, calibrated) if (root / MAMF).exists() else []
    out = Path(args.out)
    before = out.read_text() if out.exists() and (not args.vidur or args.no_cpu) else None
    write_readme(out, pd.DataFrame(rows), calibrations, mamf, cpu_lines, targets, floors)
    if before is not None:  # what this run could not measure stays, marked
        out.write_text(kept_from(before, out.read_text()))
    print(f"wrote {args.out}")
    return 0


def fit_floor(path: Path, hw: str) -> tuple[float, float]:
    """GEMM MAPE and median of a file priced with constants fitted on the whole of it: how closely
    the model's form can follow that file at all, the floor under any error of transfer."""
    (calibration, links), base = calibrate_from_file(str(path), hw, None, False)
    with tempfile.TemporaryDirectory() as folder:
        system = load_system(write_calibrated(base, calibration, f"{folder}/floor.yaml", links=links))
    gemm = validation_result(predict(read_measured(path).ops, system), str(path), system.name)["groups"]["gemm"]
    return gemm["mape"], gemm["median_ape"]


def fit_floors(transfer: dict) -> list[str]:
    """Table rows: each Vidur file's GEMM errors under the Llama-2-7B calibration and under one
    fitted on the file itself (one fit per core at a time: each takes about a minute)."""
    floors = {}
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        jobs = {pool.submit(fit_floor, path, hw): key for key, (path, hw, _, _) in transfer.items()}
        for done, job in enumerate(as_completed(jobs), 1):
            floors[jobs[job]] = job.result()
            stderr_progress(f"fit floors: {done}/{len(jobs)} ({' '.join(jobs[job])})")
    return [f"| {gpu} | {model} | {mape:.1%} / {median:.1%} | {floors[(gpu, model)][0]:.1%} / "
            f"{floors[(gpu, model)][1]:.1%} |" for (gpu, model), (_, _, mape, median) in transfer.items()]


def other_vidur_models(clone: str | None, gpu: str) -> list[Path]:
    """Vidur's mlp.csv of every model but Llama-2-7B profiled on `gpu` (<gpu>/<org>/<model>/mlp.csv)."""
    if not clone:
        return []
    folder = Path(clone) / VIDUR_COMPUTE / gpu
    return sorted(path for path in folder.glob("*/*/mlp.csv") if path.parent.name != "Llama-2-7b-hf")


def collectives(clone: str | None, folder: str) -> list[dict]:
    """Vidur's DGX collective profiles per rank count: priced on the 8-GPU node datasheet configs
    and on the held-out half after fitting the switch link and the per-call cost on the other;
    send/recv also with the link fitted on the all-reduces (a different pattern, same link)."""
    rows = []
    for gpu, (relative, hw) in VIDUR_NETWORK.items():
        all_reduce, send_recv = (Path(clone or "") / relative / name for name in ("all_reduce.csv", "send_recv.csv"))
        if not clone or not all_reduce.exists():
            continue
        stderr_progress(f"{gpu}: Vidur {relative}")
        ops = read_measured(all_reduce).ops
        rows += _per_label(ops, load_system(hw), all_reduce, gpu, f"datasheet ({hw})")
        system = calibrated_on_half(all_reduce, hw, f"{folder}/{gpu}-network.yaml")
        held_out = ops[~calibration_half(ops["size"])]
        rows += _per_label(held_out, system, all_reduce, gpu, "calibrated (own half), held-out half")
        if send_recv.exists():
            sends = read_measured(send_recv).ops
            rows += _per_label(sends, load_system(hw), send_recv, gpu, f"datasheet ({hw})")
            rows += _per_label(sends, system, send_recv, gpu, "link fitted on all_reduce.csv (half)")
            own = calibrated_on_half(send_recv, hw, f"{folder}/{gpu}-p2p.yaml")
            rows += _per_label(sends[~calibration_half(sends["size"])], own, send_recv, gpu,
                               "calibrated (own half), held-out half")
    return rows


def _per_label(ops, system, path: Path, gpu: str, config: str) -> list[dict]:
    rows = []
    for label, group in ops.groupby("label", sort=True):
        summary = validation_result(predict(group.reset_index(drop=True), system), str(path), system.name,
                                    by_label=False)["groups"]["overall"]
        rows.append(row(f"{gpu} Vidur DGX {path.name} [{label}]", config, summary))
    return rows


def calibrated_on_half(path: Path, hw: str, out: str):
    """`memsim calibrate --from PATH --hw HW --fit-half --out OUT`, loaded."""
    (calibration, links), base = calibrate_from_file(str(path), hw, None, True)
    return load_system(write_calibrated(base, calibration, out, links=links))


def own_half(path: Path, hw: str, label: str, folder: str) -> list[dict]:
    """Errors on the held-out half of a file calibrated on its other half."""
    system = calibrated_on_half(path, hw, f"{folder}/own.yaml")
    data = read_measured(path)
    held_out = data.ops[~calibration_half(data.ops["size"])].reset_index(drop=True)
    return price_file(path, system, "calibrated (own half), held-out half", label, held_out)[0]


def cpu_section(folder: str, targets: list) -> list[str]:
    """CPU_RUNS rounds of calibrate-then-run over every tiny workload: on a shared machine one
    round is one sample. One table row per workload step, its rounds side by side."""
    from memsim.trace.workload import workloads
    from memsim.validate.real import measure_workload

    steps = [(name, *step) for name in sorted(workloads()) if name.endswith("-tiny") for step in CPU_STEPS]
    found: dict[str, list[dict]] = {}
    machine = ""
    for round_ in range(1, CPU_RUNS + 1):
        stderr_progress(f"cpu round {round_}: memsim calibrate --device cpu")
        measured = calibrate_this_machine("cpu", None, stderr_progress)
        machine = f"{measured.calibration.device_name}, torch {measured.calibration.torch_version}"
        system = load_system(write_measured(measured, f"{folder}/cpu.yaml"))
        for name, phase, batch, context in steps:
            ops = measure_workload(name, "cpu", phase, batch, context, stderr_progress)
            overall = validation_result(predict(ops, system), name, system.name)["groups"]["overall"]
            found.setdefault(f"{name} {phase} batch {batch} context {context}", []).append(overall)
    middles = {workload: float(np.median(np.abs([r["sum_error"] for r in rounds])))
               for workload, rounds in found.items()}
    within = sum(middle <= 0.15 for middle in middles.values())
    per_op = np.median([r["mape"] for rounds in found.values() for r in rounds])
    lines = [f"Measured on {machine}. Times and MAPE are the rounds' medians. **{within} of {len(found)} steps within "
             f"15%** (median of the rounds' absolute summed errors); per-op MAPE {per_op:.0%} (median over steps and "
             "rounds).", "",
             "| workload | ops | measured ms | predicted ms | summed, per round | median abs summed | MAPE |",
             "|---|---|---|---|---|---|---|"]
    for workload, rounds in found.items():
        summed = [r["sum_error"] for r in rounds]
        middle = middles[workload]
        lines.append(f"| {workload} | {rounds[0]['count']} | {np.median([r['measured_s'] for r in rounds]) * 1e3:.2f} | "
                     f"{np.median([r['predicted_s'] for r in rounds]) * 1e3:.2f} | "
                     f"{', '.join(f'{e:+.1%}' for e in summed)} | {middle:.1%} | "
                     f"{np.median([r['mape'] for r in rounds]):.1%} |")
        targets.append((f"this CPU, {workload}: summed time within 15% (median of {CPU_RUNS} rounds)", middle, 0.15))
    return lines


def write_readme(path: Path, frame: pd.DataFrame, calibrations, mamf: list[str], cpu_lines: list[str],
                 targets: list, floors: list[str]) -> None:
    checks = "\n".join(target_row(*target) for target in targets)
    constants = []
    for gpu, calibration in calibrations:
        values = calibration.model_dump(include={"matrix_efficiency", "attention_efficiency", "bandwidth_efficiency",
                                                 "overlap_loss", "first_wave_exposure", "wave_quantization",
                                                 "pitch_conflict_cost", "block_bandwidth", "category_overhead"},
                                        exclude_none=True)
        shown = ", ".join(f"{key}={_short(value)}" for key, value in values.items())
        constants.append(f"- **{gpu}** ({calibration.fitted_on}): {shown}")
    text = f"""# Validation against measured GPU and CPU runs

Regenerate with `.venv/bin/python validation/run_all.py --vidur VIDUR_CLONE` (reads
../shared/ground-truth and, with that flag, a clone of microsoft/vidur for its other models' and
its collective profiles; about ten minutes on two cores, CPU rounds included; `--no-cpu`
skips them, `--cpu-only` runs them alone and rewrites only the CPU rows and section; a run
without `--vidur` or with `--no-cpu` keeps the rows it could not measure from the README it
replaces, the clone's marked †). Every table below comes from that one command; the findings'
figures come from the experiments they describe, run on the same files.

**Protocol.** Each GPU is calibrated with `memsim calibrate --from` on *every other token count*
of its Vidur Llama-2-7B file (`--fit-half`). The constants fitted are global to the machine:
matrix efficiency per dtype, bandwidth efficiency and fixed overhead per op category present,
the compute/memory overlap loss, the share of a wave's memory time a GEMM's first wave exposes,
the share of a partial last wave a GEMM pays as a whole wave, the cost of operand rows whose
length is a multiple of a large power of two (and, on attention data, attention's fraction of
the GEMM rate; without it the datasheet's fraction applies). Errors are then measured on the
*other half* of that file
and on *every other file from the same GPU* (different models, libraries and setups). Each file
is also priced with the datasheet config alone (no calibration). Vidur's attention file and
LLMCompass's matmul file are also calibrated on half of their own sizes ("own half") to show
what the model reaches with constants of that setup. Errors are relative to the
measured time: MAPE, median and p90 absolute error, signed mean error, and the error of the
summed time.

Fitted constants:

{chr(10).join(constants)}

{TARGETS_HEADING}

| target | reached | |
|---|---|---|
{checks}

{FINDINGS}

{FLOORS_HEADING}

GEMM MAPE / median of each Vidur profile, priced with the Llama-2-7B calibration above (its
held-out half for Llama-2-7B itself) and with constants fitted on the whole of that file. The
second is the floor under any transfer error: what the model's form reaches on the file with
the constants that suit it best.

| GPU | model | calibrated on Llama-2-7B (half) | calibrated on the file itself |
|---|---|---|---|
{chr(10).join(floors) if floors else "(needs --vidur)"}

## Results

{markdown(frame)}

## Peak matmul (MAMF table, stas00/ml-engineering)

| GPU | best shape | config | measured TFLOP/s | predicted TFLOP/s | error |
|---|---|---|---|---|---|
{chr(10).join(mamf)}

{cpu_text(cpu_lines)}"""
    path.write_text(text)


CPU_HEADING = "## This CPU: `memsim validate real` after `memsim calibrate --device cpu`"
TARGETS_HEADING = "## Targets of issue 5"
FLOORS_HEADING = "## How closely the model can follow each Vidur file"
CPU_TARGET = "| this CPU, "


def cpu_text(cpu_lines: list[str]) -> str:
    return f"""{CPU_HEADING}

Each round calibrates this machine and then runs every tiny workload for real (each op's fastest
run, runs repeated until those settle as the calibration's do; one thread, timed by the
thread's CPU time). The spread between rounds is the
machine's own (shared 2 vCPUs).

{chr(10).join(cpu_lines) if cpu_lines else "(skipped: --no-cpu)"}
"""


def refresh_cpu(path: Path, cpu_lines: list[str], targets: list) -> None:
    """Rewrite the CPU rows of the targets table, the findings and the CPU section of an existing
    README, keeping its GPU tables: the CPU part is this machine's, the GPU part needs --vidur."""
    text = path.read_text()
    try:
        before, after = text.split(f"{TARGETS_HEADING}\n\n", 1)
        table, after = after.split("\n\n", 1)
        gpu_sections = FLOORS_HEADING + after.split(FLOORS_HEADING, 1)[1].split(CPU_HEADING, 1)[0]
    except (ValueError, IndexError):
        raise SystemExit(f"run_all: {path}: not a README this script wrote; run without --cpu-only") from None
    rows = [line for line in table.splitlines() if not line.startswith(CPU_TARGET)] + [target_row(*t) for t in targets]
    note = f"{KEPT_NOTE}\n\n" if after.startswith(KEPT_NOTE) else ""  # kept GPU rows stay marked
    path.write_text(f"{before}{TARGETS_HEADING}\n\n" + "\n".join(rows) + f"\n\n{note}{FINDINGS}\n\n{gpu_sections}"
                    + cpu_text(cpu_lines))


KEPT_MARK = " †"
KEPT_NOTE = ("† Kept from the README this run replaced: rows that need a clone of microsoft/vidur "
             "(--vidur: its other models' and its collective profiles, and the fits on whole files), "
             "which this run did not have.")


def kept_from(before: str, after: str) -> str:
    """`after` (a README this script just wrote) with the table rows of `before` that it lacks
    (files read by an earlier run only: --vidur's clone) put back, marked, and `before`'s CPU
    section where `after` has none (--no-cpu). Rows are matched by their leading cells."""
    sections_before = dict(_sections(before)[1])
    head, sections = _sections(after)
    parts = [head]
    for title, body in sections:
        old = sections_before.get(title, "")
        if title == CPU_HEADING and "(skipped: --no-cpu)" in body and old:
            parts.append(title + old)
            continue
        blocks, kept = body.split("\n\n"), False
        old_tables = [block for block in old.split("\n\n") if block.lstrip().startswith("|")]
        tables = (index for index, block in enumerate(blocks) if block.lstrip().startswith("|"))
        for index, old_table in zip(tables, old_tables):
            blocks[index], marked = _merged_table(old_table, blocks[index], title)
            kept = kept or marked
        if kept:
            last_table = max(index for index, block in enumerate(blocks) if block.lstrip().startswith("|"))
            blocks.insert(last_table + 1, KEPT_NOTE)
        parts.append(title + "\n\n".join(blocks))
    return "".join(parts)


def _sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    pieces = re.split(r"(?m)^(## .*)$", text)
    return pieces[0], list(zip(pieces[1::2], pieces[2::2]))


def _merged_table(old: str, new: str, title: str) -> tuple[str, bool]:
    """`new`'s rows, in `old`'s order, with `old`'s rows that `new` lacks kept (marked, but for
    the CPU's targets, which keep their own section) where they come from --vidur's clone or
    the CPU rounds; (table, whether any row was kept)."""
    width = 3 if title.startswith("## Peak matmul") else 2  # the cells that name a row

    def key(line):
        return tuple(_cells(line)[:width])
    fresh = {key(line): line for line in new.splitlines() if line.startswith("|")}
    out, placed, kept = [], set(), False
    for line in old.splitlines():
        if not line.startswith("|"):
            continue
        name = key(line)
        if name in fresh:
            out.append(fresh[name])
            placed.add(name)
        elif line.startswith(CPU_TARGET):
            out.append(line)
        elif _from_clone(line):
            cells = line.split("|")
            cells[1] = cells[1].rstrip().removesuffix(KEPT_MARK) + KEPT_MARK + " "
            out.append("|".join(cells))
            kept = True
    out += [line for name, line in fresh.items() if name not in placed]  # rows new in this run
    return "\n".join(out), kept


def _cells(line: str) -> list[str]:
    """A table row's cells, without the mark of a kept row."""
    return [cell.strip().removesuffix(KEPT_MARK.strip()).strip() for cell in line.strip().strip("|").split("|")]


def _from_clone(line: str) -> bool:
    """A row only --vidur's clone gives: another model's or a collective Vidur profile."""
    cells = _cells(line)
    if cells[0] in ("h100", "a100"):  # the floors table, which only a run with the clone fits
        return True
    return "Vidur" in cells[0] and "Llama-2-7B" not in cells[0] and "held-out" not in cells[0]


def target_row(name: str, value: float, limit: float) -> str:
    return f"| {name} | {value:.1%} | {'met' if value <= limit else 'missed'} |"


# Why the missed targets are missed: causes found in the model and the data, not in the numbers
# above (which the script regenerates).
FINDINGS = """**What changed in this round: a CPU op's fixed cost by its warmth.** On this 2-vCPU Xeon
(2 MiB of L2 per core) the same small op, run for real in a traced step, costs two to three
times more when much has run since its kind last ran, and the fixed cost per category that
calibration fitted could not tell these apart: xlstm-tiny's sLSTM loop (19 ops, 10 kinds, 128
times) ran its ops at 0.6-0.7 of their price, and the calibration's own first size of each
row op, which follows the large attention and conv micro-benchmarks, took 43 us (a mean over
256 x 4 values) and 35 us (softmax) against 14 and 16 us for 256 x 64 values right after.
- *What sets it: the bytes and the kinds since the op's kind last ran.* Four small ops (add,
  mul, sub, div over 256 values) after an in-place write of X bytes, relative to X = 32 MiB:
  0.61-0.62 up to 512 KiB, 0.65 at 1 MiB, 0.77 at 1.5 MiB, 0.86 at 2 MiB, 0.92-0.93 at 3-8 MiB
  (a write moves its size twice, read and written; the L2 holds 2 MiB). A mean over 4 x 64
  values took 7.9 us after no write and 26-27 us after 4-32 MiB. With no data between, the
  kinds alone do it: in cycles of K distinct small kinds (the kinds a model step runs), each
  op's time relative to the 33-kind cycle was 0.52 with 0 kinds between, 0.56-0.63 with 1-4,
  0.63-0.66 with 8, 0.70 with 16.
- *The model.* An op's reuse distance is the bytes the ops since its kind's last run moved
  plus `kind_footprint` per distinct kind among them (the LRU stack distance of Mattson et
  al., 1970; a trace wraps, since a step runs in a loop), and a CPU op's fixed cost is scaled
  by the calibrated `warm_overhead` share at that distance. `calibrate --device cpu` measures
  the curve from the written-bytes micro-benchmark and the footprint from the kind cycles (the
  footprint with which the curve best predicts the cycles' shares: 234 kB per kind here), then
  fits the cold fixed costs with every micro-benchmark at its own distance. GPU kernels' fixed
  costs are the device's; their configs have no curve.
- *Results* (table below, three calibrate-then-run rounds, with the routing micro-benchmarks
  and row costs below): 23 of 24 steps within 15% (last round 22), per-op MAPE 29% (43%).
  xlstm-tiny prefill went from +24.1% to +3.6%; mamba2-tiny prefill is still missed (-19.6% ->
  -21.8%). Two earlier regenerations in this round gave 23 of 24 (29%) and 21 of 24 (30%): in
  the second, three decode steps came out at +16-17% (rwkv7-tiny's rounds +5.3% to +21.7%), in
  this one at +0.5-4.5%; the calibrations' own spread on a shared machine. In one moe-tiny
  decode the ops 24-40 kinds after their kind's last run were priced at 0.91 of cold and summed
  to 1.3 times their measured time, those 0-2 kinds after at 0.62 and 1.35-1.5 times, those in
  between at 0.8-1.0 times: one curve for every op kind does not follow each kind. One set of
  measurements priced with a calibration without the curve and one with it: per-op MAPE fell
  in 22 of 24 steps (llama-tiny decode 41.7% -> 26.7%, gla-tiny prefill 33.7% -> 21.5%,
  xlstm-tiny prefill 32.1% -> 21.5%), steps within 15% 20 -> 23.
- *Tried, not adopted: the cold cost added, not scaled.* The written-bytes micro-benchmark
  read as seconds over each probe's warmest time (0 to 1.8 us), added to fixed costs fitted
  warm, so that a large fixed cost (attention's 50 us, a conv's 110) would not scale with
  warmth: on one set of measurements, two calibrations each, 22 and 22 of 24 steps within 15%
  and median per-op MAPE 33.2% and 35.7%, against 23 and 23, 27.7% and 27.7% scaled.
- *A row's own cost.* Row-wise kernels now record the rows they reduce (`attrs: {"rows": n}`),
  and on a CPU each row costs a calibrated time per category: ATen sets up each row on its own
  (timed back to back, a softmax over 1024 rows of 4 values takes 74 us, over 4 rows 1.1 us; a
  layer norm 28 us and 2.2 us; a sum 4.8 and 1.4). The calibration's row ops ran on 256 rows
  only, where a row's cost and the op's fixed cost cannot be told apart; it now also runs them
  over 4 x 64, 4 x 4096 and 4096 x 4 values. Fitted: 21 ns a row for norms, 2-3 ns for
  reductions (whose fixed cost still mixes means and sums with softmax, which share the
  category). On the tiny workloads, whose rows are few, two calibrations with it and two
  without priced one measurement alike (22 and 17 of 24 steps, against 23 and 22; median
  per-op MAPE 27.5% and 29.8% against 27.6% and 27.8%: the second calibration with it fitted
  every fixed cost lower, elementwise 4.95 us against 5.4-6.1).
- *A mixture of experts' routing ops in the calibration.* moe-tiny's topk, index_select and
  index_add_ are gathers to the cost model, whose fixed cost the calibration had fitted on
  embeddings from a 32 MB table alone (27 us cold; those ops take 7-15 us). It now also
  measures top-k, index_select and index_add_ over its row matrices, and the gather fixed cost
  comes to 18 us. Three calibrations without them and three with them priced one measurement:
  moe-tiny decode +14.4 / +12.3 / +17.9% -> +10.8 / +15.5 / +8.0%, pkm-tiny decode per-op MAPE
  40.3 / 37.6 / 41.8% -> 35.1 / 39.0 / 34.7%, the median per-op MAPE over steps 29.7-31.4% ->
  28.9-31.6%.
- *mamba2-tiny prefill (-21.8%; -13.7% and -17.8% in the earlier regenerations) meets subnormal numbers.* Its chunked scan takes exp of
  segment sums masked to -inf: of [1, 8, 17, 17], 1088 inputs are -inf and 59-69 outputs
  underflow to subnormals; the bmm after it reads those. Timed back to back with the step's
  own tensors, that exp takes 17-18 us (an exp of 512 normal values 0.9 us; the one of
  [1, 8, 16, 4, 4] with 768 -inf inputs and no subnormal output 4.5 us) and the bmm 22-24 us
  against 9-14 us with the subnormals set to 0: about 160-180 ns per subnormal value, x86
  microcode assists. memsim does not price values; this is 2-3 points of the step's error.
  The rest is kinds that warm and cool unlike one curve: in one run its strided ops (6-dim
  clones, masked fills, cats) took 588 us against 341 priced and its elementwise ones 261
  against 167, while its two depthwise convs took 240 us against 353 (the calibration's first
  conv, after large attention, took 264 us where the next one, larger, took 119).
- *Tried, not adopted: the kinds alone, measured on 65 math kinds.* Counting only distinct
  kinds, with a curve from cycles of up to 65 unary math ops (sin, erf, lgamma, ...), took
  xlstm-tiny prefill from +13% to +7% and mamba2-tiny's from -19% to -10% in one A/B, but
  decode steps rose (rwkv7-tiny +2% -> +20%, moe-tiny -3% -> +18%): their ops 24-40 kinds
  after their last run were far warmer than that curve's cold, since each of those math
  kernels brings much more code than a model's adds and copies; and the calibration's own
  small ops were colder than a decode step's at equal kinds, with large ops between.

**The round before: Vidur's rows in the power state of its profiler.** Vidur's
layer profiler (`vidur/profiling/mlp/mlp_wrapper.py`, record_function method) builds a model of
20 identical layers, runs it once untimed and once under the profiler, and reports each op's
median over the 20 timed layers: each row was measured after 30 layers run back to back. The
H100 power cap of the power-cap round (measured on our own H100, not fitted here) engages once
compute-bound GEMMs fill 55% of the last 0.1 s; a 70B layer at 4096 tokens and TP 1 takes 11
ms, 91% of it in compute-bound GEMMs (duty 0.88 after 30 layers), so its rows were timed
capped. They agree: Llama-2-70B's 4096 x 28672 x 8192 down projection at 4096 tokens runs at 727 TFLOP/s in Vidur's file and at 724 in
our sustained table (802 from idle), its 4096 x 57344 x 8192 up projection at 679 (705; 771).
- *The model.* `validate` (and `calibrate --from`) price a Vidur row in that state: the
  reader numbers each row's layer (`pass_group`, `passes_before` 30) and
  `kernels.repeated_pass_duty` gives the duty at each op's start in the measured pass, in
  closed form (the duty after P passes from idle is a (1 - r^P) / (1 - r)); GEMMs whose duty
  reaches the threshold run at no more than the sustained rate. The fit applies the cap as
  the measurement ran, so its constants describe the uncapped GPU. No Llama-2-7B row reaches
  the threshold (its layer at 4096 tokens takes 2.7 ms, 81% in GEMMs: duty 0.46 after 30), so
  the cap changes nothing in the H100 calibration; A100 configs state no cap.
- *The other H100 models.* This machine cannot clone microsoft/vidur, so their rows below are
  the last round's. Measured instead on samples of their files (eight evenly spaced 16 kB
  windows each, read from the public repository: about 180 rows per model at TP 1-8, mostly
  at 800-1000 and 3000-4096 tokens), priced with this round's Llama-2-7B calibration without
  and with the profiler's power state (GEMM MAPE / median / summed): Qwen-72B 6.7% / 4.7% /
  -5.1% -> 6.3% / 3.9% / -3.0%; CodeLlama-34B 6.5% / 4.5% / -5.6% -> 5.9% / 3.6% / -2.6%;
  InternLM-20B 5.9% / 4.9% / -4.5% -> 5.4% / 4.4% / -1.5%; Llama-2-70B 8.5% / 5.8% / -4.9% ->
  8.0% / 5.0% / -2.5%; phi-2 (2560 wide, never capped) 8.1% / 4.6% either way (the last
  round's code and calibration: 6.7% / 4.6%, 6.5% / 4.5%, 5.9% / 4.7%, 8.4% / 5.6%, 8.2% /
  4.6%). The rows the cap reaches (92-177 GEMMs per sample, from
  2944-3424 tokens up) go from -5.3..-7.6% signed error to -1.2..-2.8%, their MAPE from
  5.4-7.7% to 3.2-3.9%. Counting 12 layers before the median (Vidur's CUDA-event method: 2
  warm-up passes of a one-layer model, then 20) instead gives half of that gain (Llama-2-70B
  8.2% / 5.3%, CodeLlama-34B 6.1% / 3.9%). The samples leave out 1016-2944 tokens, where
  the 8192-wide models' layers also run long enough to be capped, so the whole files' figures
  are not known here.
- *Tried, not adopted: a gradual cap.* The duty sweep's rate falls over a range (787 TFLOP/s
  at 42% GEMM time, 753 at 52%, 690-701 at 69%), and the sampled GEMMs at duty 0.45-0.55
  (just under the threshold) are priced 5-6% fast on average. A ceiling that falls linearly
  from 0.80 of peak at 0.42 to 0.71 at 0.69, in place of the step at 0.55, moved every sample
  by 0.0-0.3 points the wrong way (InternLM-20B 5.4% / 4.4% -> 5.6% / 4.7%): a ceiling slows
  only the GEMMs priced faster than it, and most of those just under the threshold are not.
- Every other row of this README is regenerated. The reader now lists a layer's ops in the
  order they run, and that order alone moved both fits a little (the sums of the fit's errors
  add up in another order, and its searches end elsewhere): H100 matrix efficiency 0.897 ->
  0.885, the held-out Llama-2-7B GEMMs 6.7% / 4.8% as before, the Kineto Qwen trace's GEMMs
  11.8% -> 11.5%, BERT's 15.0% -> 14.9%, GEMM.csv 19.2% -> 18.9%; A100 held-out GEMM median
  5.3% -> 5.2%. None of these is a gain of the model.

**Two rounds before: the power cap.** The H100 was lent again (30 minutes); the
round before had put the 8192-wide models' slow GEMMs down to power without testing it. Two
experiments (`gpu_profile.py power`, tables in [OWN_GPU.md](OWN_GPU.md)) show it:
- *Every shape slows to the same rate.* 14 fp16 GEMM shapes (4096- to 16384-wide) run
  755-802 TFLOP/s from idle and 659-724 (median 704; 693 in an earlier run) after 1.5 s back to
  back, with NVML reporting the software power cap engaged, 663-692 W and the SM clock at
  1275-1483 MHz instead of 1980. The clock falls within 0.1 s of sustained load.
- *The cap engages from the share of time in GEMMs.* A GEMM alternating with device copies
  keeps the full clock and 787-789 TFLOP/s at 31-42% GEMM time, and drops to 753 at 52%,
  690-701 at 69% and 655-667 at 100%. In two other runs the clock began to fall at 44% (769
  TFLOP/s) and between 50% (778) and 60% (741).
- *The model.* A compute unit may state a `power_cap` (kernels.power_capped_seconds): once
  compute-bound GEMMs fill more than `engage_duty` of the last `window` (an exponential
  average), a GEMM runs at no more than `sustained_matrix_fraction` of its peak. nvidia-h100-sxm.yaml
  states 0.71, 0.55 and 0.1 s from the tables above, not from any file it is validated on.
  Where ops come with a timeline (a Kineto trace, `validate real`), the measured timeline sets
  the state, from idle; the engine takes its own simulated timeline, as one step of many run
  back to back (the steady state), so a 7B prefill of 8192 tokens runs its GEMMs capped
  (226.4 ms against 214.1 ms uncapped) and a decode (GEMMs 19% of its time) does not.
  `calibrate --device cuda` measures the sustained rate (1.5 s of 8192^3 bf16 GEMMs: 0.733 of
  peak on this H100) and writes it into the calibrated config. Vidur's tables have no timeline,
  so their rows price as before; every shared ground-truth row is unchanged.
- *On our own traces* (the eight models' layer ops, calibrated on every other size of
  Llama-2-7B as before): GEMM summed error -2.9..+0.7% on every model, from -5.3..-0.7%; the
  five wider models' MAPE 5.2-6.3% (from 5.5-6.7%) and median 4.0-5.0% (from 4.0-5.4%). One of
  eight medians remains above 5% (phi-2, 5.3%, which never runs capped). Counting every GEMM
  towards the duty, GEMVs included, gave -1.7..+1.3% and medians up to 5.1%. None of Llama-2-7B's calibration
  half runs capped, so the fit is unchanged. Eight layers of Llama-2-7B prefill (three steps,
  0.15 s) ran their GEMMs at 797 TFLOP/s, uncapped, and the model does not cap them either.
- *Not modelled.* The cap is a step where the GPU's rate falls gradually between about 50% and
  100% GEMM time; attention kernels do not count towards the duty; memory-bound kernels are
  not slowed by the lower clock. The CUDA training-peak test failed 3 times in 12 runs on the
  H100, each time in one selection of tests (calibrate's, training's and Kineto's, which passed
  once at the previous commit), with 301.1 MB measured against 335.8 traced; it passed in
  every other run, that selection's file set included: cause not found.

**Three rounds before: a GPU of our own.** An H100 80GB HBM3 (torch 2.11, CUDA 13) was
lent for 30 minutes; [OWN_GPU.md](OWN_GPU.md) holds what was measured on it
(`validation/gpu_profile.py`), regenerated from the traces by `gpu_profile.py report`.
- *The issue's protocol on our own measurements.* Vidur's layer ops of eight models, traced
  with the profiler at TP 1-8 and 59 token counts, calibrated on every other size of
  Llama-2-7B's: GEMM MAPE 5.4-7.6% on every model (all within 8%), median 3.8-5.4% (three of
  eight above 5%). GEMMs with K = 8192 at 1024-4096 tokens are priced 9-14% fast: they ran at
  660-700 TFLOP/s where the 4096-wide models' large GEMMs reached 760. The cause is power:
  after seconds of back-to-back matmuls this H100 sits at its 700 W limit with the SM clock at
  1245-1365 MHz instead of 1980, and the same shapes run 7-15% slower (4096x8192x8192: 729 ->
  618 TFLOP/s; `gpu_profile.py power`). The wide models' traces spend longer at the limit, and
  memsim prices each op from its shape alone, without the load before it. The other kernels of the 8192-wide models are -17..-20%
  summed: elementwise ops over tensors that fit the 50 MB L2 ran faster than HBM (4.1 TB/s for
  adds), and a Kineto trace names no tensors, so rereads are not credited (taking an input
  the size of the previous kernel's output as that output, reread, took 0.4-1.3 points off the
  4096-wide models' other-kernel MAPE and added 0.4-0.9 to the others': not adopted), while SiLU over a
  strided half ran at 1.2-1.3 TB/s and RMSNorm of 8192-wide rows with few tokens about twice
  as slow as priced. Torch's norm kernels run one thread block per row: the Kineto reader now
  counts a norm kernel's blocks from its grid, and the calibration fits what one block streams
  (kernels.block_row_seconds): the 8192-wide models' other kernels -17.3..-19.9% -> -15.9..-18.7%
  summed, their MAPE 16.9-19.5% -> 15.0-17.6%; BERT's trace +-0.4 points.
- *Kineto reader.* Torch's embedding gathers through an index expanded over the row: the gather
  was priced as reading the whole table (15x slow); it now reads the rows it picks and the
  index's own footprint (`Input Strides`). Kernels of an op inside attention (SDPA's math
  fallback's bmm and softmax) are priced as that op; an attention kernel as the outermost
  attention op (cuDNN's runs inside `_cudnn_attention_forward`). A convolution's kernel is
  priced from `aten::convolution` (stride, padding, groups; before, category other), and a
  copy within the device (Memcpy DtoD) as a device copy, not a transfer over the host link.
  Every ground-truth row prices as before (the HTA trace's DtoD copies move from its memcpy
  group to elementwise).
- *`calibrate --device cuda` timed the host.* CUDA events around each op time the host's launch
  gaps when the GPU waits for it: the fit reached 43.5% MAPE with fixed costs of 36-100 us.
  Each kernel is now timed by the profiler (as `memsim validate` reads Kineto traces): 21.6%
  (GEMMs 7.1%; the depthwise conv now fitted, at 0.12 of HBM bandwidth). `validate real
  --device cuda` after it: two layers of Llama-2-7B and Llama-3-8B summed -11.5..+3.6% (GEMMs
  -11.6..+1.3%), llama-tiny +3.8%, Mamba-2 1.3B decode / prefill -16.3 / -21.6% (per-kernel
  MAPE 29 / 40%; its elementwise kernels, strided copies of the chunked scan among them, are
  -25%). Before the conv and copy fixes Mamba-2 came to -14.0 / -23.6% with MAPE 28 / 55%:
  DtoD copies priced 2.2x slow had hidden part of that.
- *Peak memory on a GPU.* The training step's peak from traced lifetimes matches
  `torch.cuda.max_memory_allocated`; the prefill's holds one MLP-sized tensor more than traced
  (37.9 MB against 29.5), with any attention kernel: cause not found, its test marked as an
  expected failure. In fp32 with grouped heads SDPA falls back to the math kernel, whose score
  matrices the one traced op does not show (211 MB against 59).

**Four rounds before** (on the same 2-vCPU Xeon).
- *ATen runs a batched matmul of tiny matrices as a scalar loop.* Below 400 multiply-adds per
  matrix, ATen's CPU bmm skips BLAS for a plain loop: on this core a batch of 128 matrices
  takes 0.84-0.88 ns per multiply-add up to 7x7x8 (392 each: 43.4 us), and 0.11 ns at 8x8x8
  (512: 7.5 us). mamba2-tiny's chunked scan runs such batches (128 of 4x4x8, 4x8x4, 8x8x4):
  its ten bmm took 293 us and were priced at 122 as tiled GEMMs. memsim now prices a batched
  GEMM under a unit's `scalar_loop_macs` (400 on CPU cores, none elsewhere) at a scalar rate,
  its batch split over threads by ATen's grain (32,768 multiply-adds); the rate is calibrated
  from three such micro-benchmarks (2.5-2.6 GFLOP/s here), else one multiply-add per clock.
  Same workload measurement, one calibration: mamba2-tiny's bmm priced at 245 us, the step
  -28.9% -> -19.2%.
- *The memory's bandwidth comes from the machine.* generic-x86-cpu states 25 GB/s for a 2-vCPU
  slice; one core here streams 42-57 GB/s (in-place multiplies and adds over 4-16 MB; the L3 is
  480 MiB), so the fitted bandwidth efficiencies of elementwise ops, copies and strided ops sat
  at their cap of 1 and the fixed costs took up the rest. `calibrate --device cpu` with the
  default base now writes the rate of its fastest large streaming micro-benchmark (bytes read
  and written per second) as the memory's bandwidth, and prints it. Three device measurements
  fitted without and with it, against the same workload measurements: elementwise ops summed
  over every step -23.9 / -21.1 / -18.0% -> -14.1 / -11.8 / -5.6%; steps within 15% 20 / 21 /
  23 -> 21 / 22 / 22 of 24.
- *Ops that create a tensor are a category of their own* (`factory`). Traced on this core,
  `ones`, `zeros` and `arange` take 6.2-6.8 us where `neg` takes 3.1-3.3 and an in-place
  `fill_` 2.1-2.2: an allocation and a fill, dispatched apart. The set's `arange` (10-11 us at
  small sizes) was an outlier among its elementwise ops, and the workloads' `ones`, `arange`
  and `ones_like` took 2.35 ms of all steps' 62, priced at 0.85 (-64%). They now have a fixed
  cost of their own, fitted on `arange`, `ones` and `zeros_like` micro-benchmarks (5.3-7.9 us
  here), the elementwise one where not calibrated; in a GPU profile a factory op's kernel is
  its fill, priced as elementwise (every GPU row unchanged). Factory ops summed over every step:
  -23 to -48% (three calibrations); in the workloads they take about 10 us.
- *The peaks rise to what a large GEMM reached.* One core ran the set's 256 x 1024 x 1024 fp32
  matmul at 185-197 GFLOP/s, over the 166 that cpuinfo's 2.6 GHz gives: a VM reports its
  nominal clock and the cores boost. The matrix efficiency sat at its bound of 1 and large
  GEMMs were priced 7-19% slow. `calibrate --device cpu` now scales the cpuinfo peaks by the
  fastest large fp32 GEMM's rate over them where it is higher (1.17-1.18 here; the empirical
  roofline's idea) and says so; the efficiency fits 0.90-0.94, and the set's large GEMMs
  went from +6.6..+18.7% to 0..+11.4% (the same measurement). A mid-size Llama (hidden 1024,
  2 layers) run for real: prefill of 256 tokens +8.6% -> +1.7% summed (GEMMs +12.9% -> +5.8%,
  GEMM MAPE 12.2% -> 6.0%), decode at batch 8 -11.3% -> -9.8% (one measurement each). A clock
  timed by a chain of dependent integer operations gave 3.1 or 4.2 GHz depending on how the
  compiler scheduled it, so the GEMM's own rate is used.
- *A small GEMM's operands are both written just before it.* The set's small GEMMs took 11-16
  us (1 x 256 x 64: 15.5; 64^3: 12.2), against 4.5 and 6.3 in a sequence of GEMMs and 4-5 us
  for the workloads' tiny ones: their weights had been evicted by the large ops of the
  previous repeat. A small model's weights sit in the caches, so the weight is now written
  before each small GEMM as its input is: 11.5 and 11.3 us, the fitted GEMM fixed cost 6.8-7.6
  -> 5.9-6.6 us, and the workloads' GEMMs summed over every step +17 / +27 / +17% -> +4 / +8 /
  +14% (three device measurements each, the same workload measurements).
- *ATen's CPU flash attention streams each query head's keys, task by task.* It runs each
  (batch, query head, query slice of 32, 64 or 256 rows) as one task of small GEMM calls, one
  task per core at a time, and each query head of a group streams its KV head's K and V itself.
  A mid-size Llama decode (8 sequences x 16 query heads over 8 KV heads, 257 keys) spends
  912 us in attention, 7.1 us per task, and was priced at 503: the model let the group's second
  reads hit the cache, as a GPU's L2 serves them. Fused attention on CPU cores is now priced as
  those tasks, each streaming the keys and values its slice sees (and Q and O once) at a
  calibrated per-task rate (the `attention` block rate: 25-27 GB/s here) over the cores; the
  set gains a grouped-query decode (8 x 8 query heads over 4, 256 keys). Three device
  measurements, the same workload measurements: the tiny workloads' attention summed over
  every step -18 / -16 / -14% -> -8 / -2 / -9%; the mid-size decode's attention priced at
  681-736 us. GPU units keep the shared reads (every GPU row unchanged).
- *A fitted fraction no longer rounds to 0.* A search that ran a logit far below 0 gave exactly
  0, which the schema refuses: one CPU fit stopped with a validation error on
  `first_wave_exposure`. Fractions stop at 1e-12; values above it are bit for bit as before
  (every GPU row of this README re-priced unchanged).

**What this round found.**
- *The CPU's strided fixed cost has two minima.* The set's small strided ops are cats of two
  halves (6-16 us) and a broadcast multiply (4.3-6.5 us); the workloads' take 2.8 us (copies
  into views), 3.5 (broadcast multiplies), 4.8 (adds) and 7.6 (cats) at the median. Their MAPE
  is nearly flat in the fixed cost (on one measurement 0.3590 at 3 us, 0.3594 at 5.5), and a
  second minimum near 3 us prices every small strided op low and the mid-size ones (a 512 KB
  cat: 41-127 us between measurements) closer. *Tried, not adopted:* one more small matrix for
  the row ops (256 x 16, 4,096 elements), meant to pin the small ops' fixed costs, tipped the
  fit into that minimum in two of three device measurements (2.99 and 3.15 us against 5.5-5.9
  without it, the same measurements), and the tiny workloads from 20-23 to 7-13 of 24 steps
  within 15% (strided ops summed over every step -31..-35% against +11..+17%); run through
  the CLI (`memsim calibrate`, then `memsim validate real` in fresh processes), mamba2-,
  samba-, llama- and pkm-tiny prefill came to -35, -24, -18 and -23% with it, -19, -13, -6 and
  -8% without. A tie-break by the squared log ratio (0.01 of it beside MAPE) did not move it.
  Without the extra matrix the low minimum still appeared in one of three earlier
  measurements (2.66 us).
- *Small ops after a large GEMM start cold, still.* In a mid-size Llama decode (hidden 1024,
  batch 8) the small ops at positions 1 to 5 after a GEMM of more than 2 MiB take 2.5, 2.3, 3.0,
  1.8 and 1.4 times their priced time (medians over six GEMMs), the later ones about their
  priced time. *Tried, not adopted:* a fitted cost for every op within four of ops that together
  moved more than the cache holds. The micro-benchmark table is not in execution order once
  its repeats are merged, and after its large streaming ops the next small ops are not slowed
  as they are after a GEMM, so the fit traded the cost (1.1-2.9 us) against the categories'
  fixed costs: one calibration priced the tiny workloads' elementwise ops -51%.
- *A batched matmul just past the threshold is slower than its BLAS call alone.* mamba2's
  8 x 17x64x17 bmm takes 36 us in the workload and 3.1 us in a loop of its own (13 us with a
  transposed operand); GPU-sized tiles pad a CPU core's small batched GEMMs (a 16 x 32^3 bmm
  priced 27 us, measured 15), so the set measures only 8x8x8 past the threshold.

**What changed in the last round.** That round ran on another machine than the one before, a
2-vCPU Intel Xeon with 2 MiB of L2 per core and a large shared L3 (the one before ran on a Zen
4 EPYC with 1 MiB).
- *CPU calibration measured its small ops in a context of its own.* Each small micro-benchmark
  ran after a 4 MiB buffer write, meant to leave the caches as a model step's larger ops leave
  them. On the Xeon that write costs every following op several microseconds that a model step
  does not pay: a 1024-element add takes 2.8 us back to back, 3.2 us with other small ops
  between, 4.1 us after a 1 MiB write and 7.9 us after the 4 MiB one; the tiny workloads'
  elementwise ops take 3.4 us (median), the calibration fitted 9.2. Two calibrations priced
  every tiny workload step 39-172% high (0 of 24 within 15%, per-op MAPE 142-155%), and the
  test suite's `validate real` check of llama-tiny failed on this machine (+100% against its
  50% guard). Each small op is now measured after an in-place write of its own input, as the
  op that produced it leaves it in a model step: on the same workload measurements, three
  calibrations gave 19, 20 and 19 of 24 steps within 15% (per-op MAPE 30-38%).
- *A Python number an op wraps into a tensor costs host time.* `torch.mul(x, 0.5)` over 2048
  elements takes 4.2 us here, `torch.mul(x, x)` 2.5 and `torch.mul(x, t)` with a 0-d tensor t
  2.5: ATen wraps the number into a 0-d tensor first. So do the Scalar overloads of binary ops
  (`x > 0` 5.1 us against `x > x` 3.5, `1 - x` 4.7 against `x - x` 2.8); `x.pow(2)` (2.9),
  `clamp` (3.0) and `fill_` (1.9) take the number as a parameter and do not. The trace now counts
  the numbers each op wraps (`attrs: {"wrapped_scalars": n}`) and the calibration fits their
  host cost where the data has ops with and without them: 0.9-1.3 us per number on this CPU.
  A GPU kernel's time does not include it (Vidur's and Kineto's rows carry no numbers, so it is
  not fitted there and costs nothing). On the same workload
  measurements, three device measurements fitted with and without it: steps within 15% 19 / 21,
  22 / 21, 21 / 21; per-op MAPE 40.9 / 41.9%, 43.8 / 44.9%, 43.1 / 43.9%; xlstm-tiny prefill
  (2,600 ops of the sLSTM's step loop, few with numbers) +1.9 / +14.3%, +7.1 / +17.3%, -6.2 /
  +21.3%. Kept: it is measured directly, and the per-op errors fall.
- *The CPU's peaks come from the CPU.* `generic-x86-cpu` states a Zen 4 core's (one 512-bit FMA
  per cycle, 83 GFLOP/s at 2.6 GHz); a Sapphire Rapids core has two, and one core's 256 x 1024 x
  1024 fp32 matmul runs at 160 GFLOP/s here. The matrix efficiency sat at its bound of 1 and
  large GEMMs were priced twice their time (3,360 us measured, 6,474 priced; 512^3: 1,625
  against 3,240). `memsim calibrate --device cpu` with the default base now reads the vector
  width, FMA pipes (by vendor and family) and clock from /proc/cpuinfo: 3,381 and 1,693 us, the
  efficiency fitted at 0.98-0.99. The tiny workloads, whose GEMMs are small, barely move (on the
  same measurements, 22 and 21 of 24 steps within 15% with the generic peaks, 22 and 22 with the
  CPU's own).
- *A CPU GEMM library packs its operands; a GEMV does not.* On this Xeon core a 4 MiB fp32
  weight takes 291 us as a 1-row GEMV and 585-704 us as an 8- or 16-row GEMM: twice the time
  per byte, where the model's memory-bound price is the same. GotoBLAS-style libraries (MKL,
  oneDNN, OpenBLAS) copy each operand panel into a contiguous buffer before the microkernel;
  a GEMM on a CPU core now moves its operands twice (`packs_gemm_operands`, default on CPU
  cores), a GEMV once. A mid-size Llama run for real (hidden 1024, intermediate 2816, 2 layers,
  one calibration and one measurement each): decode at batch 8 (8-row GEMMs of 4-16 MiB
  weights) -40.0% summed with the CPU's peaks and no packing (GEMMs -38.7%, GEMM MAPE 34.4%),
  -13.1% with packing (GEMMs -7.1%, MAPE 8.8%); prefill of 256 tokens +9.2% and +8.3% (GEMM
  MAPE 13.9% and 11.0%). With `generic-x86-cpu`'s peaks they were -14.9% and +111%: errors
  that had cancelled in decode. The tiny workloads do not move (22, 19 and 21 of 24 steps
  within 15% with and without it, three calibrations, the same measurements).
- *`validate real` runs a workload until its ops' fastest times settle*, by the calibration's
  rule (rounds of five runs, at least five rounds), not a fixed 25 runs: the fastest of N runs
  falls as N grows while neighbours load the machine (llama-tiny's summed fastest times fell
  3-6% from 25 runs to 100 in one busy stretch, not at all in a quiet one), and the calibration
  took its fastest times over 25 to 100 runs. In a quiet stretch the two gave the same sums.
- *Small GEMMs are those whose operands fit in a core's L2.* The set chose them by multiply-adds
  (up to 2M), which put a 1 x 1024 x 1024 GEMV among them: 4 MiB of weights streamed between
  small ops (270 us), and the ops after it ran 2-4 times their later time. It now runs with the
  large GEMMs, last.
- *Tried, not adopted:* every micro-benchmark op called through an `nn.Module` (model code
  between the ops): the fitted elementwise fixed cost moved from 3.24 to 3.39 us; no gain. The
  small micro-benchmarks run in one fixed shuffled order (each op's neighbours unrelated ops of
  any size, its input still written just before it): every fixed cost rose, most about
  twofold (GEMM 17-18 us against 5-8, conv 236-249 against 105-110, elementwise 5.2 against
  2.8-3.4), and 1 of 24 steps came within 15% (two calibrations, same workload measurements).
  A model step's small ops follow ops of their own size, as the grouped order has them. The
  CPU fit minimising the mean absolute log ratio instead of MAPE (its minimum is the median
  ratio; MAPE's lies below it): the fixed costs rose 1.5-2.5 times (elementwise 4.8-5.4 us
  against 2.8-3.4) and every step was priced high, 5, 7 and 14 of 24 within 15% against 22,
  19 and 21 (three device measurements, the same workload measurements).
- `--cpu-only` runs the CPU rounds alone and rewrites only the CPU rows and section of this
  README: the GPU part needs `--vidur`, a clone this machine could not fetch; the GPU cost
  models did not change, so those tables are the last round's.

**What the last round found.**
- *What the CPU still misses* (the CPU table below: mamba2-tiny prefill; five more steps sit
  at 11.7-13.7%; the steps are priced low far more often than high). Each round's calibration
  moves every step together, by up to 14 points here (rwkv7-tiny decode +6.1% to +20.5%) and
  20-30 points in a busier stretch earlier in this session; the two runs of this script before
  this one, on earlier commits of this round, gave 23 and 22 of 24. Beyond that, a small op's
  fixed cost depends on what ran before it: in xlstm's sLSTM step loop, a few kernels repeated,
  elementwise ops take a third less than in model steps; one fixed cost per category cannot
  hold both. Over the tiny workloads' model steps, the fixed costs their times imply
  (measured time less the priced compute and memory time) are, against the calibration (us):
  elementwise ops 4.2 in model steps, 2.7 in xlstm's sLSTM step loop (a few kernels repeated),
  3.2 fitted; ops that wrap a number 6.9, fitted 4.4; attention 62, fitted 44; gathers 15,
  fitted 9; strided ops 3.7, fitted 5.8. Ops that create a tensor from nothing (`ones`,
  `zeros`, `arange`: an allocation, then a fill) take 10-11 us and are priced at 3.2 as any
  elementwise op: 1.4 ms of the 57.7 ms summed over every step, 2.4%.
- *Past the tiny configs, a small op after a large one starts cold.* After a GEMM that streams
  4-11 MiB of weights, the next few small ops each take 2-5 times their warm time on this Xeon
  (a 24-element neg 11-16 us against 2.9, an 8 x 1024 add 8.5-10.3 against 4.8, a 64^3 mm
  16.7-20.4 against 8.6), until each kernel has run once again. A mid-size Llama's batch-8
  decode (`memsim validate real llama-tiny --config hidden=1024 ...`) has its GEMMs within 5%
  summed but its elementwise ops 49% low, -10.6% in all. The tiny workloads run no op that
  large, and their small ops are slower than warm ones anyway (the fixed costs above), so a
  cold-start term fitted on the micro-benchmarks would take from them what it gives the
  larger configs; not modelled yet.
- *mamba2-tiny's prefill (the largest miss, about -25%) has two costs no shape shows.* Its
  segment sums mask with -inf before an exp: `exp` over 2312 elements takes 1.4 us on normal
  values, 8.3 on -inf and 73 on values whose results are subnormal (-95): the workload's exps
  take 11-26 us where 3.5 are priced. And its batched GEMMs of tiny matrices (128 x 4x8 by 8x4)
  take 20-42 us, priced at 8-11: ATen runs matrices of under 400 multiply-adds in a scalar loop.
- *How closely the model can follow each file* (the table below). Fitted on the whole of a
  Vidur file, the model reaches 6.8-8.0% GEMM MAPE and 4.8-6.3% median on that same file on
  H100, and 5.1-7.0% and 3.8-5.2% on A100. Those are floors under any transfer error. Every
  other H100 model's median floor is over 5% (5.2-6.3%), and so is the A100 Llama-2-7B file's
  (5.2%): those targets are out of reach of this model's form with any constants. The
  Llama-2-7B calibration costs the other models 0.5-0.9 points of MAPE over their floors on
  H100 and 0.2-0.6 on A100. Calibrating on another model does no better (whole files, mean
  over the other files of the GPU): on H100 8.0-10.0% MAPE and 5.6-9.2% median (Llama-2-7B 8.3% / 5.8%, CodeLlama-34B
  the best at 8.0% / 5.6%), on A100 6.4-7.0% and 5.0-5.4% (Llama-2-7B the best). The fitted
  constants wander between files (first-wave exposure 0.00-0.55, overlap loss 0.15-0.68, wave
  share 0.04-0.64; on H100 the matrix efficiency reaches its bound of 1 on Llama-2-70B and
  Qwen-72B): one file does not pin them separately. What the form cannot follow is a time that
  falls as the work grows, the library changing kernels. H100 Llama-2-70B's output projection
  (8192 x 8192, TP 1) takes 94 us at 512 tokens, 211-224 us at 544-640 (148 at 576), 165-191
  us at 656-896, 254-258 us at 912-1024 and 243-259 us at 1056-1248. A100 Llama-2-7B's up
  projection (22016 x 4096, TP 1) takes 205-208 us at 136-160 tokens and 184-186 us at 168-192.
- *Tried: the fit minimising MAPE plus the median absolute error* (the two figures the targets
  name) instead of MAPE. Held-out Llama-2-7B GEMMs on H100 7.0% / 5.1% (now 6.7% / 4.8%), the
  other models 8.71% / 6.39% on average (now 8.30% / 5.82%); A100 6.6% / 5.2% and 6.29% /
  4.97% (now 6.5% / 5.3% and 6.28% / 4.89%). Not adopted.
- *LLMCompass's A100 is another setup.* Its large GEMMs run at 280-293 TFLOP/s, where Vidur's
  A100 profile reaches about 220. Its small GEMMs take about 30 us, and its GELU 48 us at every
  size up to four million elements: a floor in how it timed them. Its 27.5% GEMM and 74% GELU
  MAPE are setup errors, not shape errors. At large sizes its GELU streams 390 G elements/s,
  against 328-341 in Vidur's A100 phi-2 profile and 524-617 on H100.

**Earlier rounds.**
- *(Last round, on a 2-vCPU Zen 4 EPYC.) The tiny workloads besides Llama's were priced
  against another computation.* The CPU target covers every tiny workload; this script had validated llama-tiny alone. Calibrated once, the
  others' summed errors were: mamba-tiny prefill -83% (decode -70%), mamba2 -88% (-34%), gla
  -76%, gated-deltanet -84%, rwkv7 -83%, xlstm -95% (-44%), samba -63% (-48%). Their scans and
  chunked linear attention are traced as the one fused kernel a GPU library runs
  (`memsim::selective_scan`, `memsim::chunked_linear_attention`, ...), which is what a meta
  trace should hold. Run for real, though, what executes is the readable torch code inside (the
  parallel scan with its decays materialised, the sLSTM's loop over steps), and its time was
  compared with the fused kernel's price: xlstm-tiny's two `slstm_sequence` ops took 40.7 ms and
  were priced at 0.04 ms. A real-mode trace now records the ops that ran, scoped under the
  kernel's name, each timed and priced on its own; meta traces keep the fused op. With that
  alone: mamba -11% (-25%), mamba2 -40% (-27%), gla -3% (+13%), gated-deltanet -15% (-7%),
  rwkv7 -11% (+13%), xlstm +22% (-16%), samba -11% (-9%).
- *Convolutions pay their own fixed cost.* The Mamba-family blocks' depthwise causal conv1d took
  120-150 us per call and was priced as a GEMM of a few kFLOP (17 us). oneDNN builds a primitive
  per call: 50-65 us on its own here, where an mm of that size takes 3-24 us. Convolutions are
  now category `conv`, priced at the matrix rate with a fixed cost of their own, calibrated
  from three depthwise conv1d micro-benchmarks (115 us on this CPU), else the GEMM's. With one
  calibration each: mamba decode -25% -> +11%, mamba2 decode -27% -> +2%.
- *Micro-benchmarks until the fastest times settle.* Five calibrations back to back, each priced
  against five measurements of llama-tiny, gave predictions that varied by 6-7% (coefficient of
  variation) in a quiet stretch and 14-17% in a busy one. In the busy one, one calibration
  priced every category's fixed cost 20-90% higher (elementwise 11.1 us against 6.7-8.1): all
  five of its rounds (3.5 s) fell inside a burst of load from outside this 2-vCPU VM, in which
  nothing else ran. Calibration now repeats its rounds until the last three took less than 1%
  off the ops' fastest times on average: 5 to 20 rounds, 8 (11 s) in a quiet stretch. The
  workloads' own measurements (each op's fastest of 25 runs) varied by 2-6% between repeats in
  the quiet stretch and 12-13% in the busy one; the CPU table below gives each round.
- *Small GEMMs measured as workloads run them, and strided ops calibrated.* A small GEMM run
  right after a large one takes 44-52 us on this CPU (1x64x256 and 64x64x64 after a
  256x1024x1024 mm), against 6-11 us back to back and 8 us after the 4 MiB buffer write that
  precedes the set's other small ops. The set ran its GEMMs small to large, so its small ones
  followed the previous repeat's large ops, and the fitted GEMM fixed cost (about 21 us) priced
  the workloads' small GEMMs 2-3x high (memformer-tiny's 3 x 32 x 32 mm: 7.7 us, priced at 20).
  The small GEMMs are now measured first, after the buffer write, and the large ones last,
  followed by tiny ops that take the penalty. That alone took the per-op MAPE from 43% to 34%
  but the sums down by about 10% (12 of 24 steps within 15% against 17, two calibrations): the
  inflated GEMM cost had been offsetting strided and elementwise ops priced low. The set's
  strided ops had been dropped (the calibrated categories left `strided` out), so strided ops
  took the elementwise constants; they are now kept, with a broadcast multiply added. Both
  together, against the previous set on the same measurements (two calibrations each): 14 of
  24 steps within 15% against 15, median absolute summed error 13.1% for both, per-op MAPE 35%
  against 43%; summed over every step, GEMMs +26% (+86% before), strided -7% (-16%),
  elementwise -18% (-1%). A transposing copy as a further strided benchmark calibrated strided
  ops at 11-12 us and took them to +26%: not kept.
- *Tried on the CPU, not adopted:* `generic-x86-cpu`'s peaks at the 3.7 GHz boost of a Zen 4
  EPYC instead of the 2.6 GHz a VM reports. One core's large GEMMs run at 91-98 GFLOP/s, above
  the 83 of the base clock, so the calibrated matrix efficiency sits at its bound of 1; with
  the boost peaks it fits 0.84, but the fixed costs rise and every workload is priced about 10%
  higher: 11 of 24 steps within 15% against 17, per-op MAPE 48% against 43% (three
  calibrations of each on the same measurements).
- *What the CPU missed last round* (on a 2-vCPU Zen 4 EPYC: 19 of 24 workload steps within 15%, per-op
  MAPE 30-57%). Besides the spread between rounds (one round's calibration priced 23 of
  the 24 steps 5-44% low), the misses come from small ops whose fixed cost depends on what runs
  around them, which one fixed cost per category cannot hold. mamba2-tiny's prefill (-30%) has
  clones, masked fills and `ones` of 4-5-D chunk tensors that take 14-16 us, priced at 7-9 us.
  xlstm-tiny's prefill (+15%) is 2,600 tiny ops of the sLSTM's step loop, whose elementwise ops
  take 4.5 us where the fitted cost is 6-7 us.
- *Where the GEMM error left on H100 sits.* Pooled over the other H100 models (Vidur half
  calibration), GEMMs that need between one and two waves of 128x256 tiles (3,412 of 15,580) are
  predicted 9.2% fast on average and carry 2.5 of the 8.2 points of pooled MAPE; in the
  Llama-2-7B held-out half the same band is 5.6% fast. The library's choice differs between the
  files at the same tile count: CodeLlama-34B's down projection (8192 x 22016 at TP 1) takes 225
  us at 512 tokens (128 tiles, one wave), 547-582 us at most sizes from 520 to 640 (2.4-2.6
  times the one-wave time, more than two whole waves; 365 us at 576), 357-466 us at 648-896 and
  652-694 us at 904-1024; Llama-2-7B's (4096 x 11008), at the same 144-160 tiles (1040-1280
  tokens), costs 1.43-1.5 times its one-wave time. Constants fitted on the 7B file cannot learn
  CodeLlama's step, and a separate wave share for one-to-two-wave GEMMs, fitted on it, came out at the
  global one (0.289 against 0.278). GEMMs of one wave at most, with over 256 tokens and K over
  8192, are predicted 13% slow on average (the first wave's exposed memory time, which a
  pipelined K loop hides); those of up to 32 tokens 27% slow where K <= 1024 (21 rows) and 5%
  fast where K > 4096.
- *Tried and not adopted* (held-out 7B GEMMs MAPE / median; the other Vidur models' mean MAPE /
  mean median; now: H100 6.7% / 4.8%, others 8.30% / 5.82%; A100 6.5% / 5.3%, others 6.28% /
  4.89%): (1) exposure that fades as compute and memory grow apart (e * short^2 / long in place
  of e * short): H100 6.8% / 5.0%, others 8.37% / 5.78%; A100 6.4% / 5.2%, 6.40% / 5.00%; the
  Kineto Qwen trace's GEMMs 11.8% -> 8.7% but its summed time 9.5% -> 11.3% (the overlap loss
  fell to 0 and attention with it). (2) The library choosing its tile by fractional waves and
  paying the calibrated share of the last one: H100 6.9% / 5.1%, 8.43% / 5.75%; A100 6.5% /
  5.2%, 6.44% / 5.14%; paying whole waves instead: H100 10.0% / 8.3%, 11.6% / 8.9%. (3) Whole
  waves with the best tile: H100 7.4% / 5.4%, 9.33% / 7.33%. (4) No first-wave exposure for
  compute-bound GEMMs: H100 7.0% / 5.1%, 8.54% / 6.45%. (5) A pipeline fill and drain (one
  K-stage of every busy tile's operands and one wave's outputs through memory, scaled by a
  fitted share) in place of the first wave's exposure: H100 6.5% / 5.1%, 8.13% / 6.01%; A100
  6.6% / 5.2%, 6.34% / 4.96%; BERT's GEMMs -22%; unscaled, the H100 matrix efficiency went to
  its bound. (6) The mean of the two fastest tiles (the library's pick is uncertain): A100 6.3%
  / 5.2%, 6.23% / 4.86%, but H100 6.8% / 5.0%, 8.52% / 6.84%. (7) No row-pitch cost: H100 6.9% /
  5.1%, 8.58% / 6.40%. (8) The mean absolute log ratio as the fit's objective: within 0.1 point
  everywhere. (9) Memory traffic of a GEMM of several waves as each wave's operand panels read
  once per wave (the squarest block of tiles a wave covers): A100 6.5% / 5.1%, 6.27% / 4.78%,
  but H100 7.0% / 5.0%, 8.70% / 6.33%, its matrix efficiency at the bound. (10) A sustained
  clock (long kernels slowing after a boost time, two constants): kernels longer than about a
  millisecond are predicted ~5% fast on both GPUs, but fitted on the A100 7B file (0.873 of the
  clock after 336 us) it took the held-out half to 6.0% / 4.5% and the other models to 7.19% /
  6.27%: the 7B file's long GEMMs are slow for reasons the other models' do not share. (11) A
  split-K GEMM's partial outputs written in fp32 and read back by the reduction, per split beyond
  the first: BERT's GEMMs 15.0% -> 6.2%, but the H100 fit moved to another minimum (first-wave
  exposure 0.02, overlap loss 0.52): held-out 7.0% / 5.4%, others 8.44% / 6.28%; A100 6.4% /
  5.2%, 6.33% / 4.93%.
- *RMSNorm as one block per token, again.* Vidur's norms take 4 us up to 256 tokens at hidden
  size 4096 and 6 us at 8192 on H100 (4, 5 and 7 us at 4096, 5120 and 8192 on A100): a floor
  that grows with the row, which the calibrated fixed cost cannot follow, so the other models'
  norms at up to 64 tokens are predicted 39% fast on H100 and 40% on A100 where the hidden size
  is 8192. Marked with their blocks, the fit no longer moves the GEMM constants (held-out and
  other-model GEMMs within 0.1 point), and those norms come to 9% (H100) and 28-30% (A100)
  fast, the held-out 7B norms improve (H100 input and post-attention norms 8.9% / 7.8% -> 8.1% /
  6.9%); but the per-block rate cannot be told apart from the fixed cost on the 7B file, whose
  norm rows have one width at every TP degree, so the fitted rate (13.5 GB/s on H100, 17.9 on
  A100) is whatever trades best against it, and the other models' norm medians worsen by about a
  point (H100 CodeLlama-34B input norm 11.8% -> 12.6%). With the unit's datasheet per-block rate
  instead (6.8 GB/s, fitted only where blocks come in two sizes or more), the H100 70B-class
  models' input norms go to 20% MAPE. Norms stay unmarked; a profile with two hidden sizes would
  settle the rate.
- *This CPU, op by op.* The summed times are within 15%, but llama-tiny's ops are predicted with
  31% MAPE: its GEMMs 59-66% slow and its small elementwise ops off by up to 65% either way,
  errors that cancel in the sum. llama-tiny's ops take 5-25 us, nearly all of it a fixed cost
  that depends on what ran before: a 64 x 64 x 64 mm takes 7.2 us on its own, 11 us under the
  real-mode tracer, 14 us after the 4 MiB write the micro-benchmarks put before each small op,
  17.5 us after the large GEMMs of the calibration set and 25 us in that set; in the workload it
  takes 16-21 us. Measuring each GEMM after that write too, the small ones before the large,
  brings the set's small GEMMs to 14-17 us, the fitted GEMM fixed cost from 17 us to 8.9 us and
  the workload's GEMMs to 14% (prefill) and 17% (decode) MAPE, all ops to 23% and 22%; but the
  summed times then go to -9% and -17% in one round (+6% and +2% in one round before): the small
  elementwise ops' fixed costs in the workload (arange 15-20 us, div 14 us, cat 10-16 us,
  against a fitted 5.7 us per elementwise op) had been cancelling the GEMMs' excess, and one
  fixed cost per category cannot hold both. The set measures those ops as the workload runs them
  (add 8-9 us, mean 21 us, arange 15 us in both); what differs between them is host work: add_
  takes 4 us where add, which allocates its output, takes 8-9 us, and mul and div by a Python
  number (wrapped in a tensor) 10-14 us where neg takes 6 us, so a cost per tensor allocated
  would tell them apart. Fitted as one more constant (5.4 us per allocated output, with the
  GEMMs measured as above), it took llama-tiny's GEMMs to 16-19% MAPE but its elementwise ops
  from 26% to 33% (the per-category fixed costs fell to 2.3 us, and native_layer_norm allocates
  three tensors), all ops 30% as before. Not adopted: the calibration set and the model stay as
  they were. Elementwise ops are also all priced at one FLOP per element, so in the set cos (7.2
  ms over its six sizes, against 1.2 ms for add) and silu come out fast and neg and pow slow.
  GPU tile shapes pad a CPU GEMM's columns to 64 (a 64 x 32 x 64 mm costs as much as a 64 x 64 x
  64 one); tiles of one row by a core's vector width (16 fp32 lanes) took the prefill GEMMs from
  59% to 52% slow, small next to the fixed cost.
- *Other files.* HTA's tf32 GEMMs with K or N = 2798 run cuBLAS's align1 kernels (4-byte loads,
  where 8-byte ones would fit) at 10.6 TFLOP/s on 44 tiles and are predicted 2-3x fast. phi-2's
  GELU streams 1.9-2.5 TB/s on H100 at every size from 400 to 4,000 tokens, with no speed-up
  when its input fits in the L2 (adds and norms do speed up), so it is predicted 25% fast at
  large sizes and 50% fast below ~1,000 tokens, where the model serves its input from the L2.
  Counting GELU's erf (or tanh) in fp32, about 30 FLOPs per element against the 8 priced, at the
  fp32 vector rate that PyTorch's 16-bit elementwise kernels compute at: A100 phi-2's GELU 34%
  -> 28% MAPE, H100's unchanged (33%), since a streaming op is priced at the longer of its
  compute and memory times and 30 FLOPs stay under the memory time; not adopted.

- *Small GEMM tiles wait for their operands from the L2.* The tile/wave model let cuBLAS pick
  whichever tile finished first, with every tile running at the same fraction of the matrix
  peak; so at mid sizes it picked 64-row tiles and stepped every 64 tokens, where the measured
  kernels step every 128 (A100 up projection at TP 1, 11008 x 4096: 104 us from 129 to 232
  tokens, 163 us from 257 to 360, 217 us from 385 to 616). A tile's operands stream into its
  SM from the L2, (r + tn) elements per step of K against 2 r tn FLOPs, and each SM draws its
  share of the L2's bandwidth (91 GB/s on H100, 51 on A100, from the YAMLs' L2 figures): a
  64x64 tile needs 2.8 ns per step on H100 where its arithmetic takes 1.2 ns, while 128x256
  tiles keep pace. memsim now runs a tile's main loop at the slowest of its arithmetic, its
  memory stream and that cache feed, and exposes the calibrated share of the shorter of
  arithmetic and memory as before (a skinny GEMM's weights are its feed and its memory stream
  at once, so they are not counted twice). No new constant. Along with it the fit searches
  the matrix efficiency as a squared sine instead of a logit: with the bound, the H100 fit
  otherwise ended at an efficiency of 1.0 on the logit's flat tail, at 7.20% MAPE on its own
  half against 7.00% in the minimum it now finds (without the bound, that change alone moves
  nothing). Held-out Llama-2-7B GEMMs (MAPE / median): H100 7.0% / 5.1% -> 6.7% / 4.8% (both
  targets met), A100 6.6% / 5.4% -> 6.5% / 5.3%. H100 other models: Qwen-72B 9.2% / 7.2% ->
  8.6% / 6.5%, CodeLlama-34B 8.6% / 6.4% -> 8.3% / 5.6%, InternLM-20B 8.1% / 6.3% -> 7.7% /
  5.8%, Llama-2-70B 9.0% / 6.8% -> 8.5% / 6.2%, phi-2 8.5% / 5.4% -> 8.5% / 5.0%; A100 other
  models within 0.4 point of before (InternLM-20B 7.4% / 5.4% -> 7.2% / 5.2%, phi-2 7.2% ->
  6.8%, Llama-3-8B 6.0% / 5.1% -> 6.1% / 5.3%). The other setups on the same GPUs get worse:
  the Kineto Qwen trace's GEMMs 9.9% -> 11.8% (summed kernel time 8.4% -> 9.5%), BERT's 9.4% ->
  15.0% (141 x 512 x 512 GEMMs of 6 us, nearly all fixed cost, now +15%: the feed of their
  small tiles adds 0.4 us to a Vidur-calibrated fixed cost that Kineto's kernel times do not
  include), GEMM.csv 16.6% -> 19.2%, HTA 40.2% -> 41.4%, LLMCompass 27.7% -> 27.5%. Datasheet
  only, the Llama-2-7B file goes from 37.0% to 34.0% on H100 and 37.3% to 34.9% on A100, but
  MAMF's 2048 x 2048 x 13312 on H100 from -7.1% to -17.5%: one wave of 128x256 tiles now wins,
  and the datasheet's first-wave exposure (1, the whole memory time) shows in full. Tried and
  not adopted: (1) a fixed latency per wave (tile prologue and epilogue): the fit took it to
  8 ns and nothing moved. (2) The feed counted as arithmetic, overlapped with memory as the
  arithmetic is: held-out H100 6.8% / 4.9%, but it counts a skinny GEMM's weights twice, so the
  calibrated exposure added 14% to GEMMs of up to 56 tokens and a datasheet batch-1 decode of
  Llama-2-7B on H100 went to 1.6x its bandwidth floor. (3) The feed on the memory side,
  overlapped with the arithmetic: held-out H100 7.5% / 5.3%, A100 7.0% / 5.3%. (4) The last
  wave's output write exposed after the main loop: H100 held-out 6.6% / 5.0% but the other
  models 8.4% / 6.1% on average (8.3% / 5.8% without it). (5) Hopper's clusters multicasting a
  tile's B operand to two SMs (half of it fed per SM): BERT's GEMMs 15.0% -> 10.6%, but the
  other Vidur models 8.3% / 5.8% -> 8.4% / 6.5% on average. (6) The whitepaper's peak A100 L2
  rate (5120 B/clk x 1410 MHz = 7.2 TB/s) in place of the YAML's achievable 5.5 TB/s: held-out
  6.6% / 5.2%, the other models' MAPE 6.3% -> 6.6% on average; the YAML keeps 5.5.
- *Decode attention: few long blocks in a last wave.* Vidur's A100 decode times jump between 51
  and 61 sequences (4k keys: 243 us -> 402 us), where the bytes grow by a fifth. FlashAttention-
  2's KV-cache kernel runs a decode's query heads that share a KV head as the rows of one block
  (flash-attn's seqlenq_ngroups_swapped), so 51 sequences of 4 KV heads are 204 blocks on the
  216 slots of 108 SMs (two each), one wave; 61 are 244, and the 28 blocks of the second wave
  each stream their 2 MB of keys and values at what one block can (Little's law), not at a share
  of the memory's rate. memsim now prices that kernel's memory time as waves of its blocks (and
  key splits, by flash-attn's heuristic over the packed blocks): a whole wave at min(B, slots x
  b), a partial last one of r blocks at min(B, r x b), with b the calibrated per-block rate of
  'attention' (fitted: 14.8 GB/s). The unit's datasheet per-block rate (5.9 GB/s, for kernels
  that load one element per thread) is not used for this kernel, whose blocks load whole K/V
  tiles: with it, the datasheet decode went from 31.5% fast to 37.2% slow. Own-half
  calibration, held-out half: decode 11.0% -> 9.0% MAPE (median 8.5% -> 4.1%), prefill 8.2% ->
  8.7% (the shared constants moved: the overlap loss from 1 to 0), the file 9.9% / 7.7% -> 8.9% /
  5.1%. The datasheet and the Vidur-mlp-calibrated figures do not move, nor does any other row.
  Tried and not adopted on top of it: a second fixed cost for the combine kernel of a split
  decode took decode to 8.6% but prefill to 9.2% and the file's median from 5.1% to 6.1%.
- *memsim's own workloads can run that kernel.* The Llama workloads' `--config
  fused_kv_append=true` (contiguous or paged cache) traces attention that stores the new keys and
  values itself, one op marked `appends_kv`, instead of a copy per K and V before the forward
  kernel; it attends correctly to a chunk of new tokens after cached ones. A traced op prices
  exactly as the Vidur reader's row of the same shape (a test). For the 2048-token prefill of 32
  query and 4 KV heads that Vidur's A100 profile measures at 681 us, the datasheet config prices
  this kernel at 414 us (39% fast) and the forward kernel at 189 us (72% fast).
- *Kernels with one thread block per token, at few tokens.* At up to 64 tokens, Vidur's rotary
  and SiLU-and-mul kernels (vLLM kernels launching one block per token) were predicted 29-37%
  fast on the held-out Llama-2-7B sizes, up to 50-70% at TP 1: the calibrated fixed cost cannot
  hold a floor that grows with the work per token. Their times at 1-32 tokens are flat and
  follow a + bytes per token / b across all six models of each GPU, with b = 9.9 GB/s (rotary)
  and 11.7 (SiLU-and-mul) on H100, 7.7 and 8.0 on A100: what one block streams with the loads
  its threads keep in flight (Little's law; Volkov 2016). memsim now makes an op whose attrs
  give its blocks last at least as long as one block takes over its share of the bytes, at
  `block_bandwidth` (a datasheet estimate, 1024 threads x 4 B in flight per HBM latency:
  6.8 GB/s on H100, 5.9 on A100); the fit calibrates that rate per category where the data has
  such ops (`strided`: 14.4 GB/s on H100, 10.0 on A100), and the Vidur reader marks those two
  kernels. Held-out Llama-2-7B at up to 64 tokens: rotary 28.5% -> 9.9% MAPE and SiLU-and-mul
  29.4% -> 15.9% on H100, 36.5% -> 16.9% and 33.5% -> 11.5% on A100; over all held-out sizes
  rotary 9.5% -> 8.6% and SiLU-and-mul 9.7% -> 9.2% on H100, 8.5% -> 7.6% and 7.9% -> 6.9% on
  A100. Every other model's SiLU-and-mul improves on both GPUs, and so does its rotary but for
  A100 Llama-3-8B's (13.9%, unchanged): H100 Qwen-72B 12.0% -> 10.3% and 10.4% -> 9.4%, A100
  Qwen-72B 10.3% -> 8.7% and 9.2% -> 7.8%. The Vidur files'
  GEMMs move by 0.1 point at most (through the shared fit), BERT's by 0.4 and GEMM.csv's by 0.2.
  Tried and not adopted: (1) bounding the whole kernel by the
  blocks the units hold at once (threads per SM / threads per block, each at b: Little's law
  over the GPU) gave the same rotary and SiLU-and-mul figures but made vLLM's RMSNorm (also one
  block per token: 4 us at up to 256 tokens for a hidden size of 4096, 6 us for 8192)
  degenerate: fitted with it, the norm's bandwidth efficiency went to its bound and the
  per-block rate (5.5 GB/s) carried every size, so the 7B held-out norms improved (8.9% ->
  6.6%) while the other models' went from 10.5% to 18%. (2) Marking RMSNorm with the bound
  above improved its held-out figures (input norm 8.9% -> 8.1%, post-attention norm 7.8% ->
  6.9%) and the other models' a little (H100 Qwen-72B 15.1% -> 14.7%), but the H100 fit then
  settled in another minimum for the GEMM constants (first wave exposure 0.02, matrix
  efficiency 0.93), with the Qwen trace's GEMMs at 10.7% (9.9%) and BERT's at 9.9% (9.0%);
  norms are not marked.
- *phi-2's own kernels.* phi-2's profile runs torch's LayerNorm and GELU, which the Llama-2-7B
  calibration file has no example of: LayerNorm reaches 2.0 TB/s at 4096 tokens on H100 where
  sarathi's RMSNorm (the `norm` rate) reaches 1.0, so it is predicted up to 2x slow; GELU
  streams at 79% of the rate of the residual add beside it on H100 (A100: 85%), predicted 25-33%
  fast. Those two keep phi-2's non-GEMM ops at 19.5% MAPE on H100 and 16.7% on A100, where
  its GEMMs are at 8.5% and 7.2%.
- *Attention that appends the new keys itself.* Vidur's A100 attention profile runs sarathi-
  serve's wrapper, which hands the new keys and values to flash_attn_with_kvcache, for prefill
  and decode alike. Calibrated on half its own sizes, its prefill was still 24% MAPE: chunks of
  129-256 tokens after 2-4k cached ones were predicted 50-80% slow and long chunks without a
  cache 40% fast. Fitted as a + b * pairs, the prefill times follow the full rectangle of
  query-key pairs m * (c + m) (9.2% MAPE), not the causal pairs m * (c + m/2) the kernel computes
  (19.4%). The cause is in the KV-cache kernel's source: every thread block (64 query rows of one
  query head) copies the new K/V rows it sees into the cache before its main loop, "all
  threadblocks responsible for the same KV head ... writing the same content", so its copies
  grow with the square of the chunk; causal FLOPs plus those copies fit the profile with 7.1%
  MAPE at 134 TFLOP/s, 3.1 TB/s of copies and 20 us fixed. memsim now prices an attention op
  marked `appends_kv` as that kernel: blocks of 64 rows (128 for the forward kernel), key splits
  by flash-attn's own heuristic (two blocks per SM; no split past 80% of the slots, else the
  smallest split count within 85% of the best wave efficiency), and each block's copies added to
  its time at the L2's rate (the HBM rate times the cache's bandwidth over it). The Vidur reader
  marks its rows so and counts a decode's new key in its keys. Own-half calibration, held-out
  half: prefill 24.1% -> 8.2% MAPE (median 24.0% -> 6.6%), decode 11.0% -> 11.0%; on the
  datasheet config prefill goes from 57.6% to 44.1% and the file from 39.7% to 35.3%. Under the
  Vidur-mlp calibration, which has no attention data to set attention's rate, prefill goes
  from 48% to 34%. Decode's misses are elsewhere: at 2-16 sequences of 256-2048 keys it is
  13-24% fast, at 16-64 sequences of up to 256 keys 35-40% slow, and one sequence takes
  15-17 us whatever its length (the kernel splits its keys ever finer as they grow). Tried and
  not adopted: the kernel's grouped-query layout for decode (one block per KV head holding its
  query heads' rows, so fewer blocks and more splits) left decode at 11.0%, and charging the
  split kernels' combine kernel a second fixed cost took it to 11.7%; computing whole 64-row
  query tiles in that layout (8 query heads padded to 64 rows) took it to 12.4%, the fitted
  overlap loss to 0. What the decode times do
  follow is a serial chain per block: fitted as a + bytes / B + l * rounds * key blocks per
  block (+ a combine cost where split), they reach 7.6% MAPE with l = 3.8 us per key block of
  128 keys; that is a per-block streaming limit (64 KB of K and V per step at about 17 GB/s a
  block) which no constant of memsim's model holds yet.
- *The share of a partial last wave a GEMM pays.* Interpolating each held-out Llama-2-7B GEMM
  between its neighbours in the calibration half (16-64 tokens apart) misses by a median of
  1.1% on both GPUs: the data is smooth at that scale, and the model's 5-6% comes from
  where it puts its steps. The tile/wave model charges a partial last wave as a whole one, and
  its best tile steps every 64-128 tokens; cuBLAS's kernels step elsewhere, fewer times and
  higher (A100 up projection at TP 1: 112 us at 256 tokens, 163 at 272, 168 at 384, 219 from
  400 to 640, 297 from 656 to 704). A library that balances a partial wave (split-K, stream-K)
  pays only its share. memsim now charges a wave count of q * ceil(x) + (1 - q) * max(1, x)
  for x = tiles x splits / units, with q one constant per machine: 1 is the tile/wave model,
  0 charges the tiles' share. The fit holds q at 1 for its three searches and frees it in a
  fourth from their best, keeping that only where it lowers MAPE: freed from the start, q
  traded off against the first wave's exposure and the H100 fit settled at q = 0.69-0.76 with
  a higher MAPE on its own half (7.29-7.34% against 7.21% with whole waves). It is searched as a
  squared sine, since both bounds are plausible and a logit never reaches them. Fitted on the
  7B half: q = 0.88 on H100 and 0.20 on A100. Held-out 7B GEMMs: A100 7.0% / 5.7% -> 6.6% /
  5.4% (MAPE / median), H100 unchanged at 7.0% / 5.1%. Five of the six other A100 models
  improve: Llama-3-70B 6.0 / 4.5 -> 5.7 / 4.2, Llama-2-70B 6.3 / 4.9 -> 6.0 / 4.7, Qwen-72B
  6.4 / 4.4 -> 5.9 / 4.4, phi-2 7.5 / 6.3 -> 7.2 / 5.9, Llama-3-8B 6.6 / 5.8 -> 6.0 / 5.1;
  InternLM-20B goes from 7.4 / 5.3 to 7.4 / 5.4. The H100 models move by 0.1 point at most
  (Qwen-72B 9.2 / 7.3 -> 9.2 / 7.2, CodeLlama-34B 8.7 / 6.4 -> 8.6 / 6.3, InternLM-20B 8.2 /
  6.4 -> 8.1 / 6.3, Llama-2-70B 9.0 / 6.9 -> 9.0 / 6.8, phi-2 8.5 / 5.4 unchanged). Of the
  other files, HTA's GEMMs go from 42.2% to 40.3%, Qwen's from 9.7% to 9.9%, BERT's from
  8.8% to 9.0%, GEMM.csv from 16.2% to 16.4% and LLMCompass's from 27.5% to 27.7%; the
  Qwen trace's summed time is -9.1% (was -9.2%).
  Calibrated on the whole 7B file, the six A100 models reach 5.7-7.4% MAPE and 4.2-5.9%
  median (6.0-7.5% and 4.4-6.4% before), the five H100 models 8.1-9.2% and 5.4-7.2%.
- *Operand rows whose length is a multiple of a large power of two.* Across Vidur's H100
  profiles, at 2048-4096 tokens, the model's error fell steadily with the power of two in the
  operands' row length K*2 bytes: +12% (predicted slow) where it is 2^7, +9% at 2^8, +2% at 2^9,
  -4% at 2^13 and -6% at 2^14. Within one model the same holds: Llama-2-7B's GEMMs with
  N = 4096 run at 653 TFLOP/s with K = 4096 (rows of 2^13 B) and at 733 and 755 with
  K = 2752 and 5504 (43 x 2^7 and 43 x 2^8 B), and the 70B's at N = 8192 run at 655 with
  K = 8192 against 798 with K = 3584. Rows that far apart map to fewer memory partitions (the
  partition camping of strided GPU accesses; BLAS libraries special-case leading dimensions
  that are multiples of 1024 for the same reason). memsim now charges a tensor-core GEMM's main
  loop c per doubling of that power of two beyond the memory's access granularity (64 B), one
  constant fitted per machine where the data has rows of two such classes or more (the
  Llama-2-7B file has eight): c = 1.8% on H100 and 0.7% on A100 (matrix efficiency 0.92 and
  0.81, now the rate of conflict-free rows). Fused attention pays it too, on its K and V rows,
  one token (kv_heads x head_dim elements) apart. The fit searches c as a square root, since a
  logit or log flattens out towards 0 and Powell's line searches stalled there (from a logit
  the H100 fit ended at c = 0 with a higher MAPE on its own half). Held-out 7B GEMMs: H100
  7.4% / 5.2% -> 7.0% / 5.1% (MAPE / median), A100 7.1% / 6.1% -> 7.0% / 5.7%. Every other
  H100 model improves: Qwen-72B 9.8 / 7.8 -> 9.2 / 7.3, CodeLlama-34B 9.3 / 7.6 -> 8.7 / 6.4,
  InternLM-20B 8.4 / 6.8 -> 8.2 / 6.4, Llama-2-70B 9.6 / 7.7 -> 9.0 / 6.9, phi-2 8.5 / 5.5 ->
  8.5 / 5.4; so do five of the six A100 models (by 0.1-0.3 points of MAPE, 0.1-0.4 of median),
  while A100 phi-2 (K = 2560 and 10240) goes from 7.2 / 5.7 to 7.5 / 6.3. Of the other H100
  files, Qwen's GEMMs go from 10.0% to 9.7%, GEMM.csv from 16.4% to 16.2% and BERT's from 8.1%
  to 8.8%, and the trace's summed time is -9.2% instead of -8.9%. (Charged to GEMMs alone, the
  conflicts made attention, whose rate is a fraction of the GEMM rate, 12% faster: the Qwen
  trace's went from 38% fast to 41%; with its rows of 16 x 64 bf16, 2^11 B, charged as well it
  is back at 38%.) Calibrated on the whole 7B file instead of its half, as a user
  would, the five H100 models reach 8.1-9.2% MAPE and 5.3-7.3% median (8.5-9.8% and 5.9-8.1%
  without the pitch cost).
- *Other models' Vidur profiles.* With `--vidur` pointing at a clone of microsoft/vidur, every
  other model profiled on each GPU (`data/profiling/compute`) is validated with the same
  calibration (Llama-2-7B half). Those files are public (microsoft/vidur) but not in
  ../shared/ground-truth, so their rows appear only when the folder is given; the table below
  was generated with it.
- *All-reduce sizes, and the ring on the HGX H100.* Vidur's collective profiler writes `size`
  as the buffer's bytes (its wrapper stores the fp16 element count times two, and its own
  predictor divides by 2 x hidden size to get tokens); memsim read it as elements, so every
  all-reduce was priced on twice its bytes. Read as bytes, the DGX H100 profile reaches 269,
  314 and 332 GB/s of ring bus bandwidth at 64 MB on 2, 4 and 8 GPUs: a ring's figure, not
  NVLS's send-once rate, which the doubled sizes had made look like a match. The HGX H100
  config keeps `in_network_reduction` (NVLink SHARP, priced as each GPU sending its data once)
  but defaults to false, the ring; a setup that runs NCCL's NVLS sets it. On the datasheet
  configs: DGX H100 MAPE 37.1% / 14.5% / 14.4% (medians 29% / 6.7% / 6.1%) at 2 / 4 / 8 GPUs;
  DGX A100 52% / 38% / 29%, all predicted fast (rows spanning two nodes are left out: memsim
  prices a collective over one link).
- *Calibrating the switch.* `memsim calibrate --from all_reduce.csv --hw NODE.yaml` fits the
  peer link's efficiency and per-step latency (written on the link) and a collective call's
  fixed cost, three constants for the node. Fitted on every other size, the held-out half:
  DGX H100 14.8% / 7.2% / 5.4% MAPE at 2 / 4 / 8 GPUs (efficiency 0.77, 0.44 us a step,
  23 us a call), DGX A100 5.5% / 13.7% / 12.3% (0.56, 0.60 us, 42 us). The engine's
  tensor-parallel all-reduce now pays the collective's fixed cost too, as price_ops does.
- *Send/recv.* Vidur's DGX send_recv.csv times rank 0 sending a buffer to rank 1 (rows with one
  GPU per node cross two nodes and are left out). memsim prices it as one transfer over the
  peer link, latency + S / B, in a category of its own (p2p): the sender's kernel does not wait
  for every rank, so its fixed cost is not an all-reduce's. On the datasheet configs: DGX H100
  13.6% MAPE (median 7.3%), DGX A100 16.8% (7.2%). With the link fitted on the all-reduces'
  half, the H100's large sends land within 1% (64 MB: 193 us measured, 346 GB/s, the link's
  fitted 0.77), but small ones are predicted 1.5 us against 6.5-9 us: the all-reduce fit put
  its fixed time in the all-reduce call (23 us), not in the link's per-step latency (0.44 us),
  so 20.1% MAPE; on the A100 sends reach 238 GB/s (0.79 of the link) where its all-reduce ring
  reached 0.56, so 41%. Fitted on their own half (`memsim calibrate --from send_recv.csv`):
  2.6% (H100) and 9.3% (A100; its sends reach 260-270 GB/s from 16 to 31 MB and 221-227 GB/s
  from 39 MB up, which one link efficiency cannot follow: the fit settles at the cap, 1.0, with
  5.8 us of latency, and sends over 30 MB come out 17% fast); fitted jointly with the all-reduces on the H100, sends 2.8% and
  all-reduces 9.3%. The engine's pipeline sends between GPUs pay the p2p fixed cost.
- *The fit's two starts.* MAPE has a kink wherever a prediction meets its measurement, and
  Powell's line searches stalled on them where two constants trade off (a synthetic node with
  all-reduces and sends stopped at 7.5% MAPE with latency 2.2 us against 0.6 us). The fit now
  also minimises MAPE from the minimum of the smooth squared log ratio and keeps the lower of
  the two; on the Vidur GEMM files the H100 keeps its old minimum and the A100 moves by 0.1
  point at most.
- *The first GEMM wave's exposed memory time.* The tile/wave model charged a one-wave GEMM its
  whole memory time on top of its compute (each unit loads its operands before it computes),
  and 1/w of it over w waves. Multi-stage load pipelines start computing after the first
  stages arrive, so the exposed share is now a calibrated constant e (e/w over w waves; 1 is
  the old model), fitted with the others from 0.9: 0.78 on H100 and 0.57 on A100 (on the whole
  H100 file the fit settles at 0.04 instead, with every file's error within 0.2 points of
  these: the H100 data barely tells the two apart). Held-out
  GEMMs: H100 7.4% / 5.6% -> 7.4% / 5.2% (MAPE / median), A100 7.3% / 6.3% -> 7.1% / 6.1%.
  The A100's other models all improve (by 0.2-0.5 points of MAPE, 0.3-0.5 of median), the
  H100's by up to 0.5 points of median (phi-2 +0.1). Of the other files, BERT's 26 small GEMMs
  (6 us, mostly fixed cost) went from 6.2% to 8.1% and GEMM.csv from 14.9% to 16.4%.
- *More of Vidur's profiles.* Added to the clone this round: H100 Qwen-72B, and A100 Qwen-72B,
  InternLM-20B, Meta-Llama-3-70B and phi-2. Each was copied from the public index every other
  16 KB page, complete rows only (about half of each file's rows, over all token counts and TP
  degrees). The index's A100 CodeLlama-34B file has no timing columns, so it is left out.
  Calibrated on the Llama-2-7B half, the A100 meets the GEMM MAPE target on all six of its
  other models (6.3-7.4%) and the median target on three (Llama-2-70B, Llama-3-70B, Qwen-72B);
  the H100 misses both on all five (8.4-9.8%), Qwen-72B and Llama-2-70B worst.
- *Vidur's parallel block.* A profile without a post-attention norm is Vidur's parallel block
  (phi-2): attention and MLP both read the input norm and the timed add sums three tensors,
  which torch runs as two add kernels. A plain (non-gated) MLP's activation is torch's GELU on
  contiguous data, a vectorised elementwise op, not the strided SiLU-and-mul kernel. Ops that
  run several kernels pay each kernel's fixed cost and hold one kernel's bytes in the L2 at a
  time. phi-2 on H100: add 49% -> 7% MAPE.

**Causes of the misses.**
- *All-reduces.* Vidur's DGX all-reduces take a median 35-41 us (H100) and 46-57 us (A100) from 2 KB
  to 0.5 MB whatever the GPU count; the ring's 2(p-1) steps of the links' 3 us give 7, 19 and
  43 us at 2, 4 and 8 GPUs, so small messages at 2 and 4 GPUs are predicted 50-80% fast. The
  profiler times the NCCL kernels right after a barrier, so the kernel also waits for the
  slowest rank to arrive. At 2 GPUs large messages reach 269 GB/s (H100) and 151 GB/s (A100)
  of a 360 and 240 GB/s datasheet ring, and the DGX A100 stays at 164-167 GB/s at 4 and 8
  GPUs: its NVLink efficiency in that setup is ~0.56 (fitted), not the config's 0.8. The fitted
  per-call cost (23 us H100, 42 us A100) is far above NCCL's own base latency of a few us.
- *Long-K GEMMs on H100.* Vidur's H100 GEMMs at 3072-4096 tokens slow as K grows past ~5000:
  the down projection (N = model width) reaches 811, 751, 711 and 676 TFLOP/s at K = 3584,
  7168, 14336 and 28672 (Llama-2-70B, TP 8 to 1), and CodeLlama-34B's follows the same curve,
  so the 70B and 34B files' TP-1 GEMMs are predicted 7-10% fast. The A100 files do not show
  it (235 TFLOP/s at every K). A model in which the activation operand is re-read from HBM
  once per wave when it exceeds 3/4 of the L2 (rasterisation along M) removed the 70B and 34B
  bias (signed -2.5% -> -0.6%), but it raised the MAPE of the 7B held-out half, phi-2 and
  A100 Llama-2-70B, so it is not in the model. Power-limited clocks under long tensor-core
  main loops are the other candidate, and K alone does not explain the data: Qwen-72B's up
  projection, K = 8192 throughout, at 4096 tokens runs at 762, 734, 702 and 682 TFLOP/s at
  TP 8, 4, 2 and 1, as its N grows from 6144 to 49152 (more waves, which should help) and its
  kernel from 0.54 to 4.8 ms. The Llama-2-7B file's GEMMs last at most 1.1 ms, so a file like
  it cannot set such a clock, and no datasheet figure does. The row-pitch cost of this round
  accounts for part of the K curve (K = 3584 is 7 x 2^10 B a row, K = 28672 is 7 x 2^13 B): the
  70B's down projection at those token counts went from +11.9%, +2.7%, -5.9% and -9.9% to
  +8.2%, +0.6%, -6.6% and -9.2% at K = 3584, 7168, 14336 and 28672; the long-K slowdown stays.
  Tried this round: a length term beside the pitch term (the main loop slowed by
  1 + b * log2(K * 2 B / 64 B)). The Llama-2-7B file's K (512-11008) cannot tell it from the
  matrix efficiency, which ran to its cap of 1.0, and the held-out half got worse (7.4% at
  b = 3%); the other H100 models gained 0.1-0.4 points of MAPE, phi-2 lost 0.4 and BERT went
  from 8.8% to 13.7%. Not adopted. On A100 the trend runs the other way: GEMMs with K of
  512-3072 run 5-12% slower than predicted, those with K of 5120 or more within 5%, the sign
  of a fixed cost per tile rather than of a clock.
- *phi-2's LayerNorm, GELU and rotary kernels.* Vidur runs torch's vectorised LayerNorm for
  phi-2 (Sarathi's scalar-load RMSNorm for the Llama family), and its GELU streams at 2.45 TB/s
  against the residual add's 3.1 TB/s; both are priced with constants fitted on the Llama-2-7B
  kernels (31% and 33% MAPE on H100; 22% and 34% on A100). Priced instead as one vectorised
  pass at the add's rate, the LayerNorm came out 57-60% fast: it runs at about 40% of that
  rate, between the add and Sarathi's RMSNorm, and no kernel in the calibration file sets it.
  Its rotary kernel at head_dim 80 runs at 1.27 TB/s, 29% below the head_dim-128 kernels of
  the calibration file.
- *GEMM medians.* cuBLAS picks kernels whose times are not monotone in the token count.
  H100 up-projection at TP 1 takes 71 us at 128 tokens, 126 us at 136 and 87 us at 152. No
  model that picks the best tile follows those choices, and Vidur's 1 us resolution is 5-10%
  of a 10-20 us GEMM (16% of the H100 held-out GEMMs last under 20 us). Where the library
  does keep one tile, the data shows it: Llama-2-7B's down projection at TP 1 takes 106-116 us
  from 528 to 1008 tokens, one wave of 128x256 tiles on 132 SMs, then steps at each further
  wave. Tried this round and not adopted, each fitted on the 7B half and judged on the held-out
  half and the other models: a library that keeps the largest tile unless a smaller one is
  faster by a margin (5-35%: worse everywhere); a tile rate capped by its operand feed
  (intensity tm*tn/(tm+tn) times a fitted per-SM bandwidth: H100 worse); the L2 re-read model
  together with a per-tile fixed cost (within 0.5 points of the model); and a clock that drops
  after a fitted time at full load, which took the A100's held-out half to 6.5% / 5.0% but made
  every other A100 model worse (7.6-8.2%), i.e. it fitted the 7B file's shapes.
  Nor is a pipeline without a fixed overlap loss (held at 0.02, leaving only the first
  wave's exposure spread over the waves, e/w): long multi-wave GEMMs stream their weights
  behind their compute almost perfectly (Llama-2-70B's up projection at TP 1 takes 319-385 us
  from 64 to 256 tokens, near its 280 us of weight streaming, where the model charges 0.55 of
  the shorter side and predicts up to 25% slow). Fitted that way on the 7B half, the H100's
  other models' medians fell 0.4-0.9 points (Qwen-72B 7.2% -> 6.3%, Llama-2-70B 6.8% -> 6.2%)
  and the Qwen trace's GEMMs went from 9.9% to 7.0%, but the held-out half went from 7.0% /
  5.1% to 7.9% / 5.7%, phi-2's MAPE from 8.5% to 9.5% and BERT's from 9.0% to 18.9%; on the
  A100 the held-out half stayed at 6.6% and five of six other models got worse (Llama-2-70B
  6.0% / 4.7% -> 6.6% / 5.5%).
  Nor does the tile set move the A100: cuBLAS's Ampere tiles (256x64 and 64x256 added,
  128x192 removed) left the held-out half and every other A100 model within 0.1 point.
  On H100 the misses also have a period of 256 tokens in every Vidur file: from 1 to 31 tokens
  past a multiple of 256 (257-287, 513-543, ...) the model is 6-12% fast (-5.7% in the
  Llama-2-7B file itself), at the multiple within -1% to +2%; the A100 shows it only from 257
  to 320 tokens. The best-tile model pads M to 64 or 128 rows where cuBLAS's Hopper kernels
  behave as if padded to 256. Padding row tiles to pairs (Hopper's two-block clusters) halved
  that bias at 512-1024 tokens (-12% to -6%), but the held-out half stayed at 7.0% / 5.0%, the
  other H100 models' medians moved by -0.1 to +0.3 points and BERT went from 8.8% to 11.3%.
  Half the row tiles paired (with the wave share fitted) left the held-out half at 7.0% / 5.1%,
  the other H100 models' MAPE 0.1-0.2 points lower but two medians 0.2-0.3 higher, and BERT at
  10.6%. Not adopted.
- *Row kernels at a few tokens.* Vidur's SiLU-and-mul, rotary and RMSNorm kernels run one
  thread block per token, so below ~132 tokens they cannot fill the GPU and their time follows
  the row length, not the bytes. On H100, at 1-8 tokens, SiLU-and-mul takes 7, 3, 2 and 2 us
  at TP 1, 2, 4 and 8 (rows of 11008, 5504, 2752 and 1376) and rotary 4, 3, 2 and 2 us, where
  the streaming price with a fixed cost gives about 1.7 us. Each thread strides its row in
  ceil(row / threads) steps of one memory latency each: about 0.5 us per step, against HBM3's
  ~600 ns pointer-chase latency. Priced with that floor (steps times the memory latency in the
  hardware YAML), the held-out rotary error fell (H100 9.5% -> 8.9%, A100 8.5% -> 6.6%) but
  SiLU-and-mul on H100 rose from 9.7% to 10.8% and the A100 norms from 8.0% to 8.9%. A fitted
  step latency would add a constant for op kinds already within target, and memsim's own
  traces do not yet carry launch shapes, so the floor is not in the model.
- *Decode-shaped GEMMs on H100.* The 48 held-out Llama-2-7B GEMMs with at most 32 tokens
  (weight-streaming, GEMV-like) have 11.3% MAPE, +7.3% signed (A100: 4.3%, -1.8%): at TP 8 the
  attention output projection takes 4-5 us and is predicted 6.8-7.2. The GEMM fixed cost fitted
  on the whole file (5.5 us) is more than these kernels pay; a line through them alone gives
  3.1 us + bytes / 2.73 TB/s (6.8%). Pricing GEMMs of at most 32 rows with a fixed cost and
  bandwidth of their own (two more constants) left the held-out half at 7.4% / 5.3%, raised
  every other H100 model's median by 0.1-0.7 points (MAPE by up to 0.3) and BERT's MAPE from
  8.1% to 11.5%, so it is not in the model. Nor is a fixed cost on a GEMM's compute side
  (which a memory-bound, GEMV-like kernel hides behind its streaming), tried with the row-pitch
  cost: fitted at 3.3 us beside a 2.7 us launch cost on H100, it took the held-out half to
  6.9% / 4.9% and the other H100 models down by 0.1-0.2 points, but BERT's small tiled GEMMs
  (141 tokens, 6 us, neither bound) from 8.8% to 13.4% and GEMM.csv from 16.2% to 18.3%.
- *Qwen GEMMs (and GEMM.csv, the same shapes plus one 32x559x1 outer product on a SIMT
  kernel).* 147 of the 242 are 8944x1024x1024 and predicted about 10% slow. That trace's
  128x128 tiles run their K loop at ~93% of the per-SM peak, with ~1.5-2 us fixed per wave.
  Vidur's H100 setup reaches 83% (clocks and libraries differ, as the issue notes).
- *Attention in the Kineto traces.* The Qwen trace's FlashAttention-2, at head_dim 64, 559
  causal tokens, runs at ~90 TFLOP/s, half of the FlashAttention-3 paper's FlashAttention-2
  figure for 512 tokens (180 TFLOP/s), so it is predicted ~37% fast. Only attention data from
  that setup would calibrate it. Vidur's A100 prefill under the Vidur-mlp calibration is also
  slower than predicted: its paged kernels reach 0.44 of the GEMM rate against the
  datasheet's 0.8.
- *Qwen's non-vectorised kernels.* Its bf16 ones stream at 1.3-1.6 TB/s (predicted 5-27% fast),
  its fp32 broadcast multiply at 2.25 TB/s (26% slow), against the 1.85 TB/s fitted on Vidur's
  fp16 rotary and SiLU-and-mul kernels. A per-element issue cost (wider elements move more
  bytes per load) fixed the fp32 multiply but not the fp32 copies (1.88 TB/s), so it is not in
  the model.
- *Misaligned GEMMs.* A row (K or N) not a multiple of 16 bytes forces CUTLASS's align2/align1
  tensor-core kernels, which load 4 or 8 bytes at a time; memsim now scales the matrix rate
  by that width over 16 B. BERT's 141x30522x512 LM head (4-byte rows) went from -50% to -13%.
  HTA's TF32 GEMMs with N = 2798 went from -54..-70% to -39..-60%: cuBLAS ran its align1
  kernel although 8-byte loads were possible, and those kernels overlap NCCL kernels.
- *HTA rank0 (A100 training).* Its kernels overlap NCCL kernels of a 16-rank job; its two
  small TF32 GEMMs take 12-14 us against 6-7 predicted, and its small device copies take
  3-4 us against the 1 us datasheet overhead.
- *LLMCompass softmax/layernorm/gelu.* Those times include ~50 us of host-side timing overhead
  per call (a 1024-element GELU "takes" 48 us), a measurement setup no GPU-kernel model shares.
- *This CPU, this round.* The shared machine was busier than last round: the same workload
  measured 1.07-1.76 ms against 1.2 ms before, and with last round's settings five
  calibrate-then-run rounds ranged from +40% to -51% (median 27.5% and 24.8%). Calibration now
  runs its ops in five rounds and `validate real` runs the workload 25 times, keeping each op's
  fastest; with three rounds and 15 runs, back to back, the same test gave -1..-31%. That
  left a bias: the workload's small ops (pow, means over 64 values, in-place adds) took 12-46
  us against 4-9 us for the same ops in the calibration set. A small op run right after a
  larger one has lost its code and data from the core's caches: on this machine pow over 256
  values takes 4 us warm and 7-9 us after a matmul or a 16 MB write, a mean 7 us and 12-20 us.
  Calibration now writes 4 MiB before each small op; four calibrations priced one measured
  decode workload at -14..+16% (was -25..-14%). With five rounds and 25 runs, five
  calibrate-then-run rounds gave +3..+24% (three rounds and 15 runs: -34..+25%); the table
  below is this regeneration's.
- *This CPU.* The machine is 2 vCPUs shared with other jobs. Timed by wall clock, four
  back-to-back runs of the llama-tiny prefill summed 1.38 to 2.04 ms. Ops are now timed by the
  calling thread's CPU time (torch on one thread), which does not count time given to other
  processes: four back-to-back runs then summed 1.21 to 1.24 ms. Between rounds, ~10 s
  apart, the table above still varies by up to 25%: neighbours contending for caches and
  memory bandwidth slow the op itself, which no clock excludes. Within a round the model's
  own bias shows: a workload's small ops (arange, division, in-place adds) cost more fixed
  time than the micro-benchmarks' contiguous elementwise ops, and its tiny GEMMs less.
"""


def _short(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v:.3g}" for k, v in value.items()) + "}"
    return f"{value:.3g}"


if __name__ == "__main__":
    sys.exit(main())
