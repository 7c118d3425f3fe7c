"""Import a PyTorch profiler (Kineto) Chrome trace as a memsim Trace of measured GPU work.

One op per GPU kernel, memcpy and memset, in start order, with its measured duration
(ops.measured_s, seconds; Kineto's ts/dur are microseconds whatever displayTimeUnit says). A
kernel is linked to the CPU op that launched it: the kernel's correlation id names its
launch call (cudaLaunchKernel, or cuLaunchKernel for kernels launched through the driver API),
and the innermost CPU op on that thread whose span contains the call is the launching op (for
a kernel an attention op launches itself, the outermost attention op, whose inputs are
[B, H, S, D]; see _pick_op). That op's `Input Dims`
and `Input type` give the kernel's shapes, dtype, FLOPs and bytes.
"""
from __future__ import annotations

import gzip
import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import torch

from memsim.errors import MemsimError
from memsim.trace.ops import (ATTENTION_OPS, CONV_OPS, GEMM_OPS, STREAMING_CATEGORIES, attention_flops, categorize, gemm_dims,
                              numel)
from memsim.trace.table import ACCESS_COLUMNS, OP_COLUMNS, TENSOR_COLUMNS, Trace, empty_table

TYPE_NAMES = {"c10::BFloat16": "bf16", "c10::Half": "fp16", "float": "fp32", "double": "fp64",
              "c10::Float8_e4m3fn": "fp8", "c10::Float8_e5m2": "fp8", "long int": "int64", "int": "int32",
              "bool": "bool", "unsigned char": "uint8", "signed char": "int8"}
TYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "fp64": 8, "fp8": 1, "int64": 8, "int32": 4, "bool": 1,
              "uint8": 1, "int8": 1}
# Kernel-name patterns for kernels whose launching op says little (or is missing).
KERNEL_PATTERNS = (("gemm", re.compile(r"(?<!fb)gemm|xmma|cutlass|cublas|wgmma|matmul", re.I)),
                   ("attention", re.compile(r"flash|fmha|attention", re.I)),
                   ("p2p", re.compile(r"nccl\w*(send|recv)", re.I)),
                   ("collective", re.compile(r"nccl", re.I)),
                   ("norm", re.compile(r"norm", re.I)),
                   ("reduction", re.compile(r"softmax|reduce", re.I)),
                   ("elementwise", re.compile(r"elementwise|vectorized|unrolled|pointwise", re.I)))
ATTENTION_KERNEL = dict(KERNEL_PATTERNS)["attention"]
# Convolutions whose arguments are (input, weight, bias, stride, padding, dilation, transposed,
# output_padding, groups): their kernels are priced from these (_convolution_costs).
CONV_FORWARD_OPS = CONV_OPS - {"aten::convolution_backward"}
# Argument position of is_causal in the attention ops whose shapes we read.
CAUSAL_ARGUMENT = {"aten::scaled_dot_product_attention": 5, "aten::_scaled_dot_product_flash_attention": 4,
                   "aten::_scaled_dot_product_efficient_attention": 5, "aten::_scaled_dot_product_cudnn_attention": 6}
GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
# Host calls that launch GPU work: the runtime API (cudaLaunchKernel) and the driver API
# (cuLaunchKernel, which CUTLASS and Triton kernels go through).
LAUNCH_CATEGORIES = ("cuda_runtime", "cuda_driver")
# Kernels a matmul launches besides its matrix kernel: cuBLAS's split-K reduction of partial sums.
GEMM_HELPER_KERNEL = re.compile(r"splitK.?reduce", re.I)
# Tensor-core kernels that compute fp32 matmuls in TF32 (cuBLAS 'tf32', CUTLASS 'tensorop_s1688':
# the m16n8k8 TF32 instruction); fp32 matmuls in other kernels (ampere_sgemm) ran in fp32.
TF32_KERNEL = re.compile(r"tf32|tensorop_s1688", re.I)
# PyTorch's kernels that load one element per thread (operands strided, broadcast or cast): the
# kernel name tells which code path ran, so such kernels are priced as category 'strided'.
SCALAR_LOAD_KERNEL = re.compile(r"(?<!vectorized_)elementwise_kernel|CatArrayBatchedCopy(?!_aligned|_vectorized)")


