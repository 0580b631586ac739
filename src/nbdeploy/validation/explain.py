"""The report's "Explain" section: which features the model relies on, and how.

- **Permutation importance** on a seeded subsample of the held-out rows: how much the
  score worsens when one feature's values are shuffled — the log loss for a classifier
  with probabilities (the most sensitive of scikit-learn's scores on the importance test
  in tests/test_explain.py), else accuracy; R² for a regressor. Each feature is shuffled
  ``repeats`` times; its interval is the mean ± Student's t over those shuffles, so it
  covers the shuffling's noise, not the sampling of the evaluation data.
- **Partial dependence and ICE** for the top features: the model's output (a binary
  classifier's probability of the positive class; for several classes, the class whose
  curve moves most; a regressor's prediction) with one feature set to each grid value, per
  row (ICE) and on average (PD). Averages over rows hide interactions; the ICE lines show
  them.
- The **baseline's importances** on the same rows and shuffles, so the two are paired.
- **SHAP** values where ``shap`` is installed, for tree models (:mod:`.shap_values`).

Any explainer failure is a warning in the section, never a failed validation.

>>> e = explain(model, frame, y, "classification", positive=1)   # doctest: +SKIP
>>> e.importances[0].feature                                                    # doctest: +SKIP
'worst radius'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nbdeploy.validation import perturb

__all__ = ["ROWS", "Dependence", "Explanation", "Importance", "explain"]

#: Evaluation rows the importances are computed on (a seeded subsample), and shuffles per feature.
ROWS = 500
REPEATS = 5
#: At most this many rows are predicted for the importances (rows x features x repeats).
MAX_SHUFFLED_ROWS = 200_000
MIN_ROWS = 30  # fewer rows than this within the budget: the section says so instead
#: Partial dependence: features shown, rows averaged, ICE lines drawn.
TOP_DEPENDENCE = 3
DEPENDENCE_ROWS = 200
ICE_LINES = 30


@dataclass
class Importance:
    """One feature's mean worsening over the shuffles, with its 95 % t interval; the
    baseline's on the same rows and shuffles when there is one."""

    feature: str
    mean: float
    low: float
    high: float
    baseline: tuple[float, float, float] | None = None  # mean, low, high


@dataclass
class Dependence:
    """Partial dependence (``average``) and ICE lines (``ice``) of one feature over its grid."""

    feature: str
    kind: str  # numeric: quantile grid; values: the most frequent values
    grid: list[Any]
    average: list[float]
    ice: list[list[float]]
    output: str


@dataclass
class Explanation:
    score: str  # what the importance measures, e.g. "increase in log loss"
    rows: int
    of_rows: int
    repeats: int
    seed: int
    importances: list[Importance] = field(default_factory=list)
    dependence: list[Dependence] = field(default_factory=list)
    shap: dict[str, Any] | None = None
    baseline: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def top(self, k: int = 5) -> list[Importance]:
        return self.importances[:k]


def _t_interval(drops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from scipy import stats

    mean = drops.mean(axis=1)
    if drops.shape[1] < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.975, drops.shape[1] - 1) * drops.std(axis=1, ddof=1) / np.sqrt(drops.shape[1])
    return mean, mean - half, mean + half


