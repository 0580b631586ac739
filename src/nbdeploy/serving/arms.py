"""What an experiment measures per variant, since it started, for its decisions: per request
its failures (``error_rate``) and latency (``latency_ms``); per labelled row its ``accuracy``
(classification) or absolute error (``mae``, regression); and a histogram of latencies for
rules on a percentile (``p95_ms``, decided by :mod:`nbdeploy.stats.quantiles`).

Sums are kept as plain numbers (a request adds to them in about a microsecond); a decision
builds :class:`~nbdeploy.stats.sequential.ArmStats` from them once a second. A request's
predictions are kept until its label arrives (at most :data:`MAX_WAITING` requests, the
oldest forgotten first), and a shadowed request's label scores both variants on the same rows.

>>> arms = Arms("classification", ["champion", "2"])
>>> arms.request("2", "r1", failed=False, latency_ms=5.0, predictions=[1, 0])
>>> arms.label("r1", [1, 1]), arms.stats("2", "accuracy").mean
(True, 0.5)
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from nbdeploy.experiment import LABEL_METRICS, METRICS
from nbdeploy.stats.quantiles import LatencyHistogram, compare_quantiles, decide_quantile
from nbdeploy.stats.sequential import ArmStats, Verdict, compare, decide, parse_rule, quantile_level

__all__ = ["MAX_WAITING", "Arms"]

MAX_WAITING = 200_000  # requests whose predictions wait for a label


class Arms:
    """Running sums per variant and metric, and the decisions taken on them."""

    def __init__(self, task: str | None, variants: Sequence[str]) -> None:
        self.regression = task == "regression"
        self.variants = list(variants)
        self._sums = {v: {m: [0, 0.0, 0.0] for m in METRICS} for v in self.variants}
        self._latency = {v: LatencyHistogram() for v in self.variants}
        # request id -> ((variant, predictions), ...): tuples of plain values, which the collector
        # stops tracking; a dict and lists per request, 200,000 requests deep, made every full
        # collection of the server walk them all (0.2 s every 2 s at 1,000 requests/s, growing)
        self._waiting: OrderedDict[str, tuple[tuple[str, tuple[Any, ...]], ...]] = OrderedDict()
        # requests are counted on the event loop, labels in a worker thread (POST /feedback)
        self._lock = threading.Lock()

    def _add(self, variant: str, metric: str, value: float) -> None:
        by_metric = self._sums.get(variant)
        if by_metric is None:  # a variant seen first now (not setdefault: its default was built every call)
            by_metric = self._sums[variant] = {m: [0, 0.0, 0.0] for m in METRICS}
        sums = by_metric[metric]
        sums[0] += 1
        sums[1] += value
        sums[2] += value * value

    def request(self, variant: str, rid: str, failed: bool, latency_ms: float, predictions: Any) -> None:
        """One answered (or mirrored) request of ``variant``."""
        with self._lock:
            self._add(variant, "error_rate", 1.0 if failed else 0.0)
            if math.isfinite(latency_ms):
                self._add(variant, "latency_ms", latency_ms)
                histogram = self._latency.get(variant)
                if histogram is None:
                    histogram = self._latency[variant] = LatencyHistogram()
                histogram.add(latency_ms)
            if isinstance(predictions, list) and predictions:
                others = tuple(kept for kept in self._waiting.get(rid, ()) if kept[0] != variant)
                self._waiting[rid] = (*others, (variant, tuple(predictions)))
                if len(self._waiting) > MAX_WAITING:
                    self._waiting.popitem(last=False)

    def label(self, rid: str, labels: Sequence[Any]) -> bool:
        """Score the predictions of request ``rid`` (every variant that made them) on ``labels``."""
        with self._lock:
            answers = self._waiting.pop(rid, None)
            if answers is not None:
                self._score(answers, labels)
        return answers is not None

    def _score(self, answers: tuple[tuple[str, tuple[Any, ...]], ...], labels: Sequence[Any]) -> None:
        for variant, predictions in answers:
            for predicted, truth in zip(predictions, labels, strict=False):
                if self.regression:
                    error = _number(predicted) - _number(truth)
                    if math.isfinite(error):
                        self._add(variant, "mae", abs(error))
                elif truth is not None:
                    self._add(variant, "accuracy", 1.0 if _same(predicted, truth) else 0.0)

    def stats(self, variant: str, metric: str) -> ArmStats:
        with self._lock:
            n, total, total_sq = self._sums.get(variant, {}).get(metric, [0, 0.0, 0.0])
        # sums of squares built one value at a time can fall a rounding error below total^2 / n
        return ArmStats(int(n), float(total), max(float(total_sq), float(total) ** 2 / n if n else 0.0))

    def decide(self, rule: str, min_labels: int) -> Verdict:
        """``rule`` on the champion (``variants[0]``) against the challenger (``variants[1]``)."""
        metric = parse_rule(rule).metric
        least = min_labels if metric in LABEL_METRICS else 30
        champion, challenger = self.variants[:2]
        if quantile_level(metric) is not None:
            return decide_quantile(rule, self.latencies(champion), self.latencies(challenger), min_samples=least)
        return decide(rule, self.stats(champion, metric), self.stats(challenger, metric), min_samples=least)

    def latencies(self, variant: str) -> LatencyHistogram:
        """A copy of ``variant``'s latency histogram (requests keep counting into the original)."""
        with self._lock:
            return self._latency.get(variant, LatencyHistogram()).copy()

    def summary(self) -> dict[str, Any]:
        """Each metric's value per variant (a mean; for ``p95_ms`` the 95th percentile) and the
        challenger's lift with its always-valid interval."""
        champion, challenger = self.variants[:2]
        out: dict[str, Any] = {}
        for metric in METRICS:
            a, b = self.stats(champion, metric), self.stats(challenger, metric)
            if not (a.n or b.n):
                continue
            c = compare(a, b).to_dict()
            out[metric] = {
                "n": {champion: a.n, challenger: b.n},
                "value": {champion: _finite(a.mean), challenger: _finite(b.mean)},
                "lift": c["lift"], "low": c["low"], "high": c["high"], "ready": c["ready"],
            }  # fmt: skip
        if out.get("latency_ms"):  # the tail too: p95 per variant, the lift's always-valid bounds
            out["p95_ms"] = self._p95(champion, challenger)
        return out

    def _p95(self, champion: str, challenger: str) -> dict[str, Any]:
        a, b = self.latencies(champion), self.latencies(challenger)
        comparison, (p95_a, p95_b) = compare_quantiles(a, b, 0.95)
        c = comparison.to_dict()
        bounds = {k: c[k] for k in ("lift", "low", "high", "ready")}
        return {"n": {champion: a.n, challenger: b.n}, "value": {champion: _finite(p95_a), challenger: _finite(p95_b)},
                **bounds}  # fmt: skip


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _same(predicted: Any, truth: Any) -> bool:
    """A label equals a prediction as numbers when both are numbers (1 == 1.0), else as text."""
    a, b = _number(predicted), _number(truth)
    if math.isfinite(a) and math.isfinite(b) and not isinstance(predicted, str) and not isinstance(truth, str):
        return a == b
    return str(predicted) == str(truth)
