"""Permutation importance and partial dependence, computed in a few large predict calls.

:func:`sklearn.inspection.permutation_importance` predicts once per feature and shuffle,
and :func:`~sklearn.inspection.partial_dependence` once per grid point: 150 calls for 30
features and 5 shuffles, each paying the model's fixed cost (about 10 ms for a 100-tree
forest, more than the rows cost). Here every perturbed copy of the data is stacked into
one frame (or a few, at most ``MAX_CELLS`` cells each) and predicted at once. The numbers
are scikit-learn's: the shuffles are drawn exactly as ``permutation_importance`` draws
them for the same ``random_state``, and, for a given grid, partial dependence is
``partial_dependence(..., method="brute", custom_values=grid)``'s; tests/test_explain.py
checks both against ``sklearn.inspection`` to 1e-12. The grid itself is ours: values the
column holds (scikit-learn interpolates between quantiles).

A perturbed copy is described by row indices per column, so that any column type a
pipeline takes (categoricals, strings, nullable integers) is copied with ``take`` and
keeps its dtype; a grid point of partial dependence is therefore a value the column holds.

>>> drops = permutation_drops(model.predict_proba, X, log_loss_of_y, repeats=5, random_state=0)  # doctest: +SKIP
>>> drops.shape   # (features, repeats)                                                     # doctest: +SKIP
(30, 5)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["MAX_CELLS", "dependence", "grid", "permutation_drops", "predict_variants"]

#: The largest stacked frame predicted in one call (rows x columns): about 32 MB of floats.
MAX_CELLS = 4_000_000
#: Partial dependence grid: at most this many points, between these quantiles (scikit-learn's).
GRID_POINTS = 20
GRID_RANGE = (0.05, 0.95)
#: Numeric columns with at most this many values are a grid of their values.
FEW_VALUES = 10

#: A perturbed copy of the data: (column position, row indices that column takes).
Variant = tuple[int, np.ndarray]


def _stack(X: pd.DataFrame, chunk: Sequence[Variant], as_array: bool) -> Any:
    """The variants of ``chunk`` one under another: a numeric frame as one array (fast), any
    other column by ``take`` (keeps categoricals, strings, nullable integers); by position, so
    duplicate column names survive."""
    n, width = X.shape
    if all(isinstance(t, np.dtype) and t.kind in "biuf" for t in X.dtypes):
        base = X.to_numpy()
        stacked = np.tile(base, (len(chunk), 1))
        for b, (col, rows) in enumerate(chunk):
            if col >= 0:
                stacked[b * n : (b + 1) * n, col] = base[rows, col]
        return stacked if as_array else pd.DataFrame(stacked, columns=X.columns).astype(dict(X.dtypes))
    parts = {}
    for j in range(width):
        index = np.tile(np.arange(n), len(chunk))
        for b, (col, rows) in enumerate(chunk):
            if col == j:
                index[b * n : (b + 1) * n] = rows
        parts[j] = X.iloc[:, j].reset_index(drop=True).take(index).reset_index(drop=True)
    frame = pd.DataFrame(parts)
    frame.columns = X.columns
    return frame.to_numpy() if as_array else frame


def predict_variants(call: Callable[[Any], Any], X: pd.DataFrame, as_array: bool, variants: Sequence[Variant],
                     reduce: Callable[[np.ndarray], Any] = lambda out: out) -> list[Any]:  # fmt: skip
    """``reduce(call(variant))`` for each variant of ``X`` (one column re-indexed), the
    variants stacked into as few calls as ``MAX_CELLS`` allows. Only what ``reduce`` keeps
    outlives a call, so memory stays bounded by a chunk however many variants there are."""
    n, width = X.shape
    per_call = max(1, MAX_CELLS // max(1, n * width))
    out = []
    for start in range(0, len(variants), per_call):
        chunk = variants[start : start + per_call]
        result = np.asarray(call(_stack(X, chunk, as_array))).reshape(len(chunk), n, -1)
        out += [reduce(block) for block in result]
    return out


def _shuffles(n: int, repeats: int, random_state: int) -> list[np.ndarray]:
    """The row orders ``permutation_importance`` gives each feature for this ``random_state``:
    a seed drawn from it, then ``repeats`` shuffles each applied to the previous order."""
    seed = np.random.RandomState(random_state).randint(np.iinfo(np.int32).max + 1)
    rng = np.random.RandomState(seed)
    shuffling, current, orders = np.arange(n), np.arange(n), []
    for _ in range(repeats):
        rng.shuffle(shuffling)
        current = current[shuffling]
        orders.append(current)
    return orders


def permutation_drops(call: Callable[[Any], Any], X: pd.DataFrame, score: Callable[[np.ndarray], float], *,
                      repeats: int, random_state: int, as_array: bool = False) -> np.ndarray:  # fmt: skip
    """How much ``score`` (of ``call``'s output, lower is better) rises when each column is
    shuffled: ``(columns, repeats)``. With ``call=model.predict_proba`` and ``score`` the
    log loss, this is ``permutation_importance(..., scoring="neg_log_loss").importances``
    for the same ``random_state``."""
    orders = _shuffles(len(X), repeats, random_state)
    variants: list[Variant] = [(-1, np.arange(len(X)))]  # column -1: no column changed
    variants += [(j, order) for j in range(X.shape[1]) for order in orders]
    scores = predict_variants(call, X, as_array, variants, reduce=score)
    drops = np.array(scores[1:], dtype=float).reshape(X.shape[1], repeats) - scores[0]
    if not np.isfinite(drops).all():
        raise ValueError("the model's outputs on shuffled rows are not all finite numbers")
    return drops


def grid(values: pd.Series) -> tuple[str, np.ndarray]:
    """A partial dependence grid as row positions holding each grid value, and its kind:
    ``numeric`` (up to ``GRID_POINTS`` quantiles within ``GRID_RANGE``, as values the column
    holds) or ``values`` (the most frequent values of a categorical or few-valued column)."""
    column = values.reset_index(drop=True)
    present = column.notna().to_numpy()
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    if numeric and column.nunique() > FEW_VALUES:
        x = column.to_numpy(dtype=float, na_value=np.nan)
        order = np.flatnonzero(present)[np.argsort(x[present], kind="stable")]
        quantiles = np.linspace(*GRID_RANGE, GRID_POINTS)
        picks = order[np.round(quantiles * (order.size - 1)).astype(int)]
        _, first = np.unique(x[picks], return_index=True)
        return "numeric", picks[np.sort(first)]
    text = column.astype("string")
    counts = text[present].value_counts(sort=True)
    values = list(counts.index[:GRID_POINTS])
    if numeric:  # a few numbers: in their order on the axis, not by frequency
        first_rows = {v: int(np.flatnonzero((text == v).fillna(False).to_numpy(dtype=bool))[0]) for v in values}
        return "values", np.asarray(sorted(first_rows.values(), key=lambda r: column.iloc[r]), dtype=int)
    rows = [int(np.flatnonzero((text == value).fillna(False).to_numpy(dtype=bool))[0]) for value in values]
    return "values", np.asarray(rows, dtype=int)


def dependence(call: Callable[[Any], Any], X: pd.DataFrame, column: int, points: np.ndarray,
               as_array: bool = False) -> np.ndarray:  # fmt: skip
    """Individual conditional expectations: ``call``'s output for every row with ``column``
    set to each grid point's value; shape ``(points, rows, outputs)``. Their mean over rows
    is the partial dependence."""
    variants = [(column, np.full(len(X), p)) for p in points]
    return np.stack(predict_variants(call, X, as_array, variants))
