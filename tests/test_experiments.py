"""Canary and shadow experiments on a real server over real HTTP (issue #11, first part).

The champion is the fixture forest (``two_versions``/1), the challenger the one-split stump
(``/2``); their predictions differ on some rows, which is how a test tells who answered.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

import nbdeploy
from nbdeploy.deployments import start
from nbdeploy.monitoring.replay import read_records
from nbdeploy.stats.drift import psi
from tests.helpers import JSON, eventually, usage_error

VARIANT = "X-Nbdeploy-Variant"


def _bodies(X: Any, n: int) -> list[bytes]:
    rows = X.to_numpy()
    return [
        json.dumps({"dataframe_split": {"columns": list(X.columns), "data": [rows[i % len(rows)].tolist()]}}).encode()
        for i in range(n)
    ]


def _send(url: str, bodies: list[bytes], headers: dict[str, str] | None = None, clients: int = 8) -> list[Any]:
    """POST every body (``clients`` keep-alive connections at once); the responses in order."""

    def run(part: list[tuple[int, bytes]]) -> list[tuple[int, httpx.Response]]:
        with httpx.Client(base_url=url, timeout=30) as client:
            return [(i, client.post("/invocations", content=b, headers={**JSON, **(headers or {})})) for i, b in part]

    parts = [list(enumerate(bodies))[k::clients] for k in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        answered = sorted((pair for chunk in pool.map(run, parts) for pair in chunk), key=lambda p: p[0])
    return [r for _, r in answered]


def _logged(dep: Any) -> list[dict[str, Any]]:
    return list(read_records(dep.path / "requests.jsonl"))


def test_a_canary_answers_its_share_and_the_log_agrees(dep: Any, two_versions: str, cancer: dict[str, Any]) -> None:
    view = dep.canary(f"{two_versions}/2", percent=10)
    assert "canary of" in repr(view) and "10% of requests" in repr(view)
    answers = _send(dep.url, _bodies(cancer["X_test"], 5000))
    assert {r.status_code for r in answers} == {200}
    variants = Counter(r.headers[VARIANT] for r in answers)
    assert set(variants) == {"champion", "2"}
    assert abs(variants["2"] / 5000 - 0.10) <= 0.015, variants
    logged = Counter(r["variant"] for r in _logged(dep) if "variant" in r)
    assert logged == variants  # every answer logged with the variant that gave it
    counts = dep.experiment().state["counts"]
    assert {v: c["requests"] for v, c in counts.items()} == dict(variants)
    # who the header names is who answered: the stump's predictions, or the forest's
    X = cancer["X_test"]
    stump = DecisionTreeClassifier(max_depth=1, random_state=0).fit(cancer["X_train"], cancer["y_train"])
    says = {"2": stump.predict(X), "champion": cancer["model"].predict(X)}
    assert (says["2"] != says["champion"]).any()
    for i, r in enumerate(answers):
        assert r.json()["predictions"][0] == says[r.headers[VARIANT]][i % len(X)]


def test_sticky_keys_stay_on_one_variant(dep: Any, two_versions: str, cancer: dict[str, Any]) -> None:
    X = cancer["X_test"]
    dep.canary(f"{two_versions}/2", percent=50, sticky="mean radius")
    one = _bodies(X.iloc[[3]], 1)[0]
    seen = Counter(r.headers[VARIANT] for r in _send(dep.url, [one] * 1000))
    assert len(seen) == 1 and sum(seen.values()) == 1000, seen
    # distinct keys spread over both variants, each key on one
    per_key: dict[float, set[str]] = {}
    bodies = _bodies(X, 600)
    for body, r in zip(bodies, _send(dep.url, bodies), strict=True):
        key = json.loads(body)["dataframe_split"]["data"][0][0]
        per_key.setdefault(key, set()).add(r.headers[VARIANT])
    assert all(len(v) == 1 for v in per_key.values())
    assert {v for s in per_key.values() for v in s} == {"champion", "2"}
    dep.conclude(abort=True)
    dep.canary(f"{two_versions}/2", percent=50, sticky_header="X-User")
    for user in ("ann", "bob", "cy"):
        seen = Counter(r.headers[VARIANT] for r in _send(dep.url, [one] * 100, {"X-User": user}, clients=4))
        assert len(seen) == 1, (user, seen)


def test_a_shadow_answers_nobody_and_logs_both_predictions(
    dep: Any, two_versions: str, cancer: dict[str, Any]
) -> None:
    X = cancer["X_test"]
    expected = cancer["model"].predict(X)  # the champion's own predictions, row by row
    dep.shadow(f"{two_versions}/2")
    bodies = _bodies(X, len(X))
    answers = _send(dep.url, bodies)
    got = np.array([r.json()["predictions"][0] for r in answers])
    np.testing.assert_array_equal(got, expected)  # no shadow answer reached a client
    assert {r.headers[VARIANT] for r in answers} == {"champion"}
    ids = {r.headers["x-request-id"] for r in answers}

    def shadows() -> list[dict[str, Any]]:
        return [r for r in _logged(dep) if r.get("shadow") is True]

    mirrored = eventually(shadows, lambda s: len(s) >= len(ids))
    assert {r["id"] for r in mirrored} == ids and all(r["status"] == 200 for r in mirrored)
    eventually(lambda: dep.experiment().state, lambda s: s["mirrors_in_flight"] == 0)  # the accounts of its last look
    stump_says = {r["id"]: r["predictions"][0] for r in mirrored}
    champion_says = {r["id"]: r["predictions"][0] for r in _logged(dep) if r.get("variant") == "champion"}
    assert champion_says.keys() == ids
    assert any(stump_says[i] != champion_says[i] for i in ids)  # two models, both recorded
    view = dep.experiment()
    assert view.state["counts"]["2"]["shadowed"] == len(ids)
    # agreement: the rows where the stump says what the forest says, counted exactly
    stump = DecisionTreeClassifier(max_depth=1, random_state=0).fit(cancer["X_train"], cancer["y_train"])
    agree = float(np.mean(stump.predict(X) == expected))
    assert view.state["agreement"]["rows"] == len(X) and view.state["agreement"]["rate"] == pytest.approx(agree)
    shown = view.state["agreement"]["disagreements"]
    assert 0 < len(shown) <= 20 and all(d["champion"] != d["challenger"] and d["id"] in ids for d in shown)
    assert f"agreement    {agree:.1%} of {len(X)} rows" in repr(view) and "agreement" in view._repr_html_()
    metrics = httpx.get(f"{dep.url}/metrics").text  # the variants side by side, labelled
    assert f'nbdeploy_variant_requests_total{{variant="2"}} {float(len(X))}' in metrics
    assert f'nbdeploy_variant_requests_total{{variant="champion"}} {float(len(X))}' in metrics
    shown = re.search(r"^nbdeploy_shadow_agreement (\S+)$", metrics, re.MULTILINE)
    assert shown is not None and float(shown[1]) == pytest.approx(agree)
    assert 'nbdeploy_variant_value{metric="latency_ms",variant="2"}' in metrics
    assert dep.snapshot("1m")["experiment"]["agreement"]["rows"] == len(X)
    # each variant's prediction distribution, exactly the two models' predictions on the same rows
    dists, said = view.state["distributions"], {"champion": expected, "2": stump.predict(X)}
    for variant, predicted in said.items():
        assert dists[variant]["predictions"]["counts"] == {str(k): n for k, n in Counter(predicted.tolist()).items()}
        assert dists[variant]["rows"] == len(X)
    assert dists["champion"]["drift_max_psi"] == dists["2"]["drift_max_psi"] is not None  # the same inputs
    vs = dists["2"]["prediction_psi"]
    assert vs == pytest.approx(float(psi(np.bincount(expected), np.bincount(said["2"], minlength=2))))
    shown = re.search(r'^nbdeploy_variant_prediction_psi\{variant="2"\} (\S+)$', metrics, re.MULTILINE)
    assert shown is not None and float(shown[1]) == pytest.approx(vs)
    assert "predictions vs champion PSI" in repr(view)


def test_a_client_may_pin_a_variant(dep: Any, two_versions: str, cancer: dict[str, Any]) -> None:
    body = _bodies(cancer["X_test"], 1)[0]
    with httpx.Client(base_url=dep.url) as client:
        assert client.post("/invocations", content=body, headers={**JSON, VARIANT: "champion"}).status_code == 200
        dep.canary(f"{two_versions}/2", percent=1)
        for asked, answered in (("2", "2"), ("challenger", "2"), ("champion", "champion"), ("1", "champion")):
            r = client.post("/invocations", content=body, headers={**JSON, VARIANT: asked})
            assert r.status_code == 200 and r.headers[VARIANT] == answered
        r = client.post("/invocations", content=body, headers={**JSON, VARIANT: "7"})
        assert r.status_code == 400 and "X-Nbdeploy-Variant names '7'" in r.json()["message"]
        junk = client.post("/invocations", content=b"{junk", headers=JSON)
        assert junk.status_code == 400
    logged = {r["id"]: r for r in _logged(dep)}  # a record without a variant: no experiment's, after a restart too
    assert "variant" not in logged[junk.headers["x-request-id"]]
    # pinned requests are counted, never compared: the comparison is of what the split drew
    state = dep.experiment().state
    assert state["counts"]["2"] == {"pinned": 2} and state["counts"]["champion"] == {"pinned": 2}
    assert "latency_ms" not in state["stats"]  # neither pins nor a body that did not parse


def test_kill_9_mid_experiment_resumes_split_and_counts(
    serving: Callable[..., Any], two_versions: str, name: str, cancer: dict[str, Any]
) -> None:
    dep = serving(f"{two_versions}/1", name=name)
    dep.canary(f"{two_versions}/2", percent=30, sticky="mean radius")
    bodies = _bodies(cancer["X_test"], 300)
    before = [r.headers[VARIANT] for r in _send(dep.url, bodies)]
    counts = dep.experiment().state["counts"]
    os.kill(dep.pid, signal.SIGKILL)
    eventually(dep.state, lambda s: s != "running")
    start(name)
    resumed = dep.experiment().state
    assert resumed["percent"] == 30 and resumed["sticky_column"] == "mean radius"
    assert resumed["counts"] == counts and sum(c["requests"] for c in counts.values()) == 300
    after = [r.headers[VARIANT] for r in _send(dep.url, bodies)]
    assert after == before  # the same keys meet the same variants
    assert "resumed the canary of 2 (300 logged requests)" in dep.logs()


def test_conclude_promotes_through_the_gate_or_aborts_without_dropping_a_request(
    dep: Any, two_versions: str, cancer: dict[str, Any]
) -> None:
    dep.canary(f"{two_versions}/2", percent=20)
    with pytest.raises(nbdeploy.NbdeployError, match="never validated"):
        dep.conclude(promote=True)  # the same gate as promote: v2 was never validated
    assert dep.experiment().state is not None and dep.spec.experiment is not None
    bodies = _bodies(cancer["X_test"], 3000)
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(_send, dep.url, bodies)
        eventually(lambda: len(_logged(dep)), lambda n: n > 200)
        dep.conclude(promote=True, force=True)
        answers = load.result()
    assert {r.status_code for r in answers} == {200}  # none dropped while the challenger took over
    assert dep.status().version == 2 and dep.spec.current.version == 2 and dep.spec.experiment is None
    assert dep.experiment().state is None
    after = _send(dep.url, bodies[:20])
    assert VARIANT not in after[0].headers
    dep.canary(f"{two_versions}/1", percent=50)
    dep.conclude(abort=True)
    assert dep.spec.current.version == 2 and dep.experiment().state is None


def test_bad_experiments_are_one_sentence(dep: Any, two_versions: str, ip: Any) -> None:
    n = dep.name
    for line, said in (
        (f"canary {n} {two_versions}/2 --percent 0", "Invalid percent 0"),
        (f"canary {n} {two_versions}/2 --percent nan", "not a finite number"),
        (f"canary {n} {two_versions}/2 --percent 100", "A canary of 100 percent"),
        (f"canary {n} {two_versions}/1", "is the version this deployment serves"),
        (f"canary {n} {two_versions}/2 --sticky a --sticky-header B", "not both"),
        (f"canary {n} {two_versions}/2 --sticky-header 'a b'", "Invalid header name"),
        (f"canary {n} {two_versions}/2 --rollback-when 'p99>baseline*1.5'", "write a percentile of latency as p95_ms"),
        (f"canary {n} {two_versions}/2 --promote-when 'f1>=baseline'", "'f1' is not one of them"),
        (f"canary {n} {two_versions}/2 --promote-when 'accuracy>>baseline'", "Malformed rule"),
        (f"shadow {n} {two_versions}/2 --min-labels 5", "Invalid --min-labels 5"),
        (f"shadow {n} {two_versions}/2 --rollback-when 'p95_ms>baseline*2'", "compare latency in a canary"),
        (f"conclude {n} --abort", "runs no experiment"),
        (f"conclude {n}", "--promote or --abort"),
    ):
        assert said in usage_error(ip, line), line
    assert dep.spec.experiment is None
    with pytest.raises(nbdeploy.NbdeployError, match="is not an input of the model"):
        dep.canary(f"{two_versions}/2", sticky="no such column")
    assert dep.spec.experiment is None  # the server refused it: neither runs it
    view = ip.run_line_magic("deploy", f"canary {n} {two_versions}/2 --percent 20 --rollback-when 'p95_ms>baseline*3'")
    assert "canary of" in repr(view) and "<table>" in view._repr_html_()
    assert "already runs a canary" in usage_error(ip, f"shadow {n} {two_versions}/2")
    assert "variant" in ip.run_line_magic("deploy", f"experiment {n}")._repr_html_()
    ip.run_line_magic("deploy", f"conclude {n} --abort")


def test_the_admin_route_refuses_bad_bodies_in_one_sentence(dep: Any, two_versions: str) -> None:
    good = {"kind": "canary", "percent": 10, "started": 1e9,
            "challenger": {"ref": "x", "model_path": dep.current.model_path}}  # fmt: skip
    outside = {**good, "challenger": {"ref": "x", "model_path": "/etc"}}
    auth = {"Authorization": f"Bearer {dep.token}"}
    with httpx.Client(base_url=dep.url, headers=auth) as client:
        for body, status, said in (
            (b"[[[[" * 10000, 400, "'action' of start, stop or promote"),
            (b'{"action": "go"}', 400, "'action' of start, stop or promote"),
            (b'{"action": "start"}', 400, "must describe one"),
            (json.dumps({"action": "start", "experiment": {**good, "percent": 101}}).encode(), 400, "Invalid percent"),
            (json.dumps({"action": "start", "experiment": {**good, "kind": "ab"}}).encode(), 400, "Unknown experiment"),
            (json.dumps({"action": "start", "experiment": outside}).encode(), 400, "inside the deployment's models"),
            (b'{"action": "stop"}', 409, "No experiment is running"),
            (b'{"action": "start"}' + b" " * (2 << 20), 413, "larger than the limit"),
        ):
            r = client.post("/admin/experiment", content=body)
            assert r.status_code == status and said in r.json()["message"], (body[:40], r.text[:200])
        assert client.post("/admin/experiment", json={"action": "start", "experiment": good}).status_code == 200
        r = client.post("/admin/experiment", json={"action": "start", "experiment": good})
        assert r.status_code == 409 and "already running" in r.json()["message"]
        assert client.post("/admin/experiment", json={"action": "stop"}).status_code == 200
        assert httpx.post(f"{dep.url}/admin/experiment", json={"action": "stop"}).status_code == 401


def test_a_damaged_experiment_in_the_spec_is_one_sentence(dep: Any, two_versions: str) -> None:
    dep.canary(f"{two_versions}/2", percent=10)
    doc = json.loads((dep.path / "spec.json").read_text())
    doc["experiment"] = {"kind": "canary"}  # the challenger is gone
    (dep.path / "spec.json").write_text(json.dumps(doc))
    with pytest.raises(nbdeploy.NbdeployError, match=r"cannot be read \(KeyError\)"):
        _ = dep.spec


# found by a hostile review ---------------------------------------------------------------


def test_requests_queued_for_a_slow_challenger_are_all_answered_when_it_is_dropped(
    serving: Callable[..., Any], cancer: dict[str, Any], name: str
) -> None:
    import time

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = cancer["X_train"], cancer["y_train"]
    nbdeploy.register(cancer["model"], name, X, y)
    slow = make_pipeline(FunctionTransformer(lambda a: (time.sleep(0.2), a)[1]), cancer["model"])
    nbdeploy.register(slow, name, X, y)  # pickled by value: the lambda travels with the model
    dep = serving(f"{name}/1", name=name)
    dep.canary(f"{name}/2", percent=50)
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(_send, dep.url, _bodies(cancer["X_test"], 200), None, 16)
        eventually(lambda: dep.experiment().state["counts"].get("2", {}).get("requests", 0), lambda n: n >= 5)
        dep.conclude(abort=True)
        answers = load.result()
    assert [r.status_code for r in answers] == [200] * 200  # none hung, none failed
    assert Counter(r.headers.get(VARIANT, "-") for r in answers)["2"] > 0
    assert dep.experiment().state is None


def test_spec_and_server_are_reconciled(dep: Any, two_versions: str) -> None:
    dep.canary(f"{two_versions}/2", percent=10)
    auth = {"Authorization": f"Bearer {dep.token}"}
    assert httpx.post(f"{dep.url}/admin/experiment", json={"action": "stop"}, headers=auth).status_code == 200
    assert dep.spec.experiment is not None  # the server dropped it behind the spec's back
    dep.conclude(abort=True)  # still concludes: the server already runs none
    assert dep.spec.experiment is None
    # two kernels start a canary at once: one wins, and the spec says what the server runs
    with ThreadPoolExecutor(2) as pool:
        tries = [pool.submit(dep.canary, f"{two_versions}/2", p) for p in (5, 7)]
        outcomes = [t.exception() for t in tries]
    assert sum(e is None for e in outcomes) == 1, outcomes
    assert all("already runs a canary" in str(e) for e in outcomes if e is not None)
    assert dep.experiment().state["percent"] == dep.spec.experiment.percent
    with pytest.raises(nbdeploy.NbdeployError, match=r"conclude it .* before you update"):
        dep.update(f"{two_versions}/2")
    with pytest.raises(nbdeploy.NbdeployError, match="before you roll back"):
        dep.rollback()


def test_a_stopped_deployment_concludes_in_its_spec(dep: Any, two_versions: str) -> None:
    dep.canary(f"{two_versions}/2", percent=10)
    dep.stop()
    dep.conclude(promote=True, force=True)
    assert dep.spec.experiment is None and dep.spec.current.version == 2
    assert nbdeploy.resolve(f"{two_versions}@champion").version == 2
    start(dep.name)
    assert dep.status().version == 2 and dep.experiment().state is None


def test_a_shadow_cannot_be_pinned_and_hostile_experiments_are_4xx(
    dep: Any, two_versions: str, cancer: dict[str, Any]
) -> None:
    body = _bodies(cancer["X_test"], 1)[0]
    dep.shadow(f"{two_versions}/2")
    r = httpx.post(f"{dep.url}/invocations", content=body, headers={**JSON, VARIANT: "challenger"})
    assert r.status_code == 400 and "answers nobody" in r.json()["message"]
    dep.conclude(abort=True)
    base = {"kind": "canary", "percent": 10, "started": 1e9,
            "challenger": {"ref": "x", "model_path": dep.current.model_path}}  # fmt: skip
    hostile = [
        {**base, "percent": 10**400},
        {**base, "started": 10**400},
        {**base, "started": 0},
        {**base, "challenger": {"ref": "x", "model_path": None}},
        {**base, "challenger": {"ref": "x", "model_path": 5}},
        {**base, "challenger": {"ref": "x", "model_path": "/a\x00b"}},
        {**base, "challenger": {"ref": "x", "model_path": dep.current.model_path, "version": "2\r\nX-Evil: 1"}},
        {**base, "challenger": {"ref": "x", "model_path": dep.current.model_path, "profile_path": "/dev/zero"}},
        {**base, "sticky_header": 5},
    ]
    auth = {"Authorization": f"Bearer {dep.token}"}
    with httpx.Client(base_url=dep.url, headers=auth) as client:
        for doc in hostile:
            r = client.post("/admin/experiment", content=json.dumps({"action": "start", "experiment": doc}))
            assert 400 <= r.status_code < 500 and len(r.json()["message"]) < 300, (doc, r.text[:300])
        assert client.get("/experiment").json()["experiment"] is None
        assert client.post("/invocations", content=body, headers=JSON).status_code == 200


def test_sticky_keys_come_from_the_column_on_the_table_path_too() -> None:
    import pandas as pd

    from nbdeploy.serving.protocol import Parsed
    from nbdeploy.serving.routing import Split

    split = Split("canary", "2", 50.0, sticky_column="user", salt="1")
    frame = pd.DataFrame({"x": [1.0], "user": ["ann"]})  # an optional column before 'user' is absent
    same = pd.DataFrame({"user": ["ann"], "x": [9.0], "opt": [None]})
    assert split.sticky_key({}, Parsed(1, ("x", "user"), frame=frame)) == "'ann'"
    assert split.sticky_key({}, Parsed(1, ("user", "x", "opt"), frame=same)) == "'ann'"
    assert split.sticky_key({}, Parsed(1, ("x",), frame=pd.DataFrame({"x": [1.0]}))) is None
    matrix = Parsed(1, ("x", "user"), values=np.array([[1.0, 7.0]]))
    assert split.sticky_key({}, matrix) == "7.0"
    assert split.sticky_key({}, Parsed(1, ("x", "user"), values=np.array([[1.0, np.nan]]))) is None
    na = pd.DataFrame({"user": pd.array([pd.NA], dtype="string"), "x": [1.0]})
    assert split.sticky_key({}, Parsed(1, ("user", "x"), frame=na)) is None  # pandas' NA: no key, no error


def test_a_shadow_resumed_after_kill_9_keeps_its_agreement(dep: Any, two_versions: str, cancer: dict[str, Any]) -> None:
    dep.shadow(f"{two_versions}/2")
    _send(dep.url, _bodies(cancer["X_test"], 120))
    state = eventually(lambda: dep.experiment().state, lambda s: s["agreement"]["rows"] == 120)
    os.kill(dep.pid, signal.SIGKILL)
    eventually(dep.state, lambda s: s != "running")
    start(dep.name)
    resumed = dep.experiment().state
    assert resumed["counts"] == state["counts"] and resumed["distributions"] == state["distributions"]
    assert resumed["agreement"]["rows"] == 120 and resumed["agreement"]["rate"] == state["agreement"]["rate"]


def test_without_monitoring_a_shadows_requests_take_labels(
    serving: Any, two_versions: str, name: str, cancer: dict[str, Any]
) -> None:
    """--no-monitor: no window knows a request; the shadow's server still does, and its process
    scores both variants on the labels it reads from the feedback log."""
    dep = serving(f"{two_versions}/1", name=name, monitor=False)
    dep.shadow(f"{two_versions}/2")
    answers = _send(dep.url, _bodies(cancer["X_test"], 40))
    ids = [r.headers["x-request-id"] for r in answers]
    assert dep.feedback([*ids, "never-answered"], [[1]] * 41) == {"accepted": 40, "unknown": ["never-answered"]}
    state = eventually(lambda: dep.experiment().state,
                       lambda s: s["stats"].get("accuracy", {}).get("n") == {"champion": 40, "2": 40})  # fmt: skip
    assert state["counts"]["2"]["shadowed"] == 40 and state["agreement"]["rows"] == 40

def test_a_stalled_shadow_holds_nothing_in_the_server_and_catches_up_from_the_log(
    dep: Any, two_versions: str, cancer: dict[str, Any]
) -> None:
    """The shadow reads the request log: stopped (as a starved ``SCHED_IDLE`` process may be),
    it costs the server no memory, so more requests than a sent shadow may hold are all
    answered and none is dropped; once it runs again each gets its shadow record, once, but
    those forgotten meanwhile, which stay forgotten."""
    from nbdeploy.serving.variants import MAX_MIRRORS

    dep.shadow(f"{two_versions}/2", percent=100)
    (worker,) = _workers(dep.pid)
    n = MAX_MIRRORS + 300
    os.kill(worker, signal.SIGSTOP)
    try:
        answers = _send(dep.url, _bodies(cancer["X_test"], n), clients=4)
        assert {r.status_code for r in answers} == {200}
        held = dep.experiment().state
        assert held["mirrors_in_flight"] == n and held["counts"]["2"].get("mirror_dropped", 0) == 0
        ids = [r.headers["x-request-id"] for r in answers]
        forgotten = set(ids[::25])
        assert dep.forget(ids=sorted(forgotten))["removed"]["requests"] == len(forgotten)
    finally:
        os.kill(worker, signal.SIGCONT)
    state = eventually(lambda: dep.experiment().state, lambda st: st["mirrors_in_flight"] == 0)  # forgotten: given up
    shadows = [r["id"] for r in _logged(dep) if r.get("shadow")]
    assert len(shadows) == len(set(shadows)) and set(shadows) == set(ids) - forgotten
    assert state["counts"]["2"]["shadowed"] == n - len(forgotten) and state["agreement"]["rows"] == n - len(forgotten)


def test_kill_9_while_the_shadow_is_behind_leaves_no_mirror_unanswered(
    dep: Any, two_versions: str, cancer: dict[str, Any]
) -> None:
    """Requests answered while the shadow lagged, then ``kill -9`` of the server (its shadow
    dies with it): the restarted server's shadow finds them in the log and answers each once."""
    dep.shadow(f"{two_versions}/2", percent=100)
    (worker,) = _workers(dep.pid)
    os.kill(worker, signal.SIGSTOP)
    answers = _send(dep.url, _bodies(cancer["X_test"], 150), clients=4)
    os.kill(dep.pid, signal.SIGKILL)  # the stopped shadow is killed with it (PR_SET_PDEATHSIG)
    eventually(dep.state, lambda s: s != "running")
    start(dep.name)
    ids = {r.headers["x-request-id"] for r in answers}
    state = eventually(lambda: dep.experiment().state, lambda st: st["counts"]["2"].get("shadowed", 0) >= 150)
    shadows = [r["id"] for r in _logged(dep) if r.get("shadow")]
    assert sorted(shadows) == sorted(ids) and state["counts"]["2"]["shadowed"] == 150
    assert state["counts"]["champion"]["requests"] == 150 and state["mirrors_in_flight"] == 0