def load_kineto(path: str | Path) -> Trace:
    """The GPU work of a Kineto trace (`.json` or `.json.gz`) as a Trace with measured times."""
    path = Path(path)
    events, properties = _read_events(path)
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") in LAUNCH_CATEGORIES and "correlation" in e.get("args", {})}
    gpu = sorted((e for e in events if e.get("cat") in GPU_CATEGORIES and e.get("ph") == "X"),
                 key=lambda e: (e["ts"], e["args"].get("correlation", 0)))
    if not gpu:
        raise MemsimError(f"{path}: no GPU kernel, memcpy or memset events (a trace profiled without "
                          f"ProfilerActivity.CUDA?)")
    stacks = _launching_stacks(events, launches)
    rows = [_gpu_row(event, _pick_op(stacks[correlation], event["name"]) if correlation in stacks else None)
            for event in gpu for correlation in [event["args"].get("correlation")]]
    unlinked = _fill_from_twins(rows, gpu, stacks)
    ops = pd.DataFrame(rows)
    ops.insert(0, "op_id", range(len(ops)))
    # when each kernel began (from the first): what ran before sets the GPU's power state
    ops["start_s"] = [(event["ts"] - gpu[0]["ts"]) * 1e-6 for event in gpu]
    ops = ops[list(OP_COLUMNS) + ["kernel", "start_s"]]
    device_name = properties[0].get("name", "") if properties else ""
    meta = {"source": str(path), "format": "kineto", "device_name": device_name, "mode": "measured",
            "unlinked_kernels": unlinked}
    return Trace(ops, empty_table(TENSOR_COLUMNS), empty_table(ACCESS_COLUMNS), meta)


def record_kineto(run, path: str | Path, warmup: int = 1) -> Path:
    """Run `run` under the PyTorch profiler (CPU ops with their shapes, CUDA kernels) and write
    its Kineto trace to `path` (gzipped where it ends in .gz), after `warmup` runs outside the
    profile: cuBLAS handles, workspaces and kernel choices settle in those."""
    from torch.profiler import ProfilerActivity, profile

    path = Path(path)
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as profiler:
        run()
        torch.cuda.synchronize()
    plain = path.with_suffix("") if path.name.endswith(".gz") else path
    profiler.export_chrome_trace(str(plain))
    if plain != path:
        with open(plain, "rb") as source, gzip.open(path, "wb") as target:
            shutil.copyfileobj(source, target)
        plain.unlink()
    return path


def _launch_shape(event: dict) -> tuple:
    args = event.get("args", {})
    return event["name"], tuple(args.get("grid") or ()), tuple(args.get("block") or ())


def _fill_from_twins(rows: list[dict], gpu: list[dict], linked: dict) -> int:
    """Give kernels whose launch is missing from the trace (the CPU side was cut off) the costs
    of a linked kernel with the same name, grid and block: the same launch shape processes the
    same problem. Returns how many kernels stayed without a launching op."""
    twins = {}
    for row, event in zip(rows, gpu):
        if event["cat"] == "kernel" and event["args"].get("correlation") in linked:
            twins.setdefault(_launch_shape(event), row)
    unlinked = 0
    for index, event in enumerate(gpu):
        if event["cat"] != "kernel" or event["args"].get("correlation") in linked:
            continue
        twin = twins.get(_launch_shape(event))
        if twin is None:
            unlinked += 1
            continue
        rows[index] = {**twin, "stream": rows[index]["stream"], "measured_s": rows[index]["measured_s"]}
    return unlinked


def _read_events(path: Path) -> tuple[list[dict], list[dict]]:
    if not path.exists():
        raise MemsimError(f"{path}: no such file")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MemsimError(f"{path}: not a Kineto JSON trace ({error})")
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise MemsimError(f"{path}: expected a JSON object with a 'traceEvents' list (a PyTorch profiler trace)")
    return data["traceEvents"], data.get("deviceProperties") or []


