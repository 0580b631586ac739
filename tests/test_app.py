"""The serving app in-process, through Starlette's TestClient with its lifespan."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from nbdeploy.model_copy import write_manifest
from nbdeploy.serving.app import ServerSettings, create_app
from nbdeploy.serving.auth import Access, GuardedRoute
from nbdeploy.serving.loader import load
from nbdeploy.serving.requestlog import RequestLog, read_records
from nbdeploy.spec import DEFAULT_WINDOWS


@pytest.fixture(scope="module")
def model_dir(cancer: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow.models
    import mlflow.sklearn

    path = tmp_path_factory.mktemp("model") / "m"
    sig = mlflow.models.infer_signature(cancer["X_train"], cancer["model"].predict(cancer["X_train"]))
    mlflow.sklearn.save_model(cancer["model"], path, signature=sig, serialization_format="cloudpickle")
    write_manifest(path, {"uri": "test"})  # as the launcher does for every copy it makes
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


DECLARED = {
    "/ping": Access.PUBLIC,
    "/health": Access.PUBLIC,
    "/version": Access.PUBLIC,
    "/openapi.json": Access.PREDICT,
    "/invocations": Access.PREDICT,
    "/info": Access.OBSERVE,
    "/metrics": Access.OBSERVE,
    "/monitor": Access.OBSERVE,
    "/feedback": Access.FEEDBACK,
    "/admin/reload": Access.ADMIN,
    "/admin/alerts": Access.ADMIN,
    "/admin/forget": Access.ADMIN,
    "/admin/tokens": Access.ADMIN,
    "/experiment": Access.OBSERVE,
    "/admin/experiment": Access.ADMIN,
}
UNAUTHENTICATED = {
    "error_code": "UNAUTHENTICATED",
    "message": "This endpoint needs the header 'Authorization: Bearer <token>'.",
}
PERMISSION_DENIED = {"error_code": "PERMISSION_DENIED", "message": "The bearer token is not valid."}


@pytest.mark.parametrize("require_token", [False, True])
def test_every_route_declares_who_may_call_it(model_dir: Path, tmp_path: Path, require_token: bool) -> None:
    """A new route must say who may call it (a plain Route fails here), and each level holds."""
    settings = ServerSettings(name="t", ref="t/1", version=1, token="s3cret", require_token=require_token)
    log = RequestLog(tmp_path / "requests.jsonl")
    app = create_app(settings, load(model_dir), log)
    assert all(isinstance(route, GuardedRoute) for route in app.routes)
    assert {route.path: route.access for route in app.routes} == DECLARED  # type: ignore[attr-defined]
    with TestClient(app) as c:
        for route in app.routes:
            assert isinstance(route, GuardedRoute) and route.methods
            method = sorted(route.methods - {"HEAD"})[0]
            missing = c.request(method, route.path)
            if route.access.needs_token(require_token):
                assert (missing.status_code, missing.json()) == (401, UNAUTHENTICATED), route.path
                assert missing.headers["www-authenticate"] == "Bearer"
                wrong = c.request(method, route.path, headers={"Authorization": "Bearer nope"})
                assert (wrong.status_code, wrong.json()) == (403, PERMISSION_DENIED), route.path
            else:
                assert missing.status_code not in (401, 403), route.path
    log.close()


def test_an_unexpected_error_is_a_logged_json_500_and_the_server_stays_up(
    model_dir: Path, tmp_path: Path, cancer: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = RequestLog(tmp_path / "requests.jsonl")
    app = create_app(ServerSettings(name="t", ref="t/1", version=1), load(model_dir), log)
    server = app.state.server
    internal = {"error_code": "INTERNAL_ERROR", "message": "The server failed: RuntimeError."}

    def bug(*args: Any) -> Any:
        raise RuntimeError("a bug of ours, with data: 17.99")

    X = cancer["X_test"].head(3)
    with TestClient(app, raise_server_exceptions=False) as c:
        monkeypatch.setattr(server.batcher, "submit", bug)
        r = c.post("/invocations", json=split(X), headers={"X-Request-Id": "bug-1"})
        assert (r.status_code, r.json(), r.headers["x-request-id"]) == (500, internal, "bug-1")
        monkeypatch.setattr(server.monitor, "snapshot", bug)
        r = c.get("/monitor")
        assert (r.status_code, r.json(), r.headers["content-type"]) == (500, internal, "application/json")
        monkeypatch.undo()
        bad = c.post("/invocations", json={"dataframe_split": {"columns": ["x"], "data": [[1]]}})
        assert bad.status_code == 400 and bad.headers["x-request-id"]  # a request at fault: its id too
        assert c.post("/invocations", json=split(X), headers={"X-Request-Id": "ok-1"}).status_code == 200
        assert c.get("/monitor").status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
    recs = read_records(tmp_path / "requests.jsonl")
    ids = [(r["id"], r["status"]) for r in recs]
    assert ids == [("bug-1", 500), (bad.headers["x-request-id"], 400), ("ok-1", 200)]
    assert recs[0]["error"] == "The server failed: RuntimeError." and "error" not in recs[2]
    assert recs[1]["error"].startswith("The input is missing")
    assert recs[0]["rows"] == 3 and "predictions" not in recs[0]
    by_status = {s.labels["status"]: s.value for s in families["nbdeploy_requests"].samples}
    assert by_status == {"500": 1.0, "400": 1.0, "200": 1.0}
    assert families["nbdeploy_in_flight"].samples[0].value == 0
    log.close()


class _FakeHub:
    """A Ray deployment handle whose methods answer ``answers[name]`` (an exception: raised)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers, self.asked = answers, []

    def __getattr__(self, name: str) -> Any:
        hub = self

        class Method:
            def remote(self, *args: Any) -> Any:
                async def answer() -> Any:
                    hub.asked.append(name)
                    if isinstance(hub.answers[name], Exception):
                        raise hub.answers[name]
                    return hub.answers[name]

                return answer()

        return Method()


