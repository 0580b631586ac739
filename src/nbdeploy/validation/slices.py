"""Metrics per slice of the evaluation data: per value of a categorical column, per quantile
bin of a numeric one, with row counts and the weakest slice marked.

>>> import numpy as np
>>> t = slice_table("g", np.array(["a", "a", "b", "b"]), np.array([1, 0, 1, 1]),
...                 np.array([1, 0, 0, 1]), task="regression", min_rows=1)
>>> [(s.label, s.rows) for s in t.slices], t.slices[t.weakest].label
([('a', 2), ('b', 2)], 'b')
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["MIN_ROWS", "QUANTILE_BINS", "Slice", "SliceTable", "groups", "slice_table"]

QUANTILE_BINS = 4
MAX_VALUES = 20
#: Numeric columns with at most this many distinct values are sliced per value.
FEW_VALUES = 10
#: The weakest slice is chosen among slices with at least this many rows (if any has them).
MIN_ROWS = 10


@dataclass(frozen=True)
class Slice:
    label: str
    rows: int
    metrics: dict[str, float]
    baseline: float | None = None


@dataclass
class SliceTable:
    """The slices of one column; ``metric`` is the one the weakest slice is judged by."""

    column: str
    kind: str
    metric: str
    slices: list[Slice] = field(default_factory=list)
    weakest: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "slices": [asdict(s) for s in self.slices]}


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def groups(values: Any, bins: int) -> tuple[str, list[tuple[str, np.ndarray]]]:
    col = pd.Series(values).reset_index(drop=True)
    missing = col.isna().to_numpy()
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    out: list[tuple[str, np.ndarray]] = []
    if numeric and col.nunique() > FEW_VALUES:
        x = col.to_numpy(dtype=float, na_value=np.nan)
        present = x[~missing]
        edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
        which = np.searchsorted(edges, x, side="right")  # a value equal to an edge goes right
        bounds = [present.min(), *edges, present.max()]
        for i in range(edges.size + 1):
            close = "]" if i == edges.size else ")"
            out.append((f"[{_fmt(bounds[i])}, {_fmt(bounds[i + 1])}{close}", (which == i) & ~missing))
        kind = "quantile"
    else:
        text = col.astype("string")
        counts = text.value_counts(dropna=True)
        top = list(counts.index[:MAX_VALUES])
        for value in top:
            out.append((str(value), (text == value).fillna(False).to_numpy(dtype=bool)))
        rest = ~text.isin(top).fillna(False).to_numpy(dtype=bool) & ~missing
        if rest.any():
            out.append((f"(other {counts.size - len(top)} values)", rest))
        kind = "categorical"
    if missing.any():
        out.append(("(missing)", missing))
    return kind, out


def _metrics(task: str, y: np.ndarray, pred: np.ndarray, positive: Any) -> dict[str, float]:
    from sklearn import metrics as m

    if task == "regression":
        return {
            "rmse": float(m.root_mean_squared_error(y, pred)),
            "mae": float(m.mean_absolute_error(y, pred)),
        }
    average = "binary" if positive is not None else "macro"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a slice may hold a single class
        f1 = m.f1_score(y, pred, average=average, pos_label=1 if positive is None else positive, zero_division=0)
    return {"accuracy": float(m.accuracy_score(y, pred)), "f1": float(f1)}


def slice_table(
    column: str,
    values: Any,
    y: np.ndarray,
    pred: np.ndarray,
    *,
    task: str,
    positive: Any = None,
    baseline_pred: np.ndarray | None = None,
    bins: int = QUANTILE_BINS,
    min_rows: int = MIN_ROWS,
) -> SliceTable:
    """Metrics of each slice of ``values``, a column aligned with ``y`` and ``pred``.

    Classification slices get accuracy and f1 (binary for the label ``positive``, else
    macro; judged by accuracy), regression slices RMSE and MAE (judged by RMSE); with
    ``baseline_pred`` the baseline's judging metric too.
    """
    kind, bins_found = groups(values, bins)
    metric = "rmse" if task == "regression" else "accuracy"
    table = SliceTable(column, kind, metric)
    for label, mask in bins_found:
        rows = int(mask.sum())
        if rows == 0:
            continue
        own = _metrics(task, y[mask], pred[mask], positive)
        base = None
        if baseline_pred is not None:
            base = _metrics(task, y[mask], baseline_pred[mask], positive)[metric]
        table.slices.append(Slice(label, rows, own, base))
    candidates = [i for i, s in enumerate(table.slices) if s.rows >= min_rows] or list(range(len(table.slices)))
    if len(table.slices) > 1 and candidates:
        sign = 1 if metric == "rmse" else -1
        table.weakest = max(candidates, key=lambda i: (sign * table.slices[i].metrics[metric], table.slices[i].rows))
    return table
