"""What kind of problem a model solves, and the metrics that fit it."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from nbdeploy.errors import InvalidInputError

__all__ = ["check_fitted", "detect_task", "training_metrics"]

Task = Literal["classification", "regression"]


def check_fitted(model: Any) -> None:
    """Raise :class:`InvalidInputError` unless ``model`` is a fitted scikit-learn estimator."""
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    kind = type(model).__name__
    if not isinstance(model, BaseEstimator) or not hasattr(model, "predict"):
        raise InvalidInputError(f"The model is of type {kind}, not a scikit-learn estimator with a predict method.")
    try:
        check_is_fitted(model)
    except NotFittedError:
        raise InvalidInputError(f"The model {kind} is not fitted yet: call .fit(X, y) before registering it.") from None


def detect_task(model: Any) -> Task:
    """``"classification"`` for classifiers (including pipelines ending in one), else regression."""
    from sklearn.base import is_classifier

    return "classification" if is_classifier(model) else "regression"


def training_metrics(task: Task, y_true: Any, y_pred: Any) -> dict[str, float]:
    """Headline metrics on the training data: accuracy and f1, or rmse and r2."""
    from sklearn import metrics

    if task == "classification":
        labels = np.unique(np.asarray(y_true))
        average = "binary" if labels.size == 2 else "macro"
        pos = labels[-1] if labels.size == 2 else 1
        return {
            "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
            "f1": float(metrics.f1_score(y_true, y_pred, average=average, pos_label=pos)),
        }
    if task == "regression":
        return {
            "rmse": float(metrics.root_mean_squared_error(y_true, y_pred)),
            "r2": float(metrics.r2_score(y_true, y_pred)),
        }
    raise InvalidInputError(f"Unknown task {task!r}: expected 'classification' or 'regression'.")
