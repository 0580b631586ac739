"""HTTPS against plain HTTP: the same model served twice, measured in the same run, interleaved.

    apt-get install -y wrk
    python bench/tls.py                       # 16 connections, 6 rounds of 6 s
    BENCH_CONNECTIONS=1,16 BENCH_ROUNDS=8 python bench/tls.py

Two deployments of the quickstart forest (``serve`` and ``serve --tls``), each idle while
the other is measured. Each round runs wrk against each in turn (the order alternating, so
drift in the machine's speed falls on both) and reads the server's CPU time from /proc
before and after. wrk keeps its connections open, as a client of a deployed model does, so
the handshake is paid once per connection; the cost measured is encryption per request.
Prints each round, then medians and the ratios HTTPS/HTTP (target: requests/s >= 0.8x at 16
connections).
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import serving
from serving import quickstart_model, wrk
from serving_ab import cpu_seconds

CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "16").split(",")]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "6"))


def measure(url: str, pid: int, body: bytes, connections: int) -> tuple[float, float]:
    """(requests/s, CPU s per 1,000 requests) of one wrk run."""
    before = cpu_seconds(pid)
    result = wrk(url, "/invocations", body, connections)
    if result["errors"]:
        raise RuntimeError(f"{url}: {result['errors']:.0f} errors")
    return result["rps"], (cpu_seconds(pid) - before) / (result["rps"] * serving.DURATION) * 1000


def main() -> None:
    serving.DURATION = int(os.environ.get("BENCH_SECONDS", "6"))
    _tmp, _x, _model, body = quickstart_model()
    import nbdeploy

    servers = {"http": nbdeploy.serve("cancer/1", name="plain")}
    servers["https"] = nbdeploy.serve("cancer/1", name="tls", tls=True)
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {(n, c): [] for n in servers for c in CONNECTIONS}
    try:
        for r in range(ROUNDS):
            order = list(servers) if r % 2 == 0 else list(servers)[::-1]
            for c in CONNECTIONS:
                for label in order:
                    dep = servers[label]
                    runs[label, c].append(measure(dep.url, dep.pid, body, c))
                shown = ", ".join(f"{n} {runs[n, c][-1][0]:.0f} req/s {runs[n, c][-1][1]:.3f} CPU s/1k"
                                  for n in servers)  # fmt: skip
                print(f"round {r + 1} at {c:>2} connections: {shown}", flush=True)
    finally:
        for dep in servers.values():
            dep.stop()
    print(f"\nHTTPS against HTTP, {ROUNDS} interleaved rounds of {serving.DURATION} s (medians)")
    for c in CONNECTIONS:
        tls, plain = runs["https", c], runs["http", c]
        rps = statistics.median(a for a, _ in tls) / statistics.median(a for a, _ in plain)
        cpu = statistics.median(b for _, b in tls) / statistics.median(b for _, b in plain)
        print(f"{c:>2} connections: requests/s ratio {rps:.3f} (target >= 0.8 at 16), CPU per request ratio {cpu:.3f}")


if __name__ == "__main__":
    main()
