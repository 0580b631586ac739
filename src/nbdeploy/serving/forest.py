"""A scikit-learn forest's predictions without its per-tree dispatch, bit for bit the same.

A forest predicts through joblib, one task per tree, and scikit-learn wraps each task in its
config context and warning filters: about 90 µs a tree, so 9 ms a call for 100 trees whatever
the rows, of which the trees' own work is under 1 ms. A server calls ``predict`` once per
batch, and a small batch (a canary's tenth of the traffic, one or two requests at a time)
pays that fixed cost in full.

:func:`fast_methods` gives ``predict`` and ``predict_proba`` that validate the input once,
with the forest's own check, and sum the trees' outputs in the forest's order, which is
what scikit-learn computes with one job. Only the exact forest classes qualify (a subclass
may override what it predicts), with one output and plain trees; and before they are used,
their answers on rows drawn across the trees' split points must equal scikit-learn's to the
last bit, so a scikit-learn release that computes differently keeps its own methods.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FastForest", "fast_methods"]

_FORESTS = {"RandomForestClassifier", "ExtraTreesClassifier", "RandomForestRegressor", "ExtraTreesRegressor"}
_TREES = {"DecisionTreeClassifier", "ExtraTreeClassifier", "DecisionTreeRegressor", "ExtraTreeRegressor"}
_PROBE_ROWS = 64


class FastForest:
    """``predict`` (and a classifier's ``predict_proba``) of ``forest``, summed tree by tree."""

    def __init__(self, forest: Any) -> None:
        self.forest = forest
        self.classes_ = getattr(forest, "classes_", None)
        self._trees = [tree.tree_ for tree in forest.estimators_]
        self._width = getattr(forest, "n_classes_", 1)

    def _sum(self, X: Any) -> Any:
        X = self.forest._validate_X_predict(X)
        total = np.zeros((X.shape[0], self._width), dtype=np.float64)
        for tree in self._trees:  # with one output, tree_.predict gives (rows, classes); (rows, 1) for a regressor
            total += tree.predict(X)[:, : self._width]
        total /= len(self._trees)
        return total

    def predict_proba(self, X: Any) -> Any:
        return self._sum(X)

    def predict(self, X: Any) -> Any:
        total = self._sum(X)
        if self.classes_ is None:
            return total[:, 0]
        return self.classes_.take(np.argmax(total, axis=1), axis=0)


def fast_methods(model: Any) -> dict[str, Any]:
    """``{"predict": ..., "predict_proba": ...}`` for a forest that qualifies, else ``{}``."""
    kind = type(model)
    if kind.__module__ != "sklearn.ensemble._forest" or kind.__name__ not in _FORESTS:
        return {}
    try:
        # n_jobs: threads add the trees in the order they finish, so scikit-learn's own last bit varies
        trees = list(model.estimators_)
        if model.n_outputs_ != 1 or not trees or getattr(model, "n_jobs", None) not in (None, 1):
            return {}
        if any(type(t).__module__ != "sklearn.tree._classes" or type(t).__name__ not in _TREES for t in trees):
            return {}
        fast = FastForest(model)
        methods = {"predict": fast.predict}
        if fast.classes_ is not None:
            methods["predict_proba"] = fast.predict_proba
        probe = _probe(model)
        for name, method in methods.items():
            mine, theirs = method(probe), getattr(model, name)(probe)
            if mine.dtype != theirs.dtype or mine.shape != theirs.shape or not np.array_equal(mine, theirs):
                return {}
    except Exception:  # private attributes moved, or anything else: scikit-learn's own methods
        return {}
    return methods


def _probe(model: Any) -> Any:
    """Rows whose every feature lands just below, on or just above the split points of the
    trees (the values where a difference in the walk would show), in a fixed random mix."""
    width = int(model.n_features_in_)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(_PROBE_ROWS, width))
    trees = [t.tree_ for t in model.estimators_[:10]]
    features = np.concatenate([t.feature[t.feature >= 0] for t in trees])  # leaves have feature -2
    thresholds = np.concatenate([t.threshold[t.feature >= 0] for t in trees])
    picked = rng.choice(features.size, size=min(features.size, _PROBE_ROWS * width), replace=False)
    rows = rng.integers(0, _PROBE_ROWS, size=picked.size)  # later picks of a cell overwrite earlier ones
    X[rows, features[picked]] = thresholds[picked] + rng.choice([-1e-3, 0.0, 1e-3], size=picked.size)
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return X
    import pandas as pd

    return pd.DataFrame(X, columns=list(names))
