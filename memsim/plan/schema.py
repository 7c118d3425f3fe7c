"""A plan is plain data (YAML or a dict): where tensors live and how data moves between tiers.

    placement:                 # ordered rules, the first that matches a tensor wins
      - {role: weight, tier: host.ddr}
      - {layer: "0-3", role: weight, tier: gpu.hbm}
      - {name: "lm_head.*", tier: gpu.hbm}
      - {tensor: [12, 13], tier: host.nvme}
    prefetch_depth: 2          # transfers allowed to run ahead of the op that needs them
    eviction: lru              # none | lru | next_use: what frees room when a tier fills
    spill_tier: host.ddr       # where evicted tensors go (default: the nearest other tier)
    copy_engines: 2
    compute_streams: 1
    stages:                    # pipeline: ops of these layers run on this device
      - {layers: "0-15", device: gpu0}
      - {layers: "16-31", device: gpu1}
    tensor_parallel: {devices: [gpu0, gpu1], allreduce_after: ["*.o_proj", "*.down_proj"]}

Tiers are written 'device.memory'. A planner produces the same structure.
"""
from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from memsim.errors import MemsimError
from memsim.hardware.schema import Spec

LAYER_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_layers(text: str | int) -> range:
    """'3' -> layer 3, '0-15' -> layers 0..15 inclusive."""
    match = LAYER_RANGE.match(str(text))
    if not match:
        raise ValueError(f"expected a layer number or range like '0-15', got {text!r}")
    first = int(match.group(1))
    last = int(match.group(2) or first)
    return range(first, last + 1)


class PlacementRule(Spec):
    """Tensors that match every given field live in `tier`."""

    tier: str
    role: str | None = None
    name: str | None = None
    """A glob over tensor names, e.g. 'layers.*.mlp.*'."""
    layer: str | int | None = None
    """A layer number or range, read from 'layers.N.' in the tensor's name."""
    tensor: int | list[int] | None = None

    @field_validator("layer")
    @classmethod
    def _layer(cls, value):
        if value is not None:
            parse_layers(value)
        return value

    def matches(self, tensor_id: int, role: str, name: str, layer: int | None) -> bool:
        if self.role is not None and role != self.role:
            return False
        if self.name is not None and not fnmatch.fnmatchcase(name, self.name):
            return False
        if self.layer is not None and (layer is None or layer not in parse_layers(self.layer)):
            return False
        if self.tensor is not None:
            ids = self.tensor if isinstance(self.tensor, list) else [self.tensor]
            if tensor_id not in ids:
                return False
        return True


class Stage(Spec):
    layers: str | int
    device: str

    @field_validator("layers")
    @classmethod
    def _layers(cls, value):
        parse_layers(value)
        return value


class TensorParallel(Spec):
    devices: Annotated[list[str], Field(min_length=2)]
    allreduce_after: list[str] = Field(default_factory=list)
    """Globs over op scopes whose output is summed across the devices (row-parallel layers)."""


class Plan(Spec):
    placement: list[PlacementRule] = Field(default_factory=list)
    prefetch_depth: Annotated[int, Field(ge=0)] = 2
    eviction: Literal["none", "lru", "next_use"] = "none"
    spill_tier: str | None = None
    copy_engines: Annotated[int, Field(ge=1)] = 2
    compute_streams: Annotated[int, Field(ge=1)] = 1
    stages: list[Stage] = Field(default_factory=list)
    tensor_parallel: TensorParallel | None = None
    origin: str = Field(default="plan", exclude=True)
    """Where the plan came from (its file), for error messages."""

    @property
    def moves_data(self) -> bool:
        """Whether tensors can be used away from where they live (so copies must be planned)."""
        return bool(self.placement) or self.eviction != "none" or bool(self.stages)


def load_plan(source: str | Path | dict | Plan | None) -> Plan:
    """A Plan from a YAML file, a dict, or None (everything in the compute device's memory)."""
    if source is None:
        return Plan()
    if isinstance(source, Plan):
        return source
    origin = "<dict>"
    if not isinstance(source, dict):
        path = Path(source)
        origin = str(path)
        try:
            source = yaml.safe_load(path.read_text()) or {}
        except OSError as error:
            raise MemsimError(f"{path}: cannot read plan ({error.strerror})") from None
        except yaml.YAMLError as error:
            raise MemsimError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from None
        if not isinstance(source, dict):
            raise MemsimError(f"{path}: a plan is a mapping of keys (placement, prefetch_depth, eviction, ...)")
    try:
        return Plan.model_validate(source).model_copy(update={"origin": origin})
    except ValidationError as error:
        first = error.errors()[0]
        where = [str(part) for part in first["loc"]] + [str(first.get("ctx", {}).get("key", ""))]
        raise MemsimError(f"{origin}: plan key {'.'.join(part for part in where if part)}: {first['msg']}") from None
