"""nbdeploy's load test against plain wrk: the same deployment, the same run, interleaved.

    apt-get install -y wrk
    python bench/loadtest.py                        # 16 connections, 5 rounds of 6 s
    BENCH_ROUNDS=8 BENCH_SECONDS=10 python bench/loadtest.py

The quickstart forest, served once. Each round measures it with ``Deployment.loadtest``
(one level; its own warm-up second, its Lua script cycling formatted requests, psutil
reading the server between levels; not recorded in MLflow) and with plain wrk given the
same one-row body through ``wrk.body`` (wrk's fastest path: no Lua per request), in an
order that alternates between rounds. Prints each round, the medians and the ratio
loadtest / wrk of requests/s (target: within 15 % at 16 connections, so the generator
around wrk is not the bound).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import serving
from serving import quickstart_model, wrk

CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def main() -> None:
    serving.DURATION = int(os.environ.get("BENCH_SECONDS", "6"))
    _tmp, X, _model, body = quickstart_model()
    import nbdeploy

    dep = nbdeploy.serve("cancer/1", name="loadtest")
    row = json.loads(body)["dataframe_split"]
    rows = X[row["columns"]].head(1)  # the very row of the plain wrk body
    ours: list[float] = []
    plain: list[float] = []
    try:
        for r in range(ROUNDS):
            for who in (("ours", "wrk") if r % 2 == 0 else ("wrk", "ours")):
                if who == "ours":
                    report = dep.loadtest(rows, connections=[CONNECTIONS], duration=serving.DURATION, record=False)
                    ours.append(report.levels[0]["rps"])
                else:
                    result = wrk(dep.url, "/invocations", body, CONNECTIONS, {"Authorization": f"Bearer {dep.token}"})
                    if result["errors"]:
                        raise RuntimeError(f"plain wrk: {result['errors']:.0f} errors")
                    plain.append(result["rps"])
            print(f"round {r + 1}: loadtest {ours[-1]:.0f} req/s, plain wrk {plain[-1]:.0f} req/s", flush=True)
    finally:
        dep.stop()
    ratio = statistics.median(ours) / statistics.median(plain)
    print(f"\n{CONNECTIONS} connections, {ROUNDS} interleaved rounds of {serving.DURATION} s (medians): loadtest "
          f"{statistics.median(ours):.0f} req/s, plain wrk {statistics.median(plain):.0f} req/s, "
          f"ratio {ratio:.3f} (target within 15 %: 0.85 to 1.15)")  # fmt: skip


if __name__ == "__main__":
    main()
