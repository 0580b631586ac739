"""One model on the evaluation data: predictions, point metrics, bootstrap inputs, latency.

>>> s = score(model, X_test, y_test, ref="cancer/2")   # doctest: +SKIP
>>> s.metrics["f1"], s.task                             # doctest: +SKIP
(0.962, 'classification')
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nbdeploy.errors import InvalidInputError
from nbdeploy.tasks import argmax_predict
from nbdeploy.validation import bootstrap, metrics
from nbdeploy.validation.calibration import calibration
from nbdeploy.validation.metrics import Labels

__all__ = ["Scores", "has_proba", "probe_latency", "score"]

LATENCY_CALLS = 50
_WARMUP = 3


@dataclass
class Scores:
    """What the report needs from one model: metrics, plot data and bootstrap inputs."""

    ref: str
    task: str
    pred: np.ndarray
    metrics: dict[str, float]
    statistic: bootstrap.Statistic
    labels: Labels | None = None
    y_codes: np.ndarray | None = None
    pred_codes: np.ndarray | None = None
    confusion: np.ndarray | None = None
    curves: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)
    residuals: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    reliability: list[dict[str, float]] = field(default_factory=list)  # per confidence bin (calibration.py)


def has_proba(model: Any) -> bool:
    """Whether the model gives class probabilities."""
    try:
        return callable(getattr(model, "predict_proba", None))
    except AttributeError:  # estimators that hide predict_proba for some settings (SVC)
        return False


def _predict(model: Any, X: Any, task: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        if task == "classification" and has_proba(model):
            proba = np.asarray(model.predict_proba(X))
            if argmax_predict(model):
                return np.asarray(model.classes_).take(proba.argmax(axis=1)), proba
            return np.asarray(model.predict(X)), proba
        return np.asarray(model.predict(X)), None
    except Exception as exc:
        raise InvalidInputError(f"The model cannot predict on the data ({type(exc).__name__}: {exc}).") from None


def score(model: Any, X: Any, y: Any, *, ref: str, task: str | None = None) -> Scores:
    """Predict once and compute every point metric of the task with ``sklearn.metrics``."""
    from nbdeploy.tasks import detect_task

    task = task or detect_task(model)
    pred, proba = _predict(model, X, task)
    y = np.asarray(y)
    if task == "regression":
        try:
            yf, pf = y.astype(float), pred.astype(float)
        except (TypeError, ValueError):
            raise InvalidInputError("The target of a regression model must be numeric.") from None
        return Scores(
            ref,
            task,
            pred,
            metrics.regression_metrics(yf, pf),
            bootstrap.regression(yf, pf),
            residuals=metrics.residual_summary(yf, pf),
        )
    classes = getattr(model, "classes_", None)
    try:
        labels, yc, pc = metrics.encode_labels(y, pred, classes)
    except TypeError:
        raise InvalidInputError(
            "The target's labels cannot be compared with the model's classes (mixed types)."
        ) from None
    codes = None
    if proba is not None and classes is not None:
        codes = np.searchsorted(labels.values, np.asarray(classes))
    else:
        proba = None
    values = metrics.classification_metrics(yc, pc, labels, proba, codes)
    cal = None
    if proba is not None and codes is not None and np.isin(yc, codes).all():
        cal = calibration(yc, proba, codes, labels.positive)
        values.update(cal.point)
    rows = cal.rows if cal is not None else None
    out = Scores(
        ref,
        task,
        pred,
        values,
        bootstrap.classification(yc, pc, labels.values.size, labels.positive, proba, codes, rows),
        labels=labels,
        y_codes=yc,
        pred_codes=pc,
        confusion=metrics.confusion(yc, pc, labels.values.size),
    )
    out.reliability = cal.curve if cal is not None else []
    if proba is not None and codes is not None and np.isfinite(values.get("roc_auc", np.nan)):
        columns = [int(np.flatnonzero(codes == labels.positive)[0])] if labels.binary else range(codes.size)
        for c in columns:
            fpr, tpr = metrics.roc_points(yc == codes[c], proba[:, c])
            if fpr.size:
                out.curves.append((str(labels.values[codes[c]]), fpr, tpr))
    if proba is not None and np.isnan(values.get("roc_auc", 0.0)):
        out.notes.append("ROC AUC and log loss are undefined: the data lacks a class, or has one the model lacks.")
    return out


def probe_latency(model: Any, X: Any, calls: int = LATENCY_CALLS, seed: int = 0) -> dict[str, float]:
    """p50 and p95 of single-row ``predict`` latency in milliseconds, over ``calls`` rows.

    The rows are drawn from ``X`` and sliced before the clock starts; a few warm-up calls
    are not counted.
    """
    n = len(X)
    if calls <= 0 or n == 0:
        return {}
    rows = np.random.default_rng(seed).integers(0, n, size=calls + _WARMUP)
    singles = [X.iloc[[i]] if hasattr(X, "iloc") else np.asarray(X)[i : i + 1] for i in rows]
    times = []
    for i, row in enumerate(singles):
        start = time.perf_counter()
        model.predict(row)
        if i >= _WARMUP:
            times.append(time.perf_counter() - start)
    ms = np.asarray(times) * 1000
    return {"latency_p50_ms": float(np.percentile(ms, 50)), "latency_p95_ms": float(np.percentile(ms, 95))}
