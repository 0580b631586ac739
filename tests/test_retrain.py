"""Retraining jobs end to end: a real server, a real job process, papermill running real
notebooks in real kernels, MLflow recording every run; and the job's triggers, state files
and options when they are hostile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest

import nbdeploy
from tests.helpers import eventually, usage_error

TRAIN = Path(__file__).resolve().parent.parent / "notebooks" / "train.ipynb"
FAST = {"n_estimators": [10], "max_depth": [None]}  # one fit in the notebook's search


@pytest.fixture
def jobs() -> Iterator[list[Any]]:
    """Jobs started by a test; each is stopped when it ends (the deployment's stop does too)."""
    started: list[Any] = []
    yield started
    for job in started:
        job.stop()


def _notebook(folder: Path, body: str) -> Path:
    """A small notebook: a parameters cell (pause), then ``body``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("pause = 0\nmodel_name = ''\ntraffic = ''")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.ipynb"
    nbformat.write(nb, path)
    return path


def _champion(model: Any, name: str, cancer: dict[str, Any]) -> None:
    """``model`` registered as ``name``/1, validated with a gate, and @champion."""
    nbdeploy.register(model, name, cancer["X_train"], cancer["y_train"])
    nbdeploy.validate(f"{name}/1", cancer["X_test"], cancer["y_test"], gates=["accuracy>=0.5"], explain=False)
    nbdeploy.promote(f"{name}/1")


def _send_labelled(dep: Any, X: Any, y: Any, rows_per_request: int = 1) -> None:
    """Every row of ``X`` through the server, then its label through /feedback."""
    ids, labels = [], []
    for start in range(0, len(X), rows_per_request):
        _, rid = dep.predict(X.iloc[start : start + rows_per_request], with_id=True)
        ids.append(rid)
        labels.append(y.iloc[start : start + rows_per_request].tolist())
    dep.feedback(ids, labels)


def _rule(dep: Any, text: str) -> dict[str, Any]:
    return next(r for r in dep.snapshot(dep.spec.alert_window)["alerts"]["rules"] if r["rule"] == text)


@pytest.mark.alone  # the streak of 2 is seen within one 3 s evaluation gap: no other test's load
def test_drift_retrains_once_after_the_third_breach_then_the_canary_promotes(
    serving: Callable[..., Any], cancer: dict[str, Any], name: str, jobs: list[Any]
) -> None:
    """The issue's end to end: drift in live traffic fires ``psi>0.2`` after 3 breaches (not
    2); the job runs train.ipynb on the labelled traffic, validates the candidate against
    @champion, canaries it, and the canary promotes it; every step is in the record and in MLflow."""
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.datasets import load_breast_cancer
    from sklearn.tree import DecisionTreeClassifier

    stump = DecisionTreeClassifier(max_depth=1, random_state=0).fit(cancer["X_train"], cancer["y_train"])
    _champion(stump, name, cancer)
    # evaluations 3 s apart: the 19 labelled requests are sent well within one, so the test sees the
    # streak at 2 before the third breach (at 1 s apart, a slow machine's sending outlasted three)
    dep = serving(f"{name}@champion", name=name, windows="30s", alert_interval_s=3.0)
    job = nbdeploy.retrain(name, notebook=str(TRAIN), on="psi>0.2", alert_k=3, gates=["accuracy>=baseline"],
                           canary=50, promote_when=["accuracy>=baseline"], min_labels=60, params=FAST, since="1h")
    jobs.append(job)
    assert any(r["rule"] == "psi>0.2" and r["k"] == 3 for r in dep.spec.alerts)  # --on added the alert rule

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    drifted = X * 1.5  # every feature moved: PSI far above 0.2, and the stump's one split misplaced
    _send_labelled(dep, drifted, y, rows_per_request=30)
    second = eventually(lambda: _rule(dep, "psi>0.2"), lambda r: r["streak"] >= 2 or r["firing"], timeout=30)
    assert second["streak"] == 2 and not second["firing"], second  # two breaches: not fired yet
    assert job.runs() == [] and job.files.read_state().get("running") is None  # ... and no retrain
    assert eventually(lambda: _rule(dep, "psi>0.2")["firing"], timeout=10)
    started = eventually(job.runs, bool, timeout=10)
    assert started[0]["trigger"]["kind"] == "alert" and "psi>0.2 fired" in started[0]["trigger"]["reason"]

    eventually(lambda: dep.spec.experiment, lambda e: e is not None, timeout=120)  # validated, then canaried
    order = np.resize(np.arange(len(X)), 1200)
    _send_labelled(dep, drifted.iloc[order], y.iloc[order])
    runs = eventually(job.runs, lambda r: bool(r) and "outcome" in r[-1], timeout=120)
    assert len(runs) == 1, runs  # the rule stayed firing: one fire, one retrain
    run = runs[0]
    assert run["outcome"] == "promoted", run
    candidate = f"{name}/2"
    assert run["candidate"] == candidate and run["verdict"] == "passed" and run["gates"] == ["accuracy>=baseline"]
    steps = "\n".join(run["steps"])
    for said in ("labelled rows", "the notebook ran", f"registered {candidate}", "the notebook's holdout",
                 f"canary 50% of {candidate} started"):
        assert said in steps, steps
    assert nbdeploy.resolve(f"{name}@champion").version == 2 and dep.status().version == 2

    client = MlflowClient()
    recorded = client.get_run(run["run_id"])
    assert recorded.data.tags["nbdeploy.retrain.outcome"] == "promoted"
    assert recorded.data.tags["nbdeploy.retrain.candidate"] == candidate
    assert [a.path for a in client.list_artifacts(run["run_id"], "retrain")] == ["retrain/executed.ipynb"]
    assert nbdeploy.resolve(candidate).tags["nbdeploy.retrain.run"] == run["run_id"]  # found by its run
    executed = nbformat.read(run["notebook"], as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert f"registered {candidate}" in printed and "psi>0.2 fired" in printed
    folder = Path(run["notebook"]).parent
    older, newest = pd.read_parquet(folder / "traffic.parquet"), pd.read_parquet(folder / "recent.parquet")
    assert len(newest) == round(0.2 * len(X)) and older["time"].max() <= newest["time"].min()  # split by time
    assert pd.concat([older, newest])["label"].tolist() == y.tolist()  # the drifted rows, labelled, all of them


def test_a_candidate_that_fails_a_gate_changes_nothing_and_triggers_queue_once(
    serving: Callable[..., Any], cancer: dict[str, Any], name: str, jobs: list[Any]
) -> None:
    """Three triggers at once make two runs (one runs, the others are queued as one); a gate
    no candidate can pass rejects both, and @champion and the served version never move."""
    _champion(cancer["model"], name, cancer)
    dep = serving(f"{name}@champion", name=name)
    _send_labelled(dep, cancer["X_test"], cancer["y_test"], rows_per_request=5)
    job = nbdeploy.retrain(name, notebook=str(TRAIN), gates=["accuracy>=baseline+0.5"], promote=True, params=FAST)
    jobs.append(job)
    job.trigger("by hand 0")
    eventually(lambda: job.files.read_state().get("running"), bool)
    job.trigger("by hand 1")
    eventually(lambda: job.files.read_state().get("queued"), bool)
    job.trigger("by hand 2")
    queued = eventually(lambda: job.files.read_state().get("queued", {}), lambda q: "by hand 2" in q.get("reason", ""))
    runs = eventually(job.runs, lambda r: len(r) == 2 and all("outcome" in x for x in r), timeout=120)
    assert [r["outcome"] for r in runs] == ["rejected", "rejected"], job.logs()
    assert runs[0]["trigger"]["reason"] == "by hand 0" and queued["joined"] == 2
    assert runs[1]["trigger"]["reason"] == "by hand 1; by hand 2"
    for run in runs:
        assert "failed 1 of 1 gates" in run["why"] and "unchanged" in run["why"]
    assert nbdeploy.resolve(f"{name}@champion").version == 1 and dep.status().version == 1
    assert dep.spec.experiment is None and len(dep.spec.history) == 1
    time.sleep(1.5)
    assert len(job.runs()) == 2 and job.state() == "running"  # nothing left queued
    listing = repr(nbdeploy.deployments())
    assert "retraining" in listing and "running" in listing
    assert "Retraining job of" in repr(job) and "rejected" in repr(job) and "Last runs" in job._repr_html_()
    panel = dep.monitor(interval=60)
    try:
        assert panel.job["state"] == "running" and [r["outcome"] for r in panel.job["runs"]] == ["rejected"] * 2
        assert "run 2: rejected" in repr(panel)
    finally:
        panel.close()
    shown = subprocess.run(["nbdeploy", "retrain", name], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and f"Retraining job of {name}: running, by hand only" in shown.stdout, shown.stderr
    logs = subprocess.run(["nbdeploy", "logs", name, "--job", "-n", "200"], capture_output=True, text=True, timeout=120)
    assert "run 2: rejected" in logs.stdout, logs.stderr


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_a_notebook_that_raises_fires_the_webhook_and_the_job_stays_up(
    serving: Callable[..., Any], cancer: dict[str, Any], name: str, jobs: list[Any], tmp_path: Path
) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _champion(cancer["model"], name, cancer)
    dep = serving(f"{name}@champion", name=name)
    # papermill formats paths with the parameters: braces in a folder's name must stay braces
    notebook = _notebook(tmp_path / "my {deployment} notebooks", "raise ValueError('the training data is not there')")
    try:
        job = nbdeploy.retrain(name, notebook=str(notebook), gates=["accuracy>=baseline"], promote=True,
                               webhook=f"http://127.0.0.1:{server.server_address[1]}/hook", now=True)
        jobs.append(job)
        told = eventually(lambda: list(_Hook.received), bool, timeout=60)
    finally:
        server.shutdown()
    assert told[0]["outcome"] == "failed" and told[0]["job"] == f"retrain {name}"
    assert "ValueError: the training data is not there" in told[0]["why"]
    run = job.runs()[-1]
    assert run["outcome"] == "failed" and "cell" in run["why"]
    assert job.state() == "running"  # the job outlives its run
    executed = nbformat.read(run["notebook"], as_version=4)
    assert any(o.get("ename") == "ValueError" for c in executed.cells for o in c.get("outputs", []))
    assert nbdeploy.resolve(f"{name}@champion").version == 1 and dep.status().version == 1
    assert "failed" in job.logs()


def _kernels_of(pid: int) -> list[int]:
    """Kernels whose parent is ``pid`` (the job's notebook runs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == pid and b"ipykernel" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_of_the_job_is_reported_dead_and_its_successor_runs_no_trigger_twice(
    serving: Callable[..., Any], cancer: dict[str, Any], name: str, jobs: list[Any], tmp_path: Path
) -> None:
    _champion(cancer["model"], name, cancer)
    serving(f"{name}@champion", name=name)
    notebook = _notebook(tmp_path, "import time\ntime.sleep(pause)")
    job = nbdeploy.retrain(name, notebook=str(notebook), gates=["accuracy>=baseline"], every="3s",
                           params={"pause": 60})  # fmt: skip
    jobs.append(job)
    pid = job.files.pid
    kernels = eventually(lambda: _kernels_of(pid), bool, timeout=30)  # run 1's notebook is running
    first = job.runs()[0]
    time.sleep(3.5)  # a scheduled time passes during run 1: queued
    os.kill(pid, signal.SIGKILL)
    assert eventually(job.state, lambda s: s == "dead") == "dead"
    assert "dead" in repr(nbdeploy.get(name).status())
    assert not eventually(lambda: [k for k in kernels if _alive(k)], lambda k: not k, timeout=20)  # no orphan kernel

    job.resume()
    runs = eventually(job.runs, lambda r: len(r) >= 2, timeout=30)
    assert runs[0]["run"] == 1 and runs[0]["outcome"] == "interrupted" and runs[0]["trigger"] == first["trigger"]
    second = runs[1]["trigger"]
    consumed = [set(r["trigger"]["id"].split("+")) for r in runs]
    assert not consumed[0] & consumed[1], runs  # no trigger ran twice
    assert all(i.startswith("every:") for ids in consumed for i in ids)
    assert min(float(i.split(":")[1]) for i in consumed[1]) > float(first["trigger"]["id"].split(":")[1])
    assert second["kind"] == "every"
    new_pid = job.files.pid
    assert new_pid != pid and job.state() == "running"
    kernels = eventually(lambda: _kernels_of(new_pid), bool, timeout=30)
    assert job.stop() and job.state() == "stopped"
    assert eventually(job.runs, lambda r: r[1].get("outcome") == "stopped")[1]["outcome"] == "stopped"
    assert not eventually(lambda: [k for k in kernels if _alive(k)], lambda k: not k, timeout=20)


