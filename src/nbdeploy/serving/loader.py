"""Load a model from a local MLflow model folder without importing MLflow when possible.

The kernel downloads the model's artifacts into the deployment folder; the server reads
``MLmodel`` and unpickles the estimator directly (MLflow's import alone costs ~1.5 s), and
falls back to ``mlflow.pyfunc`` for any other flavor or format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nbdeploy import model_copy
from nbdeploy.model_entry import pickled_sklearn, read_mlmodel, read_signature
from nbdeploy.serving.forest import FastForest, fast_methods
from nbdeploy.spec import PREDICT_METHODS

__all__ = ["LoadedModel", "load", "read_signature"]


@dataclass
class LoadedModel:
    """A model ready to ``predict``, with the signature it was registered with, and
    ``methods``: ``predict`` and whichever of ``predict_proba``, ``predict_log_proba``,
    ``predict_joint_log_proba``, ``decision_function`` the estimator has."""

    predict: Any
    inputs: list[dict[str, Any]] | None
    outputs: list[dict[str, Any]] | None
    path: str
    methods: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.methods.setdefault("predict", self.predict)

    def call(self, X: Any, method: str = "predict") -> Any:
        """``method`` of the model on ``X``; a 400 when it lacks it (the server checks before
        batching, but ``/admin/reload`` may have swapped the model since)."""
        from nbdeploy.serving.protocol import check_method

        check_method(method, self.methods, "the model serving now")
        return self.methods[method](X)

    def proba_owner(self) -> Any:
        """The estimator whose ``predict_proba`` this model calls (the forest behind a
        :class:`~nbdeploy.serving.forest.FastForest`), or ``None``."""
        owner = getattr(self.methods.get("predict_proba"), "__self__", None)
        return owner.forest if isinstance(owner, FastForest) else owner

    def scored_call(self, X: Any, method: str = "predict") -> tuple[Any, list[float] | None]:
        """``call``, and for a classifier's ``predict`` the probability it gave each predicted
        class (what :mod:`nbdeploy.monitoring.estimate` estimates accuracy from); ``None``
        for other methods and models, or when the probabilities cannot be had."""
        from nbdeploy.tasks import argmax_predict

        proba = self.methods.get("predict_proba")
        owner = self.proba_owner()
        classes = getattr(owner, "classes_", None)
        if method == "predict" and proba is not None and classes is not None and argmax_predict(owner):
            p = np.asarray(proba(X), dtype=np.float64)  # one pass gives both (a forest's predict is this)
            best = p.argmax(axis=1)
            return np.asarray(classes).take(best), p[np.arange(best.size), best].tolist()
        raw = self.call(X, method)
        if method != "predict" or proba is None or classes is None:
            return raw, None
        try:  # the estimate must never cost a request its answer
            where = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
            predicted = np.asarray(raw).ravel().tolist()
            columns = np.fromiter((where[p] for p in predicted), dtype=np.int64, count=len(predicted))
            chosen = np.asarray(proba(X), dtype=np.float64)[np.arange(len(predicted)), columns]
            return raw, chosen.tolist()
        except Exception:
            return raw, None


def _methods(model: Any) -> dict[str, Any]:
    # hasattr runs scikit-learn's available_if checks: an SVC without probability=True has no predict_proba
    return {name: getattr(model, name) for name in PREDICT_METHODS if name != "predict" and hasattr(model, name)}


def load(path: str | Path) -> LoadedModel:
    """Load the MLflow model stored in folder ``path``: only a copy nbdeploy wrote, unchanged
    since (:func:`nbdeploy.model_copy.verify`), since unpickling runs the file's code."""
    folder = Path(path)
    model_copy.verify(folder)
    meta = read_mlmodel(folder)
    inputs, outputs = read_signature(folder)
    pickled = pickled_sklearn(meta)
    if pickled is not None:
        import cloudpickle

        with (folder / pickled).open("rb") as fh:
            model = cloudpickle.load(fh)
        methods = _methods(model)
        methods.update(fast_methods(model))  # a forest's, without scikit-learn's 9 ms of dispatch a call
        return LoadedModel(methods.pop("predict", model.predict), inputs, outputs, str(folder), methods)
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(str(folder))
    try:  # an estimator under the flavor (a scikit-learn model saved with skops) has its methods too
        raw = pyfunc.get_raw_model()
    except Exception:
        raw = None
    return LoadedModel(pyfunc.predict, inputs, outputs, str(folder), _methods(raw) if raw is not None else {})
