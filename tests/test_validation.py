"""validate / gated promote against a real SQLite tracking store, from Python and the magic."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn import metrics as skm
from sklearn.tree import DecisionTreeClassifier

import nbdeploy
from nbdeploy.errors import InvalidInputError, PromotionRefusedError, ValidationFailedError
from nbdeploy.validation import validate
from tests.helpers import usage_error

CLASSIFICATION_METRICS = (
    "accuracy, balanced_accuracy, precision, recall, f1, roc_auc, log_loss, brier, ece, "
    "latency_p50_ms, latency_p95_ms, model_size_mb, max_psi, drifted_features"
)


def g4(x: float) -> str:
    return f"{x:.4g}"


def strict_error(ip: Any, line: str) -> str:
    """The message of the error a failed ``--strict`` lets through (not a UsageError, so the cell fails)."""
    with pytest.raises(ValidationFailedError) as err:
        ip.run_line_magic("deploy", line)
    assert err.value._render_traceback_() == [f"ValidationFailedError: {err.value}"]
    return str(err.value)


@pytest.fixture
def stump(cancer: dict[str, Any]) -> Any:
    """A deliberately worse model than the fixture's forest."""
    return DecisionTreeClassifier(max_depth=1, random_state=0).fit(cancer["X_train"], cancer["y_train"])


@pytest.fixture
def champion(cancer: dict[str, Any], name: str) -> str:
    """``name/1``: the forest, validated and promoted to @champion."""
    nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"])
    assert validate(f"{name}/1", cancer["X_test"], cancer["y_test"], gates=["f1>=0.9"]).passed
    assert nbdeploy.promote(f"{name}/1").aliases == ["champion"]
    return f"{name}/1"


def version_tags(tracking_uri: str, name: str, version: int) -> dict[str, str]:
    return dict(MlflowClient(tracking_uri).get_model_version(name, str(version)).tags)


