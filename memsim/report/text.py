"""Readable terminal tables for results and hardware, with rich."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from memsim import units
from memsim.hardware.schema import System


def make_console() -> Console:
    """A console as wide as the terminal, or 140 columns when output goes to a file or pipe."""
    return Console(width=None if sys.stdout.isatty() else 140)


def print_summary(summary: dict, console: Console | None = None) -> None:
    console = console or make_console()
    workload = summary["workload"]
    title = (f"{workload.get('workload', '?')} {workload.get('phase', '')} batch {workload.get('batch', '?')} "
             f"context {workload.get('context', '?')} on {summary['hardware']}")
    head = Table(title=title, show_header=False, title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    head.add_row("step time", units.format_time(summary["step_time_s"]))
    head.add_row("tokens/s", f"{summary['tokens_per_s']:,.1f}")
    shares = summary["time_share"]
    head.add_row("time share", "  ".join(f"{name.replace('_', '-')} {share:.1%}" for name, share in shares.items()))
    head.add_row("FLOPs", units.format_count(summary["flops"]))
    head.add_row("ops", f"{summary['op_count']:,}")
    console.print(head)

    tiers = Table(title="memory tiers", title_justify="left")
    for column in ("tier", "bytes moved", "peak", "capacity", "peak by role"):
        tiers.add_column(column, justify="left" if column in ("tier", "peak by role") else "right")
    for tier in sorted(set(summary["bytes_moved"]) | set(summary["peak_bytes"])):
        roles = summary["peak_by_role"].get(tier, {})
        tiers.add_row(tier, units.format_bytes(summary["bytes_moved"].get(tier, 0.0)),
                      units.format_bytes(summary["peak_bytes"].get(tier, 0.0)),
                      units.format_bytes(summary["capacity_bytes"].get(tier, 0.0)),
                      ", ".join(f"{role} {units.format_bytes(size)}"
                                for role, size in sorted(roles.items(), key=lambda kv: -kv[1])))
    console.print(tiers)

    top = Table(title="most expensive ops (layers folded as *)", title_justify="left")
    for column in ("scope", "op", "count", "time", "share", "bound"):
        top.add_column(column, justify="right" if column in ("count", "time", "share") else "left")
    for op in summary["ops"]:
        top.add_row(op["scope"] or "-", op["name"], str(op["count"]), units.format_time(op["time_s"]),
                    f"{op['share']:.1%}", op["bound"])
    console.print(top)


def print_system(system: System, console: Console | None = None) -> None:
    console = console or make_console()
    console.print(f"[bold]{system.name}[/bold]" + (f" - {system.description}" if system.description else ""))
    tiers = Table(title="memory tiers", title_justify="left")
    for column in ("tier", "kind", "capacity", "read", "write", "latency", "queue", "note"):
        tiers.add_column(column)
    for device_name, device in system.devices.items():
        for name, tier in device.memories.items():
            note = []
            if name == device.default_memory:
                note.append("default")
            if tier.internal_bandwidth:
                note.append(f"internal {units.format_bandwidth(tier.internal_bandwidth)}")
            if tier.efficiency < 1:
                note.append(f"efficiency {tier.efficiency:g}")
            tiers.add_row(f"{device_name}.{name}", tier.kind, units.format_bytes(tier.capacity),
                          units.format_bandwidth(tier.read_bandwidth), units.format_bandwidth(tier.write_bandwidth),
                          units.format_time(tier.latency), str(tier.queue_depth), ", ".join(note))
    console.print(tiers)
    compute = Table(title="compute units", title_justify="left")
    for column in ("unit", "kind", "count", "matrix peak", "vector peak", "SRAM/unit", "op overhead", "reads"):
        compute.add_column(column)
    for device_name, device in system.devices.items():
        for name, unit in device.compute.items():
            compute.add_row(f"{device_name}.{name}", unit.kind, str(unit.count),
                            ", ".join(f"{d} {units.format_flops(r)}" for d, r in unit.matrix_flops.items()),
                            ", ".join(f"{d} {units.format_flops(r)}" for d, r in unit.vector_flops.items()),
                            units.format_bytes(unit.sram_per_unit), units.format_time(unit.op_overhead),
                            f"{device_name}.{unit.memory or device.default_memory}")
    console.print(compute)
    if system.links:
        links = Table(title="links", title_justify="left")
        for column in ("link", "kind", "between", "bandwidth", "latency", "duplex"):
            links.add_column(column)
        for name, link in system.links.items():
            links.add_row(name, link.kind, " <-> ".join(link.between), units.format_bandwidth(link.bandwidth),
                          units.format_time(link.latency), link.duplex)
        console.print(links)
