"""Capture a torch step through the dispatcher into a Trace.

Every aten op that reaches the dispatcher is recorded with the storages it reads and writes.
On meta tensors nothing is computed, so a 7B model traces in seconds with no memory; on real
tensors each op is also timed (CPU wall clock, CUDA events on a GPU).

Identity of a tensor is its storage: views share it, and a view costs nothing. A storage is
tracked through a weak reference, which also keeps its address from being reused while we
watch it, so a freed activation and a new one never merge.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from memsim.trace import ops as opinfo
from memsim.trace.table import ACCESS_COLUMNS, OP_COLUMNS, TENSOR_COLUMNS, ROLES, Trace

_TAGS: dict[int, tuple[StorageWeakRef, str, str]] = {}
_ACTIVE: list[tuple["_Recorder", "_Timer"]] = []  # the capture in progress, if any
_WINDOWS: list[int] = []  # sliding windows declared by attention_window, innermost last

DTYPE_NAMES = {
    torch.float64: "fp64", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
    torch.int8: "int8", torch.uint8: "uint8", torch.int16: "int16", torch.int32: "int32",
    torch.int64: "int64", torch.bool: "bool", torch.complex64: "complex64",
}
for _name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"):
    if hasattr(torch, _name):
        DTYPE_NAMES[getattr(torch, _name)] = "fp8"


def dtype_name(dtype: torch.dtype) -> str:
    return DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def tag(tensor: torch.Tensor, role: str, name: str = "") -> torch.Tensor:
    """Give a tensor's storage a role (kv_cache, state, ...) for the trace; returns the tensor."""
    if role not in ROLES:
        raise ValueError(f"unknown tensor role {role!r}; expected one of {', '.join(ROLES)}")
    storage = tensor.untyped_storage()
    _TAGS[storage._cdata] = (StorageWeakRef(storage), role, name)
    if _ACTIVE:  # a tensor made during the step (a gradient, say) gets its role now, not at the end
        _ACTIVE[-1][0].retag(storage, role, name)
    return tensor


@contextlib.contextmanager
def scope(name: str):
    """Name the scope of the ops run inside (e.g. 'backward', 'optimizer'), where no module does."""
    if not _ACTIVE:
        yield
        return
    recorder = _ACTIVE[-1][0]
    recorder.scope.append(name)
    try:
        yield
    finally:
        recorder.scope.pop()


@contextlib.contextmanager
def attention_window(window: int):
    """Declare that the attention inside is causal and sees only the last `window` keys of each
    query (sliding-window attention). The mask that does this cannot be read on meta tensors,
    so the FLOPs of the fused attention op are counted from this declaration."""
    _WINDOWS.append(window)
    try:
        yield
    finally:
        _WINDOWS.pop()


def run_fused(name: str, compute: Callable[[], None], reads: list, writes: list, flops: float,
              category: str = "elementwise", dims: tuple[int, int, int, int] = (0, 0, 0, 0),
              attrs: dict | None = None) -> None:
    """Run `compute()`, which fills `writes` in place, as the one fused kernel a device runs.

    On meta tensors it is recorded as a single op reading `reads` and writing `writes` (tensors,
    or (tensor, bytes) pairs where the kernel touches only part of one) once each, whatever
    temporaries the readable torch code inside makes (a fused kernel keeps them on chip).
    `dims` and `attrs` are those of the op's category (attention: (batch x heads, q_len, kv_len,
    head_dim)); there is nothing to compute. On real tensors what runs is that readable torch
    code, not the fused kernel, so its ops are recorded and timed one by one, scoped under
    `name`: a measured time then belongs to the work that took it (`memsim validate real`
    compares each with its own price).
    """
    tensors = [item[0] if isinstance(item, tuple) else item for item in (*reads, *writes)]
    if not any(t.device.type == "meta" for t in tensors):
        with scope(name):
            compute()
        return
    if not _ACTIVE:
        return
    recorder = _ACTIVE[-1][0]
    written = [item if isinstance(item, tuple) else (item, view_bytes(item)) for item in writes]
    recorder.record(name, category, list(reads), written, [], flops, dims, attrs)


