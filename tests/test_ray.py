"""Deployments on a real Ray cluster: a head and a second node, both on loopback.

The cluster is started here with ``ray start`` (two "machines" on one box, one CPU each so
that the two replicas land on different nodes) and stopped at the end. The deployment goes
through the ``%deploy`` magic; the rest through the Python API, as a user's notebook would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import nbdeploy
from nbdeploy.deployments.ray_client import ray_cli
from tests.helpers import JSON, battery, eventually, free_port, rows_with_secrets, stop_group

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,  # find_spec("ray.serve") would import ray in this "kernel"
    reason="Ray Serve is not installed (pip install -e '.[ray]'; the dev extra has it)",
)

DRIVER = """
import json, sys, ray
from ray import serve
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
alive = [n for n in ray.nodes() if n["Alive"]]
apps = list(serve.status().applications) if {probe_serve} else []
print(json.dumps({{"nodes": len(alive), "apps": apps}}))
"""


JOIN = "import sys, ray; ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False); print('joined')"


# a driver's or worker's wait to connect to its node's raylet (Ray: 10 s), as nbdeploy's own
# Ray processes have it (ray_auth)
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_raylet_start_wait_time_s": "120"}


def _driver(address: str, probe_serve: bool = True) -> dict[str, Any]:
    """Ask the cluster from a separate driver process (the test process never joins it)."""
    out = subprocess.run(
        [sys.executable, "-c", DRIVER.format(probe_serve=probe_serve), address],
        capture_output=True, text=True, timeout=180, env={**os.environ, **RAY_ENV},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


NAMED = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
print(json.dumps([a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]))
"""


def _shadow_actors(address: str, name: str) -> list[str]:
    """The live actors in which the replicas of deployment ``name`` predict its shadow (asked
    from a separate driver, as :func:`_driver`)."""
    out = subprocess.run([sys.executable, "-c", NAMED, address], capture_output=True, text=True, timeout=180,
                         env={**os.environ, **RAY_ENV})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return [n for n in json.loads(out.stdout.strip().splitlines()[-1]) if n.startswith(f"nbdeploy-shadow-{name}-")]


PID = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
kind, value = ray.get(ray.get_actor(sys.argv[2], namespace="nbdeploy").ready.remote(), timeout=120)
print(json.dumps(value if isinstance(value, int) else value[1]))  # a follower's pid, or a model's (methods, pid)
"""


def _actor_pid(address: str, actor: str) -> int:
    out = subprocess.run([sys.executable, "-c", PID, address, actor], capture_output=True, text=True, timeout=180,
                         env={**os.environ, **RAY_ENV})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


def _node_up(proc: subprocess.Popen[bytes], temp: Path, deadline: float) -> bool:
    """Whether a ``ray start --block`` came up: Ray writes ray_current_cluster into the node's
    temp folder once its raylet is registered. A driver started before then has only 60 s to
    find its node's raylet, which CI's loaded machine once exceeded."""
    while time.monotonic() < deadline:
        if (temp / "ray_current_cluster").exists():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(1)
    return False


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    temp = Path(tempfile.mkdtemp(prefix="nbd-rt-", dir="/tmp"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    # Serve's proxy would send every request to the replica on its own node while that one
    # keeps up; the tests want both replicas to answer
    env = {**os.environ, **RAY_ENV, "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"}
    common = ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    procs: list[subprocess.Popen[bytes]] = []
    log = (temp / "nodes.log").open("ab")

    def start(args: list[str], node_temp: Path) -> bool:
        node_temp.mkdir()
        argv = [*ray_cli(), "start", *args, *common, f"--temp-dir={node_temp}"]  # each node its own folder
        procs.append(subprocess.Popen(argv, stdout=log, stderr=log, env=env, start_new_session=True))
        if _node_up(procs[-1], node_temp, time.monotonic() + 150):
            return True
        stop_group(procs[-1], timeout=10)  # one still starting would join later, as a third node
        return False

    def tail() -> str:
        return (temp / "nodes.log").read_text()[-3000:]

    try:
        head = ["--head", f"--port={port}", "--include-dashboard=false"]
        assert start(head, temp / "head"), tail()
        # a worker node that gave up (`ray start` allows its raylet 30 s to register) is started again
        assert any(start([f"--address={address}"], temp / f"worker-{n}") for n in range(3)), tail()
        assert _driver(address, probe_serve=False)["nodes"] == 2, tail()
        yield address
    finally:
        for proc in reversed(procs):
            stop_group(proc, timeout=10)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def deployment(cluster: str, two_versions: str) -> Iterator[nbdeploy.Deployment]:
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "nbdeploy")
    proxy = free_port()
    line = (
        f"serve {two_versions}/1 --name rayd --target ray --replicas 2 --address {cluster} --port {proxy} "
        "--replica-cpus 1 --windows 1m,5m"
    )
    status = ip.run_line_magic("deploy", line)
    assert status.state == "running" and status.target == "ray (2 replicas)", status
    dep = nbdeploy.get("rayd")
    try:
        yield dep
    finally:
        dep.stop()


@pytest.fixture(scope="module")
def local(two_versions: str) -> Iterator[nbdeploy.Deployment]:
    dep = nbdeploy.serve(f"{two_versions}/1", name="ray-compare-local", max_body_bytes=16 << 20)
    try:
        yield dep
    finally:
        dep.stop()


def _replicas(dep: nbdeploy.Deployment) -> dict[str, Any]:
    replicas: dict[str, Any] = dep.snapshot("1m")["replicas"]
    return replicas


def _from_both_replicas(
    dep: nbdeploy.Deployment, post: Callable[[httpx.Client, int], str], per_round: int, rounds: int = 8
) -> list[str]:
    """The ids of requests sent by ``post(client, i)`` in rounds of ``per_round``, four at a time,
    until the logs show both replicas answered. Serve's router picks among the replicas whose
    queue length it knows; one that misses its 100 ms probe deadline on a loaded machine gets
    nothing for a while (CI once saw 30 sequential requests all on one), so the tests that
    check each replica send until each has answered instead of counting on the spread."""
    sent: list[str] = []
    with httpx.Client() as client, ThreadPoolExecutor(4) as pool:
        for _ in range(rounds):
            sent += pool.map(lambda i: post(client, i), range(per_round))
            if len({r["replica"] for r in _all_logged(dep, frozenset(sent))}) == 2:
                break
    return sent


def _all_logged(dep: nbdeploy.Deployment, ids: frozenset[str]) -> list[dict[str, Any]]:
    """The records of these requests, once every one of them is in a log."""
    return eventually(lambda: [r for r in _records(dep) if r["id"] in ids], lambda v: len(v) == len(ids))


def test_two_replicas_on_two_nodes_pass_the_protocol_battery(
    cancer: dict[str, Any], deployment: nbdeploy.Deployment, local: nbdeploy.Deployment, two_versions: str
) -> None:
    assert deployment.url.endswith("/rayd")
    mismatches = []
    for label, (payload, headers) in battery(cancer["X_test"]).items():
        for _ in range(4):  # several times: the proxy spreads them over both replicas
            a = httpx.post(deployment.url + "/invocations", content=payload, headers=headers, timeout=30)
            b = httpx.post(local.url + "/invocations", content=payload, headers=headers, timeout=30)
            if (a.status_code, a.json()) != (b.status_code, b.json()):
                mismatches.append(f"{label}: ray {a.status_code} {a.text[:200]} / local {b.status_code} {b.text[:200]}")
    assert not mismatches, "\n".join(mismatches)
    no_type = httpx.post(deployment.url + "/invocations", content=b'{"instances": []}')
    assert no_type.status_code == 415
    for route in ("/ping", "/health"):
        assert httpx.get(deployment.url + route).status_code == 200
    assert httpx.get(deployment.url + "/version").text == httpx.get(local.url + "/version").text
    info = httpx.get(deployment.url + "/info").json()
    assert info["name"] == "rayd" and info["version"] == 1
    listed = repr(nbdeploy.deployments())
    assert "rayd" in listed and "running" in listed
    assert f"serving {two_versions}/1" in deployment.logs()
    # replicas forward twice a second; the hub releases records 1.5 s after they were answered
    replicas = eventually(lambda: _replicas(deployment), lambda r: len(r) == 2)
    assert len({r["node"] for r in replicas.values()}) == 2, replicas  # one replica per "machine"
    np.testing.assert_array_equal(deployment.predict(cancer["X_test"]), cancer["model"].predict(cancer["X_test"]))
    rows = cancer["X_test"].sample(1000, replace=True, random_state=0)  # probabilities on the wire (#12)
    for _ in range(4):  # spread over both replicas
        proba = deployment.predict(rows, method="predict_proba")
        assert np.max(np.abs(proba - cancer["model"].predict_proba(rows))) <= 1e-9
    assert "ray" not in sys.modules  # the test process, like a kernel, never became a Ray driver


def _settled(dep: nbdeploy.Deployment) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The hub's 1m window once it counts every logged request in it, and those records."""

    def read() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        doc = dep.snapshot("1m")
        since = doc["now"] - doc["windows"]["1m"]["seconds"]
        return doc, [r for r in _records(dep) if since <= r["ts"] <= doc["now"]]

    return eventually(read, lambda v: v[0]["windows"]["1m"]["requests"] == len(v[1]))  # type: ignore[no-any-return]


