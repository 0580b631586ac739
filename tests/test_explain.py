"""The report's Explain section: scikit-learn's numbers in fewer calls, the right features,
failures as warnings, SHAP exact where it claims to be."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.inspection import partial_dependence, permutation_importance
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.svm import LinearSVC

import nbdeploy
from nbdeploy.validation.build import Candidate, build_report
from nbdeploy.validation.explain import explain, importances
from nbdeploy.validation.perturb import MAX_CELLS, dependence, grid
from tests.helpers import usage_error


def frame(X: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])


@pytest.fixture(scope="module")
def mixed() -> tuple[Any, pd.DataFrame, np.ndarray]:
    """A pipeline over a string column (one-hot) and numeric ones, with a class that depends on both."""
    rng = np.random.default_rng(0)
    X = frame(rng.normal(size=(600, 4))).assign(city=rng.choice(["oslo", "lima", "pune"], 600))
    y = ((X["f0"] + (X["city"] == "lima") * 1.5 + rng.normal(scale=0.5, size=600)) > 0.7).astype(int).to_numpy()
    encode = ColumnTransformer([("city", OneHotEncoder(), ["city"])], remainder="passthrough")
    return make_pipeline(encode, LogisticRegression()).fit(X[:400], y[:400]), X[400:].reset_index(drop=True), y[400:]


def test_importances_are_sklearns_for_each_score(mixed: tuple[Any, pd.DataFrame, np.ndarray]) -> None:
    model, X, y = mixed
    _, ours = importances(model, X, y, "classification", repeats=4, seed=7, as_array=False)
    theirs = permutation_importance(model, X, y, n_repeats=4, random_state=7, scoring="neg_log_loss")
    by_name = {i.feature: i.mean for i in ours}
    assert np.allclose([by_name[c] for c in X.columns], theirs.importances_mean, rtol=0, atol=1e-12)
    assert ours[0].feature in ("city", "f0") and ours[0].low < ours[0].mean < ours[0].high

    Xn = frame(np.random.default_rng(1).normal(size=(300, 5)))
    yn = Xn["f1"] * 3 - Xn["f2"] + np.random.default_rng(2).normal(size=300)
    ridge = Ridge().fit(Xn, yn)
    what, ours = importances(ridge, Xn, yn.to_numpy(), "regression", repeats=3, seed=0, as_array=False)
    theirs = permutation_importance(ridge, Xn, yn, n_repeats=3, random_state=0)  # the default score: R²
    assert what == "drop in R²" and [i.feature for i in ours][:2] == ["f1", "f2"]
    assert np.allclose(sorted(i.mean for i in ours), sorted(theirs.importances_mean), atol=1e-12)

    labels = (yn > 0).to_numpy()
    svc = LinearSVC().fit(Xn.to_numpy(), labels)  # no predict_proba, fitted on an array
    what, ours = importances(svc, Xn, labels, "classification", repeats=3, seed=0, as_array=True)
    theirs = permutation_importance(svc, Xn.to_numpy(), labels, n_repeats=3, random_state=0)
    assert what == "drop in accuracy"
    assert np.allclose([i.mean for i in sorted(ours, key=lambda i: i.feature)], theirs.importances_mean, atol=1e-12)


def test_partial_dependence_is_sklearns_and_keeps_column_types(mixed: tuple[Any, pd.DataFrame, np.ndarray]) -> None:
    model, X, _ = mixed
    for column in ("f0", "city"):
        kind, points = grid(X[column])
        values = X[column].to_numpy()[points]
        ice = dependence(model.predict_proba, X, list(X.columns).index(column), points)
        theirs = partial_dependence(model, X, [column], kind="both", custom_values={column: values},
                                    method="brute", categorical_features=["city"])  # fmt: skip
        assert kind == ("numeric" if column == "f0" else "values")
        assert np.allclose(ice[:, :, 1].mean(axis=1), theirs["average"][0], atol=1e-12)
        assert np.allclose(ice[:, :, 1].T, theirs["individual"][0], atol=1e-12)
    assert set(X["city"].to_numpy()[grid(X["city"])[1]]) == {"oslo", "lima", "pune"}


def test_the_top_ten_are_the_ten_informative_features() -> None:
    """make_classification without shuffling puts the 10 informative features first; the
    report's defaults (500 rows, 5 shuffles, log loss) must rank exactly them on top."""
    hits = 0
    for seed in range(20):
        X, y = make_classification(n_samples=2500, n_features=30, n_informative=10, n_redundant=0, n_repeated=0,
                                   shuffle=False, random_state=seed)  # fmt: skip
        order = np.random.default_rng(seed).permutation(y.size)  # rows shuffled, columns kept in place
        X, y = frame(X[order]), y[order]
        model = HistGradientBoostingClassifier(random_state=seed).fit(X[:2000], y[:2000])
        e = explain(model, X[2000:].reset_index(drop=True), y[2000:], "classification", positive=1, seed=seed)
        assert e.rows == 500 and e.repeats == 5 and not e.warnings
        hits += {i.feature for i in e.importances[:10]} == {f"f{i}" for i in range(10)}
    assert hits >= 19, f"the informative features were the top 10 in {hits} of 20 seeds"