# decisions on live traffic -----------------------------------------------------------------


def failing_challenger(cancer: dict[str, Any], name: str) -> tuple[Any, float]:
    """The fixture forest behind a step that raises on a request holding a mean radius above
    the test rows' 95th percentile, registered as ``name``'s next version; and that radius."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    limit = float(cancer["X_test"]["mean radius"].quantile(0.95))

    def refuse_large(frame: Any) -> Any:  # nested: pickled with the model, by value
        if (frame["mean radius"] > limit).any():
            raise ValueError("radius out of range")
        return frame

    small = cancer["X_train"]["mean radius"] <= limit  # registering predicts on its rows
    model = make_pipeline(FunctionTransformer(refuse_large), cancer["model"])
    return nbdeploy.register(model, name, cancer["X_train"][small], cancer["y_train"][small]), limit


def test_a_challenger_failing_on_5_percent_of_inputs_is_rolled_back(
    serving: Callable[..., Any], cancer: dict[str, Any], name: str
) -> None:
    X = cancer["X_test"].reset_index(drop=True)
    nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"])
    _, limit = failing_challenger(cancer, name)
    dep = serving(f"{name}/1", name=name)
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    webhook = f"http://127.0.0.1:{hook.server_address[1]}/experiments"
    dep.canary(f"{name}/2", percent=50, rollback_when=["error_rate>baseline"], webhook=webhook)
    order = np.random.default_rng(0).permutation(np.resize(np.arange(len(X)), 4000))
    bodies = _bodies(X.iloc[order], len(order))
    answers: list[Any] = []
    for start_at in range(0, len(bodies), 100):  # until the server has rolled it back
        answers += _send(dep.url, bodies[start_at : start_at + 100])
        if dep.spec.experiment is None:
            break
    assert dep.spec.experiment is None, "not rolled back after 4,000 requests"
    by_challenger = [(i, r) for i, r in enumerate(answers) if r.headers.get(VARIANT) == "2"]
    print(f"rolled back after {len(by_challenger)} challenger requests")  # shown with -s
    assert len(by_challenger) <= 500  # the bound
    for i, r in enumerate(answers):  # the only client errors are the challenger's own failures
        if r.status_code != 200:
            assert r.status_code == 400 and r.headers.get(VARIANT) == "2", r.text
            assert X.iloc[order[i]]["mean radius"] > limit and "could not predict" in r.json()["message"]
    after = _send(dep.url, bodies[:200])
    assert {r.status_code for r in after} == {200} and VARIANT not in after[0].headers
    event = dep.experiment().events[-1]
    assert event["action"] == "rollback" and "error_rate>baseline holds" in event["why"]
    assert "experiment: rollback" in dep.logs()
    sent = eventually(lambda: received, lambda r: bool(r))  # the webhook got the event
    assert sent[-1]["action"] == "rollback" and sent[-1]["challenger"] == f"{name}/2"
    hook.shutdown()
    assert any(e["rule"] == "experiment" and e["state"].startswith("rollback") for e in dep.alerts()["events"])
    tags = eventually(lambda: nbdeploy.resolve(f"{name}/2").tags, lambda t: "nbdeploy.experiment.rolled_back" in t)
    assert "error_rate>baseline holds" in tags["nbdeploy.experiment.rolled_back"]


def test_a_better_challenger_is_promoted_by_its_labels_only_through_the_gate(
    serving: Callable[..., Any], cancer: dict[str, Any], name: str
) -> None:
    X, y = cancer["X_test"].reset_index(drop=True), cancer["y_test"].reset_index(drop=True)
    stump = DecisionTreeClassifier(max_depth=1, random_state=0).fit(cancer["X_train"], cancer["y_train"])
    nbdeploy.register(stump, name, cancer["X_train"], cancer["y_train"])  # the champion: worse
    nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"])  # the challenger: better
    dep = serving(f"{name}/1", name=name)
    order = np.resize(np.arange(len(X)), 2400)

    def traffic_with_labels() -> None:
        answers = _send(dep.url, _bodies(X.iloc[order], len(order)))
        dep.feedback([r.headers["x-request-id"] for r in answers], y.iloc[order].to_numpy())

    dep.canary(f"{name}/2", percent=50, promote_when=["accuracy>=baseline"], min_labels=100)
    traffic_with_labels()
    refused = eventually(lambda: dep.experiment().events, lambda e: bool(e) and "refused" in e[-1]["action"])
    assert "never validated" in refused[-1]["why"] and dep.experiment().state is not None  # the gate held
    refused_tag = "nbdeploy.experiment.promotion_refused"
    tags = eventually(lambda: nbdeploy.resolve(f"{name}/2").tags, lambda t: refused_tag in t)
    assert "never validated" in tags[refused_tag]
    dep.conclude(abort=True)
    nbdeploy.validate(f"{name}/2", X, y)
    dep.canary(f"{name}/2", percent=50, promote_when=["accuracy>=baseline"], min_labels=100)
    traffic_with_labels()
    events = eventually(lambda: dep.experiment().events, lambda e: e[-1]["action"] == "promote", timeout=60)
    assert "accuracy>=baseline holds" in events[-1]["why"]
    assert dep.status().version == 2 and dep.spec.current.version == 2 and dep.spec.experiment is None
    assert nbdeploy.resolve(f"{name}@champion").version == 2
    tags = eventually(lambda: nbdeploy.resolve(f"{name}/2").tags, lambda t: "nbdeploy.experiment.promoted" in t)
    assert "accuracy>=baseline holds" in tags["nbdeploy.experiment.promoted"]


@pytest.mark.alone  # a latency rule compares variants timed one after the other: no other load
def test_an_a_a_experiment_through_the_server_decides_nothing(
    serving: Callable[..., Any], cancer: dict[str, Any], name: str
) -> None:
    """End to end: the same forest as champion and challenger, every row sent once to each
    (through the split: a sticky key the split puts on each side), labelled: both arms see the
    same rows, so the lift is exactly 0 and no rule may fire. (The false-alarm rate under random
    splits is measured on the decision code, tests/test_sequential.py.)"""
    from nbdeploy.serving.routing import Split

    X, y = cancer["X_test"].reset_index(drop=True), cancer["y_test"].reset_index(drop=True)
    for _ in range(2):
        nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"])
    dep = serving(f"{name}/1", name=name)
    dep.canary(f"{name}/2", percent=50, sticky_header="X-User", promote_when=["accuracy>baseline"], min_labels=100,
               rollback_when=["accuracy<baseline", "error_rate>baseline", "latency_ms>baseline*3"])  # fmt: skip
    split = Split.of(dep.spec.experiment)
    keys = (f"user-{i}" for i in range(10_000))
    sides = {side: next(k for k in keys if split.to_challenger("", k) == side) for side in (False, True)}
    order = np.resize(np.arange(len(X)), 600)
    bodies = _bodies(X.iloc[order], len(order))
    ids: list[str] = []
    for variant, key in (("champion", sides[False]), ("2", sides[True])):
        answers = _send(dep.url, bodies, {"X-User": key})
        assert {r.headers[VARIANT] for r in answers} == {variant}
        ids += [r.headers["x-request-id"] for r in answers]
    dep.feedback(ids, np.concatenate([y.iloc[order].to_numpy()] * 2))
    import time

    time.sleep(3)  # three looks by the server
    state = dep.experiment().state
    assert state is not None and not dep.experiment().events  # nothing decided
    verdicts = state["verdicts"]  # each rule with where it stands, and why
    assert [(v["when"], v["rule"]) for v in verdicts] == [
        ("promote", "accuracy>baseline"), ("rollback", "accuracy<baseline"),
        ("rollback", "error_rate>baseline"), ("rollback", "latency_ms>baseline*3"),
    ]  # fmt: skip
    assert not any(v["holds"] for v in verdicts) and "accuracy>baseline is undecided" in verdicts[0]["reason"]
    assert "promote rule: accuracy>baseline is undecided" in repr(dep.experiment())
    accuracy = state["stats"]["accuracy"]
    assert accuracy["n"] == {"champion": 600, "2": 600} and accuracy["lift"] == 0
    assert accuracy["low"] < 0 < accuracy["high"]


def test_the_panel_shows_the_variants_side_by_side(dep: Any, two_versions: str, cancer: dict[str, Any]) -> None:
    """The monitor's text (terminal, text/plain) and its JavaScript (rendered by Node.js) on a real
    server's /monitor document during a shadow."""
    import shutil
    import subprocess

    from nbdeploy.monitoring.view import render_text
    from tests.test_widget_js import JS, RUNNER

    dep.shadow(f"{two_versions}/2")
    _send(dep.url, _bodies(cancer["X_test"], 60))
    doc = eventually(lambda: dep.snapshot("1m"), lambda d: d["experiment"]["counts"]["2"].get("shadowed") == 60)
    text = render_text(doc, "1m")
    assert "shadow of cancer-two/2 (100%), since it began:" in text
    assert "  champion   requests 60  failures 0" in text and "  2          requests 60  failures 0" in text
    assert "agreement" in text and re.search(r"  2 +predictions \S+ \d+% .*predictions vs champion PSI", text)
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (it runs the widget's JavaScript)")
    runner = Path(dep.path) / "runner.mjs"
    runner.write_text(RUNNER)
    html = subprocess.run([node, str(runner), JS.as_uri()], input=json.dumps(doc), capture_output=True, text=True,
                          check=True, timeout=60).stdout  # fmt: skip
    assert 'data-variant="champion"' in html and 'data-variant="2"' in html and "agreement" in html
    assert "predictions PSI vs champion" in html and 'class="nbd-mon-shares"' in html
    assert 'class="nbd-mon-disagree"' in html  # the stump and the forest disagree on some of 60 rows


def _workers(pid: int) -> list[int]:
    """The spawned worker processes (multiprocessing's spawn_main) whose parent is ``pid``, from /proc."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid and b"spawn_main" in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_a_killed_challenger_process_is_replaced_and_no_request_is_lost(
    dep: Any, two_versions: str, cancer: dict[str, Any]
) -> None:
    dep.canary(f"{two_versions}/2", percent=50)
    bodies = _bodies(cancer["X_test"], 400)
    assert {r.status_code for r in _send(dep.url, bodies[:100])} == {200}
    (worker,) = _workers(dep.pid)
    os.kill(worker, signal.SIGKILL)  # the challenger's process, as the OOM killer would
    answers = _send(dep.url, bodies[100:])
    assert {r.status_code for r in answers} == {200}  # what it was predicting is predicted again by a new one
    assert Counter(r.headers[VARIANT] for r in answers)["2"] > 0
    (fresh,) = _workers(dep.pid)
    assert fresh != worker
    dep.conclude(abort=True)
    assert eventually(lambda: _workers(dep.pid), lambda left: not left) == []


def test_a_shadow_that_does_not_read_its_pipe_never_holds_up_the_champion(
    serving: Callable[..., Any], two_versions: str, cancer: dict[str, Any], name: str
) -> None:
    """A mirrored batch larger than a pipe's buffer is written from a thread: with the shadow's
    process stopped (as a starved ``SCHED_IDLE`` process is), the server still answers. (A
    shadow is sent its requests where the log holds no inputs in clear: hashed ones here.)"""
    dep = serving(f"{two_versions}/1", name=name, max_batch=8192, log_inputs="hashed")
    dep.shadow(f"{two_versions}/2", percent=100)
    (worker,) = _workers(dep.pid)
    X = cancer["X_test"]
    rows = np.resize(X.to_numpy(), (5000, X.shape[1]))  # ~1.2 MB pickled: more than any pipe buffer holds
    big = json.dumps({"dataframe_split": {"columns": list(X.columns), "data": rows.tolist()}}).encode()
    os.kill(worker, signal.SIGSTOP)
    try:
        with httpx.Client(base_url=dep.url, timeout=60) as client:
            first = client.post("/invocations", content=big, headers=JSON)
            assert first.status_code == 200 and len(first.json()["predictions"]) == 5000
            answers = _send(dep.url, _bodies(X, 40), clients=4)  # the mirror is stuck on the stopped process
        assert {r.status_code for r in answers} == {200}
        assert dep.experiment().state["counts"]["2"].get("shadowed", 0) == 0  # nothing came back from it yet
    finally:
        os.kill(worker, signal.SIGCONT)
    eventually(lambda: dep.experiment().state["counts"]["2"].get("shadowed", 0), lambda n: n >= 41)
    mirrored = [r for r in _logged(dep) if r.get("shadow")]
    assert sum(r["rows"] for r in mirrored) == 5040 and all(r["status"] == 200 for r in mirrored)


def test_mirrors_past_the_bound_are_dropped_and_counted_and_the_rest_all_written_down(
    serving: Callable[..., Any], two_versions: str, cancer: dict[str, Any], name: str
) -> None:
    """A shadow that cannot keep up (its process stopped) holds at most MAX_MIRRORS mirrors;
    each one past the bound is counted as dropped, clients are all answered, and every held
    mirror is logged once the shadow answers again. (A shadow sent its requests: the log's
    inputs are hashed.)"""
    from nbdeploy.serving.variants import MAX_MIRRORS

    dep = serving(f"{two_versions}/1", name=name, log_inputs="hashed")
    dep.shadow(f"{two_versions}/2", percent=100)
    (worker,) = _workers(dep.pid)
    extra = 60
    os.kill(worker, signal.SIGSTOP)
    try:
        answers = _send(dep.url, _bodies(cancer["X_test"], MAX_MIRRORS + extra), clients=4)
        assert {r.status_code for r in answers} == {200}
        held = dep.experiment().state
        assert held["mirrors_in_flight"] == MAX_MIRRORS
        assert held["counts"]["2"]["mirror_dropped"] == extra
    finally:
        os.kill(worker, signal.SIGCONT)
    eventually(lambda: dep.experiment().state, lambda st: st["mirrors_in_flight"] == 0, timeout=120)
    counts = dep.experiment().state["counts"]["2"]
    assert counts["shadowed"] == MAX_MIRRORS and counts["mirror_dropped"] == extra
    mirrored = [r for r in _logged(dep) if r.get("shadow") and not r.get("dropped")]
    assert len(mirrored) == len({r["id"] for r in mirrored}) == MAX_MIRRORS
    assert all(r["status"] == 200 and len(r["predictions"]) == 1 for r in mirrored)
    # each drop is logged too (a Ray hub counts from records only), and a restart counts them again
    dropped = [r for r in _logged(dep) if r.get("shadow") and r.get("dropped")]
    assert len(dropped) == extra and not {r["id"] for r in dropped} & {r["id"] for r in mirrored}
    assert all(r["status"] == 503 and r["error"].startswith("Not mirrored") for r in dropped)  # why: private here
    os.kill(dep.pid, signal.SIGKILL)
    eventually(dep.state, lambda s: s != "running")
    start(dep.name)
    assert dep.experiment().state["counts"]["2"] == counts


def test_a_challengers_answer_is_read_only_once_it_is_all_in() -> None:
    """The loop never waits in a read of an answer the worker has only begun to write (a
    stopped or starved shadow may never finish it): a small one is read once all of it is
    in the pipe, a large one from a thread. A real socket pair and a real event loop."""
    import asyncio
    import pickle
    import socket
    import struct
    import time
    from multiprocessing.connection import Connection

    from nbdeploy.serving.model_process import ModelProcess

    ours, worker = socket.socketpair()
    model = ModelProcess("unused")
    model._conn = conn = Connection(ours.detach())
    model._peek = socket.socket(fileno=os.dup(conn.fileno()))

    def framed(answer: Any) -> bytes:
        payload = pickle.dumps(answer)
        return struct.pack("!i", len(payload)) + payload

    async def scenario(frame: bytes, first: int) -> tuple[Any, int]:
        ticks = [0]
        seen: list[int] = []

        def rest() -> None:  # the worker writes the rest a little later, in pieces
            time.sleep(0.3)
            seen.append(ticks[0])
            for i in range(first, len(frame), 65536):
                worker.sendall(frame[i : i + 65536])

        async def tick() -> None:
            while True:
                await asyncio.sleep(0.005)
                ticks[0] += 1

        ticker = asyncio.create_task(tick())
        worker.sendall(frame[:first])
        writer = threading.Thread(target=rest)
        writer.start()
        answer = await asyncio.wait_for(model._receive(asyncio.get_running_loop(), conn), 30)
        ticker.cancel()
        writer.join()
        return answer, seen[0]

    small, ticks = asyncio.run(scenario(framed(("ok", list(range(10)))), 6))  # the header and two bytes
    assert small == ("ok", list(range(10))) and ticks >= 10  # the loop ran on meanwhile
    big, ticks = asyncio.run(scenario(framed(("ok", list(range(300_000)))), 65536))  # beyond any socket buffer
    assert big[1][-1] == 299_999 and ticks >= 10
    model._shutdown()
    worker.close()