# hostile inputs and files ---------------------------------------------------------------------


def test_retrain_options_that_cannot_work_are_one_sentence(
    ip: Any, serving: Callable[..., Any], cancer: dict[str, Any], name: str, tmp_path: Path
) -> None:
    nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"])
    nbdeploy.promote(f"{name}/1", force=True)  # a champion never validated: no gates to reuse
    serving(f"{name}@champion", name=name)
    nb = str(TRAIN)
    (tmp_path / "bad.ipynb").write_text("{not json")
    cases = {
        f"retrain nope --notebook {nb}": "No deployment is named 'nope'",
        f"retrain {name} --notebook {tmp_path}/bad.ipynb": "does not read as a notebook",
        f"retrain {name} --notebook {tmp_path}/missing.ipynb": "is not an .ipynb file",
        f"retrain {name} --notebook {nb} --every 1d --cron '0 3 * * *'": "Give one trigger",
        f"retrain {name} --notebook {nb} --cron 'every day'": "is not a cron expression",
        f"retrain {name} --notebook {nb} --every soon": "Invalid --every 'soon'",
        f"retrain {name} --notebook {nb}": "had no gates to reuse",
        f"retrain {name} --notebook {nb} --gate 'acc>=1'": "acc",
        f"retrain {name} --notebook {nb} --gate accuracy>=0.5 --param traffic=x": "the job sets traffic itself",
        f"retrain {name} --notebook {nb} --gate accuracy>=0.5 --param 2x=1": "a Python identifier",
        f"retrain {name} --notebook {nb} --gate accuracy>=0.5 --param novalue": "write KEY=VALUE",
        f"retrain {name} --notebook {nb} --gate accuracy>=0.5 --canary 10 --promote": "not canary and promote",
        f"retrain {name} --notebook {nb} --gate accuracy>=0.5 --canary 150": "Invalid percent 150",
        f"retrain {name} --notebook {nb} --gate accuracy>=0.5 --promote-when accuracy>=baseline": "a canary's",
        f"retrain {name} --notebook {nb} --gate accuracy>=0.5 --canary 10 --promote-when 'acc>>1'": "Malformed rule",
        f"retrain {name} --notebook {nb} --gate accuracy>=0.5 --on 'psi>>1'": "Malformed alert rule",
        f"retrain {name} --notebook {nb} --gate accuracy>=0.5 --webhook ftp://x": "http:// or https://",
        f"retrain {name} --every 1d": "give --notebook too",
        f"retrain {name} --since 1d --min-labels 5": "--min-labels, --since change the job",
        f"retrain {name} --notebook {nb} --gate accuracy>=0.5 --param class=1": "a Python identifier",
        f"retrain {name} --notebook {nb} --gate accuracy>=0.5 --shadow 0": "Invalid percent 0",
        f"retrain {name} --notebook {nb} --gate accuracy>=0.5 --cron '0 0 30 2 *'": "names no time that ever comes",
        f"retrain {name}": f"Deployment '{name}' has no retraining job",
        f"stop {name} --job": f"Deployment '{name}' has no retraining job",
        "stop --all --job": "give its NAME",
    }
    for line, expected in cases.items():
        assert expected in usage_error(ip, line), line
    assert not (nbdeploy.get(name).path / "retrain" / "job.json").exists()  # nothing was started


