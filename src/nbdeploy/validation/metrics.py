"""The metrics of a validation: which exist for a task, and their values from ``sklearn.metrics``.

>>> available("regression", has_proba=False)[:4]
('rmse', 'mae', 'r2', 'mape')
>>> higher_is_better("f1"), higher_is_better("rmse")
(True, False)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CLASSIFICATION",
    "DATA",
    "OPERATIONAL",
    "PROBABILISTIC",
    "REGRESSION",
    "Labels",
    "available",
    "classification_metrics",
    "encode_labels",
    "higher_is_better",
    "regression_metrics",
    "unavailable",
]

CLASSIFICATION = ("accuracy", "balanced_accuracy", "precision", "recall", "f1")
PROBABILISTIC = ("roc_auc", "log_loss", "brier", "ece")  # brier, ece: see calibration.py
REGRESSION = ("rmse", "mae", "r2", "mape")
#: Measured on the model itself: single-row predict latency and serialized size.
OPERATIONAL = ("latency_p50_ms", "latency_p95_ms", "model_size_mb")
#: Measured on the evaluation data against the model's training profile.
DATA = ("max_psi", "drifted_features")
_LOWER_IS_BETTER = {"log_loss", "brier", "ece", "rmse", "mae", "mape", *OPERATIONAL, *DATA}


def available(task: str, has_proba: bool) -> tuple[str, ...]:
    """Every metric a gate may name for a model of this task."""
    if task == "classification":
        own = CLASSIFICATION + (PROBABILISTIC if has_proba else ())
    else:
        own = REGRESSION
    return own + OPERATIONAL + DATA


def unavailable(task: str, has_proba: bool) -> dict[str, str]:
    """Metrics of the task that this model cannot give, with the reason (for error messages)."""
    if task == "classification" and not has_proba:
        why = "needs predicted probabilities, which this model does not give (it has no predict_proba)"
        return dict.fromkeys(PROBABILISTIC, why)
    return {}


def higher_is_better(metric: str) -> bool:
    """Direction of improvement, for coloring deltas against the baseline."""
    return metric not in _LOWER_IS_BETTER


@dataclass(frozen=True)
class Labels:
    """Class labels of a classification: ``values[code]`` is the label of integer ``code``.

    ``positive`` is the code of the positive class of a binary problem (``None`` when there
    are more than two labels: metrics are then macro-averaged).
    """

    values: np.ndarray
    positive: int | None

    @property
    def binary(self) -> bool:
        return self.positive is not None


def encode_labels(y: Any, pred: Any, classes: Any = None) -> tuple[Labels, np.ndarray, np.ndarray]:
    """Integer codes of the true and predicted labels over the union of all labels seen.

    A problem with exactly two labels is binary, its positive class being the model's second
    class (the column ``predict_proba`` scores), as scikit-learn orders them.
    """
    y, pred = np.asarray(y), np.asarray(pred)
    parts = [y, pred] + ([np.asarray(classes)] if classes is not None else [])
    values = np.unique(np.concatenate(parts))
    positive = None
    if values.size == 2:
        pos_label = np.asarray(classes)[1] if classes is not None and len(classes) == 2 else values[1]
        positive = int(np.searchsorted(values, pos_label))
    return Labels(values, positive), np.searchsorted(values, y), np.searchsorted(values, pred)


def classification_metrics(
    y: np.ndarray, pred: np.ndarray, labels: Labels, proba: np.ndarray | None, proba_codes: np.ndarray | None
) -> dict[str, float]:
    """accuracy, balanced accuracy, precision, recall, f1 (binary or macro), and with
    probabilities ROC AUC and log loss. ``y``/``pred`` are label codes; ``proba_codes`` maps
    each probability column to its label code."""
    from sklearn import metrics as m

    average = "binary" if labels.binary else "macro"
    pos = labels.positive if labels.binary else 1
    with warnings.catch_warnings():
        # Undefined ratios (a class never predicted) are 0 by zero_division; balanced accuracy
        # skips classes absent from y after warning, as scikit-learn does.
        warnings.simplefilter("ignore")
        out = {
            "accuracy": m.accuracy_score(y, pred),
            "balanced_accuracy": m.balanced_accuracy_score(y, pred),
            "precision": m.precision_score(y, pred, average=average, pos_label=pos, zero_division=0),
            "recall": m.recall_score(y, pred, average=average, pos_label=pos, zero_division=0),
            "f1": m.f1_score(y, pred, average=average, pos_label=pos, zero_division=0),
        }
        if proba is not None and proba_codes is not None:
            out.update(_probabilistic(y, labels, proba, proba_codes))
    return {k: float(v) for k, v in out.items()}


def _probabilistic(y: np.ndarray, labels: Labels, proba: np.ndarray, codes: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as m

    if not np.isin(y, codes).all():  # a true label the model never learned: no probability for it
        return dict.fromkeys(("roc_auc", "log_loss", "brier", "ece"), float("nan"))
    out = {"log_loss": float(m.log_loss(y, proba, labels=codes))}
    try:
        if labels.binary:
            column = int(np.flatnonzero(codes == labels.positive)[0])
            out["roc_auc"] = float(m.roc_auc_score(y == labels.positive, proba[:, column]))
        else:
            out["roc_auc"] = float(m.roc_auc_score(y, proba, multi_class="ovr", labels=codes))
    except ValueError:  # a single class in y: ROC AUC is undefined
        out["roc_auc"] = float("nan")
    return out


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, R² and MAPE."""
    from sklearn import metrics as m

    return {
        "rmse": float(m.root_mean_squared_error(y, pred)),
        "mae": float(m.mean_absolute_error(y, pred)),
        "r2": float(m.r2_score(y, pred)),
        "mape": float(m.mean_absolute_percentage_error(y, pred)),
    }


def confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """The k x k confusion matrix of label codes (rows: true, columns: predicted)."""
    from sklearn.metrics import confusion_matrix

    return np.asarray(confusion_matrix(y, pred, labels=np.arange(k)))


def roc_points(y_pos: np.ndarray, score: np.ndarray, max_points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates of the ROC curve, thinned to at most ``max_points``."""
    from sklearn.metrics import roc_curve

    if y_pos.all() or not y_pos.any():
        return np.zeros(0), np.zeros(0)
    fpr, tpr, _ = roc_curve(y_pos, score)
    if fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


def residual_summary(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Mean, spread, quantiles and the largest absolute value of ``y - pred``."""
    r = np.asarray(y, dtype=float) - np.asarray(pred, dtype=float)
    q = np.quantile(r, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "mean": float(r.mean()),
        "std": float(r.std()),
        "p5": float(q[0]),
        "p25": float(q[1]),
        "median": float(q[2]),
        "p75": float(q[3]),
        "p95": float(q[4]),
        "max_abs": float(np.abs(r).max()),
    }