def _tag_of(key: int, ref: StorageWeakRef) -> tuple[str, str] | None:
    entry = _TAGS.get(key)
    if entry is None:
        return None
    tag_ref, role, name = entry
    if tag_ref.expired():
        del _TAGS[key]
        return None
    return (role, name) if tag_ref.cdata == ref.cdata else None


def view_bytes(t: torch.Tensor) -> float:
    """Bytes a view actually spans: an expanded (stride 0) view reads its data once."""
    if t.numel() == 0:
        return 0.0
    span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()) if size > 0)
    return float(min(t.numel(), span) * t.element_size())


@dataclass
class _TensorRecord:
    tensor_id: int
    ref: StorageWeakRef
    nbytes: float
    dtype: str
    shape: str
    device: str
    first_op: int
    last_op: int
    preexisting: bool
    role: str = ""
    name: str = ""


class _Recorder:
    """Collects ops, tensors and accesses as columns while the step runs."""

    def __init__(self, mode: str, module: torch.nn.Module | None):
        self.mode = mode
        self.tensors: dict[int, _TensorRecord] = {}
        self.retired: list[_TensorRecord] = []
        self.op_rows: dict[str, list] = {name: [] for name in OP_COLUMNS}
        self.access_rows: dict[str, list] = {name: [] for name in ACCESS_COLUMNS}
        self.scope: list[str] = []
        self.suppressed = 0
        self.known: dict[int, tuple[StorageWeakRef, str, str]] = {}
        self.module_names: dict[int, str] = {}
        self.pending_cuda: list[tuple[int, Any, Any]] = []
        self.allocated: dict[int, StorageWeakRef] = {}  # storages created by allocation-only ops
        if module is not None:
            self.module_names = {id(m): name for name, m in module.named_modules()}
            for name, param in module.named_parameters():
                self._know(param, "weight", name)
            for name, buffer in module.named_buffers():
                self._know(buffer, "buffer", name)

    def _know(self, tensor: torch.Tensor, role: str, name: str):
        storage = tensor.untyped_storage()
        self.known[storage._cdata] = (StorageWeakRef(storage), role, name)

    # --- tensors -------------------------------------------------------------------------

    def tensor_for(self, t: torch.Tensor, op_id: int, produced: bool) -> _TensorRecord:
        storage = t.untyped_storage()
        key = storage._cdata
        record = self.tensors.get(key)
        if record is not None and record.ref.expired():
            self.retired.append(record)
            record = None
        if record is None:
            ref = StorageWeakRef(storage)
            allocated = self.allocated.pop(key, None)
            produced = produced or (allocated is not None and allocated.cdata == ref.cdata and not allocated.expired())
            record = _TensorRecord(
                tensor_id=len(self.tensors) + len(self.retired), ref=ref, nbytes=float(storage.nbytes()),
                dtype=dtype_name(t.dtype), shape=str(list(t.shape)), device=t.device.type,
                first_op=op_id, last_op=op_id, preexisting=not produced)
            self._assign_role(record, key)
            self.tensors[key] = record
        record.last_op = op_id
        return record

    def retag(self, storage, role: str, name: str):
        record = self.tensors.get(storage._cdata)
        if record is not None and not record.ref.expired() and record.ref.cdata == storage._cdata:
            record.role, record.name = role, name

    def _assign_role(self, record: _TensorRecord, key: int):
        found = _tag_of(key, record.ref)
        if found is None and key in self.known and self.known[key][0].cdata == record.ref.cdata:
            found = self.known[key][1:]
        if found:
            record.role, record.name = found

    # --- ops -----------------------------------------------------------------------------

    def record(self, name: str, category: str, inputs: list, written: list[tuple[torch.Tensor, float]],
               produced: list[torch.Tensor], flops: float, dims=(0, 0, 0, 0), attrs: dict | None = None,
               measured_s: float = math.nan) -> int:
        """Add one op; `inputs` holds tensors or (tensor, bytes read) pairs."""
        op_id = len(self.op_rows["op_id"])
        accesses: dict[tuple[int, bool], float] = {}
        for item in inputs:
            t, nbytes = item if isinstance(item, tuple) else (item, view_bytes(item))
            rec = self.tensor_for(t, op_id, produced=False)
            accesses[(rec.tensor_id, False)] = max(accesses.get((rec.tensor_id, False), 0.0), nbytes)
        for t, nbytes in written:
            rec = self.tensor_for(t, op_id, produced=False)
            accesses[(rec.tensor_id, True)] = max(accesses.get((rec.tensor_id, True), 0.0), nbytes)
        for t in produced:
            rec = self.tensor_for(t, op_id, produced=True)
            accesses[(rec.tensor_id, True)] = max(accesses.get((rec.tensor_id, True), 0.0), view_bytes(t))
        bytes_read = bytes_written = 0.0
        for (tensor_id, is_write), nbytes in accesses.items():
            self.access_rows["op_id"].append(op_id)
            self.access_rows["tensor_id"].append(tensor_id)
            self.access_rows["write"].append(is_write)
            self.access_rows["nbytes"].append(nbytes)
            if is_write:
                bytes_written += nbytes
            else:
                bytes_read += nbytes
        tensors_in = [item[0] if isinstance(item, tuple) else item for item in inputs]
        floating = [t for t in (*tensors_in, *produced) if t.is_floating_point()]
        typed = floating or tensors_in or list(produced)
        row = self.op_rows
        row["op_id"].append(op_id)
        row["name"].append(name)
        row["category"].append(category)
        row["scope"].append(self.scope[-1] if self.scope else "")
        row["dtype"].append(_math_dtype(category, dtype_name(typed[0].dtype) if typed else ""))
        row["flops"].append(float(flops))
        row["bytes_read"].append(bytes_read)
        row["bytes_written"].append(bytes_written)
        for column, value in zip(("batch", "m", "n", "k"), dims):
            row[column].append(int(value))
        row["attrs"].append(json.dumps(attrs, sort_keys=True) if attrs else "")
        row["shapes"].append(json.dumps([list(t.shape) for t in tensors_in]))
        row["stream"].append(0)
        row["measured_s"].append(measured_s)
        row["reread_bytes"].append(0.0)  # known once the trace is complete: see reread_bytes()
        return op_id

    def finish(self, meta: dict) -> Trace:
        records = self.retired + list(self.tensors.values())
        for record in records:
            if not record.role:
                self._assign_role(record, record.ref.cdata)
            if not record.role:
                record.role = "input" if record.preexisting else "activation"
        records.sort(key=lambda r: r.tensor_id)
        tensors = pd.DataFrame({
            "tensor_id": [r.tensor_id for r in records], "nbytes": [r.nbytes for r in records],
            "dtype": [r.dtype for r in records], "shape": [r.shape for r in records],
            "role": [r.role for r in records], "name": [r.name for r in records],
            "device": [r.device for r in records], "first_op": [r.first_op for r in records],
            "last_op": [r.last_op for r in records], "preexisting": [r.preexisting for r in records],
            "alive_at_end": [not r.ref.expired() for r in records],
        }, columns=list(TENSOR_COLUMNS))
        ops = pd.DataFrame(self.op_rows, columns=list(OP_COLUMNS))
        warn_unpriced(ops)
        accesses = pd.DataFrame(self.access_rows, columns=list(ACCESS_COLUMNS))
        ops["reread_bytes"] = reread_bytes(accesses, len(ops))
        for table, columns in ((ops, OP_COLUMNS), (tensors, TENSOR_COLUMNS), (accesses, ACCESS_COLUMNS)):
            for column, kind in columns.items():
                if kind != "str":
                    table[column] = table[column].astype(kind)
        return Trace(ops, tensors, accesses, meta)