def _scorer(model: Any, task: str, y: np.ndarray, accuracy: bool = False) -> tuple[str, Callable, Callable]:
    """(what is measured, the call giving outputs, the score of outputs: lower is better).

    The scores are written out rather than called from ``sklearn.metrics``, whose input
    checks cost more than the arithmetic on 500 rows, 151 times over; they are the same
    numbers (the log loss clips probabilities to [eps, 1 - eps] as ``log_loss`` does, R² of
    a constant target is 1 for exact predictions and 0 otherwise, as ``r2_score`` says).
    ``accuracy``: score a classifier by accuracy even if it has probabilities.
    """
    if task == "regression":
        total = float(np.sum((y - y.mean()) ** 2))

        def r2_loss(out: np.ndarray) -> float:
            sse = float(np.sum((y - out[:, 0]) ** 2))
            return sse / total - 1.0 if total > 0 else -float(sse == 0)

        return "drop in R²", model.predict, r2_loss
    classes = list(getattr(model, "classes_", []))
    known = {c: i for i, c in enumerate(classes)}
    has_proba = callable(getattr(model, "predict_proba", None))
    if has_proba and not accuracy and classes and all(v in known for v in y.tolist()):
        rows, codes = np.arange(y.size), np.array([known[v] for v in y.tolist()])

        def log_loss(out: np.ndarray) -> float:
            eps = np.finfo(out.dtype).eps if out.dtype.kind == "f" else np.finfo(float).eps
            return float(-np.mean(np.log(np.clip(out[rows, codes], eps, 1 - eps))))

        return "increase in log loss", model.predict_proba, log_loss
    return "drop in accuracy", model.predict, lambda out: -float(np.mean(out[:, 0] == y))


def importances(model: Any, X: pd.DataFrame, y: np.ndarray, task: str, *, repeats: int, seed: int,
                as_array: bool, accuracy: bool = False) -> tuple[str, list[Importance]]:  # fmt: skip
    """Every column's permutation importance, most important first."""
    what, call, score = _scorer(model, task, y, accuracy)
    drops = perturb.permutation_drops(call, X, score, repeats=repeats, random_state=seed, as_array=as_array)
    mean, low, high = _t_interval(drops)
    found = zip(X.columns, mean, low, high, strict=True)
    out = [Importance(str(c), float(m), float(lo), float(hi)) for c, m, lo, hi in found]
    return what, sorted(out, key=lambda i: -i.mean)


def _output(model: Any, task: str, positive: Any) -> tuple[Callable[[Any], Any], Callable[[np.ndarray], int], str]:
    """What partial dependence shows: the call, which output column, and its name."""
    if task == "regression" or not callable(getattr(model, "predict_proba", None)):
        return model.predict, lambda ice: 0, "prediction"
    classes = list(model.classes_)
    if len(classes) == 2:
        column = classes.index(positive) if positive in classes else 1
        return model.predict_proba, lambda ice: column, f"P({classes[column]})"

    def widest(ice: np.ndarray) -> int:  # the class whose average curve moves most
        average = ice.mean(axis=1)
        return int(np.argmax(average.max(axis=0) - average.min(axis=0)))

    return model.predict_proba, widest, "P(class)"


def dependence(model: Any, X: pd.DataFrame, task: str, features: Sequence[str], *, positive: Any,
               as_array: bool) -> list[Dependence]:  # fmt: skip
    """Partial dependence and ICE of ``features`` over the rows of ``X``."""
    rows = X.reset_index(drop=True)
    names = [str(c) for c in rows.columns]
    call, pick, output = _output(model, task, positive)
    if task == "classification" and not callable(getattr(model, "predict_proba", None)):
        return []  # a label has no average; the section says why
    out = []
    for name in features:
        j = names.index(name)  # by position: a column labelled 0 is the feature "0"
        kind, points = perturb.grid(rows.iloc[:, j])
        if points.size < 2:
            continue
        ice = perturb.dependence(call, rows, j, points, as_array)  # (points, rows, outputs)
        column = pick(ice)
        label = output if output != "P(class)" else f"P({model.classes_[column]})"
        values = rows.iloc[:, j].iloc[points]
        grid = [float(v) for v in values] if kind == "numeric" else [str(v) for v in values]
        curves = ice[:, :, column]
        out.append(Dependence(name, kind, grid, curves.mean(axis=1).astype(float).tolist(),
                              curves[:, :ICE_LINES].T.astype(float).tolist(), label))  # fmt: skip
    return out


