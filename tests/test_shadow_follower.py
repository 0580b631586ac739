"""The shadow that reads the request log (serving/shadow_follower.py), on real files written
by a real RequestLog and a real scikit-learn tree: what it predicts, what it writes, what it
counts, after a kill -9 and when a forget comes between its read and its write. The server
around it is tested in test_experiments.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.tree import DecisionTreeClassifier

from nbdeploy.experiment import ExperimentSpec
from nbdeploy.log_files import not_of
from nbdeploy.model_entry import ModelEntry
from nbdeploy.monitoring.replay import read_records
from nbdeploy.serving.requestlog import RequestLog
from nbdeploy.serving.shadow_follower import STATE_FILE, Follower

NAMES = ("x", "y")


class Tree:
    """A fitted tree behind the face the follower calls (``LoadedModel.call``); ``on_call``
    runs inside the predict, between the follower's read and its write."""

    def __init__(self, fail_above: float | None = None) -> None:
        rng = np.random.default_rng(0)
        X = pd.DataFrame(rng.normal(size=(200, 2)), columns=list(NAMES))
        self.tree = DecisionTreeClassifier(max_depth=1, random_state=0).fit(X, (X["x"] > 0.3).astype(int))
        self.fail_above, self.calls = fail_above, 0
        self.on_call: Any = None

    def call(self, X: pd.DataFrame, method: str = "predict") -> Any:
        self.calls += 1
        if self.on_call is not None:
            self.on_call()
        if self.fail_above is not None and (X["x"] > self.fail_above).any():
            raise ValueError("x out of range")
        return self.tree.predict(X[list(NAMES)])


def _spec(started: float) -> ExperimentSpec:
    return ExperimentSpec("shadow", ModelEntry("m/2", "/m", version=2), 100.0, started=started)


def _champion(i: int, x: float, answered: float, **extra: Any) -> dict[str, Any]:
    return {"ts": answered - 0.01, "id": f"r{i}", "variant": "champion", "rows": 1, "inputs": [[x, 0.0]],
            "predictions": [int(x > 0)], "status": 200, "latency_ms": 2.0, "answered": answered, **extra}  # fmt: skip


def _shadows(folder: Path) -> list[dict[str, Any]]:
    return [r for r in read_records(folder / "requests.jsonl") if r.get("shadow") is True]


def test_a_restart_predicts_the_mirrors_a_kill_left_unanswered_once(tmp_path: Path) -> None:
    started = time.time() - 60
    log = RequestLog(tmp_path / "requests.jsonl")
    log.append(_champion(99, 1.0, started - 5))  # before the experiment: neither counted nor shadowed
    xs = [-1.0, 0.1, 0.5, 2.0, -0.2, 0.4, 0.35, -3.0]
    for i, x in enumerate(xs):
        log.append(_champion(i, x, started + i))
    log.append({"ts": started, "id": "r3", "variant": "2", "shadow": True, "rows": 1, "predictions": [1],
                "status": 200, "latency_ms": 1.0, "answered": started + 3.5})  # fmt: skip
    log.append(_champion(50, 0.0, started + 9, method="predict_proba"))  # probabilities: no prediction to compare
    log.append(_champion(51, 0.0, started + 9, status=400))
    log.close()
    with (tmp_path / "requests.jsonl").open("ab") as fh:
        fh.write(b'{"ts": 1, "id": "torn')  # the server was killed mid-write

    follower = Follower(Tree(), _spec(started), NAMES, tmp_path, log_rows=100)
    follower.replay()
    shadows = _shadows(tmp_path)
    assert sorted(r["id"] for r in shadows) == sorted(f"r{i}" for i in range(len(xs)))  # r3's was logged already
    state = follower.book.state()
    assert state["counts"]["2"]["shadowed"] == len(xs) and state["counts"]["champion"]["requests"] == len(xs) + 2
    said = Tree().tree.predict(pd.DataFrame([[x, 0.0] for x in xs], columns=list(NAMES))).tolist()
    said[3] = 1  # r3's shadow record was the one already logged
    agree = sum(int(x > 0) == s for x, s in zip(xs, said, strict=True))
    assert state["agreement"]["rows"] == len(xs) and state["agreement"]["rate"] == agree / len(xs)
    assert {r["id"]: r["predictions"] for r in shadows if r["id"] != "r3"} == {
        f"r{i}": [s] for i, s in enumerate(said) if i != 3}

    again = Follower(Tree(), _spec(started), NAMES, tmp_path, log_rows=100)  # a second restart
    again.replay()
    assert len(_shadows(tmp_path)) == len(shadows) and again.book.state()["counts"] == state["counts"]