def _math_dtype(category: str, dtype: str) -> str:
    """The precision the matrix units compute in: fp32 matmuls run as TF32 on tensor cores only
    where the program allowed it (torch.set_float32_matmul_precision('high'), or allow_tf32);
    PyTorch's default ('highest') keeps them in fp32 on the vector units."""
    if category == "gemm" and dtype == "fp32" and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return dtype


def reread_bytes(accesses: pd.DataFrame, n_ops: int) -> np.ndarray:
    """Per op, the bytes it reads of tensors that the op just before it wrote: the reads a cache
    may serve (memsim.cost.kernels.cached_read_bytes decides whether it does)."""
    reads = accesses[~accesses["write"]]
    writes = accesses.loc[accesses["write"], ["op_id", "tensor_id"]].assign(op_id=lambda w: w["op_id"] + 1)
    fresh = reads.merge(writes.drop_duplicates(), on=["op_id", "tensor_id"])
    out = np.zeros(n_ops)
    np.add.at(out, fresh["op_id"].to_numpy(np.int64), fresh["nbytes"].to_numpy(float))
    return out


def warn_unpriced(ops: pd.DataFrame) -> None:
    """One warning naming each op that no cost formula prices; they stay in the trace under 'other'."""
    names = sorted(set(ops.loc[ops["category"] == "other", "name"]))
    if names:
        warnings.warn(f"{len(names)} op kind(s) have no cost formula and are priced by their bytes alone "
                      f"(category 'other'): {', '.join(names)}", stacklevel=3)