def test_ray_monitoring_routes_ask_the_hub_and_answer_503_while_it_is_away(model_dir: Path, tmp_path: Path) -> None:
    from nbdeploy.serving import hub_monitor  # imports no Ray: the test process never becomes a Ray driver
    away = {"snapshot": TimeoutError(), "feedback": TimeoutError(), "set_alerts": TimeoutError()}
    rules = {"rules": [{"rule": "p95_ms>50"}]}
    unavailable = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": hub_monitor.HubMonitor.AWAY}
    settings = ServerSettings(name="t", ref="t/1", version=1, token="s3cret", monitor=False, reload=False)
    log = RequestLog(tmp_path / "requests.jsonl")
    auth = {"Authorization": "Bearer s3cret"}
    ok = {"snapshot": {"target": "ray"}, "feedback": {"accepted": 1, "unknown": []}, "set_alerts": {"error": "No."}}
    refused = {"error_code": "BAD_REQUEST", "message": "No."}
    for answers, expected in [
        (away, [(503, unavailable)] * 3),
        (ok, [(200, ok["snapshot"]), (200, ok["feedback"]), (400, refused)]),
    ]:
        hub = _FakeHub(answers)
        app = create_app(settings, load(model_dir), log, monitor=hub_monitor.HubMonitor(hub, dict(DEFAULT_WINDOWS)))
        with TestClient(app) as c:
            got = [
                c.get("/monitor?window=1m"),
                c.post("/feedback", json={"ids": [1], "targets": [0]}, headers=auth),
                c.post("/admin/alerts", json=rules, headers=auth),
            ]
            assert [(r.status_code, r.json()) for r in got] == expected
            bad = c.post("/admin/alerts", json={"rules": [{"rule": "p95_ms>>50"}]}, headers=auth)
            assert bad.status_code == 400 and bad.json()["error_code"] == "BAD_REQUEST"
            unknown = c.get("/monitor?window=2m").json()["message"]
            assert unknown == "Unknown window '2m'; windows: 1m, 5m, 1h."
        assert hub.asked == ["snapshot", "feedback", "set_alerts"]  # bad rules and windows never reach the hub
    log.close()


