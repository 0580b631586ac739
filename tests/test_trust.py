"""Wrong answers the server must never give: false drift, rounded inputs, a stale model copy."""

from __future__ import annotations

import json
import os
import stat
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets

import nbdeploy
from nbdeploy.monitoring.windows import RequestWindows
from nbdeploy.serving.requestlog import read_records
from nbdeploy.stats import drift
from nbdeploy.stats.profile import compute_profile
from tests.helpers import eventually, usage_error

# diabetes' s4 and sex, iris' petal widths, wine's ash: few distinct values, many on an edge
LOADERS = {"diabetes": datasets.load_diabetes, "iris": datasets.load_iris, "wine": datasets.load_wine,
           "breast_cancer": datasets.load_breast_cancer}  # fmt: skip


@pytest.mark.parametrize("dataset", list(LOADERS))
def test_training_rows_show_no_drift_in_the_windows_and_offline_alike(dataset: str) -> None:
    X = LOADERS[dataset](as_frame=True).frame.drop(columns="target")
    profile = compute_profile(X)
    windows = RequestWindows(list(X.columns), profile, "regression")
    for start in range(0, len(X), 7):  # requests of 7 rows, as a client would send them
        part = X.iloc[start : start + 7].to_numpy()
        windows.add(1000.0, 1.0, 200, f"r{start}", part, [0.0] * len(part))
    live = {d["name"]: d for d in windows.snapshot(now=1001.0)["windows"]["1m"]["drift"]}
    offline = {d.name: d for d in drift.frame_drift(profile, X)}
    assert set(live) == set(offline) == set(X.columns)
    for name, d in offline.items():
        assert live[name]["psi"] == pytest.approx(d.psi, abs=1e-12), name  # one binning, one dtype
        assert d.status == "ok" and live[name]["status"] == "ok", (name, d.psi)


def test_counts_and_numeric_bins_are_one_rule() -> None:
    column = {"name": "x", "kind": "numeric", "min": 0.0, "max": 1.0, "edges": [0.1, 0.2, 0.7], "counts": [1] * 4}
    x = np.array([0.0, 0.1, 0.2, 0.2000000001, 0.7, 1.0, np.nan, -1.0, 2.0, np.float32(0.1)])
    cuts = drift.numeric_cuts(column)
    bins = drift.numeric_bins(cuts, x)
    assert drift.counts(column, x).tolist() == np.bincount(bins[~np.isnan(x)], minlength=len(cuts) + 1).tolist()


@pytest.fixture(scope="module")
def diabetes_model() -> tuple[str, pd.DataFrame]:
    from sklearn.linear_model import LinearRegression

    X, y = datasets.load_diabetes(return_X_y=True, as_frame=True)
    name = "trust-diabetes"
    nbdeploy.register(LinearRegression().fit(X, y), name, X, y)
    return name, X


def test_served_training_rows_show_no_drift_and_arrive_exactly(
    serving: Any, diabetes_model: tuple[str, pd.DataFrame], name: str
) -> None:
    model, X = diabetes_model
    dep = serving(f"{model}/1", name=name)
    rows = X.head(200)
    for start in range(0, len(rows), 20):
        dep.predict(rows.iloc[start : start + 20])
    logged = [r for r in read_records(dep.path / "requests.jsonl") if r["status"] == 200]
    sent = np.array([row for r in logged for row in r["inputs"]])
    np.testing.assert_array_equal(sent, rows.to_numpy())  # full double precision, not 10 digits
    doc = eventually(lambda: dep.snapshot("1m"), lambda d: d["windows"]["1m"]["rows"] == 200, timeout=10)
    live = {d["name"]: d["psi"] for d in doc["windows"]["1m"]["drift"]}
    offline = {d.name: d.psi for d in drift.frame_drift(nbdeploy.registry.load_profile(nbdeploy.resolve(model)), rows)}
    assert live == pytest.approx(offline, abs=1e-12)
    assert doc["windows"]["1m"]["drifted_features"] == [], live
    assert time.time() - doc["now"] < 60


