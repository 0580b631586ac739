"""Serving benchmark: nbdeploy's server against `mlflow models serve`, same model, same run.

    apt-get install -y wrk          # the load generator (Debian package)
    python bench/serving.py         # prints a table and the ratios

It trains the quickstart RandomForest (100 trees, breast_cancer), registers it in a fresh
SQLite store, then for each server measures: launch → ready (/ping answers); sequential
one-row latency p50/p99 over a keep-alive connection; requests/s and latency p50/p99 from
wrk at 1, 4, 16 and 64 connections of one-row JSON requests; and the RSS of all the
server's processes. wrk runs with one thread per connection up to 2 (this machine has 2
cores, shared by client and server); the last section shows the client is not the bound
by running wrk against `/ping`, which does no model work. Last, ``bench/start_time.py``: the
server process's launch -> first prediction beside the floor (a bare process importing the
model's libraries, unpickling it and predicting one row).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONNECTIONS = (1, 4, 16, 64)
DURATION = int(os.environ.get("BENCH_SECONDS", "8"))


def rss_mb(root: int) -> float:
    """Resident memory of ``root`` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == pid and p not in tree]
        tree.update(kids)
        frontier.extend(kids)
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/ping", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} not ready")


def sequential(host: str, port: int, body: bytes, n: int = 1000, route: str = "/invocations") -> tuple[float, float]:
    conn = http.client.HTTPConnection(host, port)
    times = []
    for i in range(n + 50):
        t0 = time.perf_counter()
        conn.request("POST", route, body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}")
        if i >= 50:
            times.append((time.perf_counter() - t0) * 1000)
    conn.close()
    q = statistics.quantiles(times, n=100)
    return statistics.median(times), q[98]


def _run_wrk(url: str, route: str, body: bytes | None, headers: dict[str, str] | None, connections: int,
             seconds: float, done: str, result: str) -> tuple[re.Match[str], str]:  # fmt: skip
    """One wrk run of ``seconds``, its request set and its Lua ``done`` function given (one
    thread per connection up to 2): the match of ``result`` (the ``RESULT`` line ``done``
    prints) and wrk's whole output."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        if body is not None:
            lua.write(
                'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = {json.dumps(body.decode())}\n"
            )
        for key, value in (headers or {}).items():
            lua.write(f"wrk.headers[{json.dumps(key)}] = {json.dumps(value)}\n")
        lua.write(done)
    try:
        out = subprocess.run(
            ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds}s", "-s", lua.name,
             url + route],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        os.unlink(lua.name)
    m = re.search(result, out.stdout)
    if not m:
        raise RuntimeError(out.stdout + out.stderr)
    return m, out.stdout


def wrk_latencies(url: str, route: str, body: bytes | None, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run's requests, errors and every latency it saw: ``{"requests", "errors",
    "latencies": {microseconds: count}}`` (wrk's own histogram, so runs can be pooled)."""
    m, out = _run_wrk(url, route, body, None, connections, seconds,
        "done = function(summary, latency, requests)\n"
        "  io.write(string.format('RESULT %d %d\\n', summary.requests, summary.errors.status"
        " + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\n"
        "  for i = 1, #latency do\n    local value, count = latency(i)\n"
        "    io.write(string.format('L %d %d\\n', value, count))\n  end\nend\n",
        r"RESULT (\d+) (\d+)",
    )  # fmt: skip
    found = re.findall(r"^L (\d+) (\d+)$", out, re.M)
    return {"requests": int(m[1]), "errors": int(m[2]), "latencies": {int(v): int(c) for v, c in found}}


def wrk(
    url: str, route: str, body: bytes | None, connections: int, headers: dict[str, str] | None = None
) -> dict[str, float]:
    m, _ = _run_wrk(url, route, body, headers, connections, DURATION,
        "done = function(summary, latency, requests)\n"
        "  io.write(string.format('RESULT %d %d %d %f %f\\n', summary.requests, summary.errors.status,"
        " summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,"
        " latency:percentile(50) / 1000, latency:percentile(99) / 1000))\nend\n",
        r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)",
    )  # fmt: skip
    requests, bad_status, socket_errors = int(m[1]), int(m[2]), int(m[3])
    return {
        "rps": requests / DURATION,
        "p50": float(m[4]),
        "p99": float(m[5]),
        "errors": bad_status + socket_errors,
    }


def measure(label: str, url: str, pid: int, ready_s: float, body: bytes) -> dict[str, object]:
    host, port = url.removeprefix("http://").split(":")
    p50, p99 = sequential(host, int(port), body)
    load = {c: wrk(url, "/invocations", body, c) for c in CONNECTIONS}
    return {
        "label": label,
        "ready_s": ready_s,
        "seq_p50": p50,
        "seq_p99": p99,
        "load": load,
        "rss": rss_mb(pid),
    }