class Fragile(RandomForestClassifier):
    """A forest that predicts the evaluation data but fails on the stacked copies, as a model
    with a request-size limit would."""

    def predict_proba(self, X: Any) -> Any:
        if len(X) > 1000:
            raise MemoryError("too many rows at once")
        return super().predict_proba(X)


def test_a_failing_explainer_is_a_warning_not_a_failed_report() -> None:
    X, y = make_classification(n_samples=900, n_features=6, random_state=0)
    X = frame(X)
    model = Fragile(n_estimators=10, random_state=0).fit(X[:600], y[:600])
    inputs = [(c, "double") for c in X.columns]
    report = build_report(Candidate(model, "m/1", inputs), X[600:], y[600:], gates=[], latency_calls=0)
    assert report.passed and report.explanation is not None and report.explanation.importances == []
    assert report.explanation.warnings == [
        "Permutation importance failed (MemoryError: too many rows at once)."
    ]
    assert "explain warning: Permutation importance failed" in repr(report)
    assert "\u26a0 Permutation importance failed" in report._repr_html_()


def test_wide_data_is_subsampled_within_a_bounded_frame() -> None:
    rng = np.random.default_rng(0)
    X = frame(rng.normal(size=(400, 600)))
    y = X["f3"] * 2 + rng.normal(scale=0.1, size=400)
    e = explain(Ridge().fit(X, y), X, y.to_numpy(), "regression", repeats=2)
    assert e.rows == 166 and e.of_rows == 400  # 200,000 shuffled rows / (600 features x 2 shuffles)
    assert e.importances[0].feature == "f3" and e.rows * X.shape[1] <= MAX_CELLS


def test_validate_records_the_section_and_the_magic_takes_its_options(
    ip: Any, cancer: dict[str, Any], name: str, tracking_uri: str
) -> None:
    nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"], alias="champion")
    stump = make_pipeline(LogisticRegression(max_iter=5000)).fit(cancer["X_train"], cancer["y_train"])
    nbdeploy.register(stump, name, cancer["X_train"], cancer["y_train"])
    report = ip.run_line_magic("deploy", f"validate {name}/2 --data X_test --target y_test --explain-rows 100")
    e = report.explanation
    assert e.rows == 100 and e.of_rows == 143 and e.baseline == f"{name}/1" and e.score == "increase in log loss"
    assert all(i.baseline is not None for i in e.importances) and len(e.dependence) == 3
    html = report._repr_html_()
    ElementTree.fromstring(f"<root>{html}</root>")
    assert "Permutation importance: the increase in log loss" in html and "random subsample of 100 of the 143" in html
    run = MlflowClient(tracking_uri).get_run(report.run_id)
    folder = Path(MlflowClient(tracking_uri).download_artifacts(run.info.run_id, "validation"))
    saved = json.loads((folder / "validation.json").read_text())["explain"]
    assert saved["importances"][0]["feature"] == e.importances[0].feature and saved["rows"] == 100
    assert "Explain" in (folder / "validation.html").read_text()

    quiet = ip.run_line_magic("deploy", f"validate {name}/2 --data X_test --target y_test --no-explain")
    assert quiet.explanation is None and "Explain" not in quiet._repr_html_()
    assert usage_error(ip, f"validate {name}/2 --data X_test --target y_test --explain-rows 3") == (
        "--explain-rows (explain_rows) is 3; the Explain section needs a whole number of rows, at least 10. "
        "See docs/validate.md#--no-explain---explain-rows-n---shap"
    )