def _rows(n: int, features: int, rows: int, repeats: int, seed: int) -> np.ndarray:
    """The seeded subsample, at most ``MAX_SHUFFLED_ROWS`` once every feature is shuffled."""
    take = min(n, rows, MAX_SHUFFLED_ROWS // max(1, features * repeats))
    return np.sort(np.random.default_rng(seed).choice(n, take, replace=False)) if take < n else np.arange(n)


def _has_proba(model: Any) -> bool:
    return callable(getattr(model, "predict_proba", None))


def _attempt(warnings: list[str], what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # an explainer's failure is reported, never fatal
        warnings.append(f"{what} failed ({type(exc).__name__}: {str(exc)[:200]}).")
        return None


def explain(model: Any, X: pd.DataFrame, y: np.ndarray, task: str, *, positive: Any = None, as_array: bool = False,
            baseline: tuple[str, Any, pd.DataFrame, bool] | None = None,
            rows: int = ROWS, repeats: int = REPEATS, seed: int = 0, shap: bool = False) -> Explanation:  # fmt: skip
    """The Explain section for ``model`` on its input ``X`` (a frame, ``as_array`` if the model
    takes arrays) and target ``y``; ``baseline`` is ``(ref, model, its input, as_array)``;
    ``shap``: TreeSHAP values too (:mod:`.shap_values`)."""
    keep = _rows(len(X), X.shape[1], rows, repeats, seed)
    Xs, ys = X.iloc[keep].reset_index(drop=True), np.asarray(y)[keep]
    result = Explanation("", len(keep), len(X), repeats, seed)
    if len(keep) < MIN_ROWS:
        result.warnings.append(f"Permutation importance was left out: {X.shape[1]} features shuffled {repeats} times "
                               f"leave {len(keep)} rows within {MAX_SHUFFLED_ROWS:,} predicted rows (at least "
                               f"{MIN_ROWS} are needed).")  # fmt: skip
        return result
    accuracy = baseline is not None and _scorer(model, task, ys)[0] != _scorer(baseline[1], task, ys)[0]
    found = _attempt(result.warnings, "Permutation importance",
                     lambda: importances(model, Xs, ys, task, repeats=repeats, seed=seed, as_array=as_array,
                                         accuracy=accuracy))  # fmt: skip
    if found is None:
        return result
    result.score, result.importances = found
    if baseline is not None:
        ref, base_model, base_X, base_array = baseline
        result.baseline = ref
        base_Xs = base_X.iloc[keep].reset_index(drop=True)
        theirs = _attempt(result.warnings, f"The baseline's permutation importance ({ref})",
                          lambda: importances(base_model, base_Xs, ys, task, repeats=repeats, seed=seed,
                                              as_array=base_array, accuracy=accuracy))  # fmt: skip
        if theirs is not None:
            by_name = {i.feature: (i.mean, i.low, i.high) for i in theirs[1]}
            for imp in result.importances:
                imp.baseline = by_name.get(imp.feature)
    if accuracy:
        result.warnings.append("Both models are scored by accuracy: one of them gives no probabilities, so their "
                               "log losses cannot be compared.")  # fmt: skip
    elif task == "classification" and "log loss" not in result.score and _has_proba(model):
        result.warnings.append("Importance is measured by accuracy: the data has a class the model lacks, so the "
                               "log loss is undefined.")  # fmt: skip
    # partial dependence and SHAP on a random part of the subsample (its first rows are its oldest)
    Xd = Xs.iloc[np.random.default_rng(seed + 1).permutation(len(Xs))[:DEPENDENCE_ROWS]]
    top = [i.feature for i in result.importances[:TOP_DEPENDENCE] if i.low > 0]  # clearly above zero
    shown = _attempt(result.warnings, "Partial dependence",
                     lambda: dependence(model, Xd, task, top, positive=positive, as_array=as_array))  # fmt: skip
    result.dependence = shown or []
    if task == "classification" and not _has_proba(model):
        result.warnings.append("Partial dependence needs class probabilities, and this model gives none.")
    if shap:
        from nbdeploy.validation.shap_values import tree_shap

        result.shap = _attempt(result.warnings, "SHAP", lambda: tree_shap(model, Xd, as_array))
    return result
