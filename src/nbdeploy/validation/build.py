"""Compute a validation report from models already in memory (no registry access).

:func:`nbdeploy.validate` loads the versions and records the result; this module is the
computation between, which the benchmark times on its own.

>>> gates = [parse_gate("f1>=0.9")]
>>> report = build_report(Candidate(model, "cancer/2"), X_test, y_test, gates=gates)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from nbdeploy.errors import InvalidInputError
from nbdeploy.stats.drift import frame_drift
from nbdeploy.stats.profile import as_frame
from nbdeploy.validation import bootstrap
from nbdeploy.validation.checks import check_data, model_input
from nbdeploy.validation.explain import ROWS, Explanation, explain
from nbdeploy.validation.gates import Gate
from nbdeploy.validation.report import ValidationReport
from nbdeploy.validation.scoring import LATENCY_CALLS, Scores, probe_latency, score
from nbdeploy.validation.segments import losses, weak_segments
from nbdeploy.validation.slices import slice_table

__all__ = ["Candidate", "build_report"]

SCATTER_POINTS = 400


@dataclass
class Candidate:
    """A model to score, with what the registry knows about it."""

    model: Any
    ref: str
    inputs: Sequence[tuple[str, str]] = ()
    profile: Mapping[str, Any] | None = None
    size_bytes: int | None = None


def _target(y: Any, rows: int) -> np.ndarray:
    values = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    if values.ndim != 1:
        values = values.reshape(len(values), -1)
        if values.shape[1] != 1:
            raise InvalidInputError(f"The target has {values.shape[1]} columns; validation needs one.")
        values = values[:, 0]
    if len(values) != rows:
        raise InvalidInputError(
            f"The data has {rows} rows but the target has {len(values)}; they must have the same number of rows."
        )
    if rows == 0:
        raise InvalidInputError("The data has no rows: validation needs at least one.")
    missing = int(pd.isna(values).sum())
    if missing:
        raise InvalidInputError(f"The target has {missing} missing values; validation needs one for every row.")
    return values


def _model_input(c: Candidate, frame: pd.DataFrame) -> Any:
    """What the model is given: its signature's columns, as an array if it was fitted on one."""
    X = model_input(frame, c.inputs)
    return X if hasattr(c.model, "feature_names_in_") else X.to_numpy()


def _operational(c: Candidate, X: Any, calls: int, seed: int) -> dict[str, float]:
    nan = float("nan")
    out = {"latency_p50_ms": nan, "latency_p95_ms": nan, **probe_latency(c.model, X, calls, seed)}
    out["model_size_mb"] = c.size_bytes / 1e6 if c.size_bytes is not None else nan
    return out


def _data_metrics(profile: Mapping[str, Any] | None, frame: Any) -> dict[str, float]:
    if profile is None:
        return {"max_psi": float("nan"), "drifted_features": float("nan")}
    drift = frame_drift(profile, frame)
    psis = [d.psi for d in drift if not np.isnan(d.psi)]
    return {
        "max_psi": max(psis) if psis else float("nan"),
        "drifted_features": float(sum(d.status == "drift" for d in drift)),
    }


def _plot(own: Scores, other: Scores | None, y: np.ndarray, seed: int) -> dict[str, Any]:
    def curves(s: Scores) -> list[dict[str, Any]]:
        return [{"label": label, "fpr": f.tolist(), "tpr": t.tolist()} for label, f, t in s.curves]

    if own.task == "classification":
        if not own.curves:
            return {}
        return {"kind": "roc", "curves": curves(own), "baseline": curves(other) if other else []}
    keep = np.arange(y.size)
    if y.size > SCATTER_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(y.size, SCATTER_POINTS, replace=False))
    return {
        "kind": "scatter",
        "actual": y[keep].astype(float).tolist(),
        "predicted": own.pred[keep].astype(float).tolist(),
    }


