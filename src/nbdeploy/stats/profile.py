"""Training-data profiles: what validation and monitoring measure drift against.

A profile is a JSON-ready dict (format ``nbdeploy.profile/1``)::

    {"format": "nbdeploy.profile/1", "rows": 455, "fingerprint": "3f2a…",
     "columns": [
        {"name": "age", "kind": "numeric", "dtype": "float64", "missing": 0.0,
         "min": 18.0, "max": 90.0, "mean": 41.2, "std": 12.9,
         "edges": [25.0, 31.0, …], "counts": [46, 45, …]},
        {"name": "city", "kind": "categorical", "dtype": "object", "missing": 0.0,
         "frequencies": {"Paris": 0.41, …}, "other": 0.02}]}

``edges`` are the inner cut points of quantile bins; :func:`bin_index` maps values to
bins the same way everywhere (``len(edges) + 1`` bins).

>>> import pandas as pd
>>> p = compute_profile(pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}))
>>> p["rows"], p["columns"][0]["kind"]
(4, 'numeric')
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["as_frame", "bin_index", "compute_profile", "fingerprint"]

FORMAT = "nbdeploy.profile/1"
N_BINS = 10
MAX_CATEGORIES = 50


def as_frame(X: Any) -> pd.DataFrame:
    """A DataFrame view of ``X``; arrays get columns named ``"0"``, ``"1"``, …"""
    if isinstance(X, pd.DataFrame):
        return X
    if isinstance(X, pd.Series):
        return X.to_frame()
    arr = np.asarray(X)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or (arr.dtype == object and arr.size and callable(arr.flat[0])):
        from nbdeploy.errors import InvalidInputError

        raise InvalidInputError(
            f"The data is a {type(X).__name__}, not a table: pass a DataFrame or a 2-D array "
            "(did you forget the parentheses of a method call?)."
        )
    return pd.DataFrame(arr, columns=[str(i) for i in range(arr.shape[1])])


def fingerprint(X: Any) -> str:
    """A stable 16-hex-digit digest of the values and column names of ``X``."""
    frame = as_frame(X)
    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def bin_index(edges: np.ndarray | list[float], values: np.ndarray) -> np.ndarray:
    """Bin of each value for the given inner edges (a value equal to an edge goes right)."""
    return np.searchsorted(np.asarray(edges, dtype=float), values, side="right")


def _numeric(col: pd.Series) -> dict[str, Any]:
    values = col.to_numpy(dtype=float, na_value=np.nan)
    missing = np.isnan(values)
    present = values[~missing]
    out: dict[str, Any] = {"kind": "numeric", "missing": float(missing.sum() / max(values.size, 1))}
    if present.size == 0:
        return {**out, "min": None, "max": None, "mean": None, "std": None, "edges": [], "counts": []}
    qs = np.quantile(present, np.linspace(0, 1, N_BINS + 1)[1:-1])
    edges = np.unique(qs)
    counts = np.bincount(bin_index(edges, present), minlength=edges.size + 1)
    return {
        **out,
        "min": float(present.min()),
        "max": float(present.max()),
        "mean": float(present.mean()),
        "std": float(present.std()),
        "edges": edges.tolist(),
        "counts": counts.tolist(),
    }


def _categorical(col: pd.Series) -> dict[str, Any]:
    n = len(col)
    freq = col.astype("string").value_counts(dropna=True)
    top = freq.iloc[:MAX_CATEGORIES]
    return {
        "kind": "categorical",
        "missing": float(col.isna().mean()) if n else 0.0,
        "frequencies": {str(k): float(v / max(n, 1)) for k, v in top.items()},
        "other": float(freq.iloc[MAX_CATEGORIES:].sum() / max(n, 1)),
    }


def compute_profile(X: Any) -> dict[str, Any]:
    """Profile every column of ``X`` (DataFrame or array) for later drift checks."""
    frame = as_frame(X)
    columns = []
    for name in frame.columns:
        col = frame[name]
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        stats = _numeric(col) if numeric else _categorical(col)
        columns.append({"name": str(name), "dtype": str(col.dtype), **stats})
    return {"format": FORMAT, "rows": len(frame), "fingerprint": fingerprint(frame), "columns": columns}