def _launching_stacks(events: list[dict], launches: dict) -> dict:
    """correlation id -> the CPU ops open on the thread at that launch, outermost first."""
    by_thread: dict = {}
    for event in events:
        if event.get("ph") != "X" or "ts" not in event:
            continue
        if event.get("cat") == "cpu_op" or (event.get("cat") in LAUNCH_CATEGORIES
                                            and event.get("args", {}).get("correlation") in launches):
            by_thread.setdefault((event.get("pid"), event.get("tid")), []).append(event)
    found = {}
    for thread_events in by_thread.values():
        # at one timestamp, enclosing ops (longer) open before the ops and launches they hold
        thread_events.sort(key=lambda e: (e["ts"], e.get("cat") != "cpu_op", -e.get("dur", 0)))
        stack: list[dict] = []
        for event in thread_events:
            while stack and stack[-1]["ts"] + stack[-1].get("dur", 0) < event["ts"]:
                stack.pop()
            if event.get("cat") == "cpu_op":
                stack.append(event)
            elif stack:
                found[event["args"]["correlation"]] = list(stack)
    return found


def _is_attention(op: dict) -> bool:
    return op["name"] in ATTENTION_OPS or op["name"] == "aten::scaled_dot_product_attention"


def _pick_op(stack: list[dict], kernel: str) -> dict:
    """The innermost op; for an attention kernel (by its name, or launched by an attention op
    itself), the outermost attention op, whose inputs are in [B, H, S, D] order (cuDNN's kernel
    is launched inside aten::_cudnn_attention_forward, in [B, S, H, D]). Any other kernel of
    an op inside attention (the bmm and softmax of SDPA's math fallback) is that op's. Likewise
    a convolution's kernel (launched inside aten::_conv_depthwise2d, cudnn_convolution, ...)
    is aten::convolution's, whose arguments give stride, padding and groups."""
    outermost = next((op for op in stack if _is_attention(op)), None)
    if outermost is not None and (_is_attention(stack[-1]) or ATTENTION_KERNEL.search(kernel)):
        return outermost
    convolution = next((op for op in stack if op["name"] in CONV_FORWARD_OPS), None)
    if convolution is not None and "conv" in stack[-1]["name"]:
        return convolution
    return stack[-1]


def _gpu_row(event: dict, op: dict | None) -> dict:
    args = event.get("args", {})
    row = {"name": event["name"], "kernel": event["name"], "category": "other", "scope": "", "dtype": "",
           "flops": 0.0, "bytes_read": 0.0, "bytes_written": 0.0, "batch": 0, "m": 0, "n": 0, "k": 0,
           "attrs": "", "shapes": "", "stream": int(args.get("stream", 0)), "measured_s": event.get("dur", 0.0) * 1e-6,
           "reread_bytes": 0.0}  # a profile names no tensors, so what a kernel rereads is unknown
    if event["cat"] == "gpu_memcpy":
        direction = next((d for d in ("HtoD", "DtoH", "DtoD", "HtoH", "PtoP") if d in event["name"]), "DtoD")
        nbytes = float(args.get("bytes", 0))
        # a copy within the device streams its memory, as a copy kernel does; one that crosses
        # to or from the host is a transfer over its link
        row.update(category="copy" if direction == "DtoD" else "memcpy", dtype="uint8", bytes_read=nbytes,
                   bytes_written=nbytes,
                   attrs=json.dumps({"direction": direction, "pinned": "Pageable" not in event["name"]}))
        return row
    if event["cat"] == "gpu_memset":
        row.update(category="elementwise", dtype="uint8", bytes_written=float(args.get("bytes", 0)))
        return row
    if op is not None:
        row.update(_op_costs(op))
    if row["category"] in ("other", "elementwise") or op is None:
        for category, pattern in KERNEL_PATTERNS:
            if pattern.search(event["name"]):
                row["category"] = category if row["category"] == "other" or category in ("gemm", "attention") \
                    else row["category"]
                break
    if row["category"] == "gemm" and GEMM_HELPER_KERNEL.search(event["name"]):
        _as_gemm_helper(row)
    if row["category"] == "gemm" and row["dtype"] == "fp32" and TF32_KERNEL.search(event["name"]):
        row["dtype"] = "tf32"
    if row["category"] in ("gemm", "conv", "attention") and row["flops"] == 0:
        row["category"] = "other"  # a matrix kernel whose problem size the trace does not record
    if row["category"] in STREAMING_CATEGORIES and SCALAR_LOAD_KERNEL.search(event["name"]):
        row["category"] = "strided"
    if row["category"] == "norm" and args.get("grid"):
        # a norm kernel runs one thread block per row: at few rows, its blocks bound it
        # (memsim.cost.kernels.block_row_seconds)
        blocks = math.prod(int(size) for size in args["grid"])
        row["attrs"] = json.dumps({**(json.loads(row["attrs"]) if row["attrs"] else {}), "blocks": blocks})
    return row