def test_triggers_read_each_event_once_whatever_the_files_hold(tmp_path: Path) -> None:
    from nbdeploy.retraining.spec import RetrainSpec
    from nbdeploy.retraining.triggers import READ_LIMIT, Schedule, Triggers

    alerts, manual = tmp_path / "alerts.jsonl", tmp_path / "manual.jsonl"
    spec = RetrainSpec("d", "/nb.ipynb", on="psi>0.2", created=1000.0)
    state: dict[str, Any] = {}
    alerts.write_text(json.dumps({"ts": 900.0, "rule": "psi>0.2", "state": "fired", "value": 0.5}) + "\n")
    triggers = Triggers(spec, alerts, manual, state)
    triggers.start(now=1000.0)
    assert triggers.poll(1000.5) is None  # fired before the job existed: not its trigger
    with alerts.open("a") as fh:
        fh.write("garbage\n" + "[1]\n" + json.dumps({"ts": "x"}) + "\n" + "{" * 100_000 + "\n")
        fh.write(json.dumps({"ts": 1002.0, "rule": "p95_ms>5", "state": "fired"}) + "\n")
        fh.write(json.dumps({"ts": 1003.0, "rule": "psi>0.2", "state": "resolved"}) + "\n")
        fh.write(json.dumps({"ts": 1004.0, "rule": "psi>0.2", "state": "fired", "value": 0.3}) + "\n")
        fh.write('{"ts": 1005.0, "rule": "psi>0.2", "sta')  # a line being written
    fired = triggers.poll(1001.0)
    assert fired is not None and fired.kind == "alert" and fired.reason == "psi>0.2 fired (value 0.3)"
    assert triggers.poll(1001.5) is None
    with alerts.open("a") as fh:
        fh.write('te": "fired"}\n')  # the line is whole now: read once
    assert triggers.poll(1002.0).id == "alert:1005.000000"
    alerts.unlink()  # replaced (a deployment served again): old events are not read twice
    lines = [json.dumps({"ts": t, "rule": "psi>0.2", "state": "fired"}) + "\n" for t in (1004.0, 1006.0)]
    alerts.write_text("".join(lines))
    assert triggers.poll(1003.0).id == "alert:1006.000000"
    alerts.write_text("x" * (READ_LIMIT + 10) + "\n" + json.dumps({"ts": 1007.0, "rule": "psi>0.2", "state": "fired"}))
    assert triggers.poll(1004.0) is None and triggers.poll(1004.5) is None  # a line over the limit is skipped
    with alerts.open("a") as fh:
        fh.write("\n")
    assert triggers.poll(1005.0).id == "alert:1007.000000"

    every = Triggers(RetrainSpec("d", "/nb.ipynb", every_s=60.0, created=0.0), alerts, manual, {})
    every.start(now=30.0)
    assert every.state["next_due"] == 60.0 and every.poll(59.0) is None
    late = every.poll(500.0)  # 8 scheduled times passed (60 ... 480): one run for them
    assert late.id == "every:60" and "8 scheduled times passed" in late.reason and every.state["next_due"] == 540.0
    assert Schedule(cron="0 3 * * *").next_after(0.0) == 3 * 3600.0
    manual.write_text(json.dumps({"id": "a", "ts": 540.5, "reason": "fresh labels"}) + "\n")
    both = every.poll(541.0)
    assert both.kind == "every+manual" and both.id == "every:540+manual:a" and "fresh labels" in both.reason