DAMAGES = {
    "empty": lambda path: path.write_text(""),
    "garbage": lambda path: path.write_text("12a"),
    "another process": lambda path: path.write_text(str(os.getpid())),
    "symlink": lambda path: (path.unlink(), path.symlink_to("/etc/hostname")),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_pid_file_never_hides_a_live_server(
    serving: Any, two_versions: str, name: str, damage: str, ip: Any
) -> None:
    from nbdeploy.deployments import processes

    dep = serving(f"{two_versions}/1", name=name)
    pid = dep.pid
    DAMAGES[damage](dep.path / "pid")
    assert dep.pid == pid and dep.state() == "running"  # found by its command line
    assert [r[:2] for r in nbdeploy.deployments().rows if r[0] == name] == [[name, "running"]]
    with pytest.raises(nbdeploy.DeploymentError, match=r"is already running at"):
        nbdeploy.serve(f"{two_versions}/1", name=name)  # never a second server on one folder
    assert usage_error(ip, f"stop {name} --all") == "Give either a deployment NAME or --all to stop."
    ip.run_line_magic("deploy", f"stop {name}")
    assert pid is not None and not processes.alive(pid, str(dep.path))
    assert processes.find_server(str(dep.path)) is None and dep.state() == "stopped"


def test_a_damaged_port_file_is_one_sentence(serving: Any, two_versions: str, name: str, cancer: Any) -> None:
    dep = serving(f"{two_versions}/1", name=name)
    (dep.path / "port").write_text("xx")
    with pytest.raises(nbdeploy.DeploymentError) as err:
        dep.predict(cancer["X_test"].head(1))
    assert str(err.value) == (
        f"Deployment {name!r} runs (pid {dep.pid}) but its port file {dep.path / 'port'} is damaged: "
        "stop it and serve it again."
    )


def test_deployment_folders_are_owner_only(serving: Any, two_versions: str, name: str) -> None:
    dep = serving(f"{two_versions}/1", name=name)
    assert stat.S_IMODE(dep.path.stat().st_mode) == 0o700
    assert stat.S_IMODE((dep.path / "token").stat().st_mode) == 0o600


def test_a_clients_body_is_never_a_5xx_nor_a_server_error(dep: Any) -> None:
    import httpx

    bodies = {
        "deep nesting": ("[" * 100_000).encode(),
        "deep nesting inside": b'{"dataframe_split": {"data": ' + b"[" * 50_000 + b"}}",
        "a 401-digit integer": b'{"instances": [[' + b"1" * 401 + b"]]}",
        "half a million keys": json.dumps({f"k{i}": 0 for i in range(500_000)}).encode(),
    }
    for what, body in bodies.items():
        r = httpx.post(dep.url + "/invocations", content=body, headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code == 400 and r.json()["error_code"] == "BAD_REQUEST", what
        assert len(r.content) < 500, what  # the message never echoes the body
    auth = {"Authorization": f"Bearer {dep.token}"}
    r = httpx.post(dep.url + "/feedback", content=b'{"ids": ' + b"[" * 100_000, headers=auth, timeout=60)
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    logged = [rec for rec in read_records(dep.path / "requests.jsonl") if rec["status"] == 400]
    assert len(logged) == len(bodies) and all(len(json.dumps(rec)) < 1000 for rec in logged)
    doc = dep.snapshot("1m")["windows"]["1m"]
    assert doc["status_classes"]["4xx"] == len(bodies) and doc["error_rate"] == 0.0  # no alert for a bad client


def test_every_mistyped_column_is_named(serving: Any, name: str) -> None:
    import httpx
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    X = pd.DataFrame({"city": ["a", "b", "a", "c"] * 10, "size": np.arange(40.0)})
    y = (X["size"] > 20).astype(int)
    model = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["city"]),
                                                  remainder="passthrough"), LogisticRegression())  # fmt: skip
    nbdeploy.register(model.fit(X, y), name, X, y)
    dep = serving(f"{name}/1", name=name)
    body = {"dataframe_records": [{"city": 5, "size": "big"}]}
    r = httpx.post(dep.url + "/invocations", json=body, timeout=30)
    assert r.status_code == 400
    message = r.json()["message"]
    assert "'city' expects string values" in message and "'size' expects double values" in message, message


