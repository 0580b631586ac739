"""Accuracy estimated before labels arrive (issue #12, item 5): the estimate is right under
covariate shift for a calibrated classifier, the server shows it with an interval beside
the realized figure, and an alert on it fires before any label."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression

import nbdeploy
from nbdeploy.monitoring.estimate import estimated_accuracy
from nbdeploy.monitoring.view import render_text
from tests.helpers import eventually

WEIGHTS = np.array([1.5, -2.0, 0.8])


def draw(rng: np.random.Generator, n: int, shift: float) -> tuple[pd.DataFrame, np.ndarray]:
    """Logistic data (so a fitted logistic regression is calibrated); ``shift`` moves the inputs
    toward the decision boundary, where the model is less sure: covariate shift, P(y|x) unchanged."""
    X = rng.normal(size=(n, 3)) * (1 - shift) + shift * np.array([0.3, 0.2, 0.0])
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ WEIGHTS) * 3))).astype(int)
    return pd.DataFrame(X, columns=["a", "b", "c"]), y


@pytest.fixture(scope="module")
def calibrated() -> LogisticRegression:
    X, y = draw(np.random.default_rng(0), 20_000, 0.0)
    return LogisticRegression().fit(X, y)


def test_the_estimate_tracks_realized_accuracy_under_covariate_shift(calibrated: LogisticRegression) -> None:
    rng = np.random.default_rng(1)
    close, covered, chunks = 0, 0, 0
    for shift in (0.0, 0.3, 0.6, 0.8):
        for _ in range(250):
            X, y = draw(rng, 1000, shift)
            proba = calibrated.predict_proba(X)
            pred = calibrated.predict(X)
            confidence = proba[np.arange(1000), np.searchsorted(calibrated.classes_, pred)]
            est = estimated_accuracy(confidence)
            realized = float(np.mean(pred == y))
            close += abs(est["est_accuracy"] - realized) <= 0.03
            lo, hi = est["est_accuracy_ci"]
            covered += lo <= realized <= hi
            chunks += 1
    assert close >= 0.9 * chunks, f"within 0.03 in {close} of {chunks} chunks"
    assert 0.92 * chunks <= covered <= 0.98 * chunks, f"the 95 % interval held the realized accuracy {covered} times"


def test_the_server_estimates_before_labels_and_alerts_on_it(
    calibrated: LogisticRegression, name: str, serving: Any, tmp_path: Any
) -> None:
    rng = np.random.default_rng(2)
    X_train, y_train = draw(rng, 2000, 0.0)
    X_test, y_test = draw(rng, 1000, 0.0)
    nbdeploy.register(calibrated, name, X_train, y_train)
    validated = nbdeploy.validate(f"{name}/1", X_test, y_test, explain=False).metrics["accuracy"]
    dep = serving(f"{name}/1", name=name, alert_interval_s=0.2)
    dep.alerts(add=["est_accuracy<baseline-0.05"], k=1)
    rule = dep.alerts()["rules"][0]["rule"]
    assert rule == f"est_accuracy<{validated - 0.05:.6g}"

    X_live, y_live = draw(rng, 2000, 0.8)  # shifted: the model is much less sure
    ids = []
    with httpx.Client(base_url=dep.url, timeout=30) as client:
        for start in range(0, 2000, 50):
            part = X_live.iloc[start : start + 50]
            body = {"dataframe_split": {"columns": list(part.columns), "data": part.to_numpy().tolist()}}
            answer = client.post("/invocations", json=body)
            assert answer.status_code == 200
            ids.append(answer.headers["x-request-id"])
    firing = eventually(lambda: dep.snapshot("1m")["alerts"]["firing"])
    assert firing == [rule]  # before any label arrived
    window = dep.snapshot("1m")["windows"]["1m"]
    realized = float(np.mean(calibrated.predict(X_live) == y_live))
    assert window["labelled"] == 0 and window["est_rows"] == 2000
    assert abs(window["est_accuracy"] - realized) <= 0.03 and window["est_accuracy"] < validated - 0.05
    lo, hi = window["est_accuracy_ci"]
    assert lo < window["est_accuracy"] < hi

    labels = [y_live[i : i + 50].tolist() for i in range(0, 2000, 50)]
    assert dep.feedback(ids, labels)["accepted"] == 40
    window = dep.snapshot("1m")["windows"]["1m"]
    assert window["accuracy"] == pytest.approx(realized) and window["est_accuracy_labelled"] == window["est_accuracy"]
    metrics = {f.name: f for f in text_string_to_metric_families(httpx.get(dep.url + "/metrics").text)}
    assert metrics["nbdeploy_estimated_accuracy"].samples[0].value == pytest.approx(window["est_accuracy"])
    text = render_text(dep.snapshot("1m"), "1m")
    assert f"estimated accuracy {window['est_accuracy']:.3f} [{window['est_accuracy_ci'][0]:.3f}," in text

    logged = [r for r in (dep.path / "requests.jsonl").read_text().splitlines() if '"confidence"' in r]
    assert len(logged) == 40  # every answer logged its confidences: a restart rebuilds the estimate
    dep.stop()
    again = serving(f"{name}/1", name=name)
    assert again.snapshot("1m")["windows"]["1m"]["est_rows"] == 2000


def test_requests_for_probabilities_and_regressors_carry_no_estimate(
    calibrated: LogisticRegression, name: str, serving: Any
) -> None:
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(3)
    X, y = draw(rng, 500, 0.0)
    nbdeploy.register(calibrated, name, X, y)
    nbdeploy.register(Ridge().fit(X, X["a"]), f"{name}-r", X, X["a"])
    dep = serving(f"{name}/1", name=name)
    dep.predict(X.head(20), method="predict_proba")
    assert dep.snapshot("1m")["windows"]["1m"]["est_rows"] == 0
    ridge = serving(f"{name}-r/1", name=f"{name}-r")
    ridge.predict(X.head(20))
    assert "est_accuracy" not in ridge.snapshot("1m")["windows"]["1m"]
    with pytest.raises(nbdeploy.InvalidInputError, match=r"^est_accuracy is a classifier's: .* is a regressor"):
        ridge.alerts(add=["est_accuracy<0.9"])
    never = f"The alert rule 'est_accuracy<baseline' compares with the served version's last validation, but {name}/1"
    with pytest.raises(nbdeploy.InvalidInputError, match=f"^{never} has no accuracy recorded: validate it first"):
        dep.alerts(add=["est_accuracy<baseline"])
    with pytest.raises(nbdeploy.InvalidInputError, match="has no accuracy recorded"):  # the same when serving
        serving(f"{name}/1", name=f"{name}-b", alerts=["est_accuracy<baseline"])