def test_damaged_job_files_are_said_not_raised(
    serving: Callable[..., Any], cancer: dict[str, Any], name: str, jobs: list[Any]
) -> None:
    from nbdeploy.errors import DeploymentError

    _champion(cancer["model"], name, cancer)
    dep = serving(f"{name}@champion", name=name)
    job = nbdeploy.retrain(name, notebook=str(TRAIN), gates=["accuracy>=baseline"])
    jobs.append(job)
    job.stop()
    job.files.runs_file.write_bytes(b'{"run": 1, "event": "started"}\n\xff\xfe torn\n{"run": "x"}\n[]\n')
    damaged = {"runs": "x", "alerts": [1], "manual": {"offset": "a"}, "queued": 5, "next_due": "soon"}
    job.files.state_file.write_text(json.dumps(damaged))  # JSON, but not the job's: each entry is dropped
    assert [r["run"] for r in job.runs()] == [1]
    job.resume()  # a damaged state is started afresh; run numbers go on after the recorded ones
    assert job.state() == "running"
    job.trigger("after the damage")
    runs = eventually(job.runs, lambda r: len(r) == 2, timeout=30)
    assert runs[1]["run"] == 2
    job.stop()
    job.files.state_file.write_text(json.dumps({"running": "x", "queued": [1], "next_due": 1e300}))
    assert "stopped" in repr(job) and name in repr(nbdeploy.deployments())  # a hand-made state is shown, not raised
    job.files.spec.write_text("[1, 2")
    assert name in repr(nbdeploy.deployments()) and "stopped" in repr(nbdeploy.get(name).status())
    with pytest.raises(DeploymentError, match="cannot be read"):
        job.resume()
    assert dep.state() == "running"
    assert "Stopped" in nbdeploy.deployments.stop(name)