def test_live_records_are_predicted_once_and_labels_score_both_variants(tmp_path: Path) -> None:
    started = time.time() - 1
    log = RequestLog(tmp_path / "requests.jsonl")
    feedback = RequestLog(tmp_path / "feedback.jsonl")
    follower = Follower(Tree(), _spec(started), NAMES, tmp_path, log_rows=100)
    follower.replay()
    for i in range(30):
        log.append(_champion(i, i / 10 - 1, time.time()))
    feedback.append({"ts": time.time(), "id": "r29", "labels": [1]})  # written before the follower looks
    follower.look()
    follower.look()  # nothing new: nothing twice
    shadows = _shadows(tmp_path)
    assert len(shadows) == len({r["id"] for r in shadows}) == 30
    assert all(r["status"] == 200 and r["variant"] == "2" and r["version"] == 2 for r in shadows)
    arms = follower.book.arms
    assert arms.stats("champion", "accuracy").n == arms.stats("2", "accuracy").n == 1  # both scored on r29
    follower.write_state()
    doc = json.loads((tmp_path / STATE_FILE).read_text())
    assert doc["state"]["counts"]["2"]["shadowed"] == 30 and doc["verdict"] is None
    log.close()
    feedback.close()


def test_a_request_the_shadow_fails_on_is_logged_as_its_error_and_the_rest_answered(tmp_path: Path) -> None:
    started = time.time() - 1
    log = RequestLog(tmp_path / "requests.jsonl")
    follower = Follower(Tree(fail_above=1.5), _spec(started), NAMES, tmp_path, log_rows=100)
    follower.replay()
    for i, x in enumerate([0.0, 2.0, -1.0]):
        log.append(_champion(i, x, time.time()))
    follower.look()
    by_id = {r["id"]: r for r in _shadows(tmp_path)}
    assert by_id["r1"]["status"] == 400 and "x out of range" in by_id["r1"]["error"]
    assert by_id["r0"]["status"] == by_id["r2"]["status"] == 200
    assert follower.book.state()["counts"]["2"]["shadow_errors"] == 1
    log.close()


def test_a_request_forgotten_between_the_read_and_the_write_gets_no_shadow_record(tmp_path: Path) -> None:
    started = time.time() - 1
    log = RequestLog(tmp_path / "requests.jsonl")
    model = Tree()
    follower = Follower(model, _spec(started), NAMES, tmp_path, log_rows=100)
    follower.replay()
    for i in range(5):
        log.append(_champion(i, float(i), time.time()))
    model.on_call = lambda: log.remove(not_of({"r2"}))  # a forget, while the shadow predicts
    follower.look()
    assert sorted(r["id"] for r in _shadows(tmp_path)) == ["r0", "r1", "r3", "r4"]
    model.on_call = None
    log.append(_champion(5, 0.0, time.time()))  # the swapped-in file is followed from there
    follower.look()
    assert sorted(r["id"] for r in _shadows(tmp_path)) == ["r0", "r1", "r3", "r4", "r5"]
    log.close()


def test_a_shadow_record_appended_while_a_forget_filters_goes_with_the_swap(tmp_path: Path) -> None:
    """The shadow writes between a forget's filtering (done without the lock) and its swap:
    the record it wrote of a request being forgotten is taken out with the rest."""
    from nbdeploy.log_files import filter_file, swap_in

    path = tmp_path / "requests.jsonl"
    log = RequestLog(path)
    for i in range(3):
        log.append(_champion(i, 0.5, time.time()))
    filtered = filter_file(path, not_of({"r1"}))
    assert filtered is not None
    log.append_many([{"id": "r1", "variant": "2", "shadow": True, "predictions": [1], "status": 200},
                     {"id": "r2", "variant": "2", "shadow": True, "predictions": [1], "status": 200}])  # fmt: skip
    assert swap_in(filtered)
    left = [(r["id"], r.get("shadow", False)) for r in read_records(path)]
    assert left == [("r0", False), ("r2", False), ("r2", True)] and filtered.removed == 2
    log.close()


