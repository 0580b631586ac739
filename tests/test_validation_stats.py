"""The vectorised bootstrap replicates against sklearn.metrics, and the gate grammar."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.base import BaseEstimator, ClassifierMixin

from nbdeploy.errors import InvalidInputError
from nbdeploy.validation import bootstrap
from nbdeploy.validation.gates import check_metrics, parse_gate
from nbdeploy.validation.metrics import (
    available,
    classification_metrics,
    encode_labels,
    regression_metrics,
)

RESAMPLES, SEED = 30, 7


def first_resamples(n: int, count: int = 4) -> np.ndarray:
    return next(bootstrap.resample_chunks(n, RESAMPLES, SEED))[:count]


def classification_case(k: int, n: int, rng: np.random.Generator, rounded: bool) -> tuple[Any, ...]:
    y = rng.integers(0, k, n)
    proba = rng.dirichlet(np.ones(k), n)
    if rounded:  # many tied scores, as trees give
        proba = np.round(proba, 1) + 1e-3
        proba /= proba.sum(axis=1, keepdims=True)
    pred = np.where(rng.random(n) < 0.75, y, rng.integers(0, k, n))
    return y, pred, proba


@pytest.mark.parametrize(("k", "rounded"), [(2, False), (2, True), (3, False), (4, True)])
def test_classification_replicates_equal_sklearn_on_the_same_resamples(k: int, rounded: bool) -> None:
    rng = np.random.default_rng(k)
    y, pred, proba = classification_case(k, 250, rng, rounded)
    labels, yc, pc = encode_labels(y, pred, np.arange(k))
    codes = np.arange(k)
    stat = bootstrap.classification(yc, pc, k, labels.positive, proba, codes)
    reps = bootstrap.replicates([stat], len(y), RESAMPLES, SEED)[0]
    assert set(reps) == {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
    for r, idx in enumerate(first_resamples(len(y))):
        expected = classification_metrics(yc[idx], pc[idx], labels, proba[idx], codes)
        for name, value in expected.items():
            assert reps[name][r] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, r)
    assert all(v.shape == (RESAMPLES,) for v in reps.values())


def test_replicates_follow_zero_division_and_absent_classes_like_sklearn() -> None:
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    pred = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # classes 1 and 2 never predicted
    labels, yc, pc = encode_labels(y, pred, np.arange(3))
    reps = bootstrap.replicates([bootstrap.classification(yc, pc, 3, None)], len(y), RESAMPLES, SEED)[0]
    for r, idx in enumerate(first_resamples(len(y))):
        expected = classification_metrics(yc[idx], pc[idx], labels, None, None)
        for name, value in expected.items():
            assert reps[name][r] == pytest.approx(value), (name, r)


def test_regression_replicates_equal_sklearn_on_the_same_resamples() -> None:
    rng = np.random.default_rng(5)
    y = rng.normal(1e6, 3, 200)  # a large mean: R² must not lose its precision
    pred = y + rng.normal(0, 1, 200)
    reps = bootstrap.replicates([bootstrap.regression(y, pred)], len(y), RESAMPLES, SEED)[0]
    for r, idx in enumerate(first_resamples(len(y))):
        for name, value in regression_metrics(y[idx], pred[idx]).items():
            assert reps[name][r] == pytest.approx(value, rel=1e-7), (name, r)


def test_resamples_are_seeded_shared_and_paired() -> None:
    rng = np.random.default_rng(9)
    y = rng.normal(size=300)
    a, b = (
        bootstrap.regression(y, y + rng.normal(size=300)),
        bootstrap.regression(y, y + 2 * rng.normal(size=300)),
    )
    first = bootstrap.replicates([a, b], 300, 50, 1)
    again = bootstrap.replicates([a, b], 300, 50, 1)
    other = bootstrap.replicates([a, b], 300, 50, 2)
    assert np.array_equal(first[0]["rmse"], again[0]["rmse"])
    assert not np.array_equal(first[0]["rmse"], other[0]["rmse"])
    # one model alone sees the same resamples as it does beside another
    assert np.array_equal(bootstrap.replicates([a], 300, 50, 1)[0]["rmse"], first[0]["rmse"])
    lo, hi = bootstrap.interval(first[1]["rmse"] - first[0]["rmse"])
    assert 0 < lo < hi  # b is clearly worse: the paired interval excludes 0


def test_chunks_cover_every_resample_and_stay_small() -> None:
    chunks = list(bootstrap.resample_chunks(100_000, 200, 0))
    assert sum(c.shape[0] for c in chunks) == 200
    assert max(c.size for c in chunks) <= max(100_000, 1 << 18)
    assert all(c.min() >= 0 and c.max() < 100_000 for c in chunks)


def test_interval_is_a_percentile_interval() -> None:
    reps = np.arange(1001, dtype=float)
    assert bootstrap.interval(reps) == (pytest.approx(25.0), pytest.approx(975.0))
    assert all(np.isnan(bootstrap.interval(np.full(10, np.nan))))


def test_point_metrics_are_sklearns() -> None:
    y = np.array(["no", "yes", "yes", "no", "yes"])
    pred = np.array(["no", "yes", "no", "no", "yes"])
    labels, yc, pc = encode_labels(y, pred, np.array(["no", "yes"]))
    assert labels.binary and labels.values[labels.positive] == "yes"
    got = classification_metrics(yc, pc, labels, None, None)
    assert got["f1"] == skm.f1_score(y, pred, pos_label="yes")
    assert got["precision"] == skm.precision_score(y, pred, pos_label="yes")
    assert got["balanced_accuracy"] == skm.balanced_accuracy_score(y, pred)


@pytest.mark.parametrize(
    ("text", "metric", "op", "value", "offset", "normal"),
    [
        ("f1>=0.9", "f1", ">=", 0.9, None, "f1 >= 0.9"),
        (" rmse <  12.5 ", "rmse", "<", 12.5, None, "rmse < 12.5"),
        ("r2==-1e-3", "r2", "==", -0.001, None, "r2 == -0.001"),
        ("accuracy>baseline", "accuracy", ">", None, 0.0, "accuracy > baseline"),
        ("f1 >= baseline - 0.01", "f1", ">=", None, -0.01, "f1 >= baseline-0.01"),
        ("latency_p95_ms<=baseline+.5", "latency_p95_ms", "<=", None, 0.5, "latency_p95_ms <= baseline+0.5"),
    ],
)
def test_gate_grammar(text: str, metric: str, op: str, value: Any, offset: Any, normal: str) -> None:
    gate = parse_gate(text)
    assert (gate.metric, gate.op, gate.value, gate.offset, gate.text) == (metric, op, value, offset, normal)


@pytest.mark.parametrize(
    "text",
    ["f1 => 0.9", "f1 = 0.9", "f1>=", ">=0.9", "f1>=nan", "f1>=inf", "f1>=baseline0.1", "f1>=0.9;", "1f>=2"],
)
def test_malformed_gates_are_one_sentence(text: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_gate(text)
    assert str(err.value) == (
        f"Malformed gate {text!r}: expected METRIC OP VALUE with OP one of >= > <= < == and VALUE a number, "
        "baseline, baseline+N or baseline-N, for example 'f1>=0.9'."
    )


def test_gate_evaluation() -> None:
    assert parse_gate("f1>=0.9").evaluate({"f1": 0.9}).status == "passed"
    assert parse_gate("f1>0.9").evaluate({"f1": 0.9}).status == "failed"
    result = parse_gate("rmse<=baseline+1").evaluate({"rmse": 11.5}, {"rmse": 10.0})
    assert (result.status, result.threshold) == ("failed", 11.0)
    assert str(result) == "rmse <= baseline+1 (rmse = 11.5, threshold 11)"
    missing = parse_gate("f1>=baseline").evaluate({"f1": 0.9}, None)
    assert (missing.status, missing.reason) == ("not evaluated", "no baseline to compare with")
    unmeasured = parse_gate("latency_p95_ms<=5").evaluate({"latency_p95_ms": float("nan")})
    assert unmeasured.status == "not evaluated"


def test_unknown_metric_lists_the_tasks_metrics() -> None:
    with pytest.raises(InvalidInputError) as err:
        check_metrics([parse_gate("f2>=0.9")], available("regression", False), "regression")
    assert str(err.value) == (
        "Unknown metric 'f2' in gate 'f2>=0.9'; metrics for regression: rmse, mae, r2, mape, "
        "latency_p50_ms, latency_p95_ms, model_size_mb, max_psi, drifted_features."
    )


class _Lookup(ClassifierMixin, BaseEstimator):
    """A "model" whose predictions were drawn beforehand: row ``i`` of the data gets ``pred[i]``."""

    def __init__(self, pred: np.ndarray) -> None:
        self.pred, self.classes_ = pred, np.array([0, 1])

    def predict(self, X: Any) -> np.ndarray:
        return self.pred[np.asarray(X, dtype=float)[:, 0].astype(int)]  # given the column "i" as an array


def _gate_pass_rates(sets: int = 400, rows: int = 200, seed: int = 7) -> tuple[float, float]:
    """How often a challenger whose true f1 is 0.027 below its baseline's passes
    ``f1>=baseline-0.01``, decided on the values and with confidence 0.95: over ``sets``
    simulated test sets of ``rows`` rows, through the report's own scoring, bootstrap and gates.

    Each row has a difficulty u ~ U(0, 1); the baseline errs where u < 0.10, the challenger
    where its own difficulty (u for half the rows, an independent draw for the others) is
    below 0.127. Labels are balanced and errors flip them, so precision = recall = accuracy
    in expectation: true f1 0.900 against 0.873."""
    import pandas as pd

    from nbdeploy.validation.build import Candidate, build_report

    rng = np.random.default_rng(seed)
    on_values = on_bounds = 0
    gates = [parse_gate("f1>=baseline-0.01"), parse_gate("f1>=baseline-0.01 @95%")]
    for s in range(sets):
        y = rng.integers(0, 2, rows)
        u = rng.random(rows)
        v = np.where(rng.random(rows) < 0.5, u, rng.random(rows))
        base, chal = np.where(u < 0.10, 1 - y, y), np.where(v < 0.127, 1 - y, y)
        X = pd.DataFrame({"i": np.arange(rows)})
        report = build_report(Candidate(_Lookup(chal), "c"), X, y, baseline=Candidate(_Lookup(base), "b"),
                              gates=gates, seed=s, latency_calls=0)  # fmt: skip
        plain, confident = report.gates
        on_values += plain.status == "passed"
        on_bounds += confident.status == "passed"
    return on_values / sets, on_bounds / sets


def test_a_worse_challenger_rarely_passes_a_non_inferiority_gate_with_confidence() -> None:
    on_values, on_bounds = _gate_pass_rates()
    print(f"\na challenger truly 0.027 worse in f1 passes 'f1>=baseline-0.01' in {on_values:.1%} of 400 test sets "
          f"of 200 rows on the values, {on_bounds:.1%} with confidence 0.95")  # fmt: skip
    assert on_bounds <= 0.05
    assert on_values > on_bounds  # the point decision is the lenient one


def test_gates_with_confidence_decide_on_the_bound() -> None:
    bounds = {("f1", True): -0.02, ("f1", False): 0.88, ("rmse", False): 1.3}

    def bound(metric: str, q: float, paired: bool) -> float | None:
        b = bounds.get((metric, paired))
        return None if b is None else b + (0.0 if q < 0.5 else 0.05)  # the upper bound a little higher

    metrics, base = {"f1": 0.93, "rmse": 1.2, "latency_p95_ms": 3.0}, {"f1": 0.93, "rmse": 1.25}
    r = parse_gate("f1>=baseline-0.01 @95%").evaluate(metrics, base, bound)
    assert (r.status, r.bound, r.bound_text) == ("failed", -0.02, "delta >= -0.02 at 95%")  # the values would pass
    assert parse_gate("f1>=baseline-0.03 @0.95").evaluate(metrics, base, bound).status == "passed"
    assert parse_gate("f1>=0.9 @95%").evaluate(metrics, base, bound).status == "failed"  # lower bound 0.88
    assert parse_gate("rmse<=1.34 @90%").evaluate(metrics, base, bound).status == "failed"  # upper bound 1.35
    r = parse_gate("latency_p95_ms<=5 @95%").evaluate(metrics, base, bound)
    assert r.status == "passed" and "no bootstrap interval" in r.reason
    r = parse_gate("f1>=0.9 @95%").evaluate(metrics, base, lambda m, q, p: float("nan"))
    assert r.status == "failed" and "undefined" in r.reason  # a level never makes a gate easier to pass
    assert parse_gate("f1>0.88 @95%").evaluate(metrics, base, bound).status == "failed"  # > needs a bound above
    assert parse_gate("f1>=0.9").with_confidence(0.9).confidence == 0.9
    assert parse_gate("f1>=0.9 @99%").with_confidence(0.9).confidence == 0.99  # its own level wins


@pytest.mark.parametrize(
    "text", ["f1>=0.9 @1.5", "f1>=0.9 @50%", "f1>=0.9 @", "f1>=0.9 @0.95 @0.9", "f1>=0.9@-1", "f1>=0.9 @\u0669\u0665%",
             "f1>=0.9" + " " * 5000 + "@95%"],
)
def test_bad_confidence_levels_are_one_sentence(text: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_gate(text)
    assert str(err.value).count(".") >= 1 and "\n" not in str(err.value)


def test_percentile_bootstrap_coverage_of_rmse_drops_with_heavy_tails_and_the_report_says_so() -> None:
    """The figures the heavy-tail note quotes: 95 % percentile intervals of RMSE over 300
    samples of 500 errors (normal, Student-t(5), Student-t(3))."""
    from nbdeploy.validation.build import _heavy_tails

    rng = np.random.default_rng(1)
    coverage = {}
    for name, draw, true in (("normal", lambda: rng.normal(size=500), 1.0),
                             ("t5", lambda: rng.standard_t(5, size=500), np.sqrt(5 / 3)),
                             ("t3", lambda: rng.standard_t(3, size=500), np.sqrt(3.0))):  # fmt: skip
        hits = notes = 0
        for r in range(300):
            e = draw()
            reps = bootstrap.replicates([bootstrap.regression(e, np.zeros(500))], 500, 200, seed=r)[0]["rmse"]
            lo, hi = bootstrap.interval(reps)
            hits += lo <= true <= hi
            notes += bool(_heavy_tails(e, np.zeros(500)))
        coverage[name] = (hits / 300, notes / 300)
    print("\ncoverage of 95% percentile intervals of rmse, share of reports with the note:", coverage)
    assert coverage["normal"][0] >= 0.9 and coverage["normal"][1] == 0.0
    assert coverage["t3"][0] < 0.85 and coverage["t3"][1] >= 0.9


class _Fixed(ClassifierMixin, BaseEstimator):
    """A classifier whose probabilities were drawn beforehand: row ``i`` gets ``proba[i]``."""

    def __init__(self, proba: np.ndarray) -> None:
        self.proba, self.classes_ = proba, np.array([0, 1])

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.proba[np.asarray(X, dtype=float)[:, 0].astype(int)]

    def predict(self, X: Any) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)


def _ece(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """The top-label ECE written out bin by bin."""
    confidence, predicted = proba.max(axis=1), proba.argmax(axis=1)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(abs((predicted[which == b] == y[which == b]).mean() - confidence[which == b].mean())
                     * (which == b).mean() for b in range(bins) if (which == b).any()))  # fmt: skip


def test_calibration_metrics_and_their_replicates_are_the_definitions() -> None:
    from nbdeploy.validation.calibration import calibration

    rng = np.random.default_rng(3)
    p = rng.random(400)
    y = (rng.random(400) < p ** 1.5).astype(int)
    proba, codes = np.c_[1 - p, p], np.array([0, 1])
    cal = calibration(y, proba, codes, 1)
    assert cal.point["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert cal.point["ece"] == pytest.approx(_ece(y, proba))
    assert sum(c["rows"] for c in cal.curve) == 400
    stat = bootstrap.classification(y, proba.argmax(axis=1), 2, 1, proba, codes, cal.rows)
    reps = bootstrap.replicates([stat], 400, RESAMPLES, SEED)[0]
    for i, idx in enumerate(first_resamples(400)):
        assert reps["brier"][i] == pytest.approx(skm.brier_score_loss(y[idx], p[idx]))
        assert reps["ece"][i] == pytest.approx(_ece(y[idx], proba[idx]))


def test_an_overconfident_model_fails_an_ece_gate_that_a_calibrated_one_passes() -> None:
    import pandas as pd

    from nbdeploy.validation.build import Candidate, build_report

    rng = np.random.default_rng(11)
    n = 4000
    p = rng.random(n)
    y = (rng.random(n) < p).astype(int)  # calibrated by construction
    sharp = np.clip(0.5 + (p - 0.5) * 2.5, 0.001, 0.999)  # the same ranking, overconfident
    X = pd.DataFrame({"i": np.arange(n)})
    gates = [parse_gate("ece<=0.05"), parse_gate("ece<=0.05 @95%"), parse_gate("brier<=baseline")]
    calibrated = build_report(Candidate(_Fixed(np.c_[1 - p, p]), "calibrated"), X, y, gates=gates[:2], latency_calls=0)
    over = build_report(Candidate(_Fixed(np.c_[1 - sharp, sharp]), "over"), X, y, gates=gates,
                        baseline=Candidate(_Fixed(np.c_[1 - p, p]), "calibrated"), latency_calls=0)  # fmt: skip
    assert [g.status for g in calibrated.gates] == ["passed", "passed"]
    assert calibrated.metrics["ece"] < 0.03 < 0.1 < over.metrics["ece"]
    assert [g.status for g in over.gates] == ["failed", "failed", "failed"]
    assert over.delta_intervals["ece"][0] > 0  # clearly worse calibrated, on the paired resamples
    assert over.reliability and "Reliability curve" in over._repr_html_()
    assert "ece" in repr(over) and "brier" in repr(over)