def quickstart_model() -> tuple[Path, Any, Any, bytes]:
    """A fresh store and deployments folder, the quickstart forest registered as cancer/1, and a
    one-row JSON body: ``(folder, X, model, body)``."""
    tmp = Path(tempfile.mkdtemp(prefix="nbdeploy-bench-"))
    os.environ.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db", NBDEPLOY_HOME=str(tmp / "deployments"),
        MLFLOW_DISABLE_TELEMETRY="true",
    )  # fmt: skip
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    import nbdeploy

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(X, y)
    nbdeploy.register(model, "cancer", X, y)
    body = json.dumps({"dataframe_split": {"columns": list(X.columns), "data": [X.iloc[0].tolist()]}}).encode()
    return tmp, X, model, body


def in_process_ms(model: Any, row: Any) -> float:
    """Median milliseconds of ``model.predict(row)`` in this process, over 300 calls."""
    timings = []
    for _ in range(300):
        t0 = time.perf_counter()
        model.predict(row)
        timings.append((time.perf_counter() - t0) * 1000)
    return statistics.median(timings)


def main() -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")
    import nbdeploy

    tmp, X, model, body = quickstart_model()

    in_process = in_process_ms(model, X.iloc[:1])

    results = []
    t0 = time.perf_counter()
    dep = nbdeploy.serve("cancer/1", name="bench")
    ready = time.perf_counter() - t0
    try:
        assert dep.pid is not None
        results.append(measure("nbdeploy", dep.url, dep.pid, ready, body))
        client_bound = wrk(dep.url, "/ping", None, 16)
    finally:
        dep.stop()
    start = (dep.path, dep.token, Path(dep.current.model_path) / "model.pkl", X.shape[1], body)

    port = 5000 + os.getpid() % 1000
    mlflow = shutil.which("mlflow") or "mlflow"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [mlflow, "models", "serve", "-m", "models:/cancer/1", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        ready = time.perf_counter() - t0
        results.append(measure("mlflow models serve", f"http://127.0.0.1:{port}", proc.pid, ready, body))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)

    ours, theirs = results
    print(
        f"\nmodel: RandomForest 100 trees, breast_cancer (30 features); one-row JSON requests; wrk {DURATION} s per row"
    )
    print(f"in-process model.predict(1 row) p50: {in_process:.2f} ms\n")
    print(f"{'':34}{'nbdeploy':>14}{'mlflow serve':>16}{'ratio':>10}")

    def line(label: str, a: float, b: float, unit: str, better_low: bool) -> None:
        ratio = b / a if better_low else a / b
        print(f"{label:34}{a:>11.2f} {unit:<3}{b:>12.2f} {unit:<3}{ratio:>9.1f}x")

    line("launch -> ready", ours["ready_s"], theirs["ready_s"], "s", True)  # type: ignore[arg-type]
    line("sequential p50", ours["seq_p50"], theirs["seq_p50"], "ms", True)  # type: ignore[arg-type]
    line("sequential p99", ours["seq_p99"], theirs["seq_p99"], "ms", True)  # type: ignore[arg-type]
    for c in CONNECTIONS:
        a, b = ours["load"][c], theirs["load"][c]  # type: ignore[index]
        line(f"{c:>2} connections: requests/s", a["rps"], b["rps"], "", False)
        line(f"{c:>2} connections: p50", a["p50"], b["p50"], "ms", True)
        line(f"{c:>2} connections: p99", a["p99"], b["p99"], "ms", True)
        if a["errors"] or b["errors"]:
            print(f"   errors: nbdeploy {a['errors']}, mlflow {b['errors']}")
    line("RSS of all server processes", ours["rss"], theirs["rss"], "MB", True)  # type: ignore[arg-type]
    print(f"\nclient bound check: wrk against nbdeploy /ping at 16 connections: {client_bound['rps']:.0f} req/s")
    print(f"sequential p50 - in-process predict: {ours['seq_p50'] - in_process:.2f} ms")  # type: ignore[operator]
    from start_time import compare

    compare(*start)  # the floor and the server's start, side by side
    shutil.rmtree(tmp, ignore_errors=True)


def peak_rss_mib(code: str) -> float:
    """MiB of the largest resident set of a fresh interpreter running ``code`` (its VmHWM:
    ``ru_maxrss`` would count the parent's memory at the fork)."""
    code += "\nprint(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