def test_a_look_is_paced_predicts_once_and_what_arrives_meanwhile_waits(tmp_path: Path, monkeypatch: Any) -> None:
    """A light look works in slices (the pacer pauses) and calls the model once for all its
    reads; requests logged while it reads are the next look's; a look too heavy to spread
    over the time to the next is flat out."""
    import nbdeploy.serving.shadow_follower as follower_module

    monkeypatch.setattr(follower_module, "PACED_READ_BYTES", 2048)  # many reads in one look
    monkeypatch.setattr(follower_module, "LEARN_BYTES", 1024)
    log = RequestLog(tmp_path / "requests.jsonl")
    model = Tree()
    follower = Follower(model, _spec(time.time() - 1), NAMES, tmp_path, log_rows=100)
    follower.replay()
    for i in range(150):
        log.append(_champion(i, i / 100 - 1, time.time()))
    follower.cost_per_byte = follower_module.COST_PER_BYTE / 4  # whatever is pending is light
    read = follower.requests.read

    def read_and_log(limit: int) -> list[bytes]:
        if not any(r.get("id") == "r1000" for r in read_records(tmp_path / "requests.jsonl")):
            log.append(_champion(1000, 0.0, time.time()))  # logged while the shadow reads
        return read(limit)

    monkeypatch.setattr(follower.requests, "read", read_and_log)
    follower.look()
    assert follower.pace.paced and follower.pace.pauses > 0 and model.calls == 1
    assert sorted(r["id"] for r in _shadows(tmp_path)) == sorted(f"r{i}" for i in range(150))  # not r1000 yet
    assert follower.cost_per_byte != follower_module.COST_PER_BYTE / 4  # measured
    pauses = follower.pace.pauses
    for i in range(150, 300):
        log.append(_champion(i, 0.0, time.time()))
    follower.cost_per_byte = 1.0  # a second a byte: no pauses could spread it
    follower.look()
    assert not follower.pace.paced and follower.pace.pauses == pauses and model.calls == 2
    assert sorted(r["id"] for r in _shadows(tmp_path)) == sorted([f"r{i}" for i in range(300)] + ["r1000"])
    log.close()


def test_a_label_read_before_its_request_was_counted_scores_it_at_the_next_look(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "requests.jsonl")
    feedback = RequestLog(tmp_path / "feedback.jsonl")
    follower = Follower(Tree(), _spec(time.time() - 1), NAMES, tmp_path, log_rows=100)
    follower.replay()
    feedback.append({"ts": time.time(), "id": "r7", "labels": [1]})  # its request not read yet
    follower.look()
    log.append(_champion(7, 0.5, time.time()))
    follower.look()
    arms = follower.book.arms
    assert arms.stats("champion", "accuracy").n == arms.stats("2", "accuracy").n == 1
    feedback.append({"ts": time.time(), "id": "unknown", "labels": [1]})  # tried twice, then dropped
    follower.look()
    follower.look()
    assert follower._carried == []
    log.close()
    feedback.close()


def test_the_shadows_records_count_towards_the_logs_size_and_a_line_it_tore_is_ended(tmp_path: Path) -> None:
    """The server's log sees the file's size before each record: the shadow's lines count towards
    --log-max-bytes (the live file passes it by no more than what the shadow appended since the
    server's last record), and a line the shadow's process left half-written is ended first."""
    started = time.time() - 1
    max_bytes = 8_000
    log = RequestLog(tmp_path / "requests.jsonl", max_bytes=max_bytes, backups=50)
    follower = Follower(Tree(), _spec(started), NAMES, tmp_path, log_rows=100)
    follower.replay()
    largest = 0
    for i in range(400):
        log.append(_champion(i, i / 200 - 1, time.time()))
        if i % 20 == 19:
            before = (tmp_path / "requests.jsonl").stat().st_size
            follower.look(paced=False)
            largest = max(largest, before)  # the size the server's next record meets
    assert log.rotations > 0 and largest <= max_bytes
    with (tmp_path / "requests.jsonl").open("ab") as torn:  # the shadow's process killed mid-write
        torn.write(b'{"id": "r399", "shadow": true, "varia')
    log.append(_champion(400, 0.5, time.time()))
    log.close()
    records = read_records(tmp_path / "requests.jsonl")  # (the rotated files too)
    assert {f"r{i}" for i in range(401)} <= {r["id"] for r in records if r.get("shadow") is not True}
    assert len(_shadows(tmp_path)) == 400
