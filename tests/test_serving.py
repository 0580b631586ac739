"""The serving process for real: lifecycle, batching, updates under load, crashes, security."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import nbdeploy
from nbdeploy import config, deployments
from nbdeploy.errors import DeploymentError, DeploymentNotFoundError, InvalidInputError
from nbdeploy.serving.requestlog import read_records

JSON = {"Content-Type": "application/json"}


def rows(X: Any, n: int) -> list[dict[str, Any]]:
    head = X.head(n)
    return [{"dataframe_split": {"columns": list(X.columns), "data": [r]}} for r in head.to_numpy().tolist()]


async def _fire(url: str, payloads: list[dict[str, Any]], concurrency: int) -> list[httpx.Response | Exception]:
    limits = httpx.Limits(max_connections=concurrency)
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(p: Any) -> httpx.Response | Exception:
            async with sem:
                try:
                    if isinstance(p, bytes):
                        return await client.post(url + "/invocations", content=p, headers=JSON)
                    return await client.post(url + "/invocations", json=p)
                except httpx.HTTPError as exc:
                    return exc

        return list(await asyncio.gather(*(one(p) for p in payloads)))


def fire(url: str, payloads: list[Any], concurrency: int = 16) -> list[httpx.Response | Exception]:
    return asyncio.run(_fire(url, payloads, concurrency))


def test_lifecycle_status_logs_stop(dep: deployments.Deployment, cancer: dict[str, Any]) -> None:
    X = cancer["X_test"]
    assert dep.state() == "running"
    assert (dep.predict(X) == cancer["model"].predict(X)).all()
    st = dep.status()
    assert (st.state, st.version, st.url) == ("running", 1, dep.url)
    assert repr(st).startswith(f"Deployment {dep.name}: running at http://127.0.0.1:")
    assert dep.name in [row[0] for row in nbdeploy.deployments().rows]
    assert nbdeploy.get(dep.name).url == dep.url  # adopted by name
    assert "nbdeploy serving" in dep.logs(5)
    info = httpx.get(dep.url + "/info").json()
    assert info["version"] == 1 and info["batching"]["max_batch"] == 1024
    assert [c["name"] for c in info["signature"]["inputs"]] == list(X.columns)
    pid = dep.pid
    dep.stop()
    assert dep.state() == "stopped"
    assert pid is not None and not deployments.processes.alive(pid, str(dep.path))
    with pytest.raises(DeploymentError, match="is stopped: serve it again"):
        dep.predict(X)


def test_concurrent_requests_are_batched_with_the_same_predictions(
    dep: deployments.Deployment, cancer: dict[str, Any]
) -> None:
    X = cancer["X_test"]
    payloads = rows(X, len(X)) * 2
    answers = fire(dep.url, payloads, concurrency=32)
    got = [r.json()["predictions"][0] for r in answers if isinstance(r, httpx.Response)]
    assert len(got) == len(payloads)
    assert got == cancer["model"].predict(X).tolist() * 2
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(dep.url + "/metrics").text)}
    batches = next(s.value for s in families["nbdeploy_batch_requests"].samples if s.name.endswith("_count"))
    requests = next(s.value for s in families["nbdeploy_requests"].samples if s.labels == {"status": "200"})
    assert requests == len(payloads)
    assert batches < requests  # concurrent requests shared predict calls


def test_a_failing_request_in_a_batch_does_not_fail_the_others(
    dep: deployments.Deployment, cancer: dict[str, Any]
) -> None:
    X = cancer["X_test"]
    good = rows(X, 40)
    columns = ", ".join(f'"{c}"' for c in X.columns)
    infinities = ", ".join(["Infinity"] * X.shape[1])
    inf_row = f'{{"dataframe_split": {{"columns": [{columns}], "data": [[{infinities}]]}}}}'
    answers = fire(dep.url, [*good[:20], inf_row.encode(), *good[20:]], concurrency=41)
    statuses = [r.status_code for r in answers if isinstance(r, httpx.Response)]
    assert statuses.count(200) == 40 and statuses[20] == 400
    assert answers[20].json()["message"].startswith("The model could not predict on this input: ValueError")


def test_update_and_rollback_under_load_drop_nothing(
    dep: deployments.Deployment, cancer: dict[str, Any], two_versions: str
) -> None:
    payloads = rows(cancer["X_test"], 100) * 8
    result: list[Any] = []
    load = threading.Thread(target=lambda: result.extend(fire(dep.url, payloads, concurrency=8)))
    load.start()
    time.sleep(0.3)
    dep.update(f"{two_versions}/2")
    load.join()
    assert [getattr(r, "status_code", r) for r in result] == [200] * len(payloads)
    assert dep.status().version == 2
    versions = {rec["version"] for rec in read_records(dep.path / "requests.jsonl")}
    assert versions == {1, 2}
    dep.rollback()
    assert dep.status().version == 1
    with pytest.raises(DeploymentError, match="has served only one version: nothing to roll back to"):
        dep.rollback()


def test_kill_9_under_load_loses_no_answered_request(dep: deployments.Deployment, cancer: dict[str, Any]) -> None:
    payloads = rows(cancer["X_test"], 100) * 40
    result: list[Any] = []
    log = dep.path / "requests.jsonl"

    def logged() -> int:  # lines, not parsed records: read every 50 ms beside the load
        return log.read_bytes().count(b"\n")

    before = logged()
    load = threading.Thread(target=lambda: result.extend(fire(dep.url, payloads, concurrency=16)))
    load.start()
    deadline = time.monotonic() + 120
    # mid-load: once 200 are logged (a record is written before its answer; 16 at most in flight),
    # not after a fixed time, which a busy machine can spend before the first answer
    while logged() < before + 200 and load.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dep.pid is not None
    os.killpg(dep.pid, signal.SIGKILL)
    load.join()
    answered = {r.headers["x-request-id"] for r in result if isinstance(r, httpx.Response)}
    failed = [r for r in result if not isinstance(r, httpx.Response)]
    assert answered and failed  # the kill happened mid-load
    logged = {rec["id"] for rec in read_records(dep.path / "requests.jsonl")}
    assert answered <= logged
    assert dep.state() == "dead"
    assert dep.status().state == "dead"
    assert any(row[:2] == [dep.name, "dead"] for row in deployments.deployments().rows)


def test_off_loopback_needs_a_token(two_versions: str, name: str, cancer: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match="sends tokens and rows in clear text to the network: add --tls"):
        nbdeploy.serve(f"{two_versions}/1", name=name, host="0.0.0.0")
    d = nbdeploy.serve(f"{two_versions}/1", name=name, host="0.0.0.0", insecure_http=True)
    try:
        assert d.status().transport.startswith("plain HTTP off loopback (--insecure-http)")
        token = d.token
        assert token and len(token) >= 24
        assert stat.S_IMODE((d.path / "token").stat().st_mode) == 0o600
        url = f"http://127.0.0.1:{d.port}/invocations"
        payload = rows(cancer["X_test"], 1)[0]
        missing = httpx.post(url, json=payload)
        assert missing.status_code == 401 and missing.json()["error_code"] == "UNAUTHENTICATED"
        wrong = httpx.post(url, json=payload, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        assert httpx.post(url, json=payload, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert (d.predict(cancer["X_test"].head(3)) == cancer["model"].predict(cancer["X_test"].head(3))).all()
        assert httpx.get(f"http://127.0.0.1:{d.port}/metrics").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{d.port}/ping").status_code == 200
    finally:
        d.stop()
    for file in ("server.log", "requests.jsonl"):
        assert token not in (d.path / file).read_text()


def test_admin_reload_needs_the_token_even_on_loopback(dep: deployments.Deployment) -> None:
    assert httpx.post(dep.url + "/admin/reload", json={"path": "/x", "ref": "x"}).status_code == 401
    auth = {"Authorization": f"Bearer {dep.token}"}
    outside = httpx.post(dep.url + "/admin/reload", json={"path": "/tmp", "ref": "x"}, headers=auth)
    assert outside.status_code == 400
    assert outside.json()["message"] == "The field 'path' must name a model inside the deployment's models folder."
    bad = httpx.post(dep.url + "/admin/reload", json={"path": "/x"}, headers=auth)
    assert bad.status_code == 400 and "'path' and 'ref'" in bad.json()["message"]


def test_start_failures_show_the_log(two_versions: str, name: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DeploymentError) as err:
            nbdeploy.serve(f"{two_versions}/1", name=name, port=port)
    message = str(err.value)
    assert message.startswith(f"The server for {name!r} exited with code 3 before it was ready;")
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in message
    assert deployments.get(name).state() == "stopped"


def test_serving_twice_under_one_name_is_refused(dep: deployments.Deployment, two_versions: str) -> None:
    with pytest.raises(DeploymentError) as err:
        nbdeploy.serve(f"{two_versions}/1", name=dep.name)
    assert str(err.value) == (
        f"Deployment {dep.name!r} is already running at {dep.url}: stop it first or choose another name."
    )
    with pytest.raises(DeploymentNotFoundError, match=r"^No deployment is named 'nope'; deployments: "):
        deployments.get("nope")


def test_stop_all_leaves_no_process(two_versions: str) -> None:
    started = [nbdeploy.serve(f"{two_versions}/1", name=f"all-{i}") for i in range(2)]
    pids = [d.pid for d in started]
    assert set(deployments.stop_all()) >= {"all-0", "all-1"}
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    servers = [line for line in ps.splitlines() if "nbdeploy.serving" in line and "all-" in line]
    assert servers == [] and all(not deployments.processes.alive(p, "nbdeploy.serving") for p in pids)


SHELL = """
import json
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "nbdeploy")
import io, pandas as pd
ip.user_ns["X"] = pd.read_json(io.StringIO({data!r}), orient="split")
listing = ip.run_line_magic("deploy", "list")
preds = ip.run_line_magic("deploy", "predict {name} --data X")
print(json.dumps({{"rows": listing.rows, "preds": preds.tolist()}}))
"""


def test_a_second_shell_adopts_the_deployment(dep: deployments.Deployment, cancer: dict[str, Any]) -> None:
    import json

    X = cancer["X_test"].head(10)
    code = SHELL.format(data=X.to_json(orient="split"), name=dep.name)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert [dep.name, "running", dep.url] in [row[:3] for row in doc["rows"]]
    assert doc["preds"] == cancer["model"].predict(X).tolist()


ATTACHED = """
import nbdeploy as d, sys
dep = d.serve({ref!r}, name={name!r}, attach=True)
print(dep.pid, flush=True)
sys.stdin.read()
"""


def test_attached_deployment_ends_with_its_kernel(two_versions: str, name: str) -> None:
    code = ATTACHED.format(ref=f"{two_versions}/1", name=name)
    kernel = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert kernel.stdout is not None
    pid = int(kernel.stdout.readline())
    dep = deployments.get(name)
    assert dep.state() == "running"
    kernel.kill()  # like a kernel that dies without cleaning up
    kernel.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and deployments.processes.alive(pid, str(dep.path)):
        time.sleep(0.1)
    assert not deployments.processes.alive(pid, str(dep.path))
    assert "parent process" in dep.logs(3)
    dep.stop()


def test_predictions_match_in_process_predict_exactly(dep: deployments.Deployment, cancer: dict[str, Any]) -> None:
    X = cancer["X_test"]
    np.testing.assert_array_equal(dep.predict(X.to_numpy()), cancer["model"].predict(X))


def test_a_model_that_fails_to_load_shows_the_log(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, cancer: dict[str, Any], name: str
) -> None:
    # A model whose class lives in a module only this process can import: the server cannot unpickle it.
    (tmp_path / "nbd_private_model.py").write_text(
        "from sklearn.dummy import DummyClassifier\n\nclass Private(DummyClassifier):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import nbd_private_model

    model = nbd_private_model.Private(strategy="most_frequent").fit(cancer["X_train"], cancer["y_train"])
    nbdeploy.register(model, name, cancer["X_train"])
    with pytest.raises(DeploymentError) as err:
        nbdeploy.serve(f"{name}/1", name=name)
    message = str(err.value)
    assert message.startswith(f"The server for {name!r} exited with code 1 before it was ready;")
    assert "ModuleNotFoundError: No module named 'nbd_private_model'" in message
    assert deployments.get(name).state() == "stopped"


def test_a_name_can_serve_another_model_later(two_versions: str, name: str, cancer: dict[str, Any]) -> None:
    from sklearn.dummy import DummyClassifier

    other = f"{name}-other"
    constant = DummyClassifier(strategy="constant", constant=1).fit(cancer["X_train"], cancer["y_train"])
    nbdeploy.register(constant, other, cancer["X_train"])
    first = nbdeploy.serve(f"{two_versions}/1", name=name)
    first.stop()
    second = nbdeploy.serve(f"{other}/1", name=name)  # same deployment name, same version number
    try:
        assert second.predict(cancer["X_test"]).tolist() == [1] * len(cancer["X_test"])
    finally:
        second.stop()


def test_a_stopped_deployment_starts_again_from_its_folder(dep: deployments.Deployment, cancer: dict[str, Any]) -> None:
    X = cancer["X_test"].head(3)
    dep.stop()
    assert deployments.stop(dep.name) == f"{dep.name} was not running."
    again = deployments.start(dep.name)
    try:
        assert again.state() == "running" and again.predict(X).tolist() == cancer["model"].predict(X).tolist()
        with pytest.raises(DeploymentError, match=r"is already running at http://127\.0\.0\.1:"):
            deployments.start(dep.name)
    finally:
        assert deployments.stop(dep.name) == f"Stopped {dep.name}."


def test_a_damaged_spec_never_hides_a_live_server(two_versions: str, name: str) -> None:
    d = nbdeploy.serve(f"{two_versions}/1", name=name)
    pid = d.pid
    (d.path / "spec.json").write_text("{not json")
    listed = {row[0]: row for row in deployments.deployments().rows}
    assert listed[name][1] == "running, spec.json damaged" and listed[name][5] == str(pid)
    with pytest.raises(DeploymentError, match=rf"^The spec of deployment {name!r} \(.*\) cannot be read"):
        d.status()
    assert name in deployments.stop_all()  # stopped by its pid, like any other
    assert pid is not None and not deployments.processes.alive(pid, str(d.path))


def test_start_refuses_unknown_names_and_forgets_the_kernel_it_was_attached_to(two_versions: str, name: str) -> None:
    with pytest.raises(DeploymentNotFoundError, match=r"^No deployment is named 'nope-start'"):
        deployments.start("nope-start")
    assert not (config.home() / "nope-start").exists()
    d = nbdeploy.serve(f"{two_versions}/1", name=name, attach=True)
    d.stop()
    again = deployments.start(name)
    try:
        assert again.spec.attach_to is None
        time.sleep(1.5)  # an attached server checks its parent every 0.5 s
        assert again.state() == "running"
    finally:
        again.stop()



def test_a_changed_model_copy_is_never_loaded(dep: deployments.Deployment) -> None:
    dep.stop()
    (Path(dep.current.model_path) / "model.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DeploymentError) as err:
        deployments.start(dep.name)
    message = str(err.value)
    assert message.startswith(f"The server for {dep.name!r} exited with code 1 before it was ready;")
    assert f"The model copy in {dep.current.model_path} changed since nbdeploy wrote it (model.pkl)" in message
    assert "UnpicklingError" not in message and dep.state() == "stopped"


def test_a_stale_copy_is_never_served(cancer: dict[str, Any], name: str, tmp_path: Path) -> None:
    """The same NAME/1 in a fresh tracking store is another model: copied again, not reused."""
    from sklearn.dummy import DummyClassifier

    X = cancer["X_test"].head(20)
    nbdeploy.register(cancer["model"], "stale", cancer["X_train"])
    first = nbdeploy.serve("stale/1", name=name)
    assert first.predict(X).tolist() == cancer["model"].predict(X).tolist()
    first.stop()
    config.configure(tracking_uri=f"sqlite:///{tmp_path}/fresh.db")
    try:
        constant = DummyClassifier(strategy="constant", constant=1).fit(cancer["X_train"], cancer["y_train"])
        nbdeploy.register(constant, "stale", cancer["X_train"])
        second = nbdeploy.serve("stale/1", name=name)
        try:
            assert second.predict(X).tolist() == [1] * len(X)
        finally:
            second.stop()
    finally:
        config.configure(tracking_uri=None)
    third = nbdeploy.serve("stale/1", name=name)  # back in the first store: its forest again
    try:
        assert third.predict(X).tolist() == cancer["model"].predict(X).tolist()
    finally:
        third.stop()
    # a copy changed on disk is copied again from the registry, never loaded
    (Path(third.current.model_path) / "model.pkl").write_bytes(b"tampered")
    fourth = nbdeploy.serve("stale/1", name=name)
    try:
        assert fourth.predict(X).tolist() == cancer["model"].predict(X).tolist()
    finally:
        fourth.stop()
