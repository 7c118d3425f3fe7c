"""Quantities with units, parsed once at the edges into SI floats.

Inside memsim everything is a plain float in bytes, seconds, FLOP, FLOP/s, bytes/s or Hz.
Strings such as '3.35 TB/s', '80 GiB', '989 TFLOP/s', '600 ns' or '1.98 GHz' appear only in
YAML, on the command line and in reports.
"""
from __future__ import annotations

import math
import re

DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60}
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "ps": 1e-12}

# kind -> (unit names accepted after the prefix, an example, the name used in messages)
KINDS = {
    "bytes": (("B", "byte", "bytes"), "80 GiB", "size in bytes"),
    "bandwidth": (("B/s", "Bps"), "3.35 TB/s", "bandwidth"),
    "flops": (("FLOP/s", "FLOPS", "flop/s", "flops"), "989 TFLOP/s", "FLOP rate"),
    "time": ((), "600 ns", "duration"),
    "frequency": (("Hz",), "1.98 GHz", "frequency"),
}

_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


class UnitError(ValueError):
    """A string that is not a quantity of the expected kind."""

    def __init__(self, text: object, kind: str):
        _, example, noun = KINDS[kind]
        article = "an" if noun[0] in "aeiou" else "a"
        super().__init__(f"{text!r} is not {article} {noun} (expected e.g. '{example}')")


def _prefix_factor(prefix: str) -> float | None:
    if prefix in BINARY:
        return BINARY[prefix]
    return DECIMAL.get(prefix)


def parse(value: object, kind: str) -> float:
    """Parse `value` as a quantity of `kind` into an SI float.

    Plain numbers are taken as already in SI units. Negative values are rejected here so that
    every capacity, bandwidth and latency in the schema is checked in one place.
    """
    if kind not in KINDS:
        raise KeyError(f"unknown quantity kind {kind!r}")
    if isinstance(value, bool):
        raise UnitError(value, kind)
    if isinstance(value, (int, float)):
        number, unit = float(value), None
    elif isinstance(value, str):
        match = _NUMBER.match(value)
        if not match:
            raise UnitError(value, kind)
        number, unit = float(match.group(1)), match.group(2)
    else:
        raise UnitError(value, kind)
    if not math.isfinite(number):
        raise UnitError(value, kind)
    if number < 0:
        raise ValueError(f"{value!r} is negative (expected a {KINDS[kind][2]} of zero or more, e.g. '{KINDS[kind][1]}')")
    if not unit:
        return number
    factor = _unit_factor(unit, kind)
    if factor is None:
        raise UnitError(value, kind)
    return number * factor


def _unit_factor(unit: str, kind: str) -> float | None:
    if kind == "time":
        return TIME_UNITS.get(unit)
    for suffix in sorted(KINDS[kind][0], key=len, reverse=True):
        if unit.endswith(suffix):
            return _prefix_factor(unit[: -len(suffix)].strip())
    return None


def _scaled(value: float, unit: str, binary: bool = False) -> str:
    steps = (("Ti", 2.0**40), ("Gi", 2.0**30), ("Mi", 2.0**20), ("Ki", 2.0**10)) if binary else (
        ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))
    for prefix, factor in steps:
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def format_bytes(value: float) -> str:
    return _scaled(value, "B", binary=True)


def format_bandwidth(value: float) -> str:
    return _scaled(value, "B/s")


def format_flops(value: float) -> str:
    return _scaled(value, "FLOP/s")


def format_count(value: float, unit: str = "") -> str:
    return _scaled(value, unit).strip()


def format_time(seconds: float) -> str:
    for unit, factor in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(seconds) >= factor:
            return f"{seconds / factor:.4g} {unit}"
    return f"{seconds / 1e-9:.4g} ns"
