"""XGBoost and LightGBM through the whole loop (issue #12, item 7): alone and inside a
``Pipeline`` with a ``ColumnTransformer``, each is registered, validated with explanations,
served, asked for predictions and probabilities, given labels and monitored, like a
scikit-learn model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import nbdeploy

xgboost = pytest.importorskip("xgboost", reason="xgboost is not installed (the dev extra has xgboost-cpu)")
lightgbm = pytest.importorskip("lightgbm", reason="lightgbm is not installed (the dev extra has it)")


def data() -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(700, 4)), columns=["a", "b", "c", "d"])
    X = X.assign(city=rng.choice(["oslo", "lima", "pune"], 700))
    signal = X["a"] + (X["city"] == "lima") * 1.5
    return X, (signal + rng.normal(scale=0.5, size=700) > 0.7).astype(int), signal * 2 + rng.normal(size=700)


def pipeline(final: Any) -> Any:
    return make_pipeline(ColumnTransformer([("city", OneHotEncoder(), ["city"])], remainder="passthrough"), final)


MODELS: dict[str, Callable[[], Any]] = {
    "xgboost classifier in a pipeline": lambda: pipeline(xgboost.XGBClassifier(n_estimators=40, max_depth=3)),
    "xgboost regressor": lambda: xgboost.XGBRegressor(n_estimators=40, max_depth=3),
    "lightgbm regressor in a pipeline": lambda: pipeline(lightgbm.LGBMRegressor(n_estimators=40, verbose=-1)),
    "lightgbm classifier": lambda: lightgbm.LGBMClassifier(n_estimators=40, verbose=-1),
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_boosted_model_goes_through_the_whole_loop(kind: str, name: str, serving: Any) -> None:
    X, labels, values = data()
    classifier = "classifier" in kind
    if "pipeline" not in kind:
        X = X.drop(columns="city")  # the libraries' own estimators take numbers only
    y = labels if classifier else values
    model = MODELS[kind]().fit(X[:500], y[:500])
    X_test, y_test = X[500:].reset_index(drop=True), y[500:].reset_index(drop=True)

    nbdeploy.register(model, name, X[:500], y[:500])
    requirements = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{name}/1")).read_text()
    library = "lightgbm" if "lightgbm" in kind else "xgboost"  # the CPU build pins as xgboost-cpu
    assert f"{library}=" in requirements or f"{library}-cpu=" in requirements, requirements
    report = nbdeploy.validate(name, X_test, y_test, gates=["accuracy>=0.6" if classifier else "r2>=0.3"], shap=True)
    assert report.passed and report.task == ("classification" if classifier else "regression")
    e = report.explanation
    assert not e.warnings and e.importances[0].feature in ("a", "city") and e.dependence
    assert e.shap is not None and e.shap["max_error"] <= 1e-5  # float32 sums in both libraries

    dep = serving(name, name=name)
    served = dep.predict(X_test.head(50))
    assert served.tolist() == pytest.approx(model.predict(X_test.head(50)).tolist(), abs=1e-6)
    _, request_id = dep.predict(X_test.head(1), with_id=True)
    assert dep.feedback([request_id], y_test.head(1)) == {"accepted": 1, "unknown": []}
    if classifier:
        proba = dep.predict(X_test.head(50), method="predict_proba")
        assert np.max(np.abs(proba - model.predict_proba(X_test.head(50)))) <= 1e-9
    window = dep.snapshot("1m")["windows"]["1m"]
    assert window["requests"] == (3 if classifier else 2) and window["labelled"] == 1
