"""Bootstrap confidence intervals, vectorised.

The row indices of every resample are drawn once, from a seeded generator, and shared by
every metric and every model (so a model and its baseline are compared on the same
resamples: the interval of their difference is a paired one). Each resample is turned into
a count per row, and every metric is a function of a few sums of per-row columns weighted
by those counts — a sparse product for one-hot columns (confusion cells, ROC score buckets)
and a dense one for numeric columns (errors, log losses). Replicates are therefore never
computed by calling ``sklearn.metrics`` in a loop; the tests check each formula against
``sklearn.metrics`` on resamples.

>>> import numpy as np
>>> y = np.array([0, 1, 1, 0, 1, 1, 0, 1])
>>> stat = classification(y, y, k=2, positive=1)
>>> reps = replicates([stat], n=8, resamples=50, seed=0)[0]
>>> float(reps["accuracy"].min())
1.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from nbdeploy.validation.calibration import Calibration

__all__ = [
    "LEVEL",
    "RESAMPLES",
    "SEED",
    "Statistic",
    "classification",
    "confusion_replicates",
    "interval",
    "quantile",
    "regression",
    "replicates",
    "resample_chunks",
]

RESAMPLES = 200
SEED = 0
LEVEL = 0.95
# Resamples per chunk are chosen so a chunk holds about this many indices: the count
# matrix stays in cache and memory stays flat whatever the number of rows.
_CHUNK_CELLS = 1 << 18

Finish = Callable[[np.ndarray, np.ndarray, int], dict[str, np.ndarray]]


@dataclass
class Statistic:
    """What one model needs summed per resample, and how the sums become metric replicates.

    ``onehot`` (K x n, sparse) and ``values`` (k x n) are per-row columns; ``finish`` gets
    their count-weighted sums (b x K and b x k for b resamples) and the row count.
    """

    onehot: sparse.csr_matrix | None
    values: np.ndarray | None
    finish: Finish


def resample_chunks(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> Iterator[np.ndarray]:
    """Row indices of ``resamples`` resamples of ``n`` rows, as (b, n) chunks, reproducibly."""
    rng = np.random.default_rng(seed)
    size = max(1, min(resamples, _CHUNK_CELLS // max(n, 1)))
    done = 0
    while done < resamples:
        b = min(size, resamples - done)
        yield rng.integers(0, n, size=(b, n), dtype=np.int64)
        done += b


def replicates(
    statistics: Sequence[Statistic], n: int, resamples: int = RESAMPLES, seed: int = SEED
) -> list[dict[str, np.ndarray]]:
    """For each statistic, every metric's ``resamples`` replicates (NaN where undefined)."""
    parts: list[dict[str, list[np.ndarray]]] = [{} for _ in statistics]
    for idx in resample_chunks(n, resamples, seed):
        b = idx.shape[0]
        flat = (idx + (np.arange(b) * n)[:, None]).ravel()
        weights = np.ascontiguousarray(np.bincount(flat, minlength=b * n).reshape(b, n).T, dtype=float)
        empty = np.zeros((b, 0))
        for stat, part in zip(statistics, parts, strict=True):
            oh = np.asarray(stat.onehot @ weights).T if stat.onehot is not None else empty
            vs = (stat.values @ weights).T if stat.values is not None else empty
            for name, reps in stat.finish(oh, vs, n).items():
                part.setdefault(name, []).append(reps)
    return [{name: np.concatenate(chunks) for name, chunks in part.items()} for part in parts]


