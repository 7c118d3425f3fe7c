"""A trace is data: three tables (ops, tensors, accesses) and a little metadata.

ops       one row per executed op, in issue order: what it is, its FLOPs and bytes, its scope
tensors   one row per storage: size, role (weight, kv_cache, activation, ...), lifetime in ops
accesses  one row per (op, tensor, read or write) with the bytes of that access

The trace file format, version 1 (`.memtrace` by convention)
-------------------------------------------------------------
An uncompressed zip archive holding four members:

meta.json          {"format": "memsim-trace", "version": 1, ...}: what was traced (workload,
                   config, phase, batch, context, tokens, mode, device, torch_version, ...)
ops.parquet        the columns of OP_COLUMNS below, one row per op, op_id = row number;
                   reread_bytes: what the op reads of the output of the op just before it
tensors.parquet    the columns of TENSOR_COLUMNS, one row per tensor, tensor_id = row number
accesses.parquet   the columns of ACCESS_COLUMNS: op_id and tensor_id refer to the tables above

Units are SI: bytes, FLOP, seconds. `measured_s` is NaN where an op was not timed. A reader
accepts files of its own version or older and refuses newer ones. Columns added to a version
after files of it were written have defaults (COLUMN_DEFAULTS), so those files still load;
extra columns (an importer's own, say) are kept. Members are stored uncompressed so each table is read on its own: `Trace.load`
reads only meta.json and the archive's directory, and each table when it is first used, so
summarising a large trace never loads its accesses. A truncated or corrupt file is reported
as one error naming the file and the part that is unreadable.
"""
from __future__ import annotations

import json
import zipfile
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
    "attrs": "str", "shapes": "str", "stream": "int64", "measured_s": "float64", "reread_bytes": "float64",
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


TABLES = {"ops": OP_COLUMNS, "tensors": TENSOR_COLUMNS, "accesses": ACCESS_COLUMNS}
# Columns a reader fills in when a file lacks them (added after version 1 was first written).
COLUMN_DEFAULTS: dict[str, dict[str, object]] = {"ops": {"stream": 0, "measured_s": float("nan"), "reread_bytes": 0.0}}


class Trace:
    """One step of a workload as tables; replayable on any hardware.

    The tables are plain DataFrames; a trace loaded from a file reads each one when it is
    first used.
    """

    def __init__(self, ops: pd.DataFrame | None, tensors: pd.DataFrame | None, accesses: pd.DataFrame | None,
                 meta: dict | None = None, source: Path | None = None):
        self._tables = {"ops": ops, "tensors": tensors, "accesses": accesses}
        self.meta = meta if meta is not None else {}
        self._source = source

    def _table(self, name: str) -> pd.DataFrame:
        if self._tables[name] is None:
            self._tables[name] = _read_table(self._source, name)
        return self._tables[name]

    @property
    def ops(self) -> pd.DataFrame:
        return self._table("ops")

    @property
    def tensors(self) -> pd.DataFrame:
        return self._table("tensors")

    @property
    def accesses(self) -> pd.DataFrame:
        return self._table("accesses")

    def __repr__(self) -> str:
        loaded = [name for name, table in self._tables.items() if table is not None]
        return f"Trace({self.meta.get('workload', '?')}, source={self._source}, loaded={loaded})"

    @property
    def total_flops(self) -> float:
        return float(self.ops["flops"].sum())

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "format": FORMAT, "version": VERSION}
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr(_member("meta.json"), json.dumps(meta, indent=1, sort_keys=True, default=str))
            for name in TABLES:
                sink = pa.BufferOutputStream()
                pq.write_table(pa.Table.from_pandas(self._table(name), preserve_index=False), sink)
                archive.writestr(_member(f"{name}.parquet"), sink.getvalue().to_pybytes())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        """Open a trace file: reads its metadata now and each table when first used."""
        path = Path(path)
        try:
            with zipfile.ZipFile(path) as archive:
                members = set(archive.namelist())
                meta = json.loads(archive.read("meta.json"))
        except FileNotFoundError:
            raise MemsimError(f"{path}: no such trace file") from None
        except (zipfile.BadZipFile, KeyError, OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise MemsimError(f"{path}: corrupt or truncated trace file ({error})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise MemsimError(f"{path}: not a memsim trace (meta.json format is {found!r}, expected {FORMAT!r})")
        if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
            raise MemsimError(f"{path}: trace format version {meta.get('version')!r} is newer than this memsim "
                              f"reads ({VERSION}); upgrade memsim")
        missing = [f"{name}.parquet" for name in TABLES if f"{name}.parquet" not in members]
        if missing:
            raise MemsimError(f"{path}: corrupt or truncated trace file (missing {', '.join(missing)})")
        return cls(None, None, None, meta, source=path)


def _member(name: str) -> zipfile.ZipInfo:
    """An archive member with a fixed timestamp, so the same trace always makes the same file."""
    return zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))


def _read_table(path: Path, name: str) -> pd.DataFrame:
    """One table of a trace file, checked against its column list."""
    try:
        with zipfile.ZipFile(path) as archive:
            table = pq.read_table(pa.BufferReader(archive.read(f"{name}.parquet"))).to_pandas()
    except (zipfile.BadZipFile, KeyError, OSError, pa.ArrowException) as error:
        raise MemsimError(f"{path}: corrupt or truncated trace file ({name}.parquet: {error})") from None
    for column, default in COLUMN_DEFAULTS.get(name, {}).items():
        if column not in table.columns:
            table[column] = default
    missing = [column for column in TABLES[name] if column not in table.columns]
    if missing:
        raise MemsimError(f"{path}: {name}.parquet lacks column(s) {', '.join(missing)} "
                          f"(trace format version {VERSION} expects {', '.join(TABLES[name])})")
    return table


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
