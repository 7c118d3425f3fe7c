"""A user's own model as a step to trace: `memsim trace my_pkg.my_module:build_model --input ...`.

The contract. `build_model` is a callable taking no arguments, importable from the current
directory or the Python path. In meta mode it is called inside `torch.device("meta")`, so the
parameters it creates take no memory (a 70B model traces on a laptop). It returns one of:

- a `torch.nn.Module`: each `--input SHAPE[:DTYPE]` makes one positional input, e.g.
  `--input 1x2048:int64` (token ids) or `--input 4x128x512` (floats in the step's dtype);
  integer inputs are zeros (a valid index into any table), floating inputs are random;
- a `(module, inputs)` pair: the example inputs to call it with (moved to the step's device);
- a `memsim.trace.workload.WorkloadStep`, used as is.

Phases: prefill and decode call `module(*inputs)` without gradients; train runs forward,
backward and optimizer (memsim.trace.training), with the output as the loss (its mean when
it is not a scalar).
"""
from __future__ import annotations

import difflib
import importlib
import os
import re
import sys

import torch

from memsim.errors import MemsimError
from memsim.trace.capture import tag
from memsim.trace.training import train_step
from memsim.trace.workload import TORCH_DTYPES, StepSpec, WorkloadStep

USER_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
INPUT_DTYPES = {**TORCH_DTYPES, "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}


def is_user_target(text: str) -> bool:
    """True for 'package.module:callable'."""
    return bool(USER_TARGET.match(text))


def parse_input(text: str, default_dtype: torch.dtype) -> tuple[tuple[int, ...], torch.dtype]:
    """'1x2048:int64' -> ((1, 2048), torch.int64)."""
    shape_text, _, dtype_text = text.partition(":")
    dims = [part for part in re.split(r"[x,]", shape_text) if part]
    if not dims or not all(part.isdigit() and int(part) > 0 for part in dims):
        raise MemsimError(f"--input {text!r}: expected a shape like 1x2048 or 4x128x512, optionally "
                          f"followed by :DTYPE")
    if dtype_text and dtype_text not in INPUT_DTYPES:
        raise MemsimError(f"--input {text!r}: unknown dtype '{dtype_text}' (expected one of {', '.join(INPUT_DTYPES)})")
    return tuple(int(part) for part in dims), INPUT_DTYPES[dtype_text] if dtype_text else default_dtype


def make_input(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if dtype.is_floating_point:
        return torch.randn(shape, dtype=dtype, device=device)
    return torch.zeros(shape, dtype=dtype, device=device)


def load_callable(target: str):
    module_name, attribute = target.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # a user's module next to where they run memsim
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise MemsimError(f"{target}: cannot import '{module_name}' ({error})") from None
    if not hasattr(module, attribute):
        names = [name for name in dir(module) if not name.startswith("_")]
        close = difflib.get_close_matches(attribute, names, n=3, cutoff=0.5)
        raise MemsimError(f"{target}: module '{module_name}' has no '{attribute}'"
                          + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return getattr(module, attribute)


def build_user_step(target: str, inputs: list[str], spec: StepSpec) -> WorkloadStep:
    """The step that `target`'s callable describes, per the contract above."""
    builder = load_callable(target)
    device = torch.device(spec.device)
    with device:
        built = builder()
    if isinstance(built, WorkloadStep):
        return built
    if isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], torch.nn.Module):
        model, examples = built
        examples = [t.to(device) if isinstance(t, torch.Tensor) else t for t in examples]
    elif isinstance(built, torch.nn.Module):
        if not inputs:
            raise MemsimError(f"{target} returns a module: give its inputs with --input SHAPE[:DTYPE]")
        floating = [p.dtype for p in built.parameters() if p.is_floating_point()]
        dtype = TORCH_DTYPES[spec.dtype] if spec.dtype else (floating[0] if floating else torch.float32)
        model, examples = built, [make_input(*parse_input(text, dtype), device) for text in inputs]
    else:
        raise MemsimError(f"{target} returned {type(built).__name__}; expected a torch.nn.Module, "
                          f"a (module, inputs) pair or a WorkloadStep")
    model = model.to(device=device, dtype=TORCH_DTYPES[spec.dtype]) if spec.dtype else model.to(device)
    for index, example in enumerate(examples):
        if isinstance(example, torch.Tensor):
            tag(example, "input", f"input{index}")
    if spec.phase == "train":
        def loss():
            out = model(*examples)
            return out if out.dim() == 0 else out.float().mean()

        return train_step(model, loss, spec)
    model.eval()

    def run():
        with torch.no_grad():
            return model(*examples)

    return WorkloadStep(run=run, module=model, spec=spec)