def _as_gemm_helper(row: dict) -> None:
    """A kernel a matmul launches besides its matrix kernel (cuBLAS's split-K reduction): it
    reads the fp32 partial sums (two slices at least) and writes the output, so it is priced as
    a reduction over the output, not as a second copy of the GEMM."""
    outputs = float(max(row["batch"], 1) * row["m"] * row["n"])
    row.update(category="reduction", flops=outputs, bytes_read=2 * outputs * TYPE_BYTES["fp32"],
               bytes_written=row["bytes_written"], batch=0, m=0, n=0, k=0)


def _torch_tags(name: str) -> tuple:
    """torch's tags (pointwise, reduction) of an aten op named in a trace, where torch has it."""
    namespace, _, op_name = name.partition("::")
    try:
        return tuple(getattr(getattr(torch.ops, namespace), op_name).default.tags)
    except (AttributeError, RuntimeError):
        return ()


def _shapes(entry) -> list[list[int]]:
    """The tensor shapes in one `Input Dims` entry: a shape, a list of shapes (TensorList), or []."""
    if not isinstance(entry, list) or not entry:
        return []
    if all(isinstance(size, int) for size in entry):
        return [entry]
    return [shape for item in entry for shape in _shapes(item)]


def _op_costs(op: dict) -> dict:
    """Category, dtype, dims, FLOPs and bytes of a CPU op from its recorded inputs."""
    args = op.get("args", {})
    dims = args.get("Input Dims") or []
    types = args.get("Input type") or []
    stride_entries = args.get("Input Strides") or []
    tensors, strides = [], []  # strides: each tensor's, where recorded (None where not)
    for position, (entry, kind) in enumerate(zip(dims, types)):
        if kind in ("Scalar", ""):
            continue
        given = _shapes(stride_entries[position]) if position < len(stride_entries) else []
        for index, shape in enumerate(_shapes(entry)):
            tensors.append((shape, TYPE_NAMES.get(kind, "fp32")))
            strides.append(given[index] if index < len(given) else None)
    name = op["name"]
    category = categorize(name, _torch_tags(name))
    # a factory op's kernel is its fill: the allocation is host work, outside a kernel's time
    category = "elementwise" if category == "factory" else category
    dtype = next((t for _, t in tensors if t in ("bf16", "fp16", "fp32", "fp8", "fp64")), tensors[0][1] if tensors else "fp32")
    read = float(sum(numel(shape) * TYPE_BYTES.get(kind, 4) for shape, kind in tensors))
    out = {"name": name, "category": category, "dtype": dtype, "bytes_read": read,
           "shapes": json.dumps([shape for shape, _ in tensors])}
    element = TYPE_BYTES.get(dtype, 4)
    if name in GEMM_OPS:
        batch, m, n, k = gemm_dims(name, [tuple(shape) for shape, _ in tensors])
        if m and n and k:
            out.update(category="gemm", batch=batch, m=m, n=n, k=k, flops=2.0 * batch * m * n * k,
                       bytes_written=float(batch * m * n * element))
    elif name in CONV_FORWARD_OPS and len(tensors) >= 2:
        out.update(_convolution_costs(tensors, args.get("Concrete Inputs") or [], element))
    elif name in ATTENTION_OPS or name == "aten::scaled_dot_product_attention":
        if len(tensors) >= 3 and len(tensors[0][0]) == 4:
            (b, h, q_len, d), (_, h_kv, kv_len, _), (_, _, _, dv) = (t[0] for t in tensors[:3])
            concrete = args.get("Concrete Inputs") or []
            index = CAUSAL_ARGUMENT.get(name, -1)
            causal = 0 <= index < len(concrete) and str(concrete[index]).lower() == "true"
            out.update(category="attention", batch=b * h, m=q_len, n=kv_len, k=d,
                       flops=attention_flops(b, h, q_len, kv_len, d, dv, causal),
                       bytes_written=float(b * h * q_len * dv * element),
                       attrs=json.dumps({"heads": h, "kv_heads": h_kv, "value_dim": dv, "causal": causal}))
    else:
        out.update(_moved_bytes(name, category, tensors, strides))
    return out


