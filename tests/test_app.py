"""The serving app in-process, through Starlette's TestClient with its lifespan."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from nbdeploy.serving.app import ServerSettings, create_app
from nbdeploy.serving.loader import load
from nbdeploy.serving.requestlog import RequestLog, read_records


@pytest.fixture(scope="module")
def model_dir(cancer: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow.models
    import mlflow.sklearn

    path = tmp_path_factory.mktemp("model") / "m"
    sig = mlflow.models.infer_signature(cancer["X_train"], cancer["model"].predict(cancer["X_train"]))
    mlflow.sklearn.save_model(cancer["model"], path, signature=sig, serialization_format="cloudpickle")
    return path


@pytest.fixture
def client(model_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    settings = ServerSettings(name="t", ref="t/1", version=1, token="s3cret", log_rows=2)
    log = RequestLog(tmp_path / "requests.jsonl")
    with TestClient(create_app(settings, load(model_dir), log)) as c:
        c.log_path = tmp_path / "requests.jsonl"  # type: ignore[attr-defined]
        yield c
    log.close()


def split(X: Any) -> dict[str, Any]:
    return {"dataframe_split": {"columns": list(X.columns), "data": X.to_numpy().tolist()}}


def test_invocations_logs_and_counts(client: TestClient, cancer: dict[str, Any]) -> None:
    X = cancer["X_test"].head(5)
    r = client.post("/invocations", json=split(X), headers={"X-Request-Id": "abc-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "abc-1"
    assert r.json() == {"predictions": cancer["model"].predict(X).tolist()}
    assert client.post("/invocations", json={"dataframe_split": {"columns": ["x"], "data": [[1]]}}).status_code == 400
    recs = read_records(client.log_path)  # type: ignore[attr-defined]
    assert (recs[0]["id"], recs[0]["status"], recs[0]["rows"]) == ("abc-1", 200, 5)
    assert recs[0]["truncated"] is True and len(recs[0]["inputs"]) == 2 and len(recs[0]["predictions"]) == 2
    assert recs[1]["status"] == 400 and recs[1]["error"].startswith("The input is missing 30")
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    by_status = {s.labels["status"]: s.value for s in families["nbdeploy_requests"].samples}
    assert by_status == {"200": 1.0, "400": 1.0}
    latency = {s.name: s.value for s in families["nbdeploy_request_latency_seconds"].samples}
    assert latency["nbdeploy_request_latency_seconds_count"] == 2
    assert {"nbdeploy_batch_rows", "nbdeploy_in_flight"} <= set(families)


def test_reload_swaps_the_model(client: TestClient, model_dir: Path) -> None:
    auth = {"Authorization": "Bearer s3cret"}
    r = client.post("/admin/reload", json={"path": str(model_dir), "ref": "t/2", "version": 2}, headers=auth)
    assert r.status_code == 200 and r.json() == {"ref": "t/2", "version": 2}
    assert client.get("/info").json()["version"] == 2
    bad = client.post("/admin/reload", json={"path": "/nonexistent", "ref": "t/3"}, headers=auth)
    assert bad.status_code == 400 and bad.json()["message"].startswith("The model at 'path' could not be loaded")
    assert client.get("/info").json()["version"] == 2


def test_request_log_rotates_by_size(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "r.jsonl", max_bytes=200, backups=2)
    for i in range(20):
        log.append({"id": i, "pad": "x" * 40})
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    ids = [r["id"] for r in read_records(tmp_path / "r.jsonl")]
    assert ids == sorted(ids) and ids[-1] == 19 and all(p.stat().st_size <= 200 for p in tmp_path.iterdir())