def test_a_promotion_the_deployment_refuses_moves_no_alias(
    serving: Callable[..., Any], cancer: dict[str, Any], name: str, jobs: list[Any]
) -> None:
    """--promote while a canary runs by hand: the update is refused, so @champion stays where it
    was (the alias moves only once the deployment serves the candidate)."""
    from sklearn.tree import DecisionTreeClassifier

    stump = DecisionTreeClassifier(max_depth=1, random_state=0).fit(cancer["X_train"], cancer["y_train"])
    _champion(stump, name, cancer)
    nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"])  # 2: a challenger by hand
    dep = serving(f"{name}@champion", name=name)
    _send_labelled(dep, cancer["X_test"], cancer["y_test"], rows_per_request=5)
    dep.canary(f"{name}/2", percent=10)
    job = nbdeploy.retrain(name, notebook=str(TRAIN), gates=["accuracy>=0.5"], promote=True, params=FAST,
                           now=True)  # fmt: skip
    jobs.append(job)
    run = eventually(job.runs, lambda r: bool(r) and "outcome" in r[-1], timeout=120)[-1]
    assert run["outcome"] == "failed" and "conclude it" in run["why"], run
    assert run["verdict"] == "passed" and run["candidate"] == f"{name}/3"
    assert nbdeploy.resolve(f"{name}@champion").version == 1 and dep.status().version == 1


def test_a_relative_tracking_store_is_made_absolute_for_the_job(tmp_path: Path, monkeypatch: Any) -> None:
    from nbdeploy.retraining.create import absolute_uri

    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert absolute_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert absolute_uri("mlruns") == str(tmp_path / "mlruns")
    assert absolute_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
