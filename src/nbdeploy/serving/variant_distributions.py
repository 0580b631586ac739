"""What each variant of an experiment was asked and what it answered, since the experiment
began: its prediction distribution (class counts, or a histogram on bins shared by every
variant) and the drift of its inputs from the champion's training profile.

With a random split both variants see the same population, so their input drift agrees; a
sticky split (by country, by user) can give them different populations, and then the drift
columns say that a comparison of the variants is also a comparison of their traffic. A
shadow's predictions beside the champion's show how differently it would have answered.

Rows are queued as they are answered (an append) and binned in bulk when the state is read,
or once :data:`FOLD_AT` requests (:data:`FOLD_ROWS` rows) wait, so the request path pays next to nothing.

>>> d = VariantDistributions(["x"], None, "classification", ["champion", "2"])
>>> d.add("champion", [[1.0], [2.0]], ["a", "b"]); d.add("2", [[1.0]], ["b"])
>>> d.summary()["2"]["predictions"]
{'kind': 'classes', 'counts': {'b': 1}}
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nbdeploy.stats import drift

__all__ = ["FOLD_AT", "VariantDistributions"]

FOLD_AT = 4096  # queued requests binned at once
FOLD_ROWS = 100_000  # or queued rows: the queue holds the requests' parsed inputs
MAX_CLASSES = 1000  # distinct predictions counted per variant; the rest as one "(other)"
EDGES_FROM = 1000  # a regression's shared bins are the deciles of the first predictions seen
_NO_EDGES: np.ndarray = np.zeros(0)


class _Variant:
    def __init__(self, features: int, bins: Sequence[int]) -> None:
        self.rows = 0
        self.classes: Counter[str] = Counter()
        self.values: list[float] = []  # a regression's predictions until the bins are fixed
        self.histogram = np.zeros(0, dtype=np.int64)
        self.features = [np.zeros(n, dtype=np.int64) for n in bins][:features]


class VariantDistributions:
    """Prediction counts and input bin counts per variant."""

    def __init__(self, columns: Sequence[str], profile: Mapping[str, Any] | None, task: str | None,
                 variants: Sequence[str]) -> None:  # fmt: skip
        by_name = {c["name"]: c for c in (profile or {}).get("columns", [])}
        self.regression = task == "regression"
        self.champion = variants[0]
        self._numeric = [  # categorical inputs are not binned live, as in the monitoring windows
            (j, c, drift.numeric_cuts(c))
            for j, name in enumerate(columns)
            if (c := by_name.get(name)) is not None and c["kind"] == "numeric" and c.get("min") is not None
        ]
        self._width = len(columns)
        self._edges = _NO_EDGES
        self._variants = {v: self._new() for v in variants}
        self._queue: deque[tuple[str, Any, Any, bool]] = deque()  # appended on the event loop, folded by any reader
        self._queued_rows = 0
        self._lock = threading.Lock()

    def _new(self) -> _Variant:
        return _Variant(len(self._numeric), [cuts.size + 2 for _, _, cuts in self._numeric])

    def add(self, variant: str, inputs: Any, predictions: Any, inputs_only: bool = False) -> None:
        """Queue one answered request's input rows and predictions (either may be None);
        ``inputs_only``: the rows a shadow is asked, counted when the champion answers them."""
        if not isinstance(predictions, list) or not predictions:
            return
        self._queue.append((variant, inputs, predictions, inputs_only))
        self._queued_rows += len(predictions)
        if len(self._queue) >= FOLD_AT or self._queued_rows >= FOLD_ROWS:
            self.fold()  # rarely on the request path: the decision loop folds every second

    def fold(self, pace: Callable[[], None] | None = None) -> None:
        """Bin what is queued: per variant, all its rows at once (one numpy call per feature);
        ``pace``: called between two requests and two features (a background process's pacer)."""
        pace = pace or _no_pace
        with self._lock:
            self._queued_rows = 0
            rows: dict[str, list[np.ndarray]] = {}
            for _ in range(len(self._queue)):
                variant, inputs, predictions, inputs_only = self._queue.popleft()
                v = self._variants.get(variant) or self._variants.setdefault(variant, self._new())
                if not inputs_only:
                    v.rows += len(predictions)
                    try:  # whatever a model answered or a client sent, binning never raises
                        self._predictions(v, predictions)
                    except (TypeError, ValueError, OverflowError):
                        pass
                if inputs is not None and self._numeric and (x := self._numbers(inputs, len(predictions))) is not None:
                    rows.setdefault(variant, []).append(x)
                pace()
            for variant, blocks in rows.items():
                x = np.concatenate(blocks)
                for f, (j, _column, cuts) in enumerate(self._numeric):
                    found = np.bincount(drift.numeric_bins(cuts, x[:, j]), minlength=cuts.size + 2)
                    self._variants[variant].features[f] += found
                    pace()

    def _predictions(self, v: _Variant, predictions: list[Any]) -> None:
        if not self.regression:
            for p in predictions:
                key = str(p)[:200]
                v.classes[key if key in v.classes or len(v.classes) < MAX_CLASSES else "(other)"] += 1
            return
        values = np.asarray(predictions, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if not self._edges.size:
            v.values.extend(values.tolist())
            if sum(len(x.values) for x in self._variants.values()) >= EDGES_FROM:
                self._fix_edges()
            return
        v.histogram += np.bincount(np.searchsorted(self._edges, values, side="right"), minlength=self._edges.size + 1)

    def _fix_edges(self) -> None:
        seen = np.concatenate([np.asarray(x.values) for x in self._variants.values()])
        self._edges = np.unique(np.quantile(seen, np.linspace(0, 1, 11)[1:-1]))
        for x in self._variants.values():
            found = np.searchsorted(self._edges, np.asarray(x.values), side="right")
            x.histogram, x.values = np.bincount(found, minlength=self._edges.size + 1), []

    def _numbers(self, inputs: Any, n: int) -> np.ndarray | None:
        """A request's first ``n`` rows as float64; rows that are not numbers are not binned
        (the model answered them anyway)."""
        try:
            x = np.asarray(inputs[:n], dtype=np.float64).reshape(n, -1)
        except (TypeError, ValueError, IndexError, KeyError, OverflowError):
            return None
        return x if x.shape[1] == self._width else None

    @property
    def queued(self) -> int:
        """Requests added and not folded yet."""
        return len(self._queue)

    def summary(self, pace: Callable[[], None] | None = None) -> dict[str, Any]:
        """Per variant: rows, prediction distribution, the drift of its inputs (highest PSI and
        the drifted features), and a challenger's PSI of predictions against the champion's.
        ``pace``: called between two features' tests (a background process's pacer)."""
        pace = pace or _no_pace
        self.fold(pace)
        with self._lock:
            out = {name: self._summary(v, pace) for name, v in self._variants.items()}
            champion = self._variants[self.champion]
            for name, v in self._variants.items():
                if name != self.champion:
                    out[name]["prediction_psi"] = self._prediction_psi(champion, v)
        return out

    def _summary(self, v: _Variant, pace: Callable[[], None]) -> dict[str, Any]:
        if not self.regression:
            predictions: dict[str, Any] = {"kind": "classes", "counts": dict(v.classes.most_common(20))}
        elif self._edges.size:
            predictions = {"kind": "histogram", "edges": self._edges.tolist(), "counts": v.histogram.tolist()}
        else:
            try:
                with np.errstate(over="ignore", invalid="ignore"):
                    counts, edges = np.histogram(v.values, bins=10) if v.values else (np.zeros(0), np.zeros(0))
            except ValueError:  # values whose range overflows a float ("too many bins for data range")
                counts, edges = np.zeros(0), np.zeros(0)
            predictions = {"kind": "histogram", "edges": edges.tolist(), "counts": counts.tolist()}
        found = []
        for (_, c, cuts), n in zip(self._numeric, v.features, strict=True):
            found.append(drift.drift_from_counts(c, n[: cuts.size + 1].tolist()))
            pace()
        scored = [d.psi for d in found if d.psi == d.psi]  # not NaN: a feature with data
        return {
            "rows": v.rows,
            "predictions": predictions,
            "drift_max_psi": max(scored, default=None),
            "drifted_features": [d.name for d in found if d.status == "drift"],
        }

    def _prediction_psi(self, champion: _Variant, challenger: _Variant) -> float | None:
        """PSI of the challenger's predictions against the champion's (on shared bins)."""
        if not self.regression:
            names = sorted(set(champion.classes) | set(challenger.classes))
            a, b = [champion.classes[k] for k in names], [challenger.classes[k] for k in names]
        elif self._edges.size:
            a, b = champion.histogram.tolist(), challenger.histogram.tolist()
        else:
            return None
        return float(drift.psi(a, b)) if sum(a) and sum(b) else None


def _no_pace() -> None:
    pass