@functools.lru_cache(maxsize=None)
def _wraps_scalars(func) -> bool:
    """Whether `func` is the Scalar overload of an op that reads its input and also has a Tensor
    overload (x > 0, 1 - x): ATen implements those by wrapping the number into a 0-d tensor and
    calling the Tensor overload, as it does with a number passed where a tensor is taken
    (x * 0.5). That is host work a CPU op's time includes (memsim.cost.model). A fill only
    writes the number (fill_.Tensor is the one that converts)."""
    return (func._overloadname == "Scalar" and "Tensor" in func._overloadpacket.overloads()
            and func._schema.name not in opinfo.WRITE_ONLY_OPS)


def _argument_values(func, args, kwargs):
    """(schema argument, value) pairs, positional and keyword."""
    for index, argument in enumerate(func._schema.arguments):
        if index < len(args):
            yield argument, args[index]
        elif argument.name in (kwargs or {}):
            yield argument, kwargs[argument.name]


def _argument(func, args, kwargs, name: str):
    """The value passed for the schema argument called `name`, or None."""
    return next((value for argument, value in _argument_values(func, args, kwargs) if argument.name == name), None)


def _tensors(tree) -> list[torch.Tensor]:
    return [leaf for leaf in tree_flatten(tree)[0] if isinstance(leaf, torch.Tensor)]


