"""What kind of problem a model solves, and the metrics that fit it."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from nbdeploy.errors import Docs, InvalidInputError

__all__ = ["argmax_predict", "check_fitted", "detect_task", "training_metrics"]

Task = Literal["classification", "regression"]


def check_fitted(model: Any) -> None:
    """Raise :class:`InvalidInputError` unless ``model`` is a fitted scikit-learn estimator."""
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    kind = type(model).__name__
    if not isinstance(model, BaseEstimator) or not hasattr(model, "predict"):
        raise InvalidInputError(
            f"The model is of type {kind}, not a scikit-learn estimator with a predict method.", docs=Docs.WHICH_MODELS
        )
    try:
        check_is_fitted(model)
    except NotFittedError:
        raise InvalidInputError(
            f"The model {kind} is not fitted yet: call .fit(X, y) before registering it.", docs=Docs.WHICH_MODELS
        ) from None


def argmax_predict(model: Any) -> bool:
    """True when scikit-learn's own ``predict`` is ``classes_[argmax(predict_proba)]``.

    Then one ``predict_proba`` pass gives both, and a validation (or a served batch with its
    confidences) costs one prediction of the data instead of two. Only estimators whose
    ``predict`` is scikit-learn's forest or tree code (not overridden) qualify; every other
    model is asked for ``predict`` too.
    """
    from sklearn.pipeline import Pipeline

    try:  # private modules: if they move, fall back to calling predict
        from sklearn.ensemble._forest import ForestClassifier
        from sklearn.tree._classes import BaseDecisionTree, DecisionTreeClassifier
    except ImportError:
        return False

    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    kind = type(final)
    forest = issubclass(kind, ForestClassifier) and kind.predict is ForestClassifier.predict
    forest = forest and kind.predict_proba is ForestClassifier.predict_proba
    tree = issubclass(kind, DecisionTreeClassifier) and kind.predict is BaseDecisionTree.predict
    tree = tree and kind.predict_proba is DecisionTreeClassifier.predict_proba
    return (forest or tree) and getattr(final, "n_outputs_", 1) == 1


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
