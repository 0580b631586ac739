"""Drift of new data against a training-data profile (numpy and scipy only).

Validation calls it on the evaluation data; monitoring calls it on windows of requests.
Each feature gets three numbers, all computed from one pass over the new values:

- **PSI** (population stability index) over the profile's own bins (``edges`` for numeric
  columns, the stored categories plus "other" for categorical ones);
- **KS** for numeric columns: the largest gap between the training and the new cumulative
  distribution, read at the profile's cut points (its min, decile edges and max). It is a
  lower bound of the exact two-sample KS statistic, so its p-value errs on the side of
  "no drift"; it costs the same pass as PSI instead of a sort of the new values;
- **chi-square** for categorical columns: the two-sample test of homogeneity between the
  training frequencies and the new counts.

Missing values are left out of all three (the validation report counts them separately).
Monitoring can keep running :func:`counts` per window and call :func:`drift_from_counts`.

>>> import numpy as np
>>> col = {"name": "x", "kind": "numeric", "min": 0.0, "max": 9.0, "edges": [3.0, 6.0],
...        "counts": [30, 30, 40]}
>>> d = column_drift(col, np.linspace(0, 9, 100))
>>> d.name, d.test, d.status
('x', 'ks', 'ok')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "DRIFT_PSI",
    "P_VALUE",
    "WATCH_PSI",
    "FeatureDrift",
    "column_drift",
    "counts",
    "drift_from_counts",
    "frame_drift",
    "numeric_bins",
    "numeric_cuts",
    "psi",
]

#: PSI at or above which a feature has drifted (when the test agrees, see ``P_VALUE``).
DRIFT_PSI = 0.25
#: PSI at or above which a feature is worth watching.
WATCH_PSI = 0.1
#: A statistic is only reported as drift if its test is significant at this level, so that
#: the noise of small samples (PSI of 10 bins over 100 rows is ~0.09 by chance) is not drift.
P_VALUE = 0.05
_EPS = 1e-4  # floor of bin proportions in PSI, so an empty bin does not make it infinite


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature: PSI, the test's statistic and p-value, and a status.

    ``status`` is ``"drift"`` (PSI >= ``DRIFT_PSI`` and p < ``P_VALUE``), ``"watch"``
    (PSI >= ``WATCH_PSI`` and p < ``P_VALUE``), ``"ok"``, ``"no data"`` when either side
    has no non-missing value, or ``"type mismatch"`` when the values are not numbers.
    """

    name: str
    kind: str
    rows: int
    psi: float
    test: str
    statistic: float
    p_value: float
    status: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with NaN as ``None``."""
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(self).items()}


def psi(expected: Iterable[float], actual: Iterable[float], eps: float = _EPS) -> float:
    """Population stability index between two count (or proportion) vectors over the same bins.

    >>> round(psi([50, 50], [50, 50]), 6), round(psi([50, 50], [90, 10]), 3)
    (0.0, 0.879)
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.sum() <= 0 or a.sum() <= 0:
        return float("nan")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def _as_float(values: Any) -> np.ndarray:
    if hasattr(values, "to_numpy"):  # pandas, including nullable dtypes, without importing it
        return np.asarray(values.to_numpy(dtype=float, na_value=np.nan), dtype=float)
    return np.asarray(values, dtype=float).ravel()


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT
    except (TypeError, ValueError):  # pandas.NA refuses bool()
        return True


_is_missing = np.frompyfunc(_missing, 1, 1)


def _as_strings(values: Any) -> np.ndarray:
    """Non-missing values as strings, the way the profile stored its categories."""
    arr = values.to_numpy(dtype=object) if hasattr(values, "to_numpy") else np.asarray(values, dtype=object)
    arr = arr.ravel()
    if arr.size == 0:
        return arr.astype(str)
    present = arr[~_is_missing(arr).astype(bool)]
    return present.astype(str)


def numeric_cuts(column: Mapping[str, Any]) -> np.ndarray:
    """The cut points :func:`counts` bins a numeric column with: its training min, the
    profile's edges, and just above its max (``len(edges) + 3`` bins)."""
    hi = np.nextafter(float(column["max"]), np.inf)
    return np.asarray([float(column["min"]), *column["edges"], hi], dtype=float)


