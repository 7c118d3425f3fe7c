"""Price measured ops with memsim's cost models and report the errors: text, JSON, plotly HTML."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from memsim.cost import MeasuredPowerState, price_ops
from memsim.hardware.schema import System
from memsim.validate.metrics import error_summary

METRIC_COLUMNS = (("count", "n", "{:d}"), ("mape", "MAPE", "{:.1%}"), ("median_ape", "median", "{:.1%}"),
                  ("p90_ape", "p90", "{:.1%}"), ("signed_mean", "signed", "{:+.1%}"),
                  ("sum_error", "sum err", "{:+.1%}"))


def predict(ops: pd.DataFrame, system: System) -> pd.DataFrame:
    """ops with predicted_s from price_ops on the system's main device (links for copies), in the
    power state their measurement put the GPU in (memsim.cost.MeasuredPowerState)."""
    costs = price_ops(ops, system.device, links=list(system.links.values()))
    costs = MeasuredPowerState(ops, system.device).apply(costs)
    return ops.assign(predicted_s=costs["duration_s"].to_numpy())


def validation_result(priced: pd.DataFrame, source: str, hardware: str, by_label: bool = True) -> dict:
    """Errors per category group and overall (and per source op name where there are few)."""
    result = {"measured": source, "hardware": hardware, "groups": error_summary(priced)}
    labels = priced["label"].nunique() if "label" in priced else 0
    if by_label and 1 < labels <= 30:
        result["ops"] = error_summary(priced, by="label")
    return result


# Kernel names run to hundreds of characters of template arguments; the table shows their start.
NAME_WIDTH = 80


def _short(name: str) -> str:
    name = name.removeprefix("void ")
    return name if len(name) <= NAME_WIDTH else name[:NAME_WIDTH - 3] + "..."


def format_table(summary: dict[str, dict], title: str) -> str:
    """A fixed-width table of one summary (rows: groups or op names, long names cut short)."""
    width = max([len(title)] + [len(_short(name)) for name in summary]) + 2
    header = title.ljust(width) + "".join(label.rjust(9) for _, label, _ in METRIC_COLUMNS)
    lines = [header, "-" * len(header)]
    for name, metrics in summary.items():
        cells = "".join(fmt.format(metrics[key]).rjust(9) for key, _, fmt in METRIC_COLUMNS)
        lines.append(_short(name).ljust(width) + cells)
    return "\n".join(lines)


def format_result(result: dict) -> str:
    parts = [f"{result['measured']} on {result['hardware']}", format_table(result["groups"], "category")]
    if "ops" in result:
        parts.append(format_table(result["ops"], "op"))
    return "\n\n".join(parts)


def to_json(result: dict) -> str:
    return json.dumps(result, indent=1, sort_keys=True)


def write_html(priced: pd.DataFrame, result: dict, path: str | Path) -> Path:
    """A plotly report: predicted vs measured scatter, error by category and by size."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from memsim.validate.metrics import REPORT_GROUP

    frame = priced.assign(group=priced["category"].map(REPORT_GROUP).fillna("other"),
                          error=priced["predicted_s"] / priced["measured_s"] - 1.0)
    figure = make_subplots(rows=1, cols=3, subplot_titles=("predicted vs measured (s)", "relative error by category",
                                                           "relative error by size"))
    for group, rows in frame.groupby("group", sort=True):
        hover = rows["label"] if "label" in rows else rows["name"]
        figure.add_trace(go.Scatter(x=rows["measured_s"], y=rows["predicted_s"], mode="markers", name=group,
                                    text=hover, legendgroup=group), row=1, col=1)
        figure.add_trace(go.Box(y=rows["error"], name=group, legendgroup=group, showlegend=False), row=1, col=2)
        size = rows["size"] if "size" in rows else rows["bytes_read"] + rows["bytes_written"]
        figure.add_trace(go.Scatter(x=size, y=rows["error"], mode="markers", name=group, legendgroup=group,
                                    showlegend=False, text=hover), row=1, col=3)
    low, high = float(frame["measured_s"].min()), float(frame["measured_s"].max())
    figure.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="exact",
                                line={"dash": "dash", "color": "grey"}), row=1, col=1)
    figure.update_xaxes(type="log", row=1, col=1)
    figure.update_yaxes(type="log", row=1, col=1)
    figure.update_xaxes(type="log", row=1, col=3)
    overall = result["groups"]["overall"]
    figure.update_layout(title=f"{Path(result['measured']).name} on {result['hardware']}: MAPE {overall['mape']:.1%}, "
                               f"summed time {overall['sum_error']:+.1%}", height=520, width=1500)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(path, include_plotlyjs="cdn", full_html=True, div_id="memsim-validation")
    return path

