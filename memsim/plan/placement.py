"""Where each tensor lives: a plan's placement rules applied to a trace's tensors table."""
from __future__ import annotations

import fnmatch
import re

import numpy as np
import pandas as pd

from memsim.errors import MemsimError
from memsim.plan.schema import Plan, parse_layers

LAYER_IN_NAME = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")


def layer_numbers(names: pd.Series) -> np.ndarray:
    """The N of 'layers.N.' in each name (tensor name or op scope), -1 where there is none."""
    found = names.fillna("").str.extract(LAYER_IN_NAME, expand=False)
    return pd.to_numeric(found).fillna(-1).astype(np.int64).to_numpy()


def home_tiers(tensors: pd.DataFrame, plan: Plan, default: np.ndarray, known_tiers: list[str]) -> np.ndarray:
    """Per tensor, the tier it lives in: the first matching rule's, else `default` (per tensor)."""
    home = np.asarray(default, dtype=object).copy()
    assigned = np.zeros(len(tensors), dtype=bool)
    names = tensors["name"].fillna("")
    roles = tensors["role"].to_numpy()
    layers = layer_numbers(names) if any(rule.layer is not None for rule in plan.placement) else None
    ids = tensors["tensor_id"].to_numpy()
    for index, rule in enumerate(plan.placement):
        if rule.tier not in known_tiers:
            raise MemsimError(f"{plan.origin}: plan key placement.{index}.tier: '{rule.tier}' names no tier "
                              f"(known tiers: {', '.join(known_tiers)})")
        match = ~assigned
        if rule.role is not None:
            match &= roles == rule.role
        if rule.name is not None:
            match &= np.array([fnmatch.fnmatchcase(name, rule.name) for name in names], dtype=bool)
        if rule.layer is not None:
            match &= np.isin(layers, list(parse_layers(rule.layer)))
        if rule.tensor is not None:
            match &= np.isin(ids, rule.tensor if isinstance(rule.tensor, list) else [rule.tensor])
        home[match] = rule.tier
        assigned |= match
    return home


def victim_order(policy: str, candidates: list[int], last_use: dict[int, int], next_use: dict[int, float]) -> list[int]:
    """Resident tensors in the order an eviction policy gives them up.

    lru: least recently used first. next_use: the one needed furthest in the future first
    (PatrickStar's policy, with next uses known from the trace, its warm-up pass). Ties by id;
    a tensor not used yet counts as used before the step.
    """
    if policy == "lru":
        return sorted(candidates, key=lambda t: (last_use.get(t, -1), t))
    return sorted(candidates, key=lambda t: (-next_use[t], t))