def test_a_torn_log_line_never_swallows_the_next_record(tmp_path: Any) -> None:
    from nbdeploy.serving.requestlog import RequestLog

    path = tmp_path / "requests.jsonl"
    path.write_text('{"id": "a", "ts": 1}\n{"id": "b", "ts": 2, "inp')  # killed mid-write
    log = RequestLog(path)
    log.append({"id": "c", "ts": 3})
    log.close()
    assert [r["id"] for r in read_records(path)] == ["a", "c"]


def test_a_line_left_open_by_another_writer_never_swallows_the_next_record(tmp_path: Any) -> None:
    from nbdeploy.serving.requestlog import RequestLog

    path = tmp_path / "requests.jsonl"
    log = RequestLog(path)
    log.append({"id": "a", "ts": 1})
    with path.open("a") as other:  # another writer, killed mid-line while this log is open
        other.write('{"id": "b", "ts": 2, "inp')
    log.append({"id": "c", "ts": 3})
    with path.open("a") as other:  # one that ends its line: nothing is added before ours
        other.write('{"id": "d", "ts": 4}\n')
    log.append({"id": "e", "ts": 5})
    log.close()
    assert [r["id"] for r in read_records(path)] == ["a", "c", "d", "e"]
    assert "\n\n" not in path.read_text()


def test_a_line_torn_in_the_live_log_while_serving_loses_no_answered_request(dep: Any, cancer: Any) -> None:
    X = cancer["X_test"]
    _, before = dep.predict(X.head(2), with_id=True)
    with (dep.path / "requests.jsonl").open("a") as other:
        other.write('{"id": "torn", "status": 200, "inputs": [[1.0, 2')
    _, after = dep.predict(X.head(3), with_id=True)
    logged = eventually(lambda: {r["id"] for r in read_records(dep.path / "requests.jsonl")}, lambda ids: after in ids)
    assert {before, after} <= logged and "torn" not in logged
    window = eventually(lambda: dep.snapshot("1m")["windows"]["1m"], lambda w: w["requests"] == 2)
    assert window["rows"] == 5  # the monitor read both records, and nothing of the torn line


def test_what_rotation_deletes_is_counted(tmp_path: Any) -> None:
    from nbdeploy.serving.requestlog import RequestLog

    path = tmp_path / "requests.jsonl"
    log = RequestLog(path, max_bytes=200, backups=2)
    for i in range(100):
        log.append({"id": f"r{i}", "ts": float(i)})
    log.close()
    kept = sum(1 for p in tmp_path.glob("requests.jsonl*") for _ in p.read_text().splitlines())
    assert log.dropped > 0 and kept + log.dropped == 100


def test_a_token_symlink_is_replaced_never_followed(
    serving: Any, two_versions: str, name: str, tmp_path: Any
) -> None:
    from nbdeploy import config

    target = tmp_path / "precious"
    target.write_text("do not touch")
    target.chmod(0o644)
    folder = config.home() / name
    folder.mkdir(parents=True)
    (folder / "token").symlink_to(target)
    dep = serving(f"{two_versions}/1", name=name)
    assert target.read_text() == "do not touch" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert not (dep.path / "token").is_symlink() and stat.S_IMODE((dep.path / "token").stat().st_mode) == 0o600



def test_feedback_needs_the_token_is_bounded_and_ids_are_unguessable(serving: Any, two_versions: str, name: str,
                                                                      cancer: Any) -> None:  # fmt: skip
    import httpx

    dep = serving(f"{two_versions}/1", name=name, max_body_bytes=1 << 16)  # loopback: no token for predictions
    ids = [dep.predict(cancer["X_test"].head(1), with_id=True)[1] for _ in range(3)]
    assert len(set(ids)) == 3 and all(len(i) >= 16 for i in ids)
    assert len(os.path.commonprefix(ids)) < 4  # noqa: RUF071 -- random, not a boot prefix and a counter
    body = {"ids": ids, "targets": [0, 1, 0]}
    anonymous = httpx.post(dep.url + "/feedback", json=body, timeout=30)
    assert anonymous.status_code == 401  # labels steer live accuracy: never from anyone who can reach the port
    auth = {"Authorization": f"Bearer {dep.token}"}
    huge = {"ids": ["x"] * 20_000, "targets": [0] * 20_000}
    assert httpx.post(dep.url + "/feedback", json=huge, headers=auth, timeout=30).status_code == 413
    assert dep.feedback(ids, [0, 1, 0]) == {"accepted": 3, "unknown": []}  # the kernel sends the token