class _DispatchRecorder(TorchDispatchMode):
    def __init__(self, recorder: _Recorder, timer: "_Timer"):
        super().__init__()
        self.recorder = recorder
        self.timer = timer

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if self.recorder.suppressed or func.is_view or name in opinfo.FREE_OPS:
            return func(*args, **kwargs)
        if name in opinfo.ALLOC_OPS:
            out = func(*args, **kwargs)
            for t in _tensors(out):
                storage = t.untyped_storage()
                self.recorder.allocated[storage._cdata] = StorageWeakRef(storage)
            return out
        token = self.timer.start()
        out = func(*args, **kwargs)
        measured = self.timer.stop(token)
        self._record(func, name, args, kwargs, out, measured)
        return out

    def _record(self, func, name, args, kwargs, out, measured):
        mutated, wrapped = [], 0
        for argument, value in _argument_values(func, args, kwargs):
            if argument.alias_info is not None and argument.alias_info.is_write:
                mutated.extend(_tensors(value))
            wrapped += isinstance(value, (bool, int, float, complex)) and (
                isinstance(argument.type, torch.TensorType) or _wraps_scalars(func))
        inputs = _tensors((args, kwargs))
        outputs = _tensors(out)
        input_storages = {t.untyped_storage()._cdata for t in inputs}
        fresh = [t for t in outputs if t.untyped_storage()._cdata not in input_storages]
        if not mutated and not fresh and outputs:
            return  # every output aliases an input: a view by another name
        category = opinfo.categorize(name, func.tags)
        mutated_ids = {id(t) for t in mutated}
        if name in opinfo.SCATTER_OPS:
            others = [t for t in inputs if id(t) not in mutated_ids and t.is_floating_point()]
            source_bytes = max((view_bytes(t) for t in others), default=0.0)
            written = [(t, source_bytes) for t in mutated]
            reads = others + [t for t in inputs if id(t) not in mutated_ids and not t.is_floating_point()]
        elif name in opinfo.WRITE_ONLY_OPS:
            written = [(t, view_bytes(t)) for t in mutated]
            reads = [t for t in inputs if id(t) not in mutated_ids]
        else:
            written = [(t, view_bytes(t)) for t in mutated]
            reads = inputs
        if category == "gather":  # a lookup reads the rows it returns, not the whole table
            limit = sum(view_bytes(t) for t in fresh) or sum(nbytes for _, nbytes in written)
            reads = [(t, min(view_bytes(t), limit)) for t in reads]
        shapes = [tuple(t.shape) for t in inputs]
        dims = opinfo.gemm_dims(name, shapes) if category == "gemm" else (0, 0, 0, 0)
        flops = opinfo.registered_flops(func, args, kwargs, out) if category in ("gemm", "conv", "attention") else None
        if flops is None:
            out_numel = sum(t.numel() for t in fresh) or sum(t.numel() for t in mutated)
            flops = opinfo.elementwise_flops(category, name, out_numel, sum(t.numel() for t in inputs))
        results = fresh or mutated
        if results:
            category = opinfo.access_category(category, inputs + results, results[0].shape)
        attrs = {"wrapped_scalars": wrapped} if wrapped else {}
        rows = opinfo.reduced_rows(category, inputs, results, _argument(func, args, kwargs, "dim"))
        if rows:
            attrs["rows"] = rows
        op_id = self.recorder.record(name, category, reads, written, fresh, flops, dims, attrs or None)
        self.timer.resolve(self.recorder, op_id, measured)


