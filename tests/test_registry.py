"""register / promote / models / resolve against a real SQLite tracking store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

import nbdeploy
from nbdeploy import config
from nbdeploy.errors import (
    AliasNotFoundError,
    InvalidInputError,
    ModelNotFoundError,
    TrackingError,
    VersionNotFoundError,
)
from nbdeploy.stats.profile import fingerprint
from tests.helpers import free_port

CONFIGURE_ANOTHER = "point nbdeploy at another tracking URI."


def test_register_records_everything_a_reviewer_needs(cancer: dict[str, Any], name: str, tracking_uri: str) -> None:
    mv = nbdeploy.register(
        cancer["model"],
        name,
        cancer["X_train"],
        cancer["y_train"],
        alias="candidate",
        tags={"team": "ml"},
        description="first",
        source="notebooks/q.ipynb",
    )
    assert (mv.name, mv.version, mv.aliases) == (name, 1, ["candidate"])
    assert mv.metrics["training_accuracy"] > 0.95

    c = MlflowClient(tracking_uri)
    version = c.get_model_version(name, "1")
    assert version.description == "first"
    tags = version.tags
    assert tags["team"] == "ml"
    assert tags["nbdeploy.version"] == nbdeploy.__version__
    assert tags["sklearn.version"] and tags["python.version"]
    assert tags["notebook.path"] == "notebooks/q.ipynb"
    assert tags["nbdeploy.task"] == "classification"
    assert tags["git.commit"] and tags["git.dirty"] in ("true", "false")  # tests run in the repo
    assert tags["data.fingerprint"] == fingerprint(cancer["X_train"])

    import mlflow.models

    info = mlflow.models.get_model_info(f"models:/{name}/1")
    assert [c["name"] for c in info.signature.inputs.to_dict()] == list(cancer["X_train"].columns)
    assert info.saved_input_example_info["type"] == "dataframe"
    with_reqs = mlflow.artifacts.download_artifacts(f"models:/{name}/1/requirements.txt")
    reqs = Path(with_reqs).read_text().split()
    import sklearn

    assert f"scikit-learn=={sklearn.__version__}" in reqs
    profile = nbdeploy.registry.load_profile(mv)
    assert profile is not None
    assert profile["rows"] == len(cancer["X_train"])
    assert profile["fingerprint"] == tags["data.fingerprint"]
    assert {c["name"] for c in profile["columns"]} == set(cancer["X_train"].columns)
    assert c.get_run(version.run_id).data.metrics["training_f1"] > 0.95


def test_registered_model_loads_in_a_fresh_process(cancer: dict[str, Any], name: str, tracking_uri: str) -> None:
    nbdeploy.register(cancer["model"], name, cancer["X_train"])
    X = cancer["X_test"].iloc[:20]
    code = (
        "import json, sys, mlflow, pandas as pd\n"
        f"mlflow.set_tracking_uri({tracking_uri!r})\n"
        f"model = mlflow.pyfunc.load_model('models:/{name}/1')\n"
        "X = pd.read_json(sys.stdin, orient='split')\n"
        "print(json.dumps(model.predict(X).tolist()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=X.to_json(orient="split"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == cancer["model"].predict(X).tolist()


def test_tree_ensembles_and_pipelines_round_trip(cancer: dict[str, Any], name: str) -> None:
    import mlflow.sklearn
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), GradientBoostingClassifier(n_estimators=5)).fit(
        cancer["X_train"], cancer["y_train"]
    )
    nbdeploy.register(model, name, cancer["X_train"])
    loaded = mlflow.sklearn.load_model(f"models:/{name}/1")
    assert (loaded.predict(cancer["X_test"]) == model.predict(cancer["X_test"])).all()


def test_regression_gets_rmse_and_r2(name: str) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    mv = nbdeploy.register(Ridge().fit(X, y), name, X, y)
    assert set(mv.metrics) == {"training_rmse", "training_r2"}
    assert mv.tags["nbdeploy.task"] == "regression"


def test_promote_models_and_resolve(cancer: dict[str, Any], name: str) -> None:
    for _ in range(3):
        nbdeploy.register(cancer["model"], name, cancer["X_train"])
    assert nbdeploy.resolve(name).version == 3
    assert nbdeploy.promote(f"{name}/2", force=True).aliases == ["champion"]
    assert nbdeploy.resolve(f"{name}@champion").version == 2
    assert nbdeploy.resolve(f"models:/{name}@champion").version == 2
    nbdeploy.promote(f"models:/{name}/3", alias="champion", force=True)
    assert nbdeploy.resolve(f"{name}@champion").version == 3
    listing = nbdeploy.models(name)
    assert [row[0] for row in listing.rows] == ["3", "2", "1"]
    assert listing.rows[0][1] == "@champion"
    all_models = nbdeploy.models()
    row = next(r for r in all_models.rows if r[0] == name)
    assert row[1:3] == ["3", "@champion=3"]


def test_resolve_errors_name_what_exists(cancer: dict[str, Any], name: str) -> None:
    nbdeploy.register(cancer["model"], name, cancer["X_train"], alias="candidate")
    with pytest.raises(VersionNotFoundError) as err:
        nbdeploy.resolve(f"{name}/7")
    assert str(err.value) == f"Model {name!r} has no version 7; its versions are 1."
    with pytest.raises(AliasNotFoundError) as err2:
        nbdeploy.resolve(f"{name}@champion")
    assert str(err2.value) == f"Model {name!r} has no alias 'champion'; its aliases are @candidate (version 1)."
    with pytest.raises(ModelNotFoundError) as err3:
        nbdeploy.resolve("no-such-model")
    assert str(err3.value).startswith("No registered model is named 'no-such-model'; registered models: ")
    assert name in str(err3.value)


def test_register_rejects_bad_input(cancer: dict[str, Any], name: str) -> None:
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(InvalidInputError, match=r"^The model LogisticRegression is not fitted yet"):
        nbdeploy.register(LogisticRegression(), name, cancer["X_train"])
    with pytest.raises(InvalidInputError, match="has 426 rows but the target has 143"):
        nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_test"])


def test_card_has_text_and_escaped_html(cancer: dict[str, Any], name: str) -> None:
    from xml.etree import ElementTree

    mv = nbdeploy.register(cancer["model"], name, cancer["X_train"], tags={"note": "<b>&"})
    text = repr(mv)
    assert text.startswith(f"ModelVersion {name}/1") and "0x" not in text
    assert "30 inputs" in text
    html = mv._repr_html_()
    assert "<b>&" not in html and "&lt;b&gt;&amp;" in html
    ElementTree.fromstring(f"<root>{html}</root>")  # well-formed
    assert "mean radius" in html


def test_default_store_is_sqlite_in_cwd_with_artifacts_beside_it(
    cancer: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "default-store-test")
    monkeypatch.chdir(tmp_path)
    import mlflow

    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", None)
    nbdeploy.register(cancer["model"], "local", cancer["X_train"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlartifacts", "mlflow.db"]
    assert list((tmp_path / "mlartifacts").rglob("MLmodel"))


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An http tracking URI on a loopback port where nothing listens; MLflow told not to retry."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = f"http://127.0.0.1:{free_port()}"
    config.configure(tracking_uri=uri)
    yield uri
    config.configure(tracking_uri=None)


def tracking_error(call: Any) -> str:
    with pytest.raises(TrackingError) as err:
        call()
    assert "\n" not in str(err.value) and err.value.__suppress_context__  # one sentence, no MLflow traceback
    return str(err.value)


def test_an_unreachable_server_is_a_tracking_error_with_a_next_step(
    cancer: dict[str, Any], unreachable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = time.monotonic()
    advice = "check that the MLflow server is running and reachable, or "
    for call, doing in [
        (lambda: nbdeploy.models(), "listing the registered models"),
        (lambda: nbdeploy.register(cancer["model"], "cancer", cancer["X_train"]), "registering 'cancer'"),
        (lambda: nbdeploy.promote("cancer/1"), "promoting cancer/1 to @champion"),
    ]:
        message = tracking_error(call)
        assert message.startswith(f"The tracking store {unreachable} failed while {doing}: ")
        assert "Connection refused; " + advice + CONFIGURE_ANOTHER in message
    config.configure(tracking_uri=None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", unreachable)  # then the advice names the variable
    assert tracking_error(lambda: nbdeploy.resolve("cancer@champion")).endswith(
        advice + "set MLFLOW_TRACKING_URI to another store."
    )
    assert time.monotonic() - start < 20  # no retries with back-off


def test_a_file_that_is_not_a_database_is_a_tracking_error(cancer: dict[str, Any], tmp_path: Path) -> None:
    bad = tmp_path / "mlflow.db"
    bad.write_bytes(b"these bytes are no SQLite header\n" * 100)
    uri = f"sqlite:///{bad}"
    config.configure(tracking_uri=uri)
    try:
        for call, doing in [
            (lambda: nbdeploy.models(), "listing the registered models"),
            (lambda: nbdeploy.resolve("cancer@champion"), "resolving cancer@champion"),
            (lambda: nbdeploy.register(cancer["model"], "cancer", cancer["X_train"]), "registering 'cancer'"),
        ]:
            assert tracking_error(call) == (
                f"The tracking store {uri} failed while {doing}: file is not a database; "
                "check that the file is a readable MLflow database, or " + CONFIGURE_ANOTHER
            )
    finally:
        config.configure(tracking_uri=None)
    assert bad.read_bytes() == b"these bytes are no SQLite header\n" * 100  # left as it was


def test_the_magic_shows_a_broken_store_as_one_usage_error(ip: Any, unreachable: str) -> None:
    from IPython.core.error import UsageError

    for line, doing in [
        ("models", "listing the registered models"),
        ("register model --name cancer --data X_train", "registering 'cancer'"),
    ]:
        with pytest.raises(UsageError) as err:
            ip.run_line_magic("deploy", line)
        assert type(err.value) is UsageError  # a subclass would be shown with a traceback
        message = str(err.value)
        assert message.startswith(f"The tracking store {unreachable} failed while {doing}: ")
        assert message.endswith(
            "check that the MLflow server is running and reachable, or "
            + CONFIGURE_ANOTHER
            + " See docs/index.md#settings"
        )
        assert "\n" not in message


def test_a_request_the_store_refuses_is_the_callers_error_not_the_stores(cancer: dict[str, Any], name: str) -> None:
    from nbdeploy.errors import TrackingError

    with pytest.raises(InvalidInputError) as err:
        nbdeploy.register(cancer["model"], name, cancer["X_train"], tags={"k" * 300: "v"})
    assert not isinstance(err.value, TrackingError)
    assert str(err.value).startswith(f"MLflow refused registering {name!r}: ")
    assert "\n" not in str(err.value)