def _check_slice_columns(frame: pd.DataFrame, slices: Sequence[str]) -> None:
    lacking = [c for c in slices if c not in frame.columns]
    if lacking:
        shown = ", ".join(map(str, frame.columns[:20])) + (", …" if len(frame.columns) > 20 else "")
        raise InvalidInputError(f"Unknown slice column {lacking[0]!r}; the data's columns are {shown}.")


@dataclass
class Replicates:
    """The bootstrap replicates of the candidate's metrics and of its paired differences to
    the baseline (the same resamples for both models)."""

    own: dict[str, np.ndarray]
    delta: dict[str, np.ndarray]

    @classmethod
    def of(cls, own: Scores, other: Scores | None, rows: int, resamples: int, seed: int) -> Replicates:
        stats = [own.statistic] + ([other.statistic] if other else [])
        reps = bootstrap.replicates(stats, rows, resamples, seed) if resamples > 0 else [{} for _ in stats]
        mine = {m: r for m, r in reps[0].items() if m in own.metrics}
        return cls(mine, {m: r - reps[1][m] for m, r in mine.items() if other and m in reps[1]})

    def intervals(self) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
        """The 95 % intervals of the metrics, and of the differences."""
        return ({m: bootstrap.interval(r) for m, r in self.own.items()},
                {m: bootstrap.interval(r) for m, r in self.delta.items()})  # fmt: skip

    def bound(self, metric: str, q: float, paired: bool) -> float | None:
        """A gate's bootstrap bound (see :data:`~nbdeploy.validation.gates.Bound`)."""
        reps = (self.delta if paired else self.own).get(metric)
        return None if reps is None else bootstrap.quantile(reps, q)


def _baseline_metrics(
    baseline: Candidate, other: Scores, frame: pd.DataFrame, latency_calls: int, seed: int
) -> dict[str, float]:
    X_base = _model_input(baseline, frame)
    metrics = {**other.metrics, **_operational(baseline, X_base, latency_calls, seed)}
    metrics.update(_data_metrics(baseline.profile, frame))
    return metrics


def _slices(frame: pd.DataFrame, columns: Sequence[str], target: np.ndarray, own: Scores,
            other: Scores | None) -> list[Any]:  # fmt: skip
    positive = own.labels.values[own.labels.positive] if own.labels and own.labels.binary else None
    base_pred = other.pred if other else None
    return [slice_table(c, frame[c], target, own.pred, task=own.task, positive=positive, baseline_pred=base_pred)
            for c in columns]  # fmt: skip


def _explain(candidate: Candidate, baseline: Candidate | None, frame: pd.DataFrame, target: np.ndarray,
             own: Scores, *, rows: int, seed: int, shap: bool) -> Explanation:  # fmt: skip
    """The Explain section, on the model's own input columns (and the baseline's on its own)."""

    def takes_array(c: Candidate) -> bool:
        return not hasattr(c.model, "feature_names_in_")

    base = None
    if baseline is not None:
        base = (baseline.ref, baseline.model, model_input(frame, baseline.inputs), takes_array(baseline))
    positive = own.labels.values[own.labels.positive] if own.labels and own.labels.binary else None
    return explain(candidate.model, model_input(frame, candidate.inputs), target, own.task, positive=positive,
                   as_array=takes_array(candidate), baseline=base, rows=rows, seed=seed, shap=shap)  # fmt: skip