def test_shap_without_the_package_is_one_sentence(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['shap'] = None\n"
        "from nbdeploy.validation.shap_values import check_installed\n"
        "try:\n    check_installed()\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "InvalidInputError SHAP values need the shap package: pip install 'nbdeploy[explain]'."


def test_tree_shap_adds_up_to_the_models_own_output() -> None:
    pytest.importorskip("shap", reason="shap is not installed: pip install 'nbdeploy[explain]'")
    from nbdeploy.validation.shap_values import tree_shap

    X, y = make_classification(n_samples=600, n_features=8, n_informative=4, random_state=0)
    X = frame(X)
    forest = RandomForestClassifier(n_estimators=30, random_state=0).fit(X[:400], y[:400])
    s = tree_shap(forest, X[400:])
    assert s["rows"] == 200 and s["adds_up_to"] == "predict_proba" and s["max_error"] <= 1e-6
    report = build_report(Candidate(forest, "f/1", [(c, "double") for c in X.columns]), X[400:], y[400:],
                          latency_calls=0, shap=True)  # fmt: skip
    assert report.explanation.shap["features"][0]["feature"] == s["features"][0]["feature"]
    assert "predict_proba to" in report._repr_html_() and "shap (mean |value|):" in repr(report)

    xgboost = pytest.importorskip("xgboost", reason="xgboost is not installed (the dev extra has it)")
    Xr, yr = make_regression(n_samples=500, n_features=6, random_state=0)
    booster = xgboost.XGBClassifier(n_estimators=30, max_depth=3).fit(Xr[:300], yr[:300] > 0)
    s = tree_shap(booster, frame(Xr[300:]), as_array=True)
    # XGBoost sums its trees in float32: its own margins carry about 1e-7 relative error
    assert s["adds_up_to"] == "predict(output_margin=True)" and s["max_error"] <= 1e-5

    lasso = LogisticRegression().fit(X[:400], y[:400])
    e = explain(lasso, X[400:].reset_index(drop=True), y[400:], "classification", positive=1, shap=True)
    assert e.shap is None
    assert e.warnings[0].startswith("SHAP failed (ValueError: TreeSHAP cannot explain LogisticRegression, it explains")


class NanOnBigCalls(Ridge):
    """A regressor that gives NaN when asked for many rows at once (as a model overflowing would)."""

    def predict(self, X: Any) -> Any:
        out = super().predict(X)
        return out * np.nan if len(X) > 1000 else out


def test_hostile_shapes_of_data_and_models_end_as_numbers_or_warnings() -> None:
    rng = np.random.default_rng(0)
    # sorted evaluation data: partial dependence still spans the data, not its first rows
    X = frame(rng.normal(size=(1500, 3))).sort_values("f0").reset_index(drop=True)
    y = (X["f0"] + rng.normal(scale=0.3, size=1500) > 0).astype(int).to_numpy()
    e = explain(LogisticRegression().fit(X, y), X, y, "classification", positive=1)
    (curve,) = [d for d in e.dependence if d.feature == "f0"]
    assert curve.grid[0] < np.quantile(X["f0"], 0.15) and curve.grid[-1] > np.quantile(X["f0"], 0.85)

    # integer column labels, a few-valued numeric column (plotted in order), duplicate names kept apart
    Xi = pd.DataFrame({0: rng.normal(size=600), 1: rng.integers(1, 7, 600)})
    yi = (Xi[0] + Xi[1] * 0.8 + rng.normal(size=600)).to_numpy()
    e = explain(Ridge().fit(Xi.to_numpy(), yi), Xi, yi, "regression", as_array=True)
    rooms = next(d for d in e.dependence if d.feature == "1")
    assert not e.warnings and rooms.kind == "values" and rooms.grid == [str(v) for v in range(1, 7)]
    twin = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "a", "b"])
    e = explain(Ridge().fit(twin.to_numpy(), twin.to_numpy()[:, 1]), twin, twin.to_numpy()[:, 1], "regression",
                as_array=True)  # fmt: skip
    assert not e.warnings and len(e.importances) == 3  # the two "a" columns stay two features
    assert e.importances[0].feature == "a" and e.importances[0].mean > 0.5 > abs(e.importances[1].mean)

    # NaN outputs: a warning, no chart of NaNs
    Xn = frame(rng.normal(size=(400, 4)))
    yn = Xn["f0"].to_numpy()
    e = explain(NanOnBigCalls().fit(Xn, yn), Xn, yn, "regression")
    assert e.importances == [] and "not all finite numbers" in e.warnings[0]

    # too wide for the budget: left out, said so
    wide = frame(rng.normal(size=(60, 1400)))
    e = explain(Ridge().fit(wide, wide["f0"]), wide, wide["f0"].to_numpy(), "regression")
    assert e.importances == [] and e.warnings[0].startswith("Permutation importance was left out: 1400 features")

    # a baseline without probabilities: both scored by accuracy, and compared
    Xc, yc = frame(rng.normal(size=(400, 4))), rng.integers(0, 2, 400)
    base = ("m/1", LinearSVC().fit(Xc.to_numpy(), yc), Xc, True)
    e = explain(LogisticRegression().fit(Xc, yc), Xc, yc, "classification", positive=1, baseline=base)
    assert e.score == "drop in accuracy" and all(i.baseline is not None for i in e.importances)
    assert e.warnings[0].startswith("Both models are scored by accuracy")


def test_explain_options_are_checked_before_anything_loads(cancer: dict[str, Any], name: str) -> None:
    X, y = cancer["X_test"], cancer["y_test"]
    for rows in (1e3, "500", True, 9):
        with pytest.raises(nbdeploy.InvalidInputError, match="whole number of rows, at least 10"):
            nbdeploy.validate("never-registered", X, y, explain_rows=rows)
    with pytest.raises(nbdeploy.InvalidInputError, match="which --no-explain leaves out"):
        nbdeploy.validate("never-registered", X, y, explain=False, shap=True)
