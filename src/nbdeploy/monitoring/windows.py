"""Sliding windows over the requests a server answered.

:class:`RequestWindows` keeps two rings: one entry per request (time, latency, status,
rows) and one per input row (time, features, prediction, label). ``snapshot(now)`` turns
them into the JSON of ``GET /monitor`` for each window (1 min, 5 min, 1 h by default):
count and rate, latency percentiles, error rates by status class, batch sizes, the
prediction distribution, per-feature drift against the training profile (the statistics
of :mod:`nbdeploy.stats.drift`) and, over the rows that got feedback, live accuracy or error.

>>> w = RequestWindows(columns=["x"], profile=None, task="regression")
>>> w.add(ts=0.0, latency_ms=2.0, status=200, rid="a", inputs=[[1.0]], predictions=[3.0])
>>> w.snapshot(now=1.0)["windows"]["1m"]["requests"]
1
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nbdeploy.monitoring.estimate import as_confidence, estimated_accuracy
from nbdeploy.monitoring.ring import Ring, concat, live_quality, prediction_distribution, series
from nbdeploy.monitoring.rows import as_floats
from nbdeploy.spec import DEFAULT_WINDOWS, parse_window
from nbdeploy.stats import drift

__all__ = ["DEFAULT_WINDOWS", "MAX_EARLY", "RequestWindows", "parse_window"]

MAX_EARLY = 100_000  # labels kept for requests not seen yet (a Ray replica's records reach the hub later)


def _in_time_order(items: list[Any], newest: float) -> list[Any]:
    """Queued entries sorted by time, none older than the ring's ``newest`` entry.

    Entries are stamped when they are answered, on one thread, so they arrive in order but
    for ties and a wall clock stepped back; the clamp keeps each ring sorted even then
    (an entry moved forward by the step), which is what makes every window exact.
    """
    items.sort(key=lambda item: item[0])
    if items and items[0][0] < newest:
        items = [(max(item[0], newest), *item[1:]) for item in items]
    return items


class RequestWindows:
    """Request and row rings, feedback, and window statistics for one deployment.

    Every entry is stamped with the time its request was *answered*, and a window is the
    requests answered in ``[now - seconds, now]``: answers come in that order, so the rings
    stay sorted and each window is exact (a start-time stamp would put a slow request
    behind faster ones that started after it).

    ``add`` only queues the request (a deque append, so serving pays next to nothing);
    the queue is folded into the rings in bulk (by the server every second, and before any
    read), binning each new row once against the training profile so that a window's drift
    is a sum of bin counts.
    """

    def __init__(
        self,
        columns: Sequence[str],
        profile: Mapping[str, Any] | None,
        task: str | None,
        windows: Mapping[str, float] | None = None,
        request_capacity: int = 500_000,
        row_capacity: int = 100_000,
    ) -> None:
        self.columns = list(columns)
        self.windows = dict(windows or DEFAULT_WINDOWS)
        k = max(1, len(self.columns))
        self.requests = Ring(
            request_capacity, {"ts": (np.float64, ()), "latency": (np.float32, ()), "status": (np.int16, ())}
        )
        # predictions and labels as float codes (class index, or the value for regression); NaN = none
        self.rows = Ring(
            row_capacity,
            # inputs in float64, the dtype the training profile's edges are in (see drift.numeric_bins)
            {"ts": (np.float64, ()), "x": (np.float64, (k,)), "pred": (np.float64, ()), "label": (np.float64, ()),
             # a classifier's probability of the class it predicted (estimated accuracy); NaN = none
             "conf": (np.float64, ())},
        )
        self.batches = Ring(100_000, {"ts": (np.float64, ()), "requests": (np.int32, ()), "rows": (np.int32, ())})
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._batch_queue: collections.deque[tuple[float, int, int]] = collections.deque()
        self._ids: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        # feedback that arrived before its request, the oldest dropped past MAX_EARLY; tuples, which
        # the collector stops tracking (lists for ids no request ever brings made each full collection longer)
        self._early: collections.OrderedDict[str, tuple[Any, ...]] = collections.OrderedDict()
        self._classes: dict[str, int] = {}
        self._lock = threading.RLock()
        self.resources: Any = None  # a ResourceMeter (monitoring/resources.py): each window's CPU, memory, cost
        self.set_profile(profile, task)

    def set_profile(self, profile: Mapping[str, Any] | None, task: str | None) -> None:
        """Measure drift against ``profile`` from now on (after an update to another version)."""
        with self._lock:
            self.profile = dict(profile) if profile else None
            by_name = {c["name"]: c for c in (profile or {}).get("columns", [])}
            rows_total = (profile or {}).get("rows")
            self.task = task or "classification"
            self.profiled = [
                (j, {**by_name[c], "rows": rows_total}) for j, c in enumerate(self.columns) if c in by_name
            ]
            # the row ring keeps numbers; categorical inputs are not profiled live
            self._numeric = [
                (j, col, drift.numeric_cuts(col))
                for j, col in self.profiled
                if col["kind"] == "numeric" and col.get("min") is not None
            ]
            self._bins = np.zeros((self.rows.capacity, max(1, len(self._numeric))), dtype=np.int8, order="F")
            self._binned = max(0, self.rows.count - self.rows.capacity)  # re-bin the live rows

    # recording ----------------------------------------------------------------------

    def add(
        self,
        ts: float,
        latency_ms: float,
        status: int,
        rid: str,
        inputs: Sequence[Sequence[Any]] | np.ndarray | None = None,
        predictions: Sequence[Any] | None = None,
        confidence: Sequence[float] | None = None,
    ) -> None:
        """Queue one answered request (``ts``: when it was answered; its inputs in the
        deployment's column order; ``confidence``: a classifier's probability of each
        predicted class, for :mod:`~nbdeploy.monitoring.estimate`).

        The server folds the queue from a background thread every second (and every read
        folds it first), so the request path never pays for it.
        """
        self._queue.append((ts, latency_ms, status, rid, inputs, predictions, confidence))

    def add_batch(self, ts: float, requests: int, rows: int) -> None:
        self._batch_queue.append((ts, requests, rows))

    def fold(self) -> None:
        """Move queued requests into the rings and bin their rows against the profile."""
        with self._lock:
            items = _in_time_order([self._queue.popleft() for _ in range(len(self._queue))], self.requests.last)
            batches = _in_time_order(
                [self._batch_queue.popleft() for _ in range(len(self._batch_queue))], self.batches.last
            )
            if batches:
                arr = np.asarray(batches, dtype=np.float64)
                self.batches.append({"ts": arr[:, 0], "requests": arr[:, 1], "rows": arr[:, 2]}, len(batches))
            if not items:
                return
            self.requests.append({"ts": np.fromiter((i[0] for i in items), np.float64, len(items)),
                                  "latency": np.fromiter((i[1] for i in items), np.float32, len(items)),
                                  "status": np.fromiter((i[2] for i in items), np.int16, len(items))},
                                 len(items))  # fmt: skip
            self._fold_rows([i for i in items if i[2] == 200 and i[4] is not None and i[5] is not None])
            self._bin_new()

    def _fold_rows(self, items: list[tuple[Any, ...]]) -> None:
        width = self.rows.cols["x"].shape[1]
        blocks, preds, stamps, spans, confs = [], [], [], [], []
        for ts, _lat, _st, rid, inputs, predictions, confidence in items:
            n = min(len(inputs), len(predictions))
            if not n:
                continue
            x = as_floats(inputs[:n], n, width)
            blocks.append(x if x.shape[1] == width else np.full((n, width), np.nan))
            preds.extend(predictions[:n])
            confs.append(as_confidence(confidence, n))
            stamps.append(np.full(n, ts))
            spans.append((rid, n))
        if not blocks:
            return
        total = len(preds)
        start = self.rows.append({"ts": np.concatenate(stamps), "x": np.concatenate(blocks),
                                  "pred": self._encode(preds), "label": np.full(total, np.nan),
                                  "conf": np.concatenate(confs)}, total)  # fmt: skip
        for rid, n in spans:
            self._ids[rid] = (start, n)
            start += n
            if rid in self._early:
                self._label(rid, self._early.pop(rid))
        while len(self._ids) > self.rows.capacity:
            self._ids.popitem(last=False)

    def _encode(self, values: Sequence[Any]) -> np.ndarray:
        if self.task != "classification":
            try:
                return np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError):
                return np.full(len(values), np.nan)
        codes = self._classes
        return np.fromiter((codes.setdefault(str(v), len(codes)) for v in values), np.float64, len(values))

    def _bin_new(self) -> None:
        lo = max(self._binned, self.rows.count - self.rows.capacity)
        if not self._numeric or lo >= self.rows.count:
            self._binned = self.rows.count
            return
        for part, (a, b) in zip(
            self.rows.take("x", lo, self.rows.count), self.rows.segments(lo, self.rows.count), strict=True
        ):
            for f, (j, _col, cuts) in enumerate(self._numeric):
                self._bins[a:b, f] = drift.numeric_bins(cuts, part[:, j])  # NaN: a slot left out of the counts
        self._binned = self.rows.count

    def feedback(self, rid: str, labels: Sequence[Any]) -> bool:
        """Attach true labels to a request's rows; returns False if the request is unknown."""
        with self._lock:
            self.fold()
            if rid not in self._ids:
                self._early[rid] = tuple(labels)
                if len(self._early) > MAX_EARLY:
                    self._early.popitem(last=False)
                return False
            return self._label(rid, labels)

    def _label(self, rid: str, labels: Sequence[Any]) -> bool:
        start, n = self._ids[rid]
        if not self.rows.live(start) or len(labels) != n:
            return False
        codes = self._encode(labels)
        for i in range(n):
            self.rows.cols["label"][(start + i) % self.rows.capacity] = codes[i]
        return True

    # statistics ----------------------------------------------------------------------

    def snapshot(self, now: float, windows: Sequence[str] | None = None) -> dict[str, Any]:
        """The ``/monitor`` document for the given window names (all by default)."""
        with self._lock:
            self.fold()
            names = list(windows or self.windows)
            return {
                "total_requests": self.requests.count,
                "windows": {w: self._window(now, self.windows[w]) for w in names if w in self.windows},
                "series": series(self.requests, now),
            }

    def _window(self, now: float, seconds: float) -> dict[str, Any]:
        lo, hi = self.requests.span(now - seconds, now)
        latency = concat(self.requests.take("latency", lo, hi), np.float32)
        status = concat(self.requests.take("status", lo, hi), np.int16)
        n = int(latency.size)
        classes = {f"{c}xx": int(np.sum(status // 100 == c)) for c in (2, 4, 5)}
        pct = np.percentile(latency, [50, 95, 99]).tolist() if n else [None, None, None]
        out: dict[str, Any] = {
            "seconds": seconds,
            "requests": n,
            "rps": n / seconds,
            "latency_ms": {"p50": pct[0], "p95": pct[1], "p99": pct[2]},
            "status_classes": classes,
            # the server's own failures: a client's bad request (4xx) is no error of the server's
            "error_rate": classes["5xx"] / n if n else 0.0,
            # the ring no longer holds the window's oldest requests: figures cover its newest part
            "sampled": self.requests.count > self.requests.capacity
            and lo == self.requests.count - self.requests.capacity,
        }
        blo, bhi = self.batches.span(now - seconds, now)
        b_req = concat(self.batches.take("requests", blo, bhi), np.int32)
        b_rows = concat(self.batches.take("rows", blo, bhi), np.int32)
        out["batches"] = {
            "count": int(b_req.size),
            "mean_requests": float(b_req.mean()) if b_req.size else None,
            "max_rows": int(b_rows.max()) if b_rows.size else None,
        }
        rlo, rhi = self.rows.span(now - seconds, now)
        out["rows"] = rhi - rlo
        preds = concat(self.rows.take("pred", rlo, rhi), np.float64)
        out["predictions"] = prediction_distribution(self.task, self._classes, preds)
        out["drift"] = [d.to_dict() for d in self._drift(rlo, rhi)]
        scored = [d for d in out["drift"] if d["psi"] is not None]
        out["drift_max_psi"] = max((d["psi"] for d in scored), default=None)
        out["drifted_features"] = [d["name"] for d in out["drift"] if d["status"] == "drift"]
        labels = concat(self.rows.take("label", rlo, rhi), np.float64)
        out.update(live_quality(self.task, preds, labels))
        if self.task == "classification":
            out.update(estimated_accuracy(concat(self.rows.take("conf", rlo, rhi), np.float64), ~np.isnan(labels)))
        out["resources"] = self.resources.window(now, seconds) if self.resources is not None else None
        return out

    def _drift(self, lo: int, hi: int) -> list[drift.FeatureDrift]:
        if not self._numeric or hi <= lo:
            return []
        segments = self.rows.segments(lo, hi)
        results = []
        for f, (_j, column, cuts) in enumerate(self._numeric):
            total = np.zeros(cuts.size + 2, dtype=np.int64)
            for a, b in segments:
                total += np.bincount(self._bins[a:b, f], minlength=cuts.size + 2)
            results.append(drift.drift_from_counts(column, total[: cuts.size + 1].tolist()))
        return results

