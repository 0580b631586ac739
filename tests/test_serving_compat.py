"""Protocol compatibility: nbdeploy's server and `mlflow models serve` on the same model: the
fixture forest, and an XGBoost pipeline (issue #12, item 7)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import nbdeploy
from tests.helpers import JSON, battery, free_port, running


@pytest.fixture(scope="module", params=["forest", "xgboost pipeline"])
def served(request: pytest.FixtureRequest, two_versions: str, cancer: dict[str, Any]) -> tuple[str, Any]:
    """(the version both servers serve, the model in this process)."""
    if request.param == "forest":
        return f"{two_versions}/1", cancer["model"]
    xgboost = pytest.importorskip("xgboost", reason="xgboost is not installed (the dev extra has xgboost-cpu)")
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    columns = list(cancer["X_train"].columns)
    model = make_pipeline(ColumnTransformer([("scale", StandardScaler(), columns)]),
                          xgboost.XGBClassifier(n_estimators=30, max_depth=3))  # fmt: skip
    model.fit(cancer["X_train"], cancer["y_train"])
    return nbdeploy.register(model, "cancer-xgb", cancer["X_train"], cancer["y_train"]).ref, model


@pytest.fixture(scope="module")
def ours(served: tuple[str, Any]) -> Iterator[str]:
    dep = nbdeploy.serve(served[0], name="compat", max_body_bytes=1 << 20)
    try:
        yield dep.url
    finally:
        dep.stop()


@pytest.fixture(scope="module")
def theirs(served: tuple[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    mlflow = shutil.which("mlflow")
    assert mlflow
    cmd = [mlflow, "models", "serve", "-m", f"models:/{served[0]}", "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    log = Path(tmp_path_factory.mktemp("mlflow-serve")) / "serve.log"
    with running(cmd, f"http://127.0.0.1:{port}/ping", log, env=dict(os.environ)):
        yield f"http://127.0.0.1:{port}"


# Where MLflow answers 5xx or accepts what we refuse on purpose, the status class we give instead.
BETTER = {"no content type": 415, "oversize body": 413}


def test_same_status_and_predictions_as_mlflow(
    cancer: dict[str, Any], served: tuple[str, Any], ours: str, theirs: str
) -> None:
    X = cancer["X_test"]
    cases = battery(X)
    mismatches = []
    for label, (payload, headers) in cases.items():
        a = httpx.post(ours + "/invocations", content=payload, headers=headers, timeout=30)
        b = httpx.post(theirs + "/invocations", content=payload, headers=headers, timeout=30)
        if a.status_code != b.status_code:
            mismatches.append(f"{label}: ours {a.status_code} {a.text[:200]} / mlflow {b.status_code} {b.text[:200]}")
            continue
        if a.status_code == 200:
            assert a.json() == b.json(), label
            if label != "integers for doubles":  # that payload truncates the values
                assert a.json()["predictions"] == served[1].predict(X.head(5)).tolist(), label
        else:
            assert a.status_code < 500, label
            error = a.json()
            assert set(error) == {"error_code", "message"}, label
            assert "oops" not in error["message"] and 'mean radius": 17' not in error["message"]
    assert not mismatches, "\n".join(mismatches)


def test_where_mlflow_errs_we_answer_4xx(cancer: dict[str, Any], ours: str, theirs: str) -> None:
    split = json.loads(cancer["X_test"].head(2).to_json(orient="split", index=False))
    payload = json.dumps({"dataframe_split": split}).encode()
    a = httpx.post(ours + "/invocations", content=payload, headers={})
    b = httpx.post(theirs + "/invocations", content=payload, headers={})
    assert b.status_code == 500 and a.status_code == BETTER["no content type"]
    assert a.json()["message"] == "The request has no Content-Type header: use application/json or text/csv."
    big = json.dumps({"dataframe_split": {**split, "data": split["data"] * 3000}}).encode()
    assert len(big) > 1 << 20
    a = httpx.post(ours + "/invocations", content=big, headers=JSON)
    assert a.status_code == BETTER["oversize body"]
    assert a.json() == {
        "error_code": "REQUEST_TOO_LARGE",
        "message": "The body is larger than the limit of 1048576 bytes.",
    }
    assert httpx.get(ours + "/ping").status_code == 200  # still up


def test_schema_error_names_the_columns(cancer: dict[str, Any], ours: str) -> None:
    cols = list(cancer["X_test"].columns)
    doc = {"dataframe_split": {"columns": cols[2:], "data": [[1.0] * (len(cols) - 2)]}}
    r = httpx.post(ours + "/invocations", json=doc)
    assert r.status_code == 400
    assert r.json()["message"] == "The input is missing 2 required column(s): 'mean radius', 'mean texture'."


def test_ping_health_version(ours: str, theirs: str) -> None:
    for route in ("/ping", "/health"):
        assert httpx.get(ours + route).status_code == httpx.get(theirs + route).status_code == 200
    assert httpx.get(ours + "/version").text == httpx.get(theirs + "/version").text
