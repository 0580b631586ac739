"""Ray benchmark: the same model served locally and on Ray with 1 and 2 replicas, same run.

    apt-get install -y wrk                 # the load generator (Debian package)
    pip install -e ".[ray]"
    python bench/ray_serving.py            # prints a table and the ratios to the local server

Trains and registers the quickstart RandomForest (100 trees) as in ``bench/serving.py``,
starts a one-node Ray cluster on loopback (``ray start --head``, all the machine's CPUs),
then measures requests/s and latency p50/p99 from wrk at 16 and 64 connections of one-row
JSON requests against: the local server (``%deploy serve``), and ``--target ray`` with 1
and with 2 replicas (each replica reserving 1 CPU). Everything shares the machine's cores:
the client, Ray's HTTP proxy, the replicas and the local server when it runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import quickstart_model, wrk

from nbdeploy.deployments.ray_client import free_port, ray_cli

CONNECTIONS = (16, 64)


def _load(url: str, body: bytes) -> dict[int, dict[str, float]]:
    wrk(url, "/invocations", body, 16)  # warm-up: first requests pay for imports and caches
    return {c: wrk(url, "/invocations", body, c) for c in CONNECTIONS}


def main() -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")
    tmp, _X, _model, body = quickstart_model()
    import nbdeploy

    results: dict[str, dict[int, dict[str, float]]] = {}
    local = nbdeploy.serve("cancer/1", name="bench-local")
    try:
        results["local server"] = _load(local.url, body)
    finally:
        local.stop()

    temp = tempfile.mkdtemp(prefix="nbd-rb-", dir="/tmp")
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = subprocess.Popen(
        [*ray_cli(), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--include-dashboard=false", "--disable-usage-stats", f"--num-cpus={os.cpu_count()}", f"--temp-dir={temp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )  # fmt: skip
    try:
        for replicas in (1, 2):
            started = time.perf_counter()
            dep = nbdeploy.serve(
                "cancer/1", name=f"bench-ray{replicas}", target="ray", replicas=replicas, address=address,
                port=free_port() if replicas == 1 else 0, replica_cpus=1,
            )  # fmt: skip
            print(f"ray, {replicas} replica(s): deployed in {time.perf_counter() - started:.1f} s", flush=True)
            try:
                results[f"ray, {replicas} replica{'s' if replicas > 1 else ''}"] = _load(dep.url, body)
            finally:
                dep.stop()
    finally:
        os.killpg(head.pid, 15)
        try:
            head.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)

    base = results["local server"]
    print(f"\nmodel: RandomForest 100 trees, breast_cancer; one-row JSON requests; wrk; {os.cpu_count()} cores shared")
    print(
        f"{'server':<20}"
        + "".join(f"{f'{c} conns req/s':>18}{'p50 ms':>9}{'p99 ms':>9}{'vs local':>10}" for c in CONNECTIONS)
    )
    for label, load in results.items():
        cells = ""
        for c in CONNECTIONS:
            r = load[c]
            cells += f"{r['rps']:>18.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}{r['rps'] / base[c]['rps']:>9.2f}x"
            if r["errors"]:
                cells += f" ({r['errors']:.0f} errors)"
        print(f"{label:<20}{cells}")


if __name__ == "__main__":
    main()
