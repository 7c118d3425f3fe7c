"""Prediction errors against measured times, per report group and overall."""
from __future__ import annotations

import numpy as np
import pandas as pd

# The groups errors are reported in: memsim categories folded into what a GPU profile shows.
REPORT_GROUP = {"gemm": "gemm", "conv": "gemm", "attention": "attention", "elementwise": "elementwise",
                "strided": "elementwise", "factory": "elementwise", "norm": "elementwise",
                "reduction": "elementwise", "gather": "elementwise", "copy": "elementwise", "scan": "elementwise",
                "chunked_scan": "gemm",
                "memcpy": "memcpy"}
GROUP_ORDER = ("gemm", "attention", "elementwise", "memcpy", "other")


def errors(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """count, MAPE, median and p90 absolute error, signed mean error (relative, per op) and the
    relative error of the summed time."""
    relative = predicted / measured - 1.0
    absolute = np.abs(relative)
    return {"count": int(len(measured)), "mape": float(np.mean(absolute)), "median_ape": float(np.median(absolute)),
            "p90_ape": float(np.percentile(absolute, 90)), "signed_mean": float(np.mean(relative)),
            "sum_error": float(predicted.sum() / measured.sum() - 1.0),
            "measured_s": float(measured.sum()), "predicted_s": float(predicted.sum())}


def error_summary(frame: pd.DataFrame, by: str = "group") -> dict[str, dict[str, float]]:
    """Errors of frame.predicted_s against frame.measured_s per `by` value and 'overall'.

    by='group' folds categories into REPORT_GROUP; any other column name groups by its values.
    """
    keys = (frame["category"].map(REPORT_GROUP).fillna("other") if by == "group" else frame[by]).to_numpy()
    measured = frame["measured_s"].to_numpy(float)
    predicted = frame["predicted_s"].to_numpy(float)
    order = [g for g in GROUP_ORDER if g in set(keys)] if by == "group" else sorted(set(keys))
    summary = {key: errors(measured[keys == key], predicted[keys == key]) for key in order}
    summary["overall"] = errors(measured, predicted)
    return summary
