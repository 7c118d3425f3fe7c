"""Measure a CUDA GPU for memsim's validation: Kineto traces that `memsim validate` and
`memsim calibrate --from` read.

    python validation/gpu_profile.py layers --out DIR/layers [--models NAME ...] [--repeats N]
    python validation/gpu_profile.py workloads --out DIR/workloads
    python validation/gpu_profile.py report --traces DIR [--hw BASE] --out validation/OWN_GPU.md   (no GPU needed)
    python validation/gpu_profile.py power --out FILE

`layers`: one trace per model of the layer ops that Vidur profiles (vidur/profiling/mlp), for
the models of Vidur's compute profiles, at Vidur's tensor-parallel splits (1, 2, 4, 8) and a
grid of token counts: the embedding, both norms, the QKV, output, up and down projections,
rotary embedding, the activation and the residual add, in fp16, in block order. Attention itself
is left out, as Vidur's mlp.csv leaves it out. The ops are plain torch ops (no vLLM kernels), so
every kernel is priced from its own launching op. Calibrating on one model's trace (every other
size) and validating the others repeats the issue's protocol on a GPU of one's own:

    memsim calibrate --from DIR/Llama-2-7b-hf.json.gz --fit-half --hw nvidia-h100-sxm --out h100.yaml
    memsim validate DIR/Meta-Llama-3-8B.json.gz --hw h100.yaml

`workloads`: one trace per step of memsim's own workloads (two layers of the full-size configs)
run for real on the GPU, to compare memsim's kernels with a model's kernels.

`power`: GEMM shapes timed from idle and after seconds back to back, and one GEMM alternating
with copies at shares of time from 30% to 100%, with the SM clock, power draw and whether the
power cap was engaged (NVML): the rate a GPU holds at its limit and when the cap engages, which
the hardware config's power_cap states.

`report`: that protocol over DIR/layers (calibrated on Llama-2-7B's every other size), with
DIR/workloads priced on the same calibration, written as a markdown page.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memsim.trace.kineto import record_kineto  # noqa: E402
from memsim.validate.measure import SUSTAINED_SECONDS, event_seconds, keep_busy  # noqa: E402


@dataclass(frozen=True)
class LayerShape:
    """The fields of Vidur's model configs that set a layer's op shapes."""

    heads: int
    kv_heads: int
    embed: int
    expanded: int
    vocab: int
    gated: bool = True
    parallel_block: bool = False
    """Attention and MLP both read the input norm (phi-2): no post-attention norm."""


MODELS = {
    "Llama-2-7b-hf": LayerShape(32, 32, 4096, 11008, 32000),
    "Llama-2-70b-hf": LayerShape(64, 8, 8192, 28672, 32000),
    "Meta-Llama-3-8B": LayerShape(32, 8, 4096, 14336, 128256),
    "Meta-Llama-3-70B": LayerShape(64, 8, 8192, 28672, 128256),
    "CodeLlama-34b-Instruct-hf": LayerShape(64, 8, 8192, 22016, 32000),
    "internlm-20b": LayerShape(40, 40, 5120, 13824, 103168),
    "Qwen-72B": LayerShape(64, 64, 8192, 24576, 152064),
    "phi-2": LayerShape(32, 32, 2560, 10240, 51200, gated=False, parallel_block=True),
}
TENSOR_PARALLEL = (1, 2, 4, 8)
# Token counts: every 8 up to 256 (where wave quantisation moves most), then coarser.
TOKENS = sorted({1, 2, 4, *range(8, 257, 8), *range(320, 1025, 64), *range(1280, 4097, 256)})
# memsim's workloads profiled: (config, overrides, phase, batch, context)
WORKLOADS = (("llama2-7b", {"layers": "2"}, "prefill", 1, 2048), ("llama2-7b", {"layers": "2"}, "decode", 16, 2048),
             ("llama3-8b", {"layers": "2"}, "prefill", 4, 1024), ("llama3-8b", {"layers": "2"}, "decode", 64, 1024),
             ("mamba2-1.3b", {"layers": "2"}, "prefill", 2, 1024), ("mamba2-1.3b", {"layers": "2"}, "decode", 32, 1024),
             ("gla-1.3b", {"layers": "2"}, "prefill", 2, 1024), ("xlstm-1.3b", {"layers": "2"}, "prefill", 1, 512))


def rotary(x: torch.Tensor, heads: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half rotary embedding of a [tokens, heads * head_dim] view, as HF Llama runs it."""
    x = x.view(x.shape[0], heads, -1)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Layer:
    """One tensor-parallel worker's share of a layer: weights split as Vidur splits them."""

    def __init__(self, shape: LayerShape, tp: int, device: str, dtype: torch.dtype):
        self.shape = shape
        head_dim = shape.embed // shape.heads
        self.q, self.kv = shape.heads // tp, max(shape.kv_heads // tp, 1)
        self.ffn = shape.expanded // tp

        def weight(*size):
            return torch.randn(*size, device=device, dtype=dtype) * 0.02

        self.embedding = weight(shape.vocab // tp, shape.embed)
        self.norm = weight(shape.embed) + 1
        self.qkv = weight((self.q + 2 * self.kv) * head_dim, shape.embed)
        self.out = weight(shape.embed, self.q * head_dim)
        self.up = weight((2 if shape.gated else 1) * self.ffn, shape.embed)
        self.down = weight(shape.embed, self.ffn)
        self.head_dim = head_dim

    def run(self, tokens: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        s, q_width, kv_width = self.shape, self.q * self.head_dim, self.kv * self.head_dim
        hidden = F.embedding(tokens, self.embedding)
        normed = F.rms_norm(hidden, (s.embed,), self.norm)
        qkv = F.linear(normed, self.qkv)
        queries = rotary(qkv[:, :q_width], self.q, cos, sin)
        rotary(qkv[:, q_width:q_width + kv_width], self.kv, cos, sin)
        attended = F.linear(queries.reshape(len(tokens), q_width), self.out)
        mlp_in = normed if s.parallel_block else F.rms_norm(attended, (s.embed,), self.norm)
        up = F.linear(mlp_in, self.up)
        act = F.silu(up[:, :self.ffn]) * up[:, self.ffn:] if s.gated else F.gelu(up)
        down = F.linear(act, self.down)
        return (hidden + attended + down) if s.parallel_block else (attended + down)


def profile_layers(out: Path, models: list[str], repeats: int) -> None:
    dtype = torch.float16  # as Vidur profiles
    for name in models:
        shape = MODELS[name]
        layers = [Layer(shape, tp, "cuda", dtype) for tp in TENSOR_PARALLEL]
        inputs = []
        for t in TOKENS:
            angles = torch.randn(t, 1, shape.embed // shape.heads, device="cuda", dtype=dtype)
            inputs.append((torch.randint(0, shape.vocab // max(TENSOR_PARALLEL), (t,), device="cuda"),
                           angles.cos(), angles.sin()))

        def run():
            for layer in layers:
                for tokens, cos, sin in inputs:
                    for _ in range(repeats):
                        layer.run(tokens, cos, sin)

        path = out / f"{name}.json.gz"
        record_kineto(run, path)
        print(f"gpu_profile: {path} ({len(TOKENS)} token counts x {len(TENSOR_PARALLEL)} TP x {repeats})", flush=True)
        del layers, inputs
        torch.cuda.empty_cache()


def profile_workloads(out: Path) -> None:
    from memsim.trace.workload import StepSpec, build_step

    for config, overrides, phase, batch, context in WORKLOADS:
        spec = StepSpec(phase=phase, batch=batch, context=context, device="cuda")
        _, step = build_step(config, spec, overrides)
        path = out / f"{config}-{phase}-b{batch}-c{context}.json.gz"
        with torch.no_grad():
            record_kineto(step.run, path)
        print(f"gpu_profile: {path}", flush=True)
        del step
        torch.cuda.empty_cache()


# (m, n, k) of fp16 linear layers timed from idle and under sustained load: the projections of
# the 4096- and 8192-wide models at 4096 tokens, and square ones
POWER_SHAPES = ((4096, 4096, 4096), (4096, 11008, 4096), (4096, 4096, 11008), (4096, 22016, 4096),
                (4096, 8192, 4096), (4096, 4096, 8192), (4096, 8192, 8192), (2048, 8192, 8192),
                (8192, 8192, 8192), (4096, 57344, 8192), (4096, 8192, 28672), (4096, 16384, 16384),
                (4096, 14336, 4096), (4096, 28672, 4096))
# GEMM time shares of the duty sweep: a GEMM alternating with 512 MB device copies
GEMM_SHARES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)


class _Nvml:
    """SM clock, power and whether the software power cap is engaged, sampled every 10 ms on a
    thread, each sample tagged with what ran."""

    def __init__(self):
        import threading

        import pynvml

        pynvml.nvmlInit()
        self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        self.tag, self.samples, self.running = "", [], True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        import time

        nvml = self.nvml
        reasons = (getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                   or nvml.nvmlDeviceGetCurrentClocksThrottleReasons)
        while self.running:
            self.samples.append((time.time(), self.tag, nvml.nvmlDeviceGetClockInfo(self.handle, nvml.NVML_CLOCK_SM),
                                 nvml.nvmlDeviceGetPowerUsage(self.handle) / 1e3,
                                 bool(reasons(self.handle) & nvml.nvmlClocksThrottleReasonSwPowerCap)))
            time.sleep(0.01)

    def since(self, tag: str, after: float) -> str:
        """'SM MHz | W | share capped' over the samples of `tag` taken after time `after`."""
        mine = [sample for sample in self.samples if sample[1] == tag and sample[0] >= after] or [(0, tag, 0, 0, False)]
        mean = lambda i: sum(sample[i] for sample in mine) / len(mine)  # noqa: E731
        return f"{mean(2):.0f} | {mean(3):.0f} | {mean(4):.0%}"


def _fp16(*size: int) -> torch.Tensor:
    return torch.randn(*size, device="cuda", dtype=torch.float16)


def _median_tflops(flops: float, run, count: int) -> float:
    """Median TFLOP/s of `count` runs of `run`, issued back to back."""
    return flops / sorted(event_seconds(run, count))[count // 2] / 1e12


def measure_power(out: Path) -> None:
    """Two experiments on the GPU's power cap, written as markdown tables to `out`:
    each POWER_SHAPES layer timed a second after idle (5 runs) and after SUSTAINED_SECONDS back to
    back, with the SM clock, power and share of NVML samples with the power cap engaged over the
    sustained run's second half; then a 4096x8192x8192 layer alternating with device copies at
    each GEMM_SHARES share of time, its rate, clock and cap share over the last half second."""
    import time

    nvml = _Nvml()
    lines = ["| shape (m x n x k) | TFLOP/s from idle | TFLOP/s sustained | SM MHz | W | capped |",
             "|---|---|---|---|---|---|"]
    for m, n, k in POWER_SHAPES:
        x, w = _fp16(m, k), _fp16(n, k)
        F.linear(x, w)
        torch.cuda.synchronize()
        nvml.tag = ""
        time.sleep(1.0)
        nvml.tag = f"{m}x{n}x{k}"
        idle = _median_tflops(2 * m * n * k, lambda: F.linear(x, w), 5)
        began = time.time()
        keep_busy(lambda: F.linear(x, w), SUSTAINED_SECONDS)
        sustained = _median_tflops(2 * m * n * k, lambda: F.linear(x, w), 20)
        state = nvml.since(nvml.tag, began + SUSTAINED_SECONDS / 2)
        lines.append(f"| {nvml.tag} | {idle:.0f} | {sustained:.0f} | {state} |")
        print(lines[-1], flush=True)
        del x, w
    m, n, k = 4096, 8192, 8192
    x, w = _fp16(m, k), _fp16(n, k)
    source = torch.empty(256 << 20, device="cuda", dtype=torch.float16)
    target = torch.empty_like(source)
    flops = 2 * m * n * k

    def gemm():
        F.linear(x, w)
    gemm_ms = 1e3 * flops / (_median_tflops(flops, gemm, 5) * 1e12)
    copy_ms = 1e3 * source.numel() / (_median_tflops(source.numel(), lambda: target.copy_(source), 5) * 1e12)
    duty = ["| GEMM share of time | TFLOP/s | SM MHz | W | capped |", "|---|---|---|---|---|"]
    for share in GEMM_SHARES:
        copies = round(gemm_ms * (1 - share) / share / copy_ms)

        def fill():
            for _ in range(copies):
                target.copy_(source)
        nvml.tag = ""
        time.sleep(1.5)
        nvml.tag = f"share {share}"
        began, seconds = time.time(), []
        while time.time() - began < 1.2:  # the GEMMs of the last half second count
            late = time.time() - began >= 0.7
            timed = event_seconds(gemm, 4, between=fill)
            seconds += timed if late else []
        tflops = [flops / second / 1e12 for second in seconds]
        actual = gemm_ms / (gemm_ms + copies * copy_ms)
        duty.append(f"| {actual:.0%} | {sorted(tflops)[len(tflops) // 2]:.0f} | {nvml.since(nvml.tag, began + 0.7)} |")
        print(duty[-1], flush=True)
    nvml.running = False
    text = (f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n\n" + "\n".join(lines) + "\n\n"
            f"{m}x{n}x{k} alternating with {source.numel() * 2 >> 20} MB device copies:\n\n" + "\n".join(duty) + "\n")
    out.write_text(text)
    print(text)


def report(traces: Path, base: str, out: Path, calibrate_on: str = "Llama-2-7b-hf") -> None:
    """The cross-model table (and the workload traces) as markdown, from traces measured before."""
    import tempfile

    from memsim.commands.calibrate import calibrate_from_file, write_calibrated
    from memsim.hardware import load_system
    from memsim.validate.fit import calibration_half
    from memsim.validate.measure import stderr_progress
    from memsim.validate.readers import read_measured
    from memsim.validate.report import predict, validation_result

    fit_on = traces / "layers" / f"{calibrate_on}.json.gz"
    stderr_progress(f"calibrating {base} on every other size of {fit_on}")
    (calibration, links), base_path = calibrate_from_file(str(fit_on), base, None, True)
    with tempfile.TemporaryDirectory() as folder:
        system = load_system(write_calibrated(base_path, calibration, f"{folder}/own.yaml", links=links))

    def errors(path: Path, held_out: bool = False) -> dict:
        data = read_measured(path)
        priced = predict(data.ops, system)  # whole, then halved: the power state follows every op
        priced = priced[~calibration_half(priced["size"])].reset_index(drop=True) if held_out else priced
        return validation_result(priced, str(path), system.name)["groups"], data.device_name

    lines, device = [], ""
    for path in sorted((traces / "layers").glob("*.json.gz")):
        stderr_progress(f"pricing {path.name}")
        name = path.name.removesuffix(".json.gz")
        groups, device = errors(path, held_out=name == calibrate_on)
        gemm, other, overall = groups["gemm"], groups["elementwise"], groups["overall"]
        label = f"{name} (held-out half)" if name == calibrate_on else name
        lines.append(f"| {label} | {gemm['count']} | {gemm['mape']:.1%} | {gemm['median_ape']:.1%} | "
                     f"{gemm['sum_error']:+.1%} | {other['sum_error']:+.1%} | {overall['sum_error']:+.1%} |")
    workload_lines = []
    for path in sorted((traces / "workloads").glob("*.json.gz")):
        stderr_progress(f"pricing {path.name}")
        groups, _ = errors(path)
        workload_lines.append(_summary_row(path.name.removesuffix(".json.gz"), groups))
    # `memsim validate real ... --device cuda --json` outputs, each predicted with the calibration
    # `memsim calibrate --device cuda` measured on the same GPU
    real_lines = [_summary_row(result["measured"], result["groups"])
                  for result in (json.loads(path.read_text()) for path in sorted((traces / "real").glob("*.json")))]
    power = traces / "power.md"  # gpu_profile.py power
    power_text = (f"""
**The GPU at its power limit** (`gpu_profile.py power`): fp16 linear layers timed a second after
idle and after {SUSTAINED_SECONDS:g} s back to back (clock, power and the share of NVML samples with
the software power cap engaged, over the second half), then one layer alternating with device
copies. nvidia-h100-sxm.yaml's `power_cap` comes from these tables
(memsim.cost.kernels.power_capped_seconds).

{power.read_text().split(chr(10) + chr(10), 1)[1]}""" if power.exists() else "")
    constants = calibration.model_dump(include={"matrix_efficiency", "bandwidth_efficiency", "overlap_loss",
                                                "first_wave_exposure", "wave_quantization", "pitch_conflict_cost",
                                                "category_overhead"}, exclude_none=True)
    out.write_text(f"""# memsim against a GPU of our own

Measured on {device or 'a CUDA GPU'} with `validation/gpu_profile.py layers` and `workloads` (plain
torch, fp16 layer ops, Kineto traces); regenerate this page with `validation/gpu_profile.py report
--traces DIR --hw {base}` (no GPU needed, under a minute on two cores). The traces are not in the repository.

**Protocol** (the issue's, on our own measurements): `memsim calibrate --from` on every other
size of the {calibrate_on} layer trace, then `memsim validate` of the other half and of every other
model's trace. Each trace holds Vidur's layer ops (embedding, norms, QKV / output / up / down
projections, rotary, activation, residual add; no attention) at tensor-parallel splits 1, 2, 4
and 8 and {len(TOKENS)} token counts from 1 to {max(TOKENS)}, three runs each. Each kernel is
priced from its launching op's shapes.

| model | GEMM kernels | GEMM MAPE | GEMM median | GEMM summed | other kernels summed | all summed |
|---|---|---|---|---|---|---|
{chr(10).join(lines)}

Fitted constants: {constants}

**memsim's own workloads** (two layers of the full-size configs, one step, run for real, where the name says no
other),
priced with the same calibration: summed kernel time and per-kernel MAPE, summed error by category.

| trace | kernels | measured ms | summed | MAPE | by category |
|---|---|---|---|---|---|
{chr(10).join(workload_lines)}

**`memsim validate real --device cuda`** after `memsim calibrate --device cuda` on the same GPU
(its micro-benchmarks, no layer trace): each kernel's fastest time over the runs, priced from its
launching op.

| step | kernels | measured ms | summed | MAPE | by category |
|---|---|---|---|---|---|
{chr(10).join(real_lines)}
{power_text}""")


def _summary_row(name: str, groups: dict) -> str:
    """A table row: kernel count, measured time, summed error and MAPE, summed error per category."""
    overall = groups["overall"]
    parts = ", ".join(f"{group} {summary['count']}: {summary['sum_error']:+.1%}"
                      for group, summary in groups.items() if group != "overall")
    return (f"| {name} | {overall['count']} | {overall['measured_s'] * 1e3:.3f} | {overall['sum_error']:+.1%} | "
            f"{overall['mape']:.1%} | {parts} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["layers", "workloads", "report", "power"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--traces", help="report: the folder holding layers/ and workloads/")
    parser.add_argument("--hw", default="nvidia-h100-sxm", help="report: the datasheet config calibrated")
    args = parser.parse_args()
    if args.what == "report":
        if not args.traces or not (Path(args.traces) / "layers").is_dir():
            print(f"gpu_profile: --traces {args.traces}: expected a folder with layers/ (gpu_profile.py layers)",
                  file=sys.stderr)
            return 2
        report(Path(args.traces), args.hw, Path(args.out))
        return 0
    if not torch.cuda.is_available():
        print("gpu_profile: torch sees no CUDA device on this machine", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.what == "power":
        with torch.inference_mode():
            measure_power(out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        if args.what == "layers":
            profile_layers(out, args.models, args.repeats)
        else:
            profile_workloads(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
