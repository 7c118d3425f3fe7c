"""A trace is data: three tables (ops, tensors, accesses) and a little metadata.

ops       one row per executed op, in issue order: what it is, its FLOPs and bytes, its scope
tensors   one row per storage: size, role (weight, kv_cache, activation, ...), lifetime in ops
accesses  one row per (op, tensor, read or write) with the bytes of that access

File format (version 1): an uncompressed zip holding ops.parquet, tensors.parquet,
accesses.parquet and meta.json ({"format": "memsim-trace", "version": 1, ...}). Tables are read
only when first used, so summarising a large trace does not load its accesses.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from memsim.errors import MemsimError

FORMAT = "memsim-trace"
VERSION = 1

OP_COLUMNS = {
    "op_id": "int64", "name": "str", "category": "str", "scope": "str", "dtype": "str",
    "flops": "float64", "bytes_read": "float64", "bytes_written": "float64",
    "batch": "int64", "m": "int64", "n": "int64", "k": "int64",
    "attrs": "str", "shapes": "str", "stream": "int64", "measured_s": "float64",
}
TENSOR_COLUMNS = {
    "tensor_id": "int64", "nbytes": "float64", "dtype": "str", "shape": "str", "role": "str",
    "name": "str", "device": "str", "first_op": "int64", "last_op": "int64", "preexisting": "bool",
    "alive_at_end": "bool",
}
ACCESS_COLUMNS = {"op_id": "int64", "tensor_id": "int64", "write": "bool", "nbytes": "float64"}

ROLES = ("weight", "activation", "kv_cache", "state", "input", "output", "gradient",
         "optimizer_state", "buffer", "memory")


def empty_table(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=("object" if kind == "str" else kind))
                         for name, kind in columns.items()})


@dataclass
class Trace:
    """One step of a workload as tables; replayable on any hardware."""

    ops: pd.DataFrame
    tensors: pd.DataFrame
    accesses: pd.DataFrame
    meta: dict = field(default_factory=dict)

    @property
    def total_flops(self) -> float:
        return float(self.ops["flops"].sum())

    def bytes_by_role(self) -> dict[str, float]:
        return self.tensors.groupby("role")["nbytes"].sum().to_dict()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "version": VERSION, **self.meta}
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, table in (("ops", self.ops), ("tensors", self.tensors), ("accesses", self.accesses)):
                sink = pa.BufferOutputStream()
                pq.write_table(pa.Table.from_pandas(table, preserve_index=False), sink)
                archive.writestr(f"{name}.parquet", sink.getvalue().to_pybytes())
            archive.writestr("meta.json", json.dumps(meta, indent=1, sort_keys=True, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        path = Path(path)
        try:
            with zipfile.ZipFile(path) as archive:
                meta = json.loads(archive.read("meta.json"))
                if meta.get("format") != FORMAT:
                    raise MemsimError(f"{path}: not a memsim trace (meta.json format is {meta.get('format')!r})")
                if meta.get("version", 0) > VERSION:
                    raise MemsimError(f"{path}: trace format version {meta['version']} is newer than this memsim "
                                      f"reads ({VERSION}); upgrade memsim")
                tables = {name: pq.read_table(pa.BufferReader(archive.read(f"{name}.parquet"))).to_pandas()
                          for name in ("ops", "tensors", "accesses")}
        except (zipfile.BadZipFile, KeyError, OSError, pa.ArrowInvalid, json.JSONDecodeError) as error:
            raise MemsimError(f"{path}: corrupt or truncated trace file ({error})") from None
        return cls(tables["ops"], tables["tensors"], tables["accesses"], meta)


def tensor_live_ranges(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """Per tensor, the op index at which it is allocated and the one after which it is freed.

    Tensors that existed before the step (weights, caches, inputs) live from the start; tensors
    still referenced at the end (outputs, updated caches) live to the end.
    """
    tensors = trace.tensors
    n_ops = len(trace.ops)
    start = np.where(tensors["preexisting"].to_numpy(), 0, tensors["first_op"].to_numpy())
    end = np.where(tensors["alive_at_end"].to_numpy() | tensors["preexisting"].to_numpy(),
                   n_ops - 1, tensors["last_op"].to_numpy())
    return start.astype(np.int64), np.maximum(end, start).astype(np.int64)
