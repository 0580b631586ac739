"""Weak segments found, not only declared: the one- and two-feature segments of the
evaluation data where the model is markedly worse than on the rest.

Each feature is binned as ``--slice`` bins it (quintiles of a numeric column, the most
frequent values of another, missing values apart); pairs of bins are searched for the
``PAIR_FEATURES`` most important features (by the Explain section, else by their own
strongest segment). A segment of at least ``MIN_ROWS`` rows (and 2 % of the data) is
reported when both hold:

- its mean loss (a classifier's error rate, a regressor's squared error) is above the rest
  of the data's by a one-sided Welch z-test at family-wise level ``ALPHA`` with Bonferroni's
  correction over every segment searched, so on data with no weak segment the report names
  none in at least 95 % of evaluations (tests/test_segments.py measures it); the z-test
  leans on the central limit theorem, weaker for squared errors with heavy tails;
- the difference is marked: a classifier's accuracy at least ``MIN_ACCURACY_DROP`` below
  the overall, a regressor's RMSE at least ``MIN_RMSE_RATIO`` times the overall.

The reported metric's interval is a 95 % bootstrap percentile interval over the segment's
rows. At most ``SHOWN`` segments are reported, those with the most excess loss first, a
two-feature segment only if it is worse than each of its one-feature parts.

>>> found, searched = weak_segments(frame, errors, task="classification")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from nbdeploy.validation.slices import groups

__all__ = ["Segment", "weak_segments"]

BINS = 5
PAIR_FEATURES = 6
MIN_ROWS = 30
MIN_SHARE = 0.02
ALPHA = 0.05
MIN_ACCURACY_DROP = 0.05
MIN_RMSE_RATIO = 1.25
SHOWN = 5
RESAMPLES = 200


@dataclass
class Segment:
    """A weak segment: where it is, its size, its metric with a 95 % interval, and the overall metric."""

    where: str
    rows: int
    metric: str
    value: float
    low: float
    high: float
    overall: float
    p_value: float  # one-sided, Bonferroni-adjusted over the segments searched (capped at 1)
    features: tuple[str, ...]


def _metric(task: str, loss: np.ndarray) -> float:
    return float(1 - loss.mean()) if task == "classification" else float(np.sqrt(loss.mean()))


class _Welch:
    """Welch's z of a segment's mean loss against the rest's, from sums over the segment
    (``sum(where=mask)``: no copies, as this runs for every segment searched on every row)."""

    def __init__(self, loss: np.ndarray) -> None:
        self.loss, self.squared = loss, loss * loss
        self.n, self.total, self.total2 = loss.size, float(loss.sum()), float(self.squared.sum())

    def z(self, mask: np.ndarray) -> float:
        n, k = self.n, int(np.count_nonzero(mask))
        if k < 2 or n - k < 2:
            return 0.0
        s1, s2 = float(np.sum(self.loss, where=mask)), float(np.sum(self.squared, where=mask))
        mean_in, mean_out = s1 / k, (self.total - s1) / (n - k)
        var_in = max(s2 - k * mean_in**2, 0.0) / (k - 1)
        var_out = max(self.total2 - s2 - (n - k) * mean_out**2, 0.0) / (n - k - 1)
        se = np.sqrt(var_in / k + var_out / (n - k))
        return float((mean_in - mean_out) / se) if se > 0 else (np.inf if mean_in > mean_out else 0.0)


def _marked(task: str, loss: np.ndarray, mask: np.ndarray) -> bool:
    inside, overall = _metric(task, loss[mask]), _metric(task, loss)
    if task == "classification":
        return inside <= overall - MIN_ACCURACY_DROP
    return inside >= overall * MIN_RMSE_RATIO


def _interval(task: str, loss: np.ndarray, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = loss[rng.integers(0, loss.size, (RESAMPLES, loss.size))].mean(axis=1)
    values = 1 - means if task == "classification" else np.sqrt(means)
    return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))


Candidate = tuple[tuple[str, ...], str, np.ndarray]  # (features, where, mask)


def _bins(frame: pd.DataFrame, min_rows: int) -> dict[str, list[tuple[str, np.ndarray]]]:
    return {c: [(label, mask) for label, mask in groups(frame[c], BINS)[1] if np.count_nonzero(mask) >= min_rows]
            for c in frame.columns}  # fmt: skip


def _candidates(singles: dict[str, list[tuple[str, np.ndarray]]], ranked: Sequence[str],
                min_rows: int) -> list[Candidate]:  # fmt: skip
    out: list[Candidate] = [((c,), f"{c} = {label}" if not label.startswith("[") else f"{c} in {label}", mask)
           for c, bins in singles.items() for label, mask in bins]  # fmt: skip
    for a, b in combinations([c for c in ranked if c in singles][:PAIR_FEATURES], 2):
        for (la, ma), (lb, mb) in ((x, y) for x in singles[a] for y in singles[b]):
            mask = ma & mb
            if np.count_nonzero(mask) >= min_rows:
                where = " and ".join(f"{c} = {lab}" if not lab.startswith("[") else f"{c} in {lab}"
                                     for c, lab in ((a, la), (b, lb)))  # fmt: skip
                out.append(((a, b), where, mask))
    return out


def weak_segments(frame: pd.DataFrame, loss: np.ndarray, *, task: str, ranked: Sequence[str] = (),
                  seed: int = 0) -> tuple[list[Segment], int]:  # fmt: skip
    """The weak segments of ``frame`` by per-row ``loss`` (error indicator or squared error),
    and how many segments were searched. ``ranked``: features by importance, for the pairs."""
    from scipy import stats

    loss = np.asarray(loss, dtype=float)
    n = loss.size
    min_rows = max(MIN_ROWS, int(np.ceil(MIN_SHARE * n)))
    if n < 2 * min_rows:
        return [], 0
    singles, welch = _bins(frame, min_rows), _Welch(loss)
    if not ranked:  # features by their own strongest one-feature segment
        best = {c: max((welch.z(m) for _, m in bins), default=0.0) for c, bins in singles.items()}
        ranked = sorted(best, key=lambda c: -best[c])
    candidates = _candidates(singles, ranked, min_rows)
    searched = len(candidates)
    found: dict[tuple[str, ...], list[tuple[float, str, np.ndarray, float]]] = {}
    p_values = stats.norm.sf([welch.z(mask) for _, _, mask in candidates]) * searched
    for (features, where, mask), p in zip(candidates, p_values, strict=True):
        if p <= ALPHA and _marked(task, loss, mask):
            excess = float((loss[mask] - loss.mean()).sum())
            found.setdefault(features, []).append((excess, where, mask, min(float(p), 1.0)))
    flat = [(e, w, m, p, f) for f, items in found.items() for e, w, m, p in items]
    keep = []
    for _, where, mask, p, features in sorted(flat, key=lambda t: -t[0]):  # the most excess loss first
        if len(features) == 2 and not all(_worse_than_parts(loss, mask, found.get((f,), [])) for f in features):
            continue
        keep.append((where, mask, p, features))
    out = []
    for where, mask, p, features in keep[:SHOWN]:
        low, high = _interval(task, loss[mask], seed)
        out.append(Segment(where, int(mask.sum()), "accuracy" if task == "classification" else "rmse",
                           _metric(task, loss[mask]), low, high, _metric(task, loss), p, features))  # fmt: skip
    return out, searched


def _worse_than_parts(loss: np.ndarray, mask: np.ndarray, parts: list[tuple[float, str, np.ndarray, float]]) -> bool:
    """A pair is kept only if its loss is above each weak one-feature segment that contains it."""
    mine = loss[mask].mean()
    return all(mine > loss[part].mean() for _, _, part, _ in parts if (part & mask).sum() == mask.sum())


def losses(task: str, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-row loss: 1 for a wrong class, or the squared error."""
    if task == "classification":
        return (np.asarray(y) != np.asarray(pred)).astype(float)
    return (np.asarray(y, dtype=float) - np.asarray(pred, dtype=float)) ** 2


def as_dicts(segments: Sequence[Segment]) -> list[dict[str, Any]]:
    from dataclasses import asdict

    return [asdict(s) for s in segments]