def interval(reps: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of the replicates; NaN when fewer than half of them are defined."""
    return quantile(reps, (1 - level) / 2), quantile(reps, (1 + level) / 2)


def quantile(reps: np.ndarray, q: float) -> float:
    """The ``q`` quantile of the replicates (a one-sided percentile bound); NaN when fewer
    than half of them are defined."""
    finite = reps[np.isfinite(reps)]
    if finite.size == 0 or finite.size < reps.size / 2:
        return float("nan")
    return float(np.percentile(finite, 100 * q))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (scikit-learn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def confusion_replicates(cm: np.ndarray, positive: int | None) -> dict[str, np.ndarray]:
    """accuracy, balanced accuracy, precision, recall and f1 from (b, k, k) confusion counts.

    Binary when ``positive`` is a class code, else macro-averaged over the classes present
    in the resample's true or predicted labels (as ``sklearn.metrics`` does).
    """
    diag = np.diagonal(cm, axis1=1, axis2=2).astype(float)
    support = cm.sum(axis=2).astype(float)  # true counts per class
    predicted = cm.sum(axis=1).astype(float)
    total = support.sum(axis=1)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        balanced = np.where(present, diag / np.where(present, support, 1), 0).sum(1) / present.sum(1)
    out = {"accuracy": diag.sum(1) / total, "balanced_accuracy": balanced}
    if positive is not None:
        tp, fp, fn = diag[:, positive], predicted[:, positive] - diag[:, positive], support[:, positive]
        fn = fn - tp
        out["precision"] = _ratio(tp, tp + fp)
        out["recall"] = _ratio(tp, tp + fn)
        out["f1"] = _ratio(2 * tp, 2 * tp + fp + fn)
        return out
    seen = (support + predicted) > 0
    count = seen.sum(1)
    out["precision"] = (_ratio(diag, predicted) * seen).sum(1) / count
    out["recall"] = (_ratio(diag, support) * seen).sum(1) / count
    out["f1"] = (_ratio(2 * diag, support + predicted) * seen).sum(1) / count
    return out


def _auc(hist: np.ndarray) -> np.ndarray:
    """ROC AUC per resample from (b, 2, U) counts of (negative/positive, score bucket)."""
    neg, pos = hist[:, 0, :], hist[:, 1, :]
    below = np.cumsum(neg, axis=1)  # negatives scored at most as high; ties count half, so:
    pairs = np.einsum("ij,ij->i", pos, below) - 0.5 * np.einsum("ij,ij->i", pos, neg)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pairs / (pos.sum(1) * below[:, -1])


def _scorable(y: np.ndarray, positive: int | None, proba_codes: np.ndarray | None) -> bool:
    """Probabilities exist for every true label (and for the positive class)."""
    if proba_codes is None or not np.isin(y, proba_codes).all():
        return False
    return positive is None or bool(np.isin(positive, proba_codes))


def classification(
    y: np.ndarray,
    pred: np.ndarray,
    k: int,
    positive: int | None,
    proba: np.ndarray | None = None,
    proba_codes: np.ndarray | None = None,
    calibration_rows: np.ndarray | None = None,
) -> Statistic:
    """Replicates of the classification metrics for label codes ``y``/``pred`` in ``range(k)``.

    With ``proba`` (columns labelled by ``proba_codes``) also ROC AUC (binary, or one-vs-rest
    macro) and log loss, computed exactly as ``sklearn.metrics`` does (ties count half), and
    with ``calibration_rows`` (:class:`~nbdeploy.validation.calibration.Calibration`) the
    Brier score and the ECE.
    """
    n = y.size
    rows = [y * k + pred]
    blocks = [k * k]
    curves: list[int] = []  # number of score buckets of each ROC curve, in order
    values = None
    if _scorable(y, positive, proba_codes) and proba is not None and proba_codes is not None:
        columns = [int(np.flatnonzero(proba_codes == positive)[0])] if positive is not None else range(proba_codes.size)
        for c in columns:
            buckets, code = np.unique(proba[:, c], return_inverse=True)
            rows.append(code.ravel() + buckets.size * (y == proba_codes[c]))
            blocks.append(2 * buckets.size)
            curves.append(buckets.size)
        eps = np.finfo(proba.dtype).eps
        p_true = proba[np.arange(n), np.searchsorted(proba_codes, y)]
        values = -np.log(np.clip(p_true, eps, 1 - eps))[None, :]
        if calibration_rows is not None:
            values = np.vstack([values, calibration_rows])
    offsets = np.cumsum([0, *blocks])
    onehot = sparse.csr_matrix(
        (
            np.ones(n * len(rows)),
            (
                np.concatenate([r + o for r, o in zip(rows, offsets, strict=False)]),
                np.tile(np.arange(n), len(rows)),
            ),
        ),
        shape=(int(offsets[-1]), n),
    )

    def finish(oh: np.ndarray, vs: np.ndarray, n: int) -> dict[str, np.ndarray]:
        out = confusion_replicates(oh[:, : k * k].reshape(-1, k, k), positive)
        if curves:
            start, aucs = k * k, []
            for size in curves:
                aucs.append(_auc(oh[:, start : start + 2 * size].reshape(-1, 2, size)))
                start += 2 * size
            out["roc_auc"] = np.mean(aucs, axis=0)  # NaN when a class is absent from a resample
            out["log_loss"] = vs[:, 0] / n
            if vs.shape[1] > 1:
                out.update(Calibration.finish(vs[:, 1:], n))
        return out

    return Statistic(onehot, values, finish)


def regression(y: np.ndarray, pred: np.ndarray) -> Statistic:
    """Replicates of RMSE, MAE, R² and MAPE (MAPE with scikit-learn's epsilon floor on |y|)."""
    y = np.asarray(y, dtype=float)
    err = y - np.asarray(pred, dtype=float)
    centred = y - y.mean()  # R² from centred sums stays exact when |mean| >> spread
    ape = np.abs(err) / np.maximum(np.abs(y), np.finfo(np.float64).eps)
    values = np.vstack([err**2, np.abs(err), ape, centred, centred**2])

    def finish(oh: np.ndarray, vs: np.ndarray, n: int) -> dict[str, np.ndarray]:
        sse, sae, sape, s1, s2 = vs.T
        sst = s2 - s1**2 / n
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = np.where(sst > 0, 1 - sse / sst, np.where(sse == 0, 1.0, 0.0))
        return {"rmse": np.sqrt(sse / n), "mae": sae / n, "r2": r2, "mape": sape / n}

    return Statistic(None, values, finish)