def test_worse_model_fails_its_baseline_gates_and_promote_refuses_it(
    ip: Any, cancer: dict[str, Any], name: str, champion: str, stump: Any, tracking_uri: str
) -> None:
    X, y = cancer["X_test"], cancer["y_test"]
    nbdeploy.register(stump, name, cancer["X_train"], cancer["y_train"])
    report = validate(f"{name}/2", X, y, gates=["f1>=0.8", "f1>=baseline-0.01", "roc_auc>=baseline"])

    assert report.baseline == champion and not report.passed and report.verdict == "failed"
    assert [g.gate.text for g in report.failed_gates] == ["f1 >= baseline-0.01", "roc_auc >= baseline"]
    assert report.metrics["f1"] == skm.f1_score(y, stump.predict(X))
    assert report.baseline_metrics["f1"] == skm.f1_score(y, cancer["model"].predict(X))
    assert report.deltas["f1"] == pytest.approx(report.metrics["f1"] - report.baseline_metrics["f1"])
    lo, hi = report.intervals["f1"]
    assert lo < report.metrics["f1"] < hi
    assert report.delta_intervals["roc_auc"][1] < 0  # the paired interval: clearly worse

    tags = version_tags(tracking_uri, name, 2)
    assert tags["nbdeploy.validation"] == "failed"
    assert tags["nbdeploy.validation.gates"] == "f1 >= 0.8; f1 >= baseline-0.01; roc_auc >= baseline"
    assert tags["nbdeploy.validation.failed"] == "f1 >= baseline-0.01; roc_auc >= baseline"
    assert tags["nbdeploy.validation.baseline"] == champion
    c = MlflowClient(tracking_uri)
    run = c.get_run(tags["nbdeploy.validation.run"])
    assert run.data.metrics["validation_f1"] == report.metrics["f1"]
    assert run.data.metrics["validation_gates_failed"] == 2
    assert run.data.tags["nbdeploy.model_version"] == f"{name}/2"
    folder = Path(c.download_artifacts(run.info.run_id, "validation"))
    saved = json.loads((folder / "validation.json").read_text())
    assert saved["verdict"] == "failed" and saved["baseline"] == champion
    assert saved["metrics"]["f1"]["value"] == report.metrics["f1"]
    assert "FAILED (2 of 3 gates failed)" in (folder / "validation.html").read_text()
    assert tags["nbdeploy.validation.report"] == f"runs:/{run.info.run_id}/validation/validation.html"

    refusal = (
        f"Refusing to promote {name}/2 to @champion: its last validation failed on f1 >= baseline-0.01; "
        "roc_auc >= baseline; validate it again once it passes (nbdeploy.validate in Python), "
        "or pass --force (force=True) to promote it anyway."
    )
    with pytest.raises(PromotionRefusedError) as err:
        nbdeploy.promote(f"{name}/2")
    assert str(err.value) == refusal
    assert usage_error(ip, f"promote {name}/2") == refusal + " See docs/promote.md#gated-promotion"
    assert "its last validation failed" in version_tags(tracking_uri, name, 2)["nbdeploy.promotion.refused"]
    assert nbdeploy.resolve(f"{name}@champion").version == 1

    strict = f"validate {name}/2 --data X_test --target y_test --gate 'f1>=baseline-0.01' --strict"
    threshold = report.baseline_metrics["f1"] - 0.01
    assert strict_error(ip, strict) == (
        f"Validation of {name}/2 failed 1 of 1 gates: "
        f"f1 >= baseline-0.01 (f1 = {g4(report.metrics['f1'])}, threshold {g4(threshold)})."
    )

    forced = ip.run_line_magic("deploy", f"promote {name}/2 --force")
    assert forced.version == 2 and forced.aliases == ["champion"]
    assert "its last validation failed" in forced.tags["nbdeploy.promotion.forced"]
    assert forced.tags["nbdeploy.promotion.forced"].endswith(
        "@champion: its last validation failed on f1 >= baseline-0.01"
    )
    # with confidence: decided on the paired bootstrap bound; the delta's interval in the text and in MLflow
    line = f"validate {name}/2 --data X_test --target y_test --gate 'f1>=baseline-0.5' --baseline {name}/1"
    line += " --confidence 95%"
    confident = ip.run_line_magic("deploy", line)
    (gate,) = confident.gates
    assert gate.gate.text == "f1 >= baseline-0.5 @95%" and gate.status == "passed"
    lo, hi = confident.delta_intervals["f1"]
    assert lo <= gate.bound <= confident.deltas["f1"] <= hi  # a one-sided 95 % bound sits inside the 95 % interval
    assert f"(delta >= {gate.bound:.4g} at 95%)" in repr(confident)
    assert f"[{lo:+.4g}, {hi:+.4g}]" in repr(confident)
    run = c.get_run(version_tags(tracking_uri, name, 2)["nbdeploy.validation.run"])
    assert (
        run.data.metrics["validation_f1_delta_ci_low"] == lo and run.data.metrics["validation_f1_delta_ci_high"] == hi
    )
    assert usage_error(ip, f"{line[:-4]} 1.5") == (
        "The confidence '1.5' must be a level above 50 % and below 100 %, for example 0.95 or @95%. "
        "See docs/validate.md#--confidence-level"
    )
    with pytest.raises(InvalidInputError, match="give resamples above 0"):
        validate(f"{name}/2", X, y, gates=["f1>=0.5"], confidence=0.95, resamples=0)


def test_a_never_validated_version_is_refused_unless_forced(
    cancer: dict[str, Any], name: str, tracking_uri: str
) -> None:
    nbdeploy.register(cancer["model"], name, cancer["X_train"])
    with pytest.raises(PromotionRefusedError) as err:
        nbdeploy.promote(name, alias="prod")
    assert str(err.value) == (
        f"Refusing to promote {name}/1 to @prod: it was never validated; run %deploy validate {name}/1 "
        "--data X --target Y first (nbdeploy.validate in Python), or pass --force (force=True) to promote "
        "it anyway."
    )
    assert version_tags(tracking_uri, name, 1)["nbdeploy.promotion.refused"].endswith("@prod: it was never validated")
    promoted = nbdeploy.promote(name, alias="prod", force=True)
    assert promoted.aliases == ["prod"]
    assert promoted.tags["nbdeploy.promotion.forced"].endswith("@prod: it was never validated")
    assert validate(name, cancer["X_test"], cancer["y_test"]).passed  # no gates: passes, promotable
    assert nbdeploy.promote(name).aliases == ["champion", "prod"]


def test_strict_fails_on_a_baseline_gate_without_a_baseline(cancer: dict[str, Any], name: str) -> None:
    nbdeploy.register(cancer["model"], name, cancer["X_train"])
    lenient = validate(name, cancer["X_test"], cancer["y_test"], gates=["f1>=baseline"])
    assert lenient.passed and lenient.baseline is None
    assert lenient.gates[0].status == "not evaluated" and lenient.failed_gates == []
    with pytest.raises(ValidationFailedError) as err:
        validate(name, cancer["X_test"], cancer["y_test"], gates=["f1>=baseline", "f1>=0.5"], strict=True)
    assert str(err.value) == (
        f"Validation of {name}/1 failed 1 of 2 gates: f1 >= baseline (not evaluated: no baseline to compare with)."
    )
    assert err.value.report.verdict == "failed"
    assert nbdeploy.resolve(name).tags["nbdeploy.validation"] == "failed"


