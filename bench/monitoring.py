"""Monitoring benchmark: its cost on serving, and the cost of its windows and drift passes.

    apt-get install -y wrk
    python bench/monitoring.py

1. requests/s at 16 connections (wrk, one-row JSON) for the same model served with
   monitoring on and off, alternated twice; the ratio on/off.
2. ``RequestWindows.snapshot`` — every window (1 min, 5 min, 1 h) with drift — over 100k
   logged rows x 30 features.
3. One drift pass (:mod:`nbdeploy.stats.drift`, PSI + KS per feature) over 1M rows x 30 features.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from serving import quickstart_model, wrk


def timed(fn: object, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    _tmp, _X, _model, body = quickstart_model()
    import nbdeploy
    from nbdeploy.monitoring.windows import RequestWindows
    from nbdeploy.stats import drift
    from nbdeploy.stats.profile import compute_profile

    rps: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(2):
        for monitor in (True, False):
            dep = nbdeploy.serve("cancer/1", name=f"bench-{monitor}", monitor=monitor)
            try:
                rps[monitor].append(wrk(dep.url, "/invocations", body, 16)["rps"])
            finally:
                dep.stop()
    on, off = statistics.mean(rps[True]), statistics.mean(rps[False])

    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.normal(size=(10_000, 30)), columns=[f"f{i}" for i in range(30)])
    profile = compute_profile(train)
    windows = RequestWindows(list(train.columns), profile, "classification", row_capacity=100_000)
    now = time.time()
    served = rng.normal(0.2, 1.1, size=(100_000, 30))
    for i in range(0, 100_000, 10):  # 10k requests of 10 rows over the last 50 minutes
        windows.add(now - 3000 + i * 0.03, 5.0, 200, str(i), served[i : i + 10], [0] * 10)
    t0 = time.perf_counter()
    windows.snapshot(now + 1)  # the first read folds the 10k queued requests and bins their rows
    first_s = time.perf_counter() - t0
    snapshot_s = timed(lambda: windows.snapshot(now + 1))

    big = rng.normal(0.1, 1.0, size=(1_000_000, 30))
    columns = [{**c, "rows": profile["rows"]} for c in profile["columns"]]
    drift_s = timed(lambda: [drift.column_drift(c, big[:, j]) for j, c in enumerate(columns)], repeat=3)

    print(f"\n16 connections, monitoring on : {on:8.0f} req/s   runs: {', '.join(f'{v:.0f}' for v in rps[True])}")
    print(f"16 connections, monitoring off: {off:8.0f} req/s   runs: {', '.join(f'{v:.0f}' for v in rps[False])}")
    print(f"throughput on / off           : {on / off:8.1%}   (target >= 95%)")
    print(f"all windows with drift, 100k rows x 30 features: {snapshot_s * 1000:6.0f} ms  (target <= 200 ms)")
    print(f"  the same, first read (folds and bins the rows) : {first_s * 1000:6.0f} ms")
    print(f"drift pass, 1M rows x 30 features              : {drift_s * 1000:6.0f} ms  (target <= 1000 ms)")


if __name__ == "__main__":
    main()