def _convolution_costs(tensors: list, concrete: list, element: int) -> dict:
    """FLOPs and bytes of aten::convolution(input, weight, bias, stride, padding, dilation,
    transposed, output_padding, groups) from its recorded shapes and arguments:
        out = floor((in + 2 p - d (k - 1) - 1) / s) + 1 per spatial dim  (transposed: (in - 1) s - 2 p + d (k - 1) + 1)
        FLOPs = 2 * N * C_out * prod(out) * C_in / groups * prod(k)"""
    def listed(index: int, default: int) -> list[int]:
        try:
            value = json.loads(concrete[index])
        except (IndexError, ValueError):
            return [default]
        if isinstance(value, int):
            return [value]
        return value if isinstance(value, list) and value else [default]

    (source, _), (weight, _) = tensors[0], tensors[1]
    spatial, kernel = source[2:], weight[2:]
    stride, padding, dilation = listed(3, 1), listed(4, 0), listed(5, 1)
    transposed = len(concrete) > 6 and str(concrete[6]).lower() == "true"
    groups = listed(8, 1)[0]
    out = []
    for axis, (size, width) in enumerate(zip(spatial, kernel)):
        s, p, d = (values[min(axis, len(values) - 1)] for values in (stride, padding, dilation))
        out.append((size - 1) * s - 2 * p + d * (width - 1) + 1 if transposed
                   else (size + 2 * p - d * (width - 1) - 1) // s + 1)
    channels_out = weight[1] * groups if transposed else weight[0]
    per_output = (source[1] // groups) * numel(kernel)
    outputs = source[0] * channels_out * numel(out)
    return {"category": "conv", "flops": 2.0 * outputs * per_output,
            "bytes_read": float(sum(numel(shape) * TYPE_BYTES.get(kind, 4) for shape, kind in tensors)),
            "bytes_written": float(outputs * element)}


def _footprint(shape: list[int], strides: list[int] | None) -> int:
    """Elements a tensor occupies in memory: an expanded dimension (stride 0) repeats the same
    elements, so it adds none (torch's embedding gathers through an index expanded over the
    row, [tokens, width] with strides [1, 0]: tokens elements, not tokens x width)."""
    if not strides or len(strides) != len(shape):
        return numel(shape)
    return numel([size for size, stride in zip(shape, strides) if stride != 0])


def _moved_bytes(name: str, category: str, tensors: list[tuple[list[int], str]], strides: list) -> dict:
    """Bytes read and written by a non-matrix op, from the semantics of its kind: a copy writes
    its destination, a concatenation the sum of its inputs, a gather the rows it picks, a
    reduction one value per row; other elementwise ops write about their largest input."""
    sizes = [numel(shape) * TYPE_BYTES.get(kind, 4) for shape, kind in tensors]
    if not sizes:
        return {"bytes_read": 0.0, "bytes_written": 0.0}
    if name == "aten::copy_" and len(sizes) >= 2:
        return {"bytes_read": float(sizes[1]), "bytes_written": float(sizes[0])}
    if name in ("aten::cat", "aten::stack"):
        return {"bytes_read": float(sum(sizes)), "bytes_written": float(sum(sizes))}
    if name in ("aten::embedding", "aten::index_select") and len(sizes) >= 2:
        (table, kind), (index, _) = (tensors[0], tensors[-1]) if name == "aten::index_select" else tensors[:2]
        rows = numel(index) * numel(table[1:]) * TYPE_BYTES.get(kind, 4)
        return {"bytes_read": float(rows + sizes[-1 if name == "aten::index_select" else 1]), "bytes_written": float(rows)}
    if name == "aten::gather" and len(tensors) >= 2:
        (_, kind), (index, index_kind) = tensors[:2]
        picked = numel(index) * TYPE_BYTES.get(kind, 4)  # one source element per output element
        index_bytes = _footprint(index, strides[1] if len(strides) > 1 else None) * TYPE_BYTES.get(index_kind, 8)
        return {"bytes_read": float(picked + index_bytes), "bytes_written": float(picked)}
    if category == "reduction" and tensors[0][0]:
        return {"bytes_read": float(sum(sizes)), "bytes_written": float(sizes[0] / max(tensors[0][0][-1], 1))}
    return {"bytes_read": float(sum(sizes)), "bytes_written": float(max(sizes))}