def _records(dep: nbdeploy.Deployment) -> list[dict[str, Any]]:
    from nbdeploy.serving.requestlog import read_records

    out = []
    for path in sorted(dep.path.glob("requests-*.jsonl")):
        out += [{**r, "replica": path.stem.split("-", 1)[1]} for r in read_records(path)]
    return out


def test_monitoring_merges_replicas_exactly(cancer: dict[str, Any], deployment: nbdeploy.Deployment) -> None:
    rows = json.loads(cancer["X_test"].head(3).to_json(orient="split", index=False))

    sent: set[str] = set()  # this test's request ids (the window also holds the earlier tests')

    def send(n: int) -> None:
        with httpx.Client() as client:
            for _ in range(n):
                r = client.post(deployment.url + "/invocations", json={"dataframe_split": rows})
                sent.add(r.headers["x-request-id"])

    threads = [threading.Thread(target=send, args=(40,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doc, records = _settled(deployment)
    window = doc["windows"]["1m"]
    latencies = np.asarray([r["latency_ms"] for r in records], dtype=np.float32)
    assert window["requests"] == len(records) >= 160
    expected = np.percentile(latencies, [50, 95, 99])
    got = [window["latency_ms"][p] for p in ("p50", "p95", "p99")]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    per_replica = {rid: r["windows"]["1m"]["requests"] for rid, r in doc["replicas"].items()}
    assert sum(per_replica.values()) == window["requests"]
    for rid, count in per_replica.items():
        mine = [r for r in records if r["replica"] == rid]
        assert count == len(mine)
        if mine:
            p95 = np.percentile(np.asarray([r["latency_ms"] for r in mine], dtype=np.float32), 95)
            assert doc["replicas"][rid]["windows"]["1m"]["latency_ms"]["p95"] == pytest.approx(p95, rel=1e-6)
    # not the mean of the replicas' percentiles: merged from the raw latencies of both
    confidence = [c for r in records for c in r.get("confidence", [])]  # accuracy estimated on both replicas
    # one per row of each of this test's requests (the window counts rows by answer time, the
    # records here by arrival: a few rows apart at its edge)
    assert [len(r.get("confidence", [])) for r in records if r["id"] in sent] == [3] * 160
    assert window["est_rows"] >= len(confidence) - 60
    assert window["est_accuracy"] == pytest.approx(float(np.mean(confidence)), abs=0.01)
    assert doc["target"] == "ray" and doc["version"] == 1 and doc["columns"] == list(cancer["X_test"].columns)
    widget = deployment.monitor(interval=0.2)
    try:
        deadline = time.monotonic() + 30
        while widget.polls == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        text = repr(widget)
        assert widget.status == "live" and f"requests {window['requests']}" in text
        assert sorted(line.split()[1] for line in text.splitlines() if line.startswith("replica ")) == sorted(
            per_replica
        )
    finally:
        widget.close()
    # what the replicas cost (#14): each one's CPU and memory, the deployment's the sum of them
    costs = {rid: r["windows"]["1m"]["resources"] for rid, r in doc["replicas"].items()}
    assert all(c is not None and c["rss_mb"] > 50 and c["cpu_s"] > 0 for c in costs.values()), costs
    assert window["resources"]["rss_mb"] == pytest.approx(sum(c["rss_mb"] for c in costs.values()), rel=1e-6)
    if shutil.which("wrk"):  # the load test reaches the model behind Ray's proxy (/rayd/invocations)
        report = deployment.loadtest(cancer["X_test"], connections=[2], duration=1, record=False)
        assert report.levels[0]["answered"] > 0 and report.levels[0]["errors"] == 0, report.levels


def test_tokens_with_roles_reach_every_replica_and_changes_need_no_restart(
    cancer: dict[str, Any], deployment: nbdeploy.Deployment
) -> None:
    """#15 on Ray: the replicas read no token file; the kernel sends each change through the
    hub, which relays it to every replica, and returns once every replica holds it. So a new
    token works on its first request and a revoked or rotated value is refused as soon as the
    call returns, on both replicas, without a restart; roles hold; the owner's rotation keeps
    the kernel working; each replica's request log names the token's label, never its value."""
    rows = json.loads(cancer["X_test"].head(2).to_json(orient="split", index=False))
    url = deployment.url

    def answers(token: str, route: str = "/feedback", n: int = 12) -> set[int]:
        body = {"ids": ["x"], "targets": [1]} if route == "/feedback" else {"dataframe_split": rows}
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as client:
            return {client.post(url + route, json=body).status_code for _ in range(n)}

    labeller, app = deployment.add_token("feedback", label="labeller"), deployment.add_token("predict", label="app")
    assert answers(labeller.value) == {200}
    denied = httpx.post(url + "/feedback", json={"ids": ["x"], "targets": [1]}, headers=_bearer(app.value))
    assert denied.status_code == 403 and "needs a token with the role 'feedback'" in denied.json()["message"]
    assert answers(labeller.value, "/admin/alerts", n=4) == {403}

    def as_app(client: httpx.Client, _: int) -> str:
        response = client.post(url + "/invocations", json={"dataframe_split": rows}, headers=_bearer(app.value))
        return response.headers["x-request-id"]

    sent = set(_from_both_replicas(deployment, as_app, 30))
    # every replica knew the label, never the value
    logged = [r for r in _records(deployment) if r["id"] in sent]
    assert {r.get("token") for r in logged} == {"app"} and len({r["replica"] for r in logged}) == 2
    assert app.value not in "".join(p.read_text() for p in deployment.path.glob("*.json*"))
    hub_state = deployment.path / "hub.json"  # the hub's book (kept for its restarts): hashes, owner-only
    assert stat.S_IMODE(hub_state.stat().st_mode) == 0o600
    assert sha256(app.value.encode()).hexdigest() in hub_state.read_text()
    # a remote admin cannot replace the book; only the kernel (the owner token) sends it
    admin = deployment.add_token("admin", label="ops")
    pushed = httpx.post(url + "/admin/tokens", json={"action": "book", "book": {}}, headers=_bearer(admin.value))
    assert pushed.status_code == 409 and "%deploy token" in pushed.json()["message"]
    # the replicas write their lines of the audit trail (admin calls of other tokens; refused attempts too)
    audit = [json.loads(line) for line in (deployment.path / "audit.jsonl").read_text().splitlines()]
    assert ("token ops", 409) in {(d.get("by"), d.get("status")) for d in audit}
    old = labeller.value
    rotated = deployment.rotate_token("labeller")
    assert answers(old) == {403}
    assert answers(rotated.value) == {200}
    deployment.revoke_token("labeller")
    assert answers(rotated.value) == {403}
    owner = deployment.token
    assert owner is not None
    deployment.rotate_token("owner")
    assert answers(owner, "/admin/alerts", n=6) == {403}
    assert deployment.alerts(clear=True)["rules"] == []  # the kernel goes on with the new owner token
    for label in ("app", "ops"):
        deployment.revoke_token(label)


def _copied(deployment: nbdeploy.Deployment) -> bytes:
    from nbdeploy.log_files import COLUMNS

    folder = deployment.path / COLUMNS
    return b"".join(p.read_bytes() for p in folder.glob("*.arrow")) if folder.exists() else b""


def _export_both_ways(deployment: nbdeploy.Deployment, tmp_path: Path) -> None:
    """An export from the copy, where it has the rows, is the export that parses every log."""
    import pandas as pd

    from nbdeploy.deployments.export import _features, export_logs

    features = _features(deployment.spec)
    by_copy = export_logs(deployment.path, features, tmp_path / "copy.parquet")
    by_parse = export_logs(deployment.path, features, tmp_path / "parse.parquet", columns=False)
    pd.testing.assert_frame_equal(by_copy.frame(), by_parse.frame())
    assert (by_copy.requests, by_copy.rows) == (by_parse.requests, by_parse.rows) and by_copy.rows > 0


def test_forget_reaches_every_replica_and_the_labels_at_the_hub(
    cancer: dict[str, Any], deployment: nbdeploy.Deployment, tmp_path: Path
) -> None:
    """#15 item 3 on Ray: ``forget`` is an order the hub hands to every replica (each filters
    its own log, which only it appends to) and answers once all did it; the hub removes the
    labels and the records in a replaced replica's log. By ids, and by a value (--where)."""
    from nbdeploy.serving.requestlog import read_records

    X = cancer["X_test"].head(60)
    slices = [json.loads(X.iloc[i : i + 3].to_json(orient="split", index=False)) for i in range(0, 60, 3)]

    def one_slice(client: httpx.Client, i: int) -> str:
        response = client.post(deployment.url + "/invocations", json={"dataframe_split": slices[i]})
        return response.headers["x-request-id"]

    sent = _from_both_replicas(deployment, one_slice, 20)
    deployment.feedback(sent, [[0, 1, 0]] * len(sent))
    logged = [r for r in _records(deployment) if r["id"] in sent]
    assert len(logged) == len(sent) and len({r["replica"] for r in logged}) == 2
    eventually(lambda: deployment.snapshot("1m")["uptime_s"], lambda up: up > 31, timeout=40)  # orphans: 30 s
    gone = deployment.path / "requests-replaced9.jsonl"  # a replaced replica's log, unchanged for two minutes
    first = next(r for r in logged if r["id"] == sent[0])
    gone.write_text("".join(json.dumps({**first, "id": rid}) + "\n" for rid in (sent[0], "kept-1")))
    os.utime(gone, (time.time() - 120, time.time() - 120))
    # the hub keeps a columnar copy of every replica's log for exports (deployments/log_columns.py)
    eventually(lambda: _copied(deployment), lambda data: all(r.encode() in data for r in sent[:4]), timeout=60)
    result = deployment.forget(ids=sent[:4])
    assert result == {"ids": 4, "removed": {"requests": 5, "feedback": 4}}, result
    assert not [r for r in sent[:4] if r.encode() in _copied(deployment)]  # out of the copy with their files
    eventually(lambda: _copied(deployment), lambda data: all(r.encode() in data for r in sent[4:]), timeout=60)
    _export_both_ways(deployment, tmp_path)
    left = {r["id"] for r in _records(deployment)}
    assert not left & set(sent[:4]) and set(sent[4:]) <= left  # from both replicas' logs, and only those
    assert [r["id"] for r in read_records(gone)] == ["kept-1"]
    labelled = {r["id"] for r in read_records(deployment.path / "feedback.jsonl")}
    assert not labelled & set(sent[:4]) and set(sent[4:]) <= labelled
    # by a value: every logged request with a row where it holds (this module's other tests sent such rows too)
    value = float(X["mean radius"].iloc[31])

    def holds(r: dict[str, Any]) -> bool:
        at = list(r.get("columns") or X.columns).index("mean radius")
        return any(isinstance(row, list) and float(row[at]) == value for row in r.get("inputs") or [])

    holding = {r["id"] for r in _records(deployment) if holds(r)}
    assert sent[10] in holding
    result = deployment.forget(where=f"`mean radius` == {value!r}")
    assert result["ids"] == len(holding) >= 1 and result["removed"]["requests"] == len(holding), (result, holding)
    assert not holding & {r["id"] for r in _records(deployment)}
    assert "forgot" in {e["event"] for e in deployment.audit().lines}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_without_ray_the_target_is_one_sentence(tmp_path: Path) -> None:
    """An interpreter where ``import ray`` fails (as when the extra is not installed)."""
    code = """
import importlib.abc, sys
class NoRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError("No module named 'ray'")
sys.meta_path.insert(0, NoRay())
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "nbdeploy")
try:
    ip.run_line_magic("deploy", "serve anything/1 --target ray --replicas 2")
except Exception as exc:
    print(type(exc).__name__, "|", exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.stdout.strip().splitlines()[-1] == (
        "UsageError | --target ray needs Ray Serve, which is not installed here: pip install 'nbdeploy[ray]'. "
        "See docs/index.md#extras"
    ), out.stdout + out.stderr


class _Load:
    """Client threads that keep sending one-row requests and keep every answer."""

    def __init__(self, url: str, X: Any, threads: int = 4) -> None:
        self.url, self.stop = url, threading.Event()
        self.body = json.dumps({"dataframe_split": json.loads(X.head(1).to_json(orient="split", index=False))})
        self.answers: list[tuple[int, str | None, int | None]] = []  # status, request id, version
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(self.url + "/invocations", content=self.body, headers=JSON)
                    self.answers.append((r.status_code, r.headers.get("x-request-id"), None))
                except httpx.HTTPError as exc:
                    self.failures.append(type(exc).__name__)

    def __enter__(self) -> _Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_rolling_update_under_load_drops_nothing(
    cancer: dict[str, Any], two_versions: str, deployment: nbdeploy.Deployment
) -> None:
    with _Load(deployment.url, cancer["X_test"]) as load:
        time.sleep(1)
        deployment.update(f"{two_versions}/2")
        time.sleep(1)
    statuses = [a[0] for a in load.answers]
    assert len(statuses) > 50
    assert set(statuses) == {200} and not load.failures, (
        {s: statuses.count(s) for s in set(statuses)},
        load.failures[:5],
    )
    assert httpx.get(deployment.url + "/info").json()["version"] == 2
    served = {r.get("version") for r in _records(deployment) if r.get("id") in {a[1] for a in load.answers}}
    assert served == {1, 2}  # answered by the old replicas, then by the new ones
    assert deployment.status().version == 2
    deployment.rollback()
    assert httpx.get(deployment.url + "/info").json()["version"] == 1
    assert deployment.snapshot("1m")["version"] == 1


def test_killed_replica_loses_no_answered_request_and_comes_back(
    cancer: dict[str, Any], deployment: nbdeploy.Deployment
) -> None:
    def live(replicas: dict[str, Any]) -> dict[str, Any]:
        return {rid: r for rid, r in replicas.items() if time.time() - r["last_seen"] < 5}

    with _Load(deployment.url, cancer["X_test"], threads=2):  # traffic, so that both replicas report
        before = eventually(lambda: _replicas(deployment), lambda r: len(live(r)) == 2)
    live_before = live(before)
    assert len(live_before) == 2, before
    victim_id, victim = next(iter(live_before.items()))
    with _Load(deployment.url, cancer["X_test"]) as load:
        time.sleep(1)
        os.kill(victim["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 90
        back = None
        while back is None and time.monotonic() < deadline:
            time.sleep(1)
            replicas = _replicas(deployment)
            back = next(
                (rid for rid, r in replicas.items() if rid not in before and time.time() - r["last_seen"] < 3), None
            )
        assert back is not None, "Ray did not bring a replica back within 90 s"
        time.sleep(1)
    answered = {rid for status, rid, _ in load.answers if status == 200}
    logged = {r["id"] for r in _records(deployment)}
    assert answered and answered <= logged, f"{len(answered - logged)} answered requests missing from the logs"
    errors = [s for s, _, _ in load.answers if s != 200]
    print(f"\n{len(answered)} answered during the kill; {len(errors)} errors, {len(load.failures)} transport failures")
    assert not _procs_alive(victim["pid"])
    assert victim_id not in {rid for rid, r in _replicas(deployment).items() if time.time() - r["last_seen"] < 3}


def test_restarted_hub_keeps_version_rules_and_every_request(
    cancer: dict[str, Any], two_versions: str, deployment: nbdeploy.Deployment
) -> None:
    deployment.update(f"{two_versions}/2")
    deployment.alerts(["p95_ms>5000"])
    hub = eventually(lambda: deployment.snapshot("1m"), lambda d: d["version"] == 2)["hub"]["pid"]

    def probe() -> dict[str, Any]:
        try:
            return deployment.snapshot("1m")
        except nbdeploy.DeploymentError:  # /monitor fails while Ray brings the hub back
            return {}

    with _Load(deployment.url, cancer["X_test"], threads=2) as load:
        time.sleep(1)
        os.kill(hub, signal.SIGKILL)
        doc = eventually(probe, lambda d: bool(d) and d["hub"]["pid"] != hub, timeout=90)
        assert doc and doc["hub"]["pid"] != hub, "Ray did not restart the monitoring hub within 90 s"
        time.sleep(1)
    statuses = [status for status, _, _ in load.answers]
    assert statuses and set(statuses) == {200} and not load.failures  # serving never waited for the hub
    doc, logged = _settled(deployment)
    assert doc["hub"]["rebuilt"] > 0 and doc["windows"]["1m"]["requests"] == len(logged) > 0
    assert doc["version"] == 2 and [r["rule"] for r in doc["alerts"]["rules"]] == ["p95_ms>5000"]


def test_an_experiment_splits_across_replicas_and_the_hub_merges_its_counts(
    cancer: dict[str, Any], two_versions: str, deployment: nbdeploy.Deployment
) -> None:
    """The experiment battery on two replicas: a 10 % canary's share over 2,000 requests and
    sticky keys, counted by the hub from both replicas; a shadow logged with both predictions."""
    from tests.test_experiments import VARIANT, _bodies, _send

    dep, X = deployment, cancer["X_test"]
    other = "1" if dep.spec.current.version == 2 else "2"  # the version the deployment does not serve
    view = dep.canary(f"{two_versions}/{other}", percent=10, sticky_header="X-User")
    assert view.state["challenger"]["label"] == other
    answers = _send(dep.url, _bodies(X, 2000), clients=8)  # no X-User: drawn by Ray's request id
    assert {r.status_code for r in answers} == {200}
    to_challenger = sum(r.headers[VARIANT] == other for r in answers)
    print(f"\nRay canary of 10 %: {to_challenger / 20:.2f} % of 2,000 requests")
    # 3 standard deviations of a binomial share (0.67 points): a fair split fails 0.3 % of runs; the share
    # itself is measured on 5,000 requests of a local server by tests/test_experiments.py
    assert abs(to_challenger / 2000 - 0.10) <= 0.02
    by_replica = Counter(r["replica"] for r in _records(dep) if r.get("variant") == other)
    assert len(by_replica) == 2, by_replica  # both replicas served the challenger
    for key in ("ana", "bo", "chen", "dee", "eli"):
        seen = [r.headers[VARIANT] for r in _send(dep.url, _bodies(X, 60), {"X-User": key}, clients=4)]
        assert len(set(seen)) == 1, Counter(seen)  # 60 times of 60, whichever replica answered
        to_challenger += seen.count(other)
    expected = {"champion": 2300 - to_challenger, other: to_challenger}
    counts = eventually(lambda: {v: c.get("requests") for v, c in dep.experiment().state["counts"].items()},
                        lambda c: c == expected)  # fmt: skip
    assert counts == expected  # merged by the hub, exactly
    metrics = httpx.get(f"{dep.url}/metrics").text  # any replica's: the hub's figures
    assert f'nbdeploy_variant_requests_total{{variant="{other}"}} {float(to_challenger)}' in metrics
    dep.conclude(abort=True)
    assert dep.spec.experiment is None and dep.experiment().state is None

    dep.shadow(f"{two_versions}/{other}")
    answers = _send(dep.url, _bodies(X, 400))
    assert {r.headers[VARIANT] for r in answers} == {"champion"}
    ids = {r.headers["x-request-id"] for r in answers}
    # the shadow's records reach the hub from its actors, the champion's from the replicas: both counted
    state = eventually(lambda: dep.experiment().state, lambda s: s["counts"][other].get("shadowed", 0) >= 400
                       and s["distributions"][other]["rows"] == s["distributions"]["champion"]["rows"])  # fmt: skip
    mirrored = {r["id"] for r in _records(dep) if r.get("shadow") is True and r["id"] in ids}
    assert len(mirrored) >= 0.999 * len(ids) and state["agreement"]["rows"] >= 0.999 * len(ids)
    assert state["distributions"][other]["rows"] == state["distributions"]["champion"]["rows"]
    # each replica's shadow predicts in an actor of its own, outside the replica's process
    assert len(_shadow_actors(dep.spec.ray.address, dep.name)) == 2
    dep.conclude(abort=True)
    assert eventually(lambda: _shadow_actors(dep.spec.ray.address, dep.name), lambda a: not a, timeout=120) == []


def _shadow_records(dep: nbdeploy.Deployment, ids: frozenset[str]) -> list[dict[str, Any]]:
    return [r for r in _records(dep) if r.get("shadow") is True and r["id"] in ids]


def test_a_shadow_actor_killed_is_started_again_and_its_replica_never_fails_a_client(
    cancer: dict[str, Any], two_versions: str, deployment: nbdeploy.Deployment
) -> None:
    """kill -9 of a replica's shadow actor, twice: each time Ray starts it again, and it replays
    the replica's log and predicts the mirrors without a shadow record (no mirror lost); the
    clients of both replicas are answered throughout."""
    from tests.test_experiments import _bodies, _send

    dep, X = deployment, cancer["X_test"]
    other = "1" if dep.spec.current.version == 2 else "2"
    dep.shadow(f"{two_versions}/{other}")
    try:
        actor = _shadow_actors(dep.spec.ray.address, dep.name)[0]
        killed = []
        for _ in range(2):
            killed.append(_actor_pid(dep.spec.ray.address, actor))
            os.kill(killed[-1], signal.SIGKILL)
            answers = _send(dep.url, _bodies(X, 300))
            assert {r.status_code for r in answers} == {200}
            ids = frozenset(r.headers["x-request-id"] for r in answers)
            shadows = eventually(lambda ids=ids: _shadow_records(dep, ids), lambda got: len(got) == 300, timeout=120)
            assert len(shadows) == len(ids)  # every mirror written down ...
            assert all(r["status"] == 200 and "predictions" in r for r in shadows), shadows[0]  # ... and answered
        assert _actor_pid(dep.spec.ray.address, actor) not in killed  # the same actor, in its third process
    finally:
        dep.conclude(abort=True)
    assert eventually(lambda: _shadow_actors(dep.spec.ray.address, dep.name), lambda a: not a, timeout=120) == []


def test_a_failing_challenger_is_rolled_back_by_the_hub(
    cancer: dict[str, Any], name: str, deployment: nbdeploy.Deployment
) -> None:
    from tests.test_experiments import VARIANT, _bodies, _send, failing_challenger

    X = cancer["X_test"].reset_index(drop=True)
    failing, limit = failing_challenger(cancer, name)
    dep = deployment
    dep.canary(failing.ref, percent=50, rollback_when=["error_rate>baseline"])
    order = np.random.default_rng(0).permutation(np.resize(np.arange(len(X)), 3000))
    bodies, answers = _bodies(X.iloc[order], len(order)), []
    for start_at in range(0, len(bodies), 100):  # until the hub has rolled it back
        answers += _send(dep.url, bodies[start_at : start_at + 100])
        if dep.spec.experiment is None:
            break
    assert dep.spec.experiment is None, "not rolled back after 3,000 requests"
    print(f"\nRay rollback after {sum(r.headers.get(VARIANT) == '1' for r in answers)} challenger requests")
    for i, r in enumerate(answers):  # the only client errors are the challenger's own failures
        if r.status_code != 200:
            assert r.status_code == 400 and X.iloc[order[i]]["mean radius"] > limit, r.text
    event = eventually(lambda: dep.experiment().events, lambda e: bool(e))[-1]
    assert event["action"] == "rollback" and "error_rate>baseline holds" in event["why"]
    after = eventually(lambda: _send(dep.url, bodies[:50]), lambda a: all(VARIANT not in r.headers for r in a),
                       timeout=120)  # the rolling update  # fmt: skip
    assert {r.status_code for r in after} == {200}  # the rolling update left the champion alone


def test_a_ray_experiment_survives_kill_9_of_its_hub_and_a_replica_then_is_promoted(
    cancer: dict[str, Any], name: str, deployment: nbdeploy.Deployment
) -> None:
    from tests.test_experiments import VARIANT, _bodies, _send

    dep = deployment
    nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"])
    dep.canary(f"{name}/1", percent=30, sticky="mean radius")
    bodies = _bodies(cancer["X_test"], 300)
    before = [r.headers[VARIANT] for r in _send(dep.url, bodies)]
    assert 0 < before.count("1") < 300

    def counts() -> dict[str, Any]:
        try:
            state = dep.experiment().state
        except nbdeploy.DeploymentError:  # the hub restarting
            return {}
        return {v: c.get("requests", 0) for v, c in state["counts"].items()} if state else {}

    counted = eventually(counts, lambda c: sum(c.values()) == 300)
    hub = dep.snapshot("1m")["hub"]["pid"]
    os.kill(hub, signal.SIGKILL)
    assert eventually(counts, lambda c: c == counted, timeout=90) == counted  # recounted from the logs
    pids = eventually(lambda: [r["pid"] for r in _replicas(dep).values() if r.get("pid")], bool)
    os.kill(pids[0], signal.SIGKILL)  # (the new hub knows a replica's pid once it has reported)
    after = [r.headers[VARIANT] for r in _send(dep.url, bodies)]  # one replica, then two again
    assert after == before  # the same keys meet the same variants
    assert eventually(counts, lambda c: sum(c.values()) == 600) == {v: 2 * n for v, n in counted.items()}
    dep.conclude(promote=True, force=True)  # never validated: promoted by force, as by hand
    assert dep.spec.current.ref == f"{name}/1" and dep.spec.experiment is None
    answers = _send(dep.url, bodies[:20])
    assert {r.status_code for r in answers} == {200} and all(VARIANT not in r.headers for r in answers)
    assert nbdeploy.resolve(f"{name}@champion").version == 1


def test_the_hub_promotes_a_validated_challenger_through_the_gate(
    cancer: dict[str, Any], name: str, deployment: nbdeploy.Deployment
) -> None:
    from tests.test_experiments import VARIANT, _bodies, _send

    dep, X, y = deployment, cancer["X_test"], cancer["y_test"]
    challenger = nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"])
    nbdeploy.validate(challenger.ref, X, y)  # the gate of promote passes
    dep.canary(challenger.ref, percent=50, promote_when=["latency_ms<=baseline*10"])
    bodies = _bodies(X, 200)
    for _ in range(10):  # until the hub has promoted it
        _send(dep.url, bodies)
        if dep.spec.experiment is None:
            break
    assert dep.spec.experiment is None and dep.spec.current.ref == challenger.ref
    event = eventually(lambda: dep.experiment().events, lambda e: bool(e) and e[-1]["action"] == "promote")[-1]
    assert "latency_ms<=baseline*10 holds" in event["why"]
    assert nbdeploy.resolve(f"{name}@champion").version == challenger.version
    answers = eventually(lambda: _send(dep.url, bodies[:20]), lambda a: all(VARIANT not in r.headers for r in a),
                         timeout=120)  # fmt: skip
    assert {r.status_code for r in answers} == {200}


def _procs_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_stop_leaves_no_serve_application(cluster: str, deployment: nbdeploy.Deployment) -> None:
    assert {"rayd", "rayd-monitor"} <= set(_driver(cluster)["apps"])
    deployment.stop()
    assert deployment.state() == "stopped"
    assert not {"rayd", "rayd-monitor"} & set(_driver(cluster)["apps"])
    assert nbdeploy.get("rayd").status().state == "stopped"
    with pytest.raises(nbdeploy.DeploymentError, match="is stopped"):
        deployment.predict(np.zeros((1, 30)))


@pytest.mark.alone  # CPU figures of a load test: the machine to itself
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_sizing_from_one_replica_predicts_the_cpu_of_two(
    cluster: str, two_versions: str, cancer: dict[str, Any]
) -> None:
    """Sizing (#14): recommend() reads back what a load test of one Ray replica recorded (its
    CPU with no traffic, and per request), and the CPU its model expects of two replicas serving
    what two served is checked against their measurement, within the 30 % this test states.

    Both are measured at one connection: with one request in flight, wrk, Ray's proxy and the
    replicas take turns on this 2-core machine instead of competing, so each figure is the
    replicas' own work. With more connections the machine, not the replicas, is the limit: two
    replicas then serve no more than one, and the CPU of each request grows with the contention
    (docs/capacity.md). The 30 %: in runs alone the prediction missed by +4, -11, -14 and -17 %
    (two replicas spent more CPU per request than one) and one replica's CPU per request
    differed by 14 % between runs: about twice the spread seen."""
    X, measured = cancer["X_test"], {}
    if "rayd" in {d.name for d in nbdeploy.deployments().items} and nbdeploy.get("rayd").state() == "running":
        nbdeploy.get("rayd").stop()  # the module's deployment holds both of the cluster's CPUs
    for replicas in (1, 2):
        dep = nbdeploy.serve(f"{two_versions}/1", name=f"ray-size-{replicas}", target="ray", replicas=replicas,
                             address=cluster, port=free_port(), replica_cpus=1)  # fmt: skip
        try:
            report = dep.loadtest(X, connections=[1], duration=6, record=replicas == 1)
            level = report.levels[0]
            assert level["errors"] == 0 and level["cpu_pct"] is not None and level["cpu_pct"] > 0, level
            assert report.replicas == replicas and report.idle_cpu_pct is not None, report.to_dict()
            measured[replicas] = (level["rps"], level["cpu_pct"] / 100, report.idle_cpu_pct / 100)
            if replicas == 1:  # read back from MLflow: the summary of the test just recorded
                advice = dep.recommend(target_rps=3 * level["rps"], p99_ms=10_000)
                assert advice.rps_1 == pytest.approx(level["rps"])
                assert advice.cores_1 == pytest.approx(level["cpu_pct"] / 100)
                assert advice.idle_1 == pytest.approx(min(report.idle_cpu_pct, level["cpu_pct"]) / 100)
        finally:
            dep.stop()
    (rps1, cores1, idle1), (rps2, cores2, idle2) = measured[1], measured[2]
    assert idle2 == pytest.approx(2 * idle1, rel=0.6)  # the fixed part is per replica (small: 3 % of a core each)
    predicted = advice.cores_for(rps2, replicas=2)
    print(f"\none replica {rps1:.0f} req/s on {cores1:.3f} CPU ({idle1:.3f} idle); two {rps2:.0f} req/s on "
          f"{cores2:.3f} CPU ({idle2:.3f} idle), predicted {predicted:.3f} ({100 * (predicted / cores2 - 1):+.0f} %)")
    assert predicted == pytest.approx(cores2, rel=0.30)


def test_hashed_inputs_on_ray_never_reach_the_disk_and_old_records_expire(
    cluster: str, with_email: str, cancer: dict[str, Any]
) -> None:
    """#15 item 3 on Ray: every replica hashes the logged inputs with the deployment's key
    (sent in its arguments: the same key on every replica, so equal values hash alike), before
    a record is written or forwarded to the hub; the hub's windows see the values in memory,
    so drift still reports. No raw value of any served row is in any file of the folder.
    With --retention, each replica expires its own log (counted in its /metrics), and the hub
    the labels and the log of a replica that is gone (one left by a replaced replica)."""
    from nbdeploy.privacy import keyed_hash, read_key
    from nbdeploy.serving.requestlog import read_records

    if "rayd" in {d.name for d in nbdeploy.deployments().items} and nbdeploy.get("rayd").state() == "running":
        nbdeploy.get("rayd").stop()  # the module's deployment holds both of the cluster's CPUs
    dep = nbdeploy.serve(f"{with_email}/1", name="ray-private", target="ray", replicas=2, address=cluster,
                         port=free_port(), replica_cpus=1, log_inputs="hashed", redact=["email"],
                         retention="20s")  # fmt: skip
    try:
        X = rows_with_secrets(cancer, 120)
        with ThreadPoolExecutor(4) as pool:  # four at a time: the router then spreads them (_from_both_replicas)
            ids = list(pool.map(lambda i: dep.predict(X.iloc[i : i + 3], with_id=True)[1], range(0, 120, 3)))
        drift = eventually(lambda: dep.snapshot("1m")["windows"]["1m"]["drift"],
                           lambda rows: any(r["psi"] is not None for r in rows))  # fmt: skip
        assert set(X.columns[:5]) <= {r["name"] for r in drift if r["psi"] is not None}
        records = eventually(lambda: [r for r in _records(dep) if r["id"] in ids], lambda v: len(v) == 40)
        assert len(records) == 40 and len({r["replica"] for r in records}) == 2  # both replicas logged
        assert all(r["inputs_private"] == "hashed" for r in records)
        key = read_key(dep.path)
        assert key is not None
        first = next(r for r in records if r["id"] == ids[0])  # hashed with the folder's key on either replica
        assert first["inputs"][0] == [keyed_hash(key, v) for v in X.iloc[0]]
        raw = [*X["email"], *(json.dumps(float(v)) for v in X.iloc[:, :5].to_numpy().ravel())]
        for file in dep.path.rglob("*"):
            if file.is_file():
                content = file.read_bytes()
                leaked = [v for v in raw if v.encode() in content]
                assert not leaked, (file, leaked[:3])
        dep.feedback(ids, [[0, 1, 0]] * len(ids))
        # the log of a replica replaced long ago: no replica writes it, the hub expires it
        gone = dep.path / "requests-replaced0.jsonl"
        gone.write_text("".join(json.dumps({**first, "id": f"old-{i}", "ts": time.time() - 600, "answered": None})
                                + "\n" for i in range(3)))  # fmt: skip
        os.utime(gone, (time.time() - 120, time.time() - 120))

        def left() -> dict[str, int]:
            labels = read_records(dep.path / "feedback.jsonl")
            served = [r for r in _records(dep) if r["id"] in ids]
            return {"served": len(served), "labels": len(labels), "gone": len(read_records(gone))}

        assert eventually(left, lambda n: not any(n.values()), timeout=90) == {"served": 0, "labels": 0, "gone": 0}
        deleted = dep.snapshot("1m")["hub"]["deleted"]
        assert deleted == {"requests": 3, "feedback": 40}, deleted
        series = 'nbdeploy_log_records_deleted_total{log="requests",reason="retention"}'
        pages = [httpx.get(dep.url + "/metrics").text for _ in range(20)]  # the proxy spreads them over both
        counted = [float(line.rsplit(" ", 1)[1]) for page in pages for line in page.splitlines()
                   if line.startswith(series)]  # fmt: skip
        assert counted and max(counted) > 0  # each replica counts what it removed from its own log
    finally:
        dep.stop()


def test_without_address_a_local_cluster_is_started_and_stopped(
    two_versions: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first head meets a port held here and its GCS server aborts (a real failure of Ray's):
    nbdeploy sees the GCS's fatal line without waiting out Ray's timeouts, says so in ray.log,
    starts one more head on another port, serves, and stops both heads' every process and folder."""
    import socket

    from nbdeploy import config
    from nbdeploy.deployments import processes, ray_auth, ray_client

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    heads: list[dict[str, Any]] = []
    spawn = ray_client._spawn_head
    monkeypatch.setattr(ray_client, "_spawn_head", lambda folder: heads.append(spawn(folder)) or heads[-1])
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))  # bound, not listening: the first head's GCS cannot bind it
        ports = [taken := held.getsockname()[1]]
        monkeypatch.setattr(ray_client, "free_port", lambda: ports.pop(0) if ports else free_port())
        dep = nbdeploy.serve(f"{two_versions}/1", name="ray-local", target="ray", port=free_port())
    try:
        info = json.loads((config.home() / ".ray" / "cluster.json").read_text())
        assert dep.spec.ray.started_cluster and dep.spec.ray.address == info["address"]
        assert dep.state() == "running" and len(dep.predict(np.zeros((2, 30)))) == 2
        said = [line for line in (config.home() / ".ray" / "ray.log").read_text(errors="replace").splitlines()
                if line.startswith("nbdeploy: ")]  # fmt: skip
        stopped = [line for line in said if line.startswith("nbdeploy: the Ray head at ")]
        assert len(stopped) == 1 and stopped[0].endswith(
            f"stopped: its GCS server exited: could not listen on port {taken} (Address already in use); "
            "starting another"
        ), said
        assert any("Failed to start the grpc server" in line for line in said), said  # the GCS's own line, kept
        # its GCS listens on every interface: a driver without the head's token, or with another, is
        # refused by Ray's authentication; one given it by nbdeploy joins (each tries 3 times, not 20)
        token = ray_auth.token_path(info)
        assert token is not None and stat.S_IMODE(token.stat().st_mode) == 0o600
        stranger = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        probes = {"none": stranger, "another": {**stranger, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
                  "its own": ray_client.driver_environment(info["address"])}  # fmt: skip
        for who, env in probes.items():
            env["RAY_NUM_REDIS_GET_RETRIES"] = "3"
            probe = subprocess.run([sys.executable, "-c", JOIN, info["address"]], env=env, capture_output=True,
                                   text=True, timeout=120)  # fmt: skip
            if who == "its own":
                assert probe.returncode == 0 and "joined" in probe.stdout, probe.stderr[-1500:]
            else:
                assert probe.returncode != 0 and "AuthenticationError" in probe.stderr, (who, probe.stderr[-1500:])
    finally:
        dep.stop()
    assert dep.state() == "stopped" and len(heads) == 2
    assert not processes.alive(info["pid"], "--head") and not token.exists()
    for head in heads:
        assert not Path(head["temp_dir"]).exists()
        leftovers = subprocess.run(["pgrep", "-f", head["temp_dir"]], capture_output=True, text=True).stdout.split()
        assert not leftovers, leftovers


def test_batch_on_ray_data_scores_every_row_in_order_across_two_nodes(
    cluster: str, two_versions: str, cancer: dict[str, Any], tmp_path: Path
) -> None:
    """``batch --target ray``: Ray Data reads the file, actors on both nodes score it (the model
    travels through the object store), and the answers come back in the input's order, equal to
    the model's own; a value the signature refuses is one sentence and leaves no output."""
    import pandas as pd

    from nbdeploy.errors import InvalidInputError

    model = cancer["model"]  # version 1 of two_versions
    X = pd.concat([cancer["X_test"]] * 30, ignore_index=True)  # 4,290 rows
    frame = X.assign(customer=[f"{i:05d}" for i in range(len(X))])
    rows = tmp_path / "rows.csv"
    frame.to_csv(rows)  # with its index, as to_csv() writes by default: a column left out, as locally
    result = nbdeploy.batch(f"{two_versions}/1", str(rows), tmp_path / "scores.parquet", target="ray",
                            address=cluster, key="customer", chunk_rows=500)  # fmt: skip
    df = result.frame()
    assert result.rows == len(X) == len(df) and df["row"].tolist() == list(range(len(X)))
    assert df["customer"].tolist() == frame["customer"].tolist()  # in order, and text stays text (00042)
    np.testing.assert_allclose(df[["proba_0", "proba_1"]].to_numpy(), model.predict_proba(X))
    assert (df["prediction"].to_numpy() == model.predict(X)).all() and result.run_id

    from_frame = nbdeploy.batch(f"{two_versions}/1", X, tmp_path / "scores.csv", target="ray", address=cluster,
                                workers=2, proba=False)  # fmt: skip
    written = pd.read_csv(tmp_path / "scores.csv")
    assert from_frame.workers == 2 and list(written.columns) == ["row", "prediction"]
    assert (written["prediction"].to_numpy() == model.predict(X)).all()

    frame = frame.astype({"mean radius": object})
    frame.loc[4000, "mean radius"] = "wide"  # far from the first block Arrow would guess types from
    frame.to_csv(rows, index=False)
    refused = r"whose first customer is '(\d+)'.*Column 'mean radius' expects double values; rows (\d+) are not"
    with pytest.raises(InvalidInputError, match=refused) as err:
        nbdeploy.batch(f"{two_versions}/1", str(rows), tmp_path / "bad.parquet", target="ray", address=cluster,
                       key="customer", chunk_rows=500)  # fmt: skip
    import re

    first, row = re.search(refused, str(err.value)).groups()  # type: ignore[union-attr]
    assert int(first) + int(row) == 4000  # the chunk's first key (its position) and the row within it
    assert not list(tmp_path.glob("*bad.parquet*"))  # neither the output nor its partial file
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _runs(p, b"nbdeploy.serving.ray_batch")]


def _runs(proc: Path, marker: bytes) -> bool:
    try:
        return marker in (proc / "cmdline").read_bytes()
    except OSError:
        return False