class _EagerAttention(TorchFunctionMode):
    """Records F.scaled_dot_product_attention as unfused attention (see _AttentionCall.run_eager):
    its score matrix crosses memory between kernels, for comparison with the fused kernel."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        return _AttentionCall(args[3:], kwargs, _WINDOWS[-1] if _WINDOWS else None).run_eager(*args[:3])


class _FusedAttention(TorchFunctionMode):
    """Records F.scaled_dot_product_attention as the one fused kernel a GPU runs.

    Without this, meta tensors take the math path (bmm, softmax, bmm) whose HBM traffic is
    that of unfused attention, which is not what FlashAttention-class kernels do. When a
    gradient is needed, the backward is recorded as one fused kernel too, and only q, k, v and
    the output are kept for it, as FlashAttention does (not the attention matrix).
    """

    def __init__(self, recorder: _Recorder, timer: "_Timer"):
        super().__init__()
        self.recorder = recorder
        self.timer = timer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention or self.recorder.suppressed:
            return func(*args, **kwargs)
        query, key, value = args[:3]
        call = _AttentionCall(args[3:], kwargs, _WINDOWS[-1] if _WINDOWS else None)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value)):
            return _AttentionWithFusedBackward.apply(self, call, query, key, value)
        return self.forward(query, key, value, call)

    def _run_suppressed(self, compute):
        self.recorder.suppressed += 1
        try:
            token = self.timer.start()
            result = compute()
            return result, self.timer.stop(token)
        finally:
            self.recorder.suppressed -= 1

    def _record(self, name, inputs, produced, backward, measured, query, key, value, call: "_AttentionCall"):
        mask = call.mask
        *lead, q_len, head_dim = query.shape
        kv_len, value_dim = key.shape[-2], value.shape[-1]
        heads = query.shape[-3] if query.dim() >= 3 else 1
        kv_heads = key.shape[-3] if key.dim() >= 3 else 1
        problems = math.prod(lead)
        batch = problems // max(heads, 1)
        causal = call.causal or call.window is not None
        flops = opinfo.attention_flops(batch, heads, q_len, kv_len, head_dim, value_dim, causal, backward,
                                       window=call.window)
        masked = isinstance(mask, torch.Tensor)
        attrs = {"heads": heads, "kv_heads": kv_heads, "value_dim": value_dim, "causal": causal, "masked": masked}
        if call.window is not None:
            attrs["window"] = call.window
        op_id = self.recorder.record(name, "attention", inputs + ([mask] if masked else []), [], produced,
                                     flops, (problems, q_len, kv_len, head_dim), attrs)
        self.timer.resolve(self.recorder, op_id, measured)

    def forward(self, query, key, value, call: "_AttentionCall"):
        out, measured = self._run_suppressed(lambda: _fused_layout(call.run(query, key, value)))
        self._record("aten::_scaled_dot_product_flash_attention", [query, key, value], [out], False, measured,
                     query, key, value, call)
        return out

    def backward(self, query, key, value, out, grad_out, call: "_AttentionCall"):
        def gradients():
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_(t.requires_grad) for t in (query, key, value)]
                wanted = [leaf for leaf in leaves if leaf.requires_grad]
                found = iter(torch.autograd.grad(call.run(*leaves), wanted, grad_out))
                return [_fused_layout(next(found)) if leaf.requires_grad else None for leaf in leaves]

        grads, measured = self._run_suppressed(gradients)
        self._record("aten::_scaled_dot_product_flash_attention_backward", [query, key, value, out, grad_out],
                     [g for g in grads if g is not None], True, measured, query, key, value, call)
        return grads


@dataclass(frozen=True)
class _AttentionCall:
    """The arguments of one F.scaled_dot_product_attention call after q, k, v, and the window
    the workload declared around it (see attention_window)."""

    rest: tuple
    kwargs: dict
    window: int | None

    def _argument(self, index: int, name: str, default):
        """An argument after q, k, v: positional (attn_mask, dropout_p, is_causal, scale) or named."""
        return self.rest[index] if len(self.rest) > index else self.kwargs.get(name, default)

    @property
    def mask(self):
        return self._argument(0, "attn_mask", None)

    @property
    def causal(self) -> bool:
        return bool(self._argument(2, "is_causal", False))

    def run(self, query, key, value):
        return F.scaled_dot_product_attention(query, key, value, *self.rest, **self.kwargs)

    def run_eager(self, query, key, value):
        """Attention as separate kernels, the way eager implementations (Hugging Face's 'eager')
        run it without a fused kernel: QK^T, scale, mask, softmax in fp32 cast back, PV."""
        heads, kv_heads = query.shape[-3], key.shape[-3]
        if kv_heads != heads:  # grouped-query attention: each K/V head serves a group of queries
            key = key.repeat_interleave(heads // kv_heads, dim=-3)
            value = value.repeat_interleave(heads // kv_heads, dim=-3)
        scale = self._argument(3, "scale", None) or query.shape[-1] ** -0.5
        scores = torch.matmul(query, key.transpose(-2, -1)) * scale
        q_len, kv_len = query.shape[-2], key.shape[-2]
        if self.causal or self.window is not None:
            allowed = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
            if self.window is not None:
                allowed = allowed & ~torch.ones_like(allowed).tril(kv_len - q_len - self.window)
            scores = scores.masked_fill(~allowed, float("-inf"))
        mask = self.mask
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        dropout = self._argument(1, "dropout_p", 0.0)
        if dropout and torch.is_grad_enabled():
            probs = F.dropout(probs, dropout)
        return torch.matmul(probs, value)


def _fused_layout(t: torch.Tensor) -> torch.Tensor:
    """On meta, give an attention output or gradient the (batch, length, heads, dim) memory
    layout fused kernels write, so the reshapes around attention copy on meta exactly when
    they copy on the device."""
    if t.device.type != "meta" or t.dim() != 4:
        return t
    return t.transpose(1, 2).contiguous().transpose(1, 2)


class _AttentionWithFusedBackward(torch.autograd.Function):
    """Autograd glue: the forward and the backward each recorded as one fused attention op."""

    @staticmethod
    def forward(ctx, mode, call, query, key, value):
        out = mode.forward(query, key, value, call)
        ctx.mode, ctx.call = mode, call
        ctx.save_for_backward(query, key, value, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, out = ctx.saved_tensors
        return (None, None, *ctx.mode.backward(query, key, value, out, grad_out, ctx.call))


class _Timer:
    """Times ops in real mode: CUDA events on a GPU; on the CPU the calling thread's CPU time
    when torch runs one thread (time the OS gives other processes on a shared machine is not
    the op's), else wall clock; nothing on meta."""

    def __init__(self, mode: str, device: str):
        self.enabled = mode == "real"
        self.cuda = self.enabled and device == "cuda"
        self.clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter

    def start(self):
        if not self.enabled:
            return None
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return self.clock()

    def stop(self, token):
        if not self.enabled:
            return math.nan
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return (token, event)
        return self.clock() - token

    def resolve(self, recorder: _Recorder, op_id: int, measured):
        if self.cuda:
            recorder.pending_cuda.append((op_id, *measured))
        else:
            recorder.op_rows["measured_s"][op_id] = measured

    def finish(self, recorder: _Recorder):
        if not self.cuda:
            return
        torch.cuda.synchronize()
        for op_id, start, end in recorder.pending_cuda:
            recorder.op_rows["measured_s"][op_id] = start.elapsed_time(end) / 1e3


def capture(step: Callable[[], Any], *, module: torch.nn.Module | None = None, mode: str = "meta",
            device: str = "meta", meta: dict | None = None, warmup: int = 0, fused_attention: bool = True) -> Trace:
    """Run `step()` once under the dispatcher and return its trace.

    `module` names the weights (its parameters get role 'weight' and their qualified names) and
    the module scope of each op. `mode` is 'meta' (nothing computed or timed) or 'real' (each op
    timed on `device`, after `warmup` untraced runs so that first-call costs are not measured).
    `fused_attention=False` records scaled_dot_product_attention as eager attention's separate
    kernels (matmul, softmax, matmul) instead of one fused kernel.
    """
    if mode not in ("meta", "real"):
        raise ValueError(f"mode must be 'meta' or 'real', not {mode!r}")
    for _ in range(warmup if mode == "real" else 0):
        step()
    recorder = _Recorder(mode, module)
    timer = _Timer(mode, device)
    names = recorder.module_names

    def enter(mod, _inputs):
        recorder.scope.append(names.get(id(mod), type(mod).__name__))

    def leave(mod, _inputs, _output):
        if recorder.scope:
            recorder.scope.pop()

    hooks = [torch.nn.modules.module.register_module_forward_pre_hook(enter),
             torch.nn.modules.module.register_module_forward_hook(leave, always_call=True)]
    _ACTIVE.append((recorder, timer))
    try:
        attention = _FusedAttention(recorder, timer) if fused_attention else _EagerAttention()
        with attention, _DispatchRecorder(recorder, timer):
            result = step()
        timer.finish(recorder)
    finally:
        _ACTIVE.pop()
        for hook in hooks:
            hook.remove()
    info = {"mode": mode, "device": device, "torch_version": torch.__version__, **(meta or {})}
    trace = recorder.finish(info)
    del result
    return trace