def test_multiclass_gets_macro_metrics_and_one_roc_curve_per_class(name: str) -> None:
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    X, y = load_wine(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X_train, y_train)
    nbdeploy.register(model, name, X_train, y_train)
    report = validate(name, X_test, y_test, gates=["f1>=0.5"])
    pred, proba = model.predict(X_test), model.predict_proba(X_test)
    assert report.headline() == [
        "accuracy",
        "balanced_accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "log_loss",
        "brier",
        "ece",
    ]
    onehot = (np.asarray(y_test)[:, None] == model.classes_[None, :]).astype(float)
    assert report.metrics["brier"] == pytest.approx(((proba - onehot) ** 2).sum(axis=1).mean())
    assert report.metrics["f1"] == pytest.approx(skm.f1_score(y_test, pred, average="macro"))
    assert report.metrics["precision"] == pytest.approx(skm.precision_score(y_test, pred, average="macro"))
    assert report.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y_test, proba, multi_class="ovr"))
    assert report.metrics["log_loss"] == pytest.approx(skm.log_loss(y_test, proba))
    assert report.confusion == skm.confusion_matrix(y_test, pred).tolist() and report.labels == [
        "0",
        "1",
        "2",
    ]
    assert [c["label"] for c in report.plot["curves"]] == ["0", "1", "2"]
    assert all(lo <= report.metrics[m] <= hi for m, (lo, hi) in report.intervals.items())