def test_a_body_far_wider_than_the_model_is_refused_before_it_is_parsed(dep: Any) -> None:
    import httpx

    wide = ",".join(f"c{i}" for i in range(400_000)).encode() + b"\n" + b",".join([b"1"] * 400_000) + b"\n"
    r = httpx.post(dep.url + "/invocations", content=wide, headers={"Content-Type": "text/csv"}, timeout=60)
    assert r.status_code == 400
    expected = "The CSV header has 400000 columns; the model takes 30 (a request may name at most 1024)."
    assert r.json()["message"] == expected
    split = {"dataframe_split": {"columns": [f"c{i}" for i in range(5000)], "data": [[0] * 5000]}}
    r = httpx.post(dep.url + "/invocations", json=split, timeout=60)
    assert r.status_code == 400 and r.json()["message"].startswith("The field 'dataframe_split' has 5000 columns;")
    assert httpx.get(dep.url + "/ping", timeout=10).status_code == 200


def test_a_restart_replays_the_labels_of_the_last_window_not_the_history(
    serving: Any, two_versions: str, name: str, cancer: Any
) -> None:
    from nbdeploy.serving.requestlog import FEEDBACK_FILE_BYTES

    dep = serving(f"{two_versions}/1", name=name)
    history = [f"h{i:07d}" for i in range(FEEDBACK_FILE_BYTES // 40)]  # labels of a long past: > one file
    dep.feedback(history, [0] * len(history))
    ids = [dep.predict(cancer["X_test"].head(1), with_id=True)[1] for _ in range(5)]
    assert dep.feedback(ids, [1] * 5)["accepted"] == 5
    rotated = sorted(dep.path.glob("feedback.jsonl.*"))
    assert rotated, "the feedback log did not rotate"
    dep.stop()
    for file in rotated:  # time passes: those files were last written two hours ago
        os.utime(file, (time.time() - 7200, time.time() - 7200))
    again = serving(f"{two_versions}/1", name=name)
    replayed = int(again.logs(5).split("logged requests and ")[1].split()[0])
    assert replayed < len(history) // 2  # the newest file only, not every label ever sent
    assert again.snapshot("1m")["windows"]["1m"]["labelled"] == 5


def _children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid`` and their command lines."""
    import subprocess

    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    found = {}
    for child in map(int, out):
        try:
            found[child] = open(f"/proc/{child}/cmdline").read().replace("\0", " ")
        except OSError:  # gone meanwhile
            continue
    return found


def test_the_parsing_process_is_replaced_when_killed_and_dies_with_its_server(dep: Any, cancer: Any) -> None:
    import signal

    import httpx

    parsers = lambda: [p for p, cmd in _children(dep.pid).items() if "spawn_main" in cmd]  # noqa: E731
    X = pd.concat([cancer["X_test"]] * 20)  # > 256 KiB of JSON: parsed in that process
    body = json.dumps({"dataframe_split": json.loads(X.to_json(orient="split", index=False))}).encode()
    assert len(body) > 256 << 10

    def predict() -> None:
        answer = httpx.post(dep.url + "/invocations", content=body, headers={"Content-Type": "application/json"},
                            timeout=60)  # fmt: skip
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == len(X)

    assert parsers() == []  # spawned at the first large body, not before
    predict()
    [worker] = eventually(parsers, lambda found: len(found) == 1)
    assert os.getpgid(worker) == os.getpgid(dep.pid)  # stopping the deployment's group stops it
    os.kill(worker, signal.SIGKILL)
    predict()  # parsed by a new worker
    [replacement] = eventually(parsers, lambda found: len(found) == 1)
    assert replacement != worker
    helpers = list(_children(dep.pid))
    os.kill(dep.pid, signal.SIGKILL)  # the server alone, not its group
    assert eventually(lambda: [p for p in helpers if _alive(p)], lambda alive: not alive, timeout=15) == []


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        return False