def numeric_bins(cuts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The bin of each value: the number of ``cuts`` at or below it (NaN: ``len(cuts) + 1``,
    a slot of its own). Values and cuts are compared as float64 always: a value stored in
    float32 that sits on an edge would move to the next bin (false drift on columns with few
    distinct values)."""
    x = np.asarray(values, dtype=np.float64)
    found = np.searchsorted(np.asarray(cuts, dtype=np.float64), x, side="right")
    found[np.isnan(x)] = len(cuts) + 1
    return found


def counts(column: Mapping[str, Any], values: Any) -> np.ndarray:
    """Counts of the non-missing ``values`` in the bins of a profile ``column``.

    Numeric: ``len(edges) + 3`` bins — below the training min, the profile's
    ``len(edges) + 1`` bins, above the training max. Categorical: one bin per stored
    category (in the profile's order), then one for every other value. Counts add up, so
    monitoring can sum them over windows before calling :func:`drift_from_counts`.
    """
    if column["kind"] == "numeric":
        if column.get("min") is None:
            return np.zeros(0, dtype=np.int64)
        x = _as_float(values)
        cuts = numeric_cuts(column)
        # bin = number of cuts <= x, in float64: the rule of numeric_bins. Counting x >= cut for
        # each of the ~12 cuts is 4x faster than searchsorted over x, and NaN drops out by itself.
        at_least = np.array([np.count_nonzero(x >= c) for c in cuts], dtype=np.int64)
        valid = x.size - np.count_nonzero(np.isnan(x))
        return -np.diff(np.concatenate([[valid], at_least, [0]]))
    categories = list(column.get("frequencies", {}))
    strings = _as_strings(values)
    uniq, n = np.unique(strings, return_counts=True)
    position = {c: i for i, c in enumerate(categories)}
    out = np.zeros(len(categories) + 1, dtype=np.int64)
    where = np.asarray([position.get(u, len(categories)) for u in uniq.tolist()], dtype=np.int64)
    np.add.at(out, where, n)
    return out


def _reference(column: Mapping[str, Any]) -> np.ndarray:
    """The training counts laid out like :func:`counts`."""
    if column["kind"] == "numeric":
        return np.asarray([0, *column.get("counts", []), 0], dtype=float)
    # Frequencies are fractions of all training rows; times the row count they are counts.
    freqs = [*column.get("frequencies", {}).values(), column.get("other", 0.0)]
    return np.asarray(freqs, dtype=float) * float(column.get("rows") or 1)


def _ks(ref: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    # imported here: a server whose model needs no scipy.stats starts ~0.8 s sooner without it
    from scipy import stats

    n, m = ref.sum(), new.sum()
    gap = np.abs(np.cumsum(ref)[:-1] / n - np.cumsum(new)[:-1] / m)
    d = float(gap.max()) if gap.size else 0.0
    en = max(round(n * m / (n + m)), 1)
    # The exact distribution costs ~6 ms per call at these sizes; like scipy's ks_2samp
    # (mode="auto"), use it only while both samples have at most 10,000 values.
    p = stats.kstwo.sf(d, en) if max(n, m) <= 10_000 else stats.kstwobign.sf(d * np.sqrt(en))
    return d, float(p)


def _chi2(ref: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    from scipy import stats  # see _ks

    observed = np.vstack([ref, new])
    keep = observed.sum(axis=0) > 0
    observed = observed[:, keep]
    if observed.shape[1] < 2:
        return 0.0, 1.0
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0) / observed.sum()
    stat = float(np.sum((observed - expected) ** 2 / expected))
    return stat, float(stats.chi2.sf(stat, observed.shape[1] - 1))


def _status(value: float, p: float) -> str:
    if p < P_VALUE and value >= DRIFT_PSI:
        return "drift"
    if p < P_VALUE and value >= WATCH_PSI:
        return "watch"
    return "ok"


def drift_from_counts(column: Mapping[str, Any], new_counts: Iterable[int]) -> FeatureDrift:
    """Drift of one feature from counts laid out like :func:`counts` returns them.

    ``column`` is one entry of a profile's ``"columns"``; a categorical column also needs
    ``column["rows"]``, the profile's row count, to turn its frequencies into counts for the
    chi-square test (:func:`frame_drift` adds it).
    """
    new = np.asarray(list(new_counts), dtype=float)
    ref = _reference(column)
    name, kind = str(column["name"]), str(column["kind"])
    test = "ks" if kind == "numeric" else "chi2"
    nan = float("nan")
    if new.size != ref.size or new.sum() <= 0 or ref.sum() <= 0:
        return FeatureDrift(name, kind, int(new.sum()), nan, test, nan, nan, "no data")
    if kind == "numeric":
        # PSI over the profile's own bins: out-of-range values join the end bins.
        merged = new[1:-1].copy()
        merged[0] += new[0]
        merged[-1] += new[-1]
        value = psi(ref[1:-1], merged)
        stat, p = _ks(ref, new)
    else:
        value = psi(ref, new)
        stat, p = _chi2(ref, new)
    return FeatureDrift(name, kind, int(new.sum()), value, test, stat, p, _status(value, p))


def column_drift(column: Mapping[str, Any], values: Any) -> FeatureDrift:
    """Drift of ``values`` (array or pandas Series) against one profile ``column``.

    Values that cannot be read as numbers for a numeric column give status ``"type mismatch"``.
    """
    try:
        new = counts(column, values)
    except (TypeError, ValueError):
        nan = float("nan")
        test = "ks" if column["kind"] == "numeric" else "chi2"
        return FeatureDrift(str(column["name"]), str(column["kind"]), 0, nan, test, nan, nan, "type mismatch")
    return drift_from_counts(column, new)


def frame_drift(profile: Mapping[str, Any], data: Any, columns: Iterable[str] | None = None) -> list[FeatureDrift]:
    """Drift of every profiled column present in ``data`` (a DataFrame or a mapping of arrays).

    >>> frame_drift(profile, X_test)[0].psi   # doctest: +SKIP
    0.031
    """
    wanted = None if columns is None else set(columns)
    keys = data.columns if hasattr(data, "columns") else data.keys()
    present = {str(k): k for k in keys}  # profiles name array columns "0", "1", ...
    out = []
    for column in profile["columns"]:
        name = column["name"]
        if name in present and (wanted is None or name in wanted):
            out.append(column_drift({**column, "rows": profile.get("rows")}, data[present[name]]))
    return out