def test_regression_gets_its_own_metrics(ip: Any, name: str) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = Ridge().fit(X.iloc[:300], y.iloc[:300])
    nbdeploy.register(model, name, X.iloc[:300], y.iloc[:300])
    X_test, y_test = X.iloc[300:], y.iloc[300:]
    report = validate(name, X_test, y_test, gates=["r2>=0.2", "rmse<=100", "mape<1"])
    pred = model.predict(X_test)
    assert report.task == "regression" and report.passed
    assert report.headline() == ["rmse", "mae", "r2", "mape"]
    assert report.metrics["rmse"] == pytest.approx(skm.root_mean_squared_error(y_test, pred))
    assert report.metrics["mae"] == pytest.approx(skm.mean_absolute_error(y_test, pred))
    assert report.metrics["r2"] == pytest.approx(skm.r2_score(y_test, pred))
    assert report.metrics["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y_test, pred))
    assert report.residuals is not None and report.residuals["median"] == pytest.approx(np.median(y_test - pred))
    assert report.plot["kind"] == "scatter" and len(report.plot["actual"]) == len(y_test)
    assert report.confusion is None
    ip.user_ns.update(Xd=X_test, yd=y_test)
    assert usage_error(ip, f"validate {name} --data Xd --target yd --gate 'f1>=0.9'") == (
        "Unknown metric 'f1' in gate 'f1>=0.9'; metrics for regression: rmse, mae, r2, mape, "
        "latency_p50_ms, latency_p95_ms, model_size_mb, max_psi, drifted_features. See docs/validate.md#metrics"
    )


def test_bad_gates_and_arguments_are_one_sentence_usage_errors(ip: Any, cancer: dict[str, Any], name: str) -> None:
    from sklearn.linear_model import RidgeClassifier

    nbdeploy.register(cancer["model"], name, cancer["X_train"])
    ip.user_ns["ridge"] = RidgeClassifier().fit(cancer["X_train"], cancer["y_train"])
    ip.run_line_magic("deploy", f"register ridge --name {name}-ridge --data X_train")
    line = f"validate {name} --data X_test --target y_test"
    cases = {
        f"{line} --gate 'f2>=0.9'": f"Unknown metric 'f2' in gate 'f2>=0.9'; metrics for classification: "
        f"{CLASSIFICATION_METRICS}. See docs/validate.md#metrics",
        f"{line} --gate 'f1 => 0.9'": "Malformed gate 'f1 => 0.9': expected METRIC OP VALUE with OP one of "
        ">= > <= < == and VALUE a number, baseline, baseline+N or baseline-N, for example 'f1>=0.9'. "
        "See docs/validate.md#--gate-expr-repeatable",
        f"validate {name}-ridge --data X_test --target y_test --gate 'roc_auc>=0.9'": "Metric 'roc_auc' in "
        "gate 'roc_auc>=0.9' needs predicted probabilities, which this model does not give (it has no "
        "predict_proba); metrics for classification: accuracy, balanced_accuracy, precision, recall, f1, "
        "latency_p50_ms, latency_p95_ms, model_size_mb, max_psi, drifted_features. See docs/validate.md#metrics",
        f"validate {name} --data X_test": "%deploy validate: the following arguments are required: --target.",
        f"{line} --slice region": "Unknown slice column 'region'; the data's columns are mean radius, "
        "mean texture, mean perimeter, mean area, mean smoothness, mean compactness, mean concavity, "
        "mean concave points, mean symmetry, mean fractal dimension, radius error, texture error, "
        "perimeter error, area error, smoothness error, compactness error, concavity error, "
        "concave points error, symmetry error, fractal dimension error, ….",
        f"{line} --baseline {name}/1": f"The baseline '{name}/1' is {name}/1, the version being validated; "
        "name another version or pass --baseline none.",
        f"validate {name} --data 'X_test.iloc[:, 1:]' --target y_test": "The data lacks 1 of the 30 columns "
        "in the model's signature ('mean radius'). See docs/validate.md#--data-x---target-y-required",
        f"validate {name} --data X_test --target y_train": "The data has 143 rows but the target has 426; "
        "they must have the same number of rows.",
        f"{line} --baseline ghost-model": "No registered model is named 'ghost-model'; "
        + usage_error(ip, "promote ghost-model").split("; ", 1)[1],
    }
    for bad, message in cases.items():
        assert usage_error(ip, bad) == message, bad
    with pytest.raises(InvalidInputError):
        validate(name, cancer["X_test"], cancer["y_test"], gates="f1>>0.9")


def test_magic_returns_the_report_and_strict_shows_it_before_failing(
    ip: Any, cancer: dict[str, Any], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic("deploy", f"register model --name {name} --data X_train --target y_train")
    report = ip.run_line_magic("deploy", f"validate {name} --data X_test --target y_test --gate 'f1>=0.9'")
    assert report.passed and report.gates[0].status == "passed"
    strict_error(ip, f"validate {name} --data X_test --target y_test --gate 'accuracy>=0.999' --strict")
    assert f"ValidationReport {name}/1: FAILED (1 of 1 gates failed)" in capsys.readouterr().out
    ip.run_line_magic("deploy", "validate --help")
    out = capsys.readouterr().out
    for option in ("--data", "--target", "--gate", "--baseline", "--slice", "--strict"):
        assert option in out
    assert usage_error(ip, f"promote {name}/1").startswith(f"Refusing to promote {name}/1 to @champion: its last")
    ip.run_line_magic("deploy", f"validate {name} --data X_test --target y_test --baseline none")
    assert ip.run_line_magic("deploy", f"promote {name}/1").aliases == ["champion"]


def test_html_is_well_formed_self_contained_and_escaped(cancer: dict[str, Any], name: str, champion: str) -> None:
    X = cancer["X_test"].assign(segment=np.where(cancer["X_test"]["mean area"] > 700, "<script>x</script>", "a&b"))
    nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"])
    report = validate(name, X, cancer["y_test"], gates=["f1>=baseline"], slices=["segment", "mean radius"])
    html = report._repr_html_()
    ElementTree.fromstring(f"<root>{html}</root>")
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<script|\son\w+=|(src|href)=", html)
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "a&amp;b" in html
    assert html.count("<svg") == 2 + 1 + 3  # ROC, reliability; Explain: importances, 3 partial dependences
    assert "ROC curve" in html and "Reliability curve" in html and "(weakest)" in html
    text = repr(report)
    assert text.startswith(f"ValidationReport {name}/2: PASSED (1 of 1 gates passed)")
    assert "0x" not in text and f"baseline {champion}" in text
    assert json.loads(json.dumps(report.to_dict(), allow_nan=False))["format"] == "nbdeploy.validation/1"


def test_slices_count_every_row_and_mark_the_weakest(cancer: dict[str, Any], name: str, stump: Any) -> None:
    X, y = cancer["X_test"], cancer["y_test"]
    X = X.assign(size=pd.cut(X["mean area"], [0, 500, 800, 5000], labels=["small", "medium", "large"]).astype(str))
    nbdeploy.register(stump, name, cancer["X_train"])
    report = validate(name, X, y, slices=["mean radius", "size"], baseline=None)
    numeric, categorical = report.slices
    assert numeric.kind == "quantile" and len(numeric.slices) == 4 and categorical.kind == "categorical"
    pred = stump.predict(X[cancer["X_train"].columns])
    for table in (numeric, categorical):
        assert sum(s.rows for s in table.slices) == len(X)
        worst = min(table.slices, key=lambda s: (s.metrics["accuracy"], -s.rows))
        assert table.slices[table.weakest] == worst
    medium = next(s for s in categorical.slices if s.label == "medium")
    mask = (X["size"] == "medium").to_numpy()
    assert medium.rows == mask.sum()
    assert medium.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y[mask], pred[mask]))