def test_a_ray_replicas_token_book_takes_only_the_owners_valid_book_once_the_hub_has_it(
    model_dir: Path, tmp_path: Path, cancer: dict[str, Any]
) -> None:
    """#15 on Ray (hostile inputs of ``POST /admin/tokens`` ``book``; the real relay is in
    test_ray): a replica reads no token file, and takes a new book only from the owner, only
    when it is a valid one, and only once the hub has it; it never drops the owner."""
    import json

    from nbdeploy import tokens
    from nbdeploy.serving import hub_monitor

    owner, app_value = "s3cret-owner", "a-new-predict-token"
    book = tokens.book([tokens.TokenEntry.make("app", "predict", app_value)], owner)
    settings = ServerSettings(name="t", ref="t/1", version=1, token=owner, monitor=False, reload=False,
                              require_token=True, token_book=tokens.book([], owner))  # fmt: skip
    log = RequestLog(tmp_path / "requests.jsonl")
    rows = split(cancer["X_test"].head(2))
    away, present = {"set_tokens": TimeoutError()}, {"set_tokens": "d", "tokens_reached": True}
    for answers, taken in [(away, False), (present, True)]:
        app = create_app(settings, load(model_dir), log, monitor=hub_monitor.HubMonitor(_FakeHub(answers), {}))
        with TestClient(app) as c:
            auth = {"Authorization": f"Bearer {owner}"}
            bad = {
                "not json": (400, "The body must be JSON"),
                json.dumps({"action": "add", "role": "predict"}): (400, "'action' must be 'book' on a Ray replica"),
                json.dumps({"action": "book", "book": tokens.book([], owner), "issued": "now"}): (400, "'issued' must"),
                json.dumps({"action": "book", "book": tokens.book([], owner), "issued": 1e999}): (400, "'issued' must"),
                json.dumps({"action": "book", "book": []}): (400, "'book' must be an object of 1 to 101 tokens"),
                json.dumps({"action": "book", "book": {"x": ["app", "predict"]}}): (400, "SHA-256 in hex"),
                json.dumps({"action": "book", "book": {"a" * 64: ["app", "god"]}}): (400, "SHA-256 in hex"),
                json.dumps({"action": "book", "book": {"a" * 64: ["app", "predict"]}}): (400, "the owner token once"),
                json.dumps({"action": "book", "book": {f"{i:064x}": ["x", "predict"] for i in range(102)}}): (
                    400, "1 to 101 tokens"),
                "[" * 100_000: (400, "The body must be JSON"),
                "x" * (2 << 20): (413, ""),
            }  # fmt: skip
            for body, (status, message) in bad.items():
                r = c.post("/admin/tokens", content=body, headers=auth)
                assert r.status_code == status and message in r.json()["message"], (body[:60], r.text[:300])
            as_app = {"Authorization": f"Bearer {app_value}"}
            assert c.post("/invocations", json=rows, headers=as_app).status_code == 403
            assert c.post("/admin/tokens", json={"action": "book", "book": book}, headers=auth).status_code == 400
            r = c.post("/admin/tokens", json={"action": "book", "book": book, "issued": time.time()}, headers=auth)
            if not taken:  # the hub away: a 503, and the replica keeps its book (the kernel saves nothing)
                assert r.status_code == 503
            else:
                assert r.status_code == 200 and r.json() == {"tokens": 2, "every_replica": True}
            answer = c.post("/invocations", json=rows, headers=as_app)
            assert answer.status_code == (200 if taken else 403)
            # the owner still answers, and a predict token cannot send a book
            assert c.get("/info", headers=auth).status_code == 200
            if taken:
                other = c.post("/admin/tokens", json={"action": "book", "book": book}, headers=as_app)
                assert other.status_code == 403 and "role 'admin'" in other.json()["message"]
    log.close()
    # a book older than the one held is never taken (a hub that lost its state relays its first one)
    from nbdeploy.serving.tokens import TokenBook

    held = TokenBook(None, owner, book, issued=100.0)
    assert not held.replace(tokens.book([], owner), 50.0) and held.identify(app_value) == ("app", "predict")
    assert held.replace(tokens.book([], owner), 150.0) and held.identify(app_value) is None
    assert not held.replace({"a" * 64: ["app", "predict"]}, 200.0) and held.identify(owner) == ("owner", "admin")


def test_a_ray_forget_whose_hub_restarted_is_a_503_saying_to_run_it_again(model_dir: Path, tmp_path: Path) -> None:
    """The hub keeps a forget's order in memory: one restarted meanwhile (kill -9) answers that
    it knows no such order, which is a 503 with the fix, never a 500."""
    from nbdeploy.serving import hub_monitor

    settings = ServerSettings(name="t", ref="t/1", version=1, token="s3cret", monitor=False, reload=False)
    log = RequestLog(tmp_path / "requests.jsonl")
    hub = _FakeHub({"forget_open": 7, "forget_answer": {"error": "unknown order"}})
    app = create_app(settings, load(model_dir), log, monitor=hub_monitor.HubMonitor(hub, {}))
    with TestClient(app) as c:
        r = c.post("/admin/forget", json={"ids": ["a"]}, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 503 and "run forget again" in r.json()["message"]
    assert hub.asked == ["forget_open", "forget_answer"]
    log.close()