def build_report(candidate: Candidate, X: Any, y: Any, *, baseline: Candidate | None = None,
                 gates: Sequence[Gate] = (), slices: Sequence[str] = (), strict: bool = False,
                 resamples: int = bootstrap.RESAMPLES, seed: int = bootstrap.SEED,
                 latency_calls: int = LATENCY_CALLS, explain: bool = True, explain_rows: int = ROWS,
                 shap: bool = False) -> ValidationReport:  # fmt: skip
    """Score ``candidate`` (and ``baseline``) on ``X``/``y`` and assemble the report; with
    ``explain``, its Explain section on ``explain_rows`` rows (and ``shap`` values)."""
    frame = as_frame(X)
    target = _target(y, len(frame))
    _check_slice_columns(frame, slices)
    checks = check_data(frame, candidate.inputs, candidate.profile)
    X_own = _model_input(candidate, frame)
    own = score(candidate.model, X_own, target, ref=candidate.ref)
    other = None
    if baseline is not None:
        other = score(baseline.model, _model_input(baseline, frame), target, ref=baseline.ref, task=own.task)

    reps = Replicates.of(own, other, len(frame), resamples, seed)
    intervals, deltas = reps.intervals()

    metrics = {**own.metrics, **_operational(candidate, X_own, latency_calls, seed)}
    metrics.update(max_psi=checks.max_psi, drifted_features=checks.drifted_features)
    base_metrics: dict[str, float] = {}
    if baseline is not None and other is not None:
        base_metrics = _baseline_metrics(baseline, other, frame, latency_calls, seed)

    report = ValidationReport(
        model=candidate.ref,
        task=own.task,
        rows=len(frame),
        metrics=metrics,
        gates=[g.evaluate(metrics, base_metrics if other else None, reps.bound) for g in gates],
        intervals=intervals,
        baseline=baseline.ref if baseline else None,
        baseline_metrics=base_metrics,
        delta_intervals=deltas,
        checks=checks,
        residuals=own.residuals,
        plot=_plot(own, other, target, seed),
        strict=strict,
        resamples=resamples,
        seed=seed,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        notes=list(own.notes),
        reliability=own.reliability,
    )
    if own.labels is not None and own.confusion is not None:
        report.labels = [str(v) for v in own.labels.values]
        report.confusion = own.confusion.tolist()
    report.slices += _slices(frame, slices, target, own, other)
    if latency_calls <= 0:
        report.notes.append("Latency was not measured (latency_calls=0).")
    report.notes += _heavy_tails(target, own.pred) if own.task == "regression" else []
    if explain:
        report.explanation = _explain(candidate, baseline, frame, target, own, rows=explain_rows, seed=seed, shap=shap)
    _weak_segments(report, frame, target, own, seed)
    return report


def _weak_segments(report: ValidationReport, frame: pd.DataFrame, target: np.ndarray, own: Scores, seed: int) -> None:
    """Search the evaluation data for weak segments; pairs among the most important features."""
    ranked = [i.feature for i in report.explanation.importances] if report.explanation else []
    report.segments, report.segments_searched = weak_segments(
        frame, losses(own.task, target, own.pred), task=own.task, ranked=[c for c in ranked if c in frame], seed=seed
    )


HEAVY_KURTOSIS = 3.0  # excess kurtosis of the errors above which the note is written


def _heavy_tails(y: np.ndarray, pred: np.ndarray) -> list[str]:
    """A note when the errors are heavy-tailed: the percentile bootstrap then under-covers
    RMSE (tests/test_validation_stats.py measures it: 95 % intervals held the true RMSE of
    500 Student-t(3) errors in 72 % of 300 samples, t(5) 91 %, normal errors 95 %; the note
    is written for 92 % of the t(3) samples and none of the normal ones)."""
    errors = np.asarray(y, dtype=float) - np.asarray(pred, dtype=float)
    centred = errors - errors.mean()
    m2 = float(np.mean(centred**2))
    if errors.size < 30 or m2 <= 0:
        return []
    kurtosis = float(np.mean(centred**4)) / m2**2 - 3
    if kurtosis <= HEAVY_KURTOSIS:
        return []
    return [f"The errors are heavy-tailed (excess kurtosis {kurtosis:.1f}): the bootstrap intervals of rmse are "
            "too narrow for such errors (for Student-t errors with 3 degrees of freedom, 95 % intervals hold the "
            "true RMSE only about three times in four), so read them, and rmse gates decided with a confidence, "
            "as optimistic."]  # fmt: skip