def test_data_checks_and_operational_metrics(cancer: dict[str, Any], name: str, tracking_uri: str) -> None:
    nbdeploy.register(cancer["model"], name, cancer["X_train"])
    X = cancer["X_test"].copy()
    X["mean radius"] = X["mean radius"] * 10
    X.loc[X.index[:5], "mean texture"] = np.nan
    X["worst area"] = X["worst area"].round().astype("int64")
    report = validate(name, X, cancer["y_test"], gates=["drifted_features==0", "model_size_mb<=100"])
    checks = report.checks
    assert checks is not None
    schema = {c.name: c.status for c in checks.schema}
    assert schema["worst area"] == "converted" and schema["mean area"] == "ok"
    assert [(m.name, m.count) for m in checks.missing] == [("mean texture", 5)]
    radius = next(o for o in checks.out_of_range if o.name == "mean radius")
    assert radius.above > 100 and radius.below == 0
    drifted = {d.name for d in checks.drift if d.status == "drift"}
    assert "mean radius" in drifted and report.metrics["drifted_features"] == len(drifted)
    assert [g.status for g in report.gates] == ["failed", "passed"]
    assert 0 < report.metrics["latency_p50_ms"] <= report.metrics["latency_p95_ms"]
    import mlflow.artifacts

    with nbdeploy.registry._store.using_tracking_uri(tracking_uri):
        files = mlflow.artifacts.list_artifacts(artifact_uri=f"models:/{name}/1")
    pickled = next(f for f in files if f.path == "model.pkl")
    assert report.metrics["model_size_mb"] == pytest.approx(pickled.file_size / 1e6)


def test_a_strict_failure_fails_the_notebook_cell_in_a_real_kernel(name: str) -> None:
    """nbval fails a cell only on an ``error`` message from the kernel, which a UsageError is not."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    cells = [
        "%load_ext nbdeploy",
        "from sklearn.datasets import load_breast_cancer\n"
        "from sklearn.tree import DecisionTreeClassifier\n"
        "X, y = load_breast_cancer(return_X_y=True, as_frame=True)\n"
        "model = DecisionTreeClassifier(max_depth=1, random_state=0).fit(X, y)",
        f"%deploy register model --name {name} --data X --target y",
        f"%deploy validate {name} --data X --target y --gate 'accuracy>=0.999' --strict",
        "print('not reached')",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    with pytest.raises(CellExecutionError) as err:
        NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    assert "ValidationFailedError" in str(err.value)
    outputs = nb.cells[3].outputs
    assert outputs[0]["output_type"] == "display_data" and "FAILED" in outputs[0]["data"]["text/plain"]
    error = next(o for o in outputs if o["output_type"] == "error")
    assert (error["ename"], error["traceback"]) == (
        "ValidationFailedError",
        [f"ValidationFailedError: {error['evalue']}"],
    )
    assert error["evalue"].startswith(f"Validation of {name}/1 failed 1 of 1 gates: accuracy >= 0.999 (")
    assert nb.cells[4].outputs == []


def test_a_model_registered_with_arrays_validates_on_arrays(name: str) -> None:
    import warnings

    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    nbdeploy.register(model, name, X, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = validate(name, X, y, gates=["accuracy>=0.9"], slices=["2"])
    assert not [w for w in caught if "feature names" in str(w.message)]
    assert report.passed and report.metrics["accuracy"] == skm.accuracy_score(y, model.predict(X))
    assert report.checks is not None and report.checks.schema == [] and len(report.checks.drift) == 4
    assert sum(s.rows for s in report.slices[0].slices) == len(y) and report.slices[0].kind == "quantile"
    with pytest.raises(InvalidInputError) as err:
        validate(name, X, np.where(np.arange(len(y)) < 3, np.nan, y))
    assert str(err.value) == "The target has 3 missing values; validation needs one for every row."
