"""SHAP values for tree models (TreeSHAP), when asked for and ``shap`` is installed.

TreeSHAP is exact: a row's values plus the expected value equal the model's own output
(for a forest classifier its probability, for a boosted one its log-odds). ``shap`` checks
that itself; the summary also names which of the model's own outputs the values add up to
and the largest difference on any row, measured here against the model. It is not cheap on deep trees: a 100-tree forest
grown on 20,000 rows costs about 55 ms a row on this project's 2-core machines, which is
why the report computes it only when asked (``shap=True``, ``--shap``) and on at most
``ROWS`` rows. For a :class:`~sklearn.pipeline.Pipeline`, the last step is explained on
the features the steps before it produce.

>>> summary = tree_shap(forest, X_test.head(200))   # doctest: +SKIP
>>> summary["features"][0]                           # doctest: +SKIP
{'feature': 'worst radius', 'mean_abs': 0.081}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from nbdeploy.errors import Docs, InvalidInputError

__all__ = ["ROWS", "check_installed", "tree_shap"]

ROWS = 200
TOP = 10


def check_installed() -> None:
    """One sentence when ``shap`` cannot be imported."""
    try:
        import shap  # noqa: F401
    except ImportError:
        raise InvalidInputError(
            "SHAP values need the shap package: pip install 'nbdeploy[explain]'.", docs=Docs.EXTRAS
        ) from None


def _split(model: Any, X: Any) -> tuple[Any, Any, list[str]]:
    """The estimator to explain, its input, and that input's feature names."""
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline) and len(model.steps) > 1:
        head = model[:-1]
        Xt = head.transform(X)
        Xt = Xt.toarray() if hasattr(Xt, "toarray") else Xt
        try:
            names = [str(n) for n in head.get_feature_names_out()]
        except Exception:  # a step without feature names: positions
            names = [f"x{i}" for i in range(np.shape(Xt)[1])]
        return model.steps[-1][1], Xt, names
    names = [str(c) for c in X.columns] if isinstance(X, pd.DataFrame) else [f"x{i}" for i in range(np.shape(X)[1])]
    return model, X, names


def _outputs(final: Any, Xt: Any) -> dict[str, np.ndarray]:
    """The model's own outputs that SHAP values can add up to, by name; on a tie the first
    named wins (LightGBM's ``predict`` ignores ``output_margin``, so a regressor's is plain)."""
    calls = {
        "predict_proba": lambda: final.predict_proba(Xt),
        "decision_function": lambda: final.decision_function(Xt),
        "predict": lambda: final.predict(Xt),
        "predict(output_margin=True)": lambda: final.predict(Xt, output_margin=True),  # XGBoost
        "predict(raw_score=True)": lambda: final.predict(Xt, raw_score=True),  # LightGBM
    }
    out = {}
    for name, call in calls.items():
        try:
            out[name] = np.asarray(call(), dtype=float)
        except Exception:  # the model has no such output, or not numbers (class labels)
            continue
    return out


def additivity(values: np.ndarray, expected: np.ndarray, final: Any, Xt: Any) -> tuple[str, float]:
    """Which of the model's own outputs the values plus the expected value reproduce, and the
    largest difference on any row (``("none", inf)`` when none has the right shape)."""
    total = values.sum(axis=1) + expected  # (rows,) or (rows, classes)
    best = ("none", float("inf"))
    for name, output in _outputs(final, Xt).items():
        if output.ndim == 2 and total.ndim == 1 and output.shape[1] == 2:
            output = output[:, 1]  # a binary model explained on its positive class
        if output.shape != total.shape:
            continue
        error = float(np.max(np.abs(output - total))) if total.size else 0.0
        if error < best[1]:
            best = (name, error)
    return best


def tree_shap(model: Any, X: pd.DataFrame, as_array: bool = False, rows: int = ROWS) -> dict[str, Any]:
    """Mean |SHAP| per feature on the first ``rows`` rows of ``X`` (most important first),
    the expected value(s), and what the values add up to."""
    import shap

    final, Xt, names = _split(model, X.iloc[:rows].to_numpy() if as_array else X.iloc[:rows])
    try:
        explainer = shap.TreeExplainer(final)
    except Exception as exc:  # shap raises its own InvalidModelError for models it cannot walk
        kind = type(final).__name__
        raise ValueError(f"TreeSHAP cannot explain {kind}, it explains tree models only ({str(exc)[:120]})") from None
    values = np.asarray(explainer.shap_values(Xt))  # raises if the values do not add up to the output
    if values.ndim == 3:  # (rows, features, classes)
        strength = np.abs(values).mean(axis=(0, 2))
    else:
        strength = np.abs(values).mean(axis=0)
    order = np.argsort(-strength)[:TOP]
    classes = getattr(final, "classes_", None)
    expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=float))
    output, error = additivity(values, expected if values.ndim == 3 else expected[-1], final, Xt)
    return {
        "explainer": "TreeSHAP",
        "rows": int(values.shape[0]),
        "output": str(getattr(explainer.model, "model_output", "raw")),
        "classes": [str(c) for c in classes] if classes is not None and values.ndim == 3 else None,
        "expected": expected.tolist(),
        "adds_up_to": output,
        "max_error": error,
        "features": [{"feature": names[i], "mean_abs": float(strength[i])} for i in order],
    }
