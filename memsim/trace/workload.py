"""The registry of workloads: named configs of memory-model families, and how to trace a step.

A family module in workloads/ registers a build function and its named configs. A build
function takes a config and a StepSpec and returns a WorkloadStep: the module whose parameters
are the weights, and a zero-argument callable that runs exactly one step. A family that lists
'train' in its phases builds its model and returns `memsim.trace.training.train_step(model,
loss_fn, spec)` for that phase, so forward, backward and optimizer are the same for every family.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

from memsim.errors import MemsimError

PHASES = ("prefill", "decode", "train")
ATTENTION_FORMS = ("fused", "unfused")
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}


@dataclass(frozen=True)
class StepSpec:
    """What one traced step does: the phase, the batch, the context and where tensors live."""

    phase: str = "decode"
    batch: int = 1
    context: int = 1024
    """Prefill and train: tokens per sequence. Decode: tokens already in the cache."""
    device: str = "meta"
    dtype: str | None = None
    """Overrides the config's dtype (e.g. fp32 for a real CPU run)."""
    optimizer: str = "adamw"
    """Train: the optimizer, as memsim.trace.training.parse_optimizer reads it."""
    attention: str = "fused"
    """'fused': scaled_dot_product_attention is one FlashAttention-class kernel; 'unfused': it
    runs as the separate matmul, softmax and matmul ops of eager attention, for comparison."""

    @property
    def tokens(self) -> int:
        """Tokens processed by the step, for tokens/s."""
        return self.batch * (1 if self.phase == "decode" else self.context)


@dataclass
class WorkloadStep:
    run: Callable[[], Any]
    module: torch.nn.Module | None
    spec: StepSpec


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[Any, StepSpec], WorkloadStep]
    phases: tuple[str, ...]
    description: str


_FAMILIES: dict[str, Family] = {}
_CONFIGS: dict[str, tuple[str, Any]] = {}


def register(name: str, build: Callable[[Any, StepSpec], WorkloadStep], configs: dict[str, Any],
             phases: tuple[str, ...] = PHASES, description: str = "") -> None:
    """Register a family and its named configs (dataclass instances)."""
    _FAMILIES[name] = Family(name, build, phases, description)
    for config_name, config in configs.items():
        _CONFIGS[config_name] = (name, config)


def _load_library() -> None:
    importlib.import_module("memsim.workloads")


def workloads() -> dict[str, tuple[Family, Any]]:
    """Every registered config name with its family and config."""
    _load_library()
    return {name: (_FAMILIES[family], config) for name, (family, config) in sorted(_CONFIGS.items())}


def resolve(name: str, overrides: dict[str, str] | None = None) -> tuple[Family, Any]:
    """The family and config registered as `name`, with key=value overrides applied."""
    known = workloads()
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see 'memsim workloads'"
        raise MemsimError(f"unknown workload '{name}' ({hint})")
    family, config = known[name]
    return family, apply_config_overrides(name, config, overrides or {})


def apply_config_overrides(name: str, config: Any, overrides: dict[str, str]) -> Any:
    fields = {field.name: field for field in dataclasses.fields(config)}
    changes = {}
    for key, text in overrides.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else f"keys: {', '.join(fields)}"
            raise MemsimError(f"workload '{name}': unknown config key '{key}' ({hint})")
        current = getattr(config, key)
        try:
            if isinstance(current, bool):
                if str(text).lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                changes[key] = str(text).lower() in ("true", "1")
            elif current is None:
                changes[key] = None if str(text).lower() == "none" else int(text)
            else:
                changes[key] = type(current)(text)
        except (TypeError, ValueError):
            raise MemsimError(f"workload '{name}': config key '{key}': {text!r} is not a "
                              f"{type(current).__name__} (current value {current!r})") from None
    return dataclasses.replace(config, **changes)


def build_step(name: str, spec: StepSpec, overrides: dict[str, str] | None = None) -> tuple[Any, WorkloadStep]:
    family, config = resolve(name, overrides)
    if spec.phase not in family.phases:
        raise MemsimError(f"workload '{name}' has no {spec.phase} phase (it has: {', '.join(family.phases)})")
    if spec.batch < 1 or spec.context < 1:
        raise MemsimError(f"workload '{name}': batch and context must be at least 1 "
                          f"(got batch {spec.batch}, context {spec.context})")
    if spec.attention not in ATTENTION_FORMS:
        raise MemsimError(f"unknown attention form '{spec.attention}' (expected one of {', '.join(ATTENTION_FORMS)})")
    if spec.dtype is not None and spec.dtype not in TORCH_DTYPES:
        raise MemsimError(f"unknown dtype '{spec.dtype}' (expected one of {', '.join(TORCH_DTYPES)})")
    return config, family.build(config, spec)


def trace_workload(name: str, spec: StepSpec, overrides: dict[str, str] | None = None, mode: str = "meta"):
    """Build and capture one step of a registered workload."""
    from memsim.trace.capture import capture

    config, step = build_step(name, spec, overrides)
    meta = {"workload": name, "config": dataclasses.asdict(config), "phase": spec.phase, "batch": spec.batch,
            "context": spec.context, "tokens": spec.tokens}
    if spec.phase == "train":
        meta["optimizer"] = spec.optimizer
    if spec.attention != "fused":
        meta["attention"] = spec.attention
    return capture(step.run, module=step.module, mode=mode, device=spec.device, meta=meta,
                   warmup=1 if mode == "real" else 0, fused_attention=spec.attention == "fused")
