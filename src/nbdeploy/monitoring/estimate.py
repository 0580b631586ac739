"""Accuracy estimated before labels arrive, from the model's own probabilities (confidence-
based performance estimation, as NannyML's CBPE does it).

For each served row the server keeps ``c``, the probability the classifier gave the class
it predicted. If the probabilities are calibrated — on the live data, not only on the
training data — the prediction is right with probability ``c``, so the expected accuracy of
a window is the mean of ``c``; the realized accuracy of ``n`` rows, a sum of independent
Bernoulli(c_i) draws, has variance ``sum c_i (1 - c_i) / n^2``, which gives the interval
(normal approximation). The estimate follows covariate shift (inputs moving to where the
model is less sure) but not concept shift (the same inputs now meaning another class), and
an overconfident model overestimates: compare it with the realized accuracy as labels
arrive, which the window shows beside it on the same rows.

>>> import numpy as np
>>> round(estimated_accuracy(np.array([0.9, 0.8, 0.7, 0.6]))["est_accuracy"], 4)
0.75
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Z95", "as_confidence", "estimated_accuracy"]

Z95 = 1.959963984540054


def estimated_accuracy(confidence: np.ndarray, labelled: np.ndarray | None = None) -> dict[str, Any]:
    """``est_accuracy`` with its 95 % interval over the rows that have a confidence, and the
    estimate on the labelled rows only (``est_accuracy_labelled``), to set beside their
    realized accuracy."""
    c = confidence[~np.isnan(confidence)]
    if not c.size:
        return {"est_accuracy": None, "est_accuracy_ci": None, "est_rows": 0, "est_accuracy_labelled": None}
    mean = float(c.mean())
    half = Z95 * float(np.sqrt(np.sum(c * (1 - c)))) / c.size
    out: dict[str, Any] = {
        "est_accuracy": mean,
        "est_accuracy_ci": [max(0.0, mean - half), min(1.0, mean + half)],
        "est_rows": int(c.size),
        "est_accuracy_labelled": None,
    }
    if labelled is not None:
        both = labelled & ~np.isnan(confidence)
        out["est_accuracy_labelled"] = float(confidence[both].mean()) if both.any() else None
    return out


def as_confidence(values: Sequence[float] | None, n: int) -> np.ndarray:
    """``n`` confidences as floats (NaN where there are none or they are not numbers in [0, 1])."""
    out = np.full(n, np.nan)
    if values is not None and len(values) >= n:
        try:
            got = np.asarray(values[:n], dtype=np.float64)
        except (TypeError, ValueError):
            return out
        out = np.where((got >= 0) & (got <= 1), got, np.nan)
    return out
