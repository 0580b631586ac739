"""The storage under monitoring windows: fixed-capacity columns in time order, and the
summaries computed over a span of them (prediction distribution, live quality, sparklines).

>>> r = Ring(4, {"ts": (np.float64, ())})
>>> r.append({"ts": np.array([1.0, 2.0, 3.0])}, 3)
0
>>> r.span(2.0)
(1, 3)
>>> r.span(2.0, until=2.5)
(1, 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["SERIES_BUCKET_S", "SERIES_POINTS", "Ring", "concat", "live_quality", "prediction_distribution", "series"]

SERIES_BUCKET_S = 10.0
SERIES_POINTS = 60


class Ring:
    """Fixed-capacity columns appended in time order (``ts`` never decreases), so that a
    window is one contiguous span found by binary search."""

    def __init__(self, capacity: int, columns: Mapping[str, tuple[Any, tuple[int, ...]]]) -> None:
        self.capacity, self.count = capacity, 0
        # 2-D columns in Fortran order so that one feature over many rows is contiguous
        self.cols = {
            name: np.zeros((capacity, *shape), dtype=dt, order="F" if shape else "C")
            for name, (dt, shape) in columns.items()
        }

    def append(self, values: Mapping[str, Any], n: int = 1) -> int:
        """Append ``n`` rows; returns the absolute index of the first one."""
        start = self.count
        for i in range(0, n, self.capacity):  # a block larger than the ring keeps its tail
            k = min(n - i, self.capacity)
            pos = (start + i) % self.capacity
            first = min(k, self.capacity - pos)
            for name, col in self.cols.items():
                block = values[name]
                part = block[i : i + k] if np.ndim(block) else np.full(k, block)
                col[pos : pos + first] = part[:first]
                col[: k - first] = part[first:]
        self.count += n
        return start

    def span(self, t0: float, until: float | None = None) -> tuple[int, int]:
        """Absolute indices ``[lo, hi)`` of the live entries with ``t0 <= ts <= until``."""
        lo = max(0, self.count - self.capacity)
        hi = self.count if until is None else self._first(lo, self.count, until, inclusive=True)
        return self._first(lo, hi, t0, inclusive=False), hi

    def _first(self, a: int, b: int, t: float, inclusive: bool) -> int:
        """The first absolute index in ``[a, b)`` whose time is ``> t`` (inclusive) or ``>= t``;
        a binary search, valid because entries are appended in time order (see ``append``)."""
        ts = self.cols["ts"]
        while a < b:
            mid = (a + b) // 2
            v = ts[mid % self.capacity]
            if v < t or (inclusive and v == t):
                a = mid + 1
            else:
                b = mid
        return a

    @property
    def last(self) -> float:
        """The time of the newest entry (``-inf`` when empty)."""
        return float(self.cols["ts"][(self.count - 1) % self.capacity]) if self.count else float("-inf")

    def segments(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Positions in the ring of the absolute entries ``[lo, hi)``: at most two slices."""
        if hi <= lo:
            return []
        cap = self.capacity
        a, b = lo % cap, hi % cap or cap
        return [(a, b)] if a < b else [(a, cap), (0, b)]

    def take(self, name: str, lo: int, hi: int) -> list[np.ndarray]:
        """The entries ``[lo, hi)`` of one column as at most two views."""
        col = self.cols[name]
        return [col[a:b] for a, b in self.segments(lo, hi)]

    def live(self, index: int) -> bool:
        return self.count - self.capacity <= index < self.count


def concat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def prediction_distribution(task: str | None, classes: Iterable[str], preds: np.ndarray) -> dict[str, Any]:
    """Class counts for a classifier, a 10-bin histogram otherwise."""
    if task == "classification":
        names = list(classes)
        counts = np.bincount(preds[~np.isnan(preds)].astype(np.int64), minlength=len(names))
        return {"kind": "classes", "counts": {names[i]: int(c) for i, c in enumerate(counts) if c}}
    numbers = preds[~np.isnan(preds)]
    if not numbers.size:
        return {"kind": "histogram", "edges": [], "counts": []}
    counts, edges = np.histogram(numbers, bins=10)
    return {"kind": "histogram", "edges": edges.tolist(), "counts": counts.tolist()}


def live_quality(task: str | None, preds: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy (classifiers) or RMSE over the rows that have a label."""
    has = ~np.isnan(labels)
    labelled = int(has.sum())
    if not labelled:
        return {"labelled": 0, "accuracy": None, "rmse": None}
    p, y = preds[has], labels[has]
    if task == "classification":
        return {"labelled": labelled, "accuracy": float(np.mean(p == y)), "rmse": None}
    return {"labelled": labelled, "accuracy": None, "rmse": float(np.sqrt(np.mean((p - y) ** 2)))}


def series(requests: Ring, now: float) -> dict[str, list[Any]]:
    """Requests/s and p95 latency in 10 s buckets over the last 10 minutes (sparklines)."""
    start = now - SERIES_BUCKET_S * SERIES_POINTS
    lo, hi = requests.span(start, now)
    ts = concat(requests.take("ts", lo, hi), np.float64)
    lat = concat(requests.take("latency", lo, hi), np.float32)
    bucket = np.clip(((ts - start) // SERIES_BUCKET_S).astype(int), 0, SERIES_POINTS - 1)
    counts = np.bincount(bucket, minlength=SERIES_POINTS)
    p95: list[float | None] = [None] * SERIES_POINTS
    if ts.size:
        order = np.argsort(bucket, kind="stable")
        splits = np.cumsum(counts)[:-1]
        for i, chunk in enumerate(np.split(lat[order], splits)):
            if chunk.size:
                p95[i] = float(np.percentile(chunk, 95))
    return {
        "t": [start + (i + 1) * SERIES_BUCKET_S for i in range(SERIES_POINTS)],
        "rps": (counts / SERIES_BUCKET_S).tolist(),
        "p95_ms": p95,
    }
