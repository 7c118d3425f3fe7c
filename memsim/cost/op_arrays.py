"""An ops table as the arrays and parsed attrs that pricing reads.

Reading a table's columns and parsing its attrs costs more than the cost models themselves, and a
calibration prices the same ops thousands of times with different constants; so the table is
read once into OpArrays and priced from there (memsim.cost.model.price_ops takes either).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from memsim.cost import kernels

# An op whose kind last ran more than this many ops or bytes before it counts as cold (inf): a
# core's caches hold far less (memsim calibrate measures up to 32 MiB).
MOST_OPS_SINCE_REUSE = 4096
MOST_BYTES_SINCE_REUSE = float(1 << 30)
DTYPE_BYTES = {"fp64": 8.0, "fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0,
               "int4": 0.5, "int64": 8.0, "int32": 4.0, "int16": 2.0, "bool": 1.0, "uint8": 1.0}


@dataclass(frozen=True, eq=False)
class OpArrays:
    """Per op: category and dtype names, element bytes, FLOPs, bytes read, written and reread
    (None where the table has no rereads), problem dimensions and attrs (read only); and the
    distinct (category, dtype) kinds with each op's code into them."""
    index: pd.Index
    category: np.ndarray
    dtype: np.ndarray
    elem_bytes: np.ndarray
    flops: np.ndarray
    read: np.ndarray
    written: np.ndarray
    reread: np.ndarray | None
    batch: np.ndarray
    m: np.ndarray
    n: np.ndarray
    k: np.ndarray
    attrs: tuple[dict, ...]
    kinds: tuple[tuple[str, str], ...]
    kind_codes: np.ndarray
    kinds_since_reuse: np.ndarray
    bytes_since_reuse: np.ndarray
    """Distinct op names run since the op's own name last ran, and the bytes they moved
    (since_reuse)."""
    _columns: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_table(cls, ops: pd.DataFrame) -> "OpArrays":
        category = ops["category"].to_numpy(dtype=object).astype(str)
        dtype = ops["dtype"].fillna("fp32").to_numpy(dtype=object).astype(str)
        attrs = tuple(_attrs(text) for text in ops["attrs"].tolist())
        categories, category_codes = np.unique(category, return_inverse=True)
        dtypes, dtype_codes = np.unique(dtype, return_inverse=True)
        kinds, codes = np.unique(category_codes * len(dtypes) + dtype_codes, return_inverse=True)
        kinds_since, bytes_since = since_reuse(ops)
        column = {name: ops[name].to_numpy(float) for name in ("flops", "bytes_read", "bytes_written", "batch",
                                                               "m", "n", "k")}
        return cls(index=ops.index, category=category, dtype=dtype, elem_bytes=element_bytes(dtype),
                   flops=column["flops"], read=column["bytes_read"], written=column["bytes_written"],
                   reread=ops["reread_bytes"].to_numpy(float) if "reread_bytes" in ops else None,
                   batch=column["batch"], m=column["m"], n=column["n"], k=column["k"],
                   attrs=attrs,
                   kinds=tuple((str(categories[kind // len(dtypes)]), str(dtypes[kind % len(dtypes)]))
                               for kind in kinds),
                   kind_codes=codes, kinds_since_reuse=kinds_since, bytes_since_reuse=bytes_since)

    def __len__(self) -> int:
        return len(self.category)

    def column(self, key: str, default: float = 0.0) -> np.ndarray:
        """attrs[key] of every op as a float (True is 1), `default` where absent, null or 0;
        read once per key, since a calibration prices the same ops thousands of times."""
        if (key, default) not in self._columns:
            self._columns[key, default] = np.array([float(a.get(key) or default) for a in self.attrs])
        return self._columns[key, default]

    @property
    def launches(self) -> np.ndarray:
        """Kernels each op launches, each paying the fixed per-kernel cost: 1 unless its attrs name
        more (a measured region that runs several kernels, such as a sum of three tensors)."""
        return self.column("kernels", 1.0)

    def attrs_of(self, rows: np.ndarray) -> list[dict]:
        return [self.attrs[i] for i in rows]


def since_reuse(ops: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per op, the distinct op kinds (names) and the bytes (read and written) of the ops run
    since the last op of its own name (memsim.cost.kernels.since_reuse): the table's own
    `kinds_since_reuse` and `bytes_since_reuse` columns where it has them, else from its rows
    in table order (a trace's run order), else inf (cold).

    A trace is one step of a loop (a decode step, a training step, a benchmark's round), so the
    ops before a kind's first op in it are the previous step's: the counts wrap around."""
    if "kinds_since_reuse" in ops and "bytes_since_reuse" in ops:
        return ops["kinds_since_reuse"].to_numpy(float), ops["bytes_since_reuse"].to_numpy(float)
    if "name" not in ops:
        return np.full(len(ops), np.inf), np.full(len(ops), np.inf)
    _, codes = np.unique(ops["name"].to_numpy(dtype=object).astype(str), return_inverse=True)
    moved = (ops["bytes_read"].fillna(0.0) + ops["bytes_written"].fillna(0.0)).to_numpy(float)
    kinds, moved_between = kernels.since_reuse(np.concatenate([codes, codes]).astype(np.int64),
                                               np.concatenate([moved, moved]), MOST_OPS_SINCE_REUSE,
                                               MOST_BYTES_SINCE_REUSE)
    return kinds[len(codes):], moved_between[len(codes):]


def element_bytes(dtype: np.ndarray) -> np.ndarray:
    """Bytes per element of each dtype name (4 where unknown)."""
    names, codes = np.unique(dtype, return_inverse=True)
    return np.array([DTYPE_BYTES.get(name, 4.0) for name in names], dtype=float)[codes]


def _attrs(text) -> dict:
    """An op's attrs, to read only: each distinct text is parsed once."""
    return _parsed_attrs(text) if isinstance(text, str) and text else {}


@functools.lru_cache(maxsize=1 << 16)
def _parsed_attrs(text: str) -> dict:
    return json.loads(text)
