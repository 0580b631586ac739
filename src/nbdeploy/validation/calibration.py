"""Calibration of a classifier's probabilities: the Brier score, the expected calibration
error (ECE) and the reliability curve, as per-row columns the bootstrap can resample.

Both are sums over rows, so a resample's value is a count-weighted sum like the other
metrics' (see :mod:`~nbdeploy.validation.bootstrap`):

- **Brier**: the mean over rows of sum_k (p_k - 1{y = k})^2 over the model's classes; for
  a binary problem the positive class's term alone, which is scikit-learn's
  ``brier_score_loss`` (the two classes' terms are equal, so this is half the sum).
- **ECE** (top-label, ``BINS`` equal-width bins of the confidence max_k p_k): the sum over
  bins of |sum over its rows of (correct - confidence)| / n, that is sum_b n_b/n |acc_b -
  conf_b|, where ``correct`` is 1 when the most probable class is the true one.

>>> import numpy as np
>>> cal = calibration(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1]), 1)
>>> round(cal.point["brier"], 4), round(cal.point["ece"], 4)
(0.1367, 0.3)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BINS", "CALIBRATION", "Calibration", "calibration"]

BINS = 10
CALIBRATION = ("brier", "ece")


@dataclass
class Calibration:
    """Per-row columns for the bootstrap (``rows``: Brier's then one per confidence bin), the
    point values, and the reliability curve (per non-empty bin: mean confidence, accuracy, rows)."""

    rows: np.ndarray
    point: dict[str, float]
    curve: list[dict[str, float]] = field(default_factory=list)

    @staticmethod
    def finish(sums: np.ndarray, n: int) -> dict[str, np.ndarray]:
        """Brier and ECE from the count-weighted sums of :attr:`rows` (b x (1 + BINS))."""
        return {"brier": sums[:, 0] / n, "ece": np.abs(sums[:, 1:]).sum(axis=1) / n}


def calibration(y: np.ndarray, proba: np.ndarray, codes: np.ndarray, positive: int | None) -> Calibration:
    """The calibration of ``proba`` (columns labelled by label ``codes``) on label codes ``y``;
    every true label must have a column (the caller checks)."""
    n = y.size
    truth = (y[:, None] == codes[None, :]).astype(float)
    if positive is not None:
        column = int(np.flatnonzero(codes == positive)[0])
        brier = (proba[:, column] - truth[:, column]) ** 2
    else:
        brier = ((proba - truth) ** 2).sum(axis=1)
    confidence = proba.max(axis=1)
    correct = (codes[proba.argmax(axis=1)] == y).astype(float)
    bins = np.minimum((confidence * BINS).astype(int), BINS - 1)
    gaps = np.zeros((BINS, n))
    gaps[bins, np.arange(n)] = correct - confidence
    rows = np.vstack([brier[None, :], gaps])
    sums = rows.sum(axis=1)[None, :]
    point = {k: float(v[0]) for k, v in Calibration.finish(sums, n).items()}
    return Calibration(rows, point, _curve(bins, confidence, correct))


def _curve(bins: np.ndarray, confidence: np.ndarray, correct: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for b in range(BINS):
        inside = bins == b
        if inside.any():
            out.append({"confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean()),
                        "rows": int(inside.sum())})  # fmt: skip
    return out
