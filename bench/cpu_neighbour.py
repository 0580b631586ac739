"""What a neighbour process's CPU costs a server's client, by how the neighbour spends it: the
measurement behind nbdeploy.serving.pacing (a shadow's process works in short slices).

    apt-get install -y wrk
    python bench/cpu_neighbour.py                    # the default patterns
    python bench/cpu_neighbour.py 0.5/8 60/1000      # BUSY_MS/PERIOD_MS each

One deployment of the quickstart forest serves one wrk connection. Beside it, a process at
the lowest priority (``SCHED_IDLE``, as a shadow's process runs) burns the CPU for BUSY_MS of
every PERIOD_MS. For each pattern, pairs of 3 s windows measure the client with the burner and
without it (the order alternating, so the machine's drift falls on both); the ratio of the
pooled 99th percentiles is printed with a 90 % bootstrap interval over the pairs (it assumes
the pairs are exchangeable). ``0/1000`` burns nothing: the noise floor of the method.

``BENCH_PAIRS`` (default 12) sets the pairs per pattern.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import serving
from serving import quickstart_model, wrk_latencies
from shadow_cost import percentile

PAIRS = int(os.environ.get("BENCH_PAIRS", "12"))
PATTERNS = ("0/1000", "60/1000", "2/33", "0.5/8", "0.5/4")
WINDOW_S = 3
BOOTSTRAP = 2000


def burn(busy_ms: float, period_ms: float) -> None:
    """Keep a CPU busy ``busy_ms`` of every ``period_ms``, at the lowest priority, until killed."""
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    while True:
        end = time.perf_counter() + busy_ms / 1000
        while time.perf_counter() < end:
            sum(i * i for i in range(200))
        time.sleep((period_ms - busy_ms) / 1000)


def ratio(pairs: list[tuple[Counter[int], Counter[int]]]) -> float:
    """Pooled p99 with the burner over pooled p99 without."""
    without = sum((p[0] for p in pairs), Counter())
    with_ = sum((p[1] for p in pairs), Counter())
    return percentile(with_, 0.99) / percentile(without, 0.99)


def interval(pairs: list[tuple[Counter[int], Counter[int]]]) -> tuple[float, float]:
    rng = random.Random(0)
    ratios = sorted(ratio(rng.choices(pairs, k=len(pairs))) for _ in range(BOOTSTRAP))
    return ratios[int(0.05 * BOOTSTRAP)], ratios[int(0.95 * BOOTSTRAP) - 1]


def main(patterns: list[str]) -> None:
    import nbdeploy

    tmp, _X, _model, body = quickstart_model()
    dep = nbdeploy.serve("cancer/1", name="bench-neighbour")
    host, port = dep.url.removeprefix("http://").split(":")
    found: dict[str, list[tuple[Counter[int], Counter[int]]]] = {p: [] for p in patterns}
    try:
        serving.sequential(host, int(port), body, n=300)
        for k in range(PAIRS):
            for pattern in patterns:
                pair: dict[bool, Counter[int]] = {}
                for burning in (False, True) if k % 2 == 0 else (True, False):
                    burner = None
                    if burning:
                        burner = subprocess.Popen([sys.executable, __file__, "--burn", *pattern.split("/")])
                        time.sleep(0.3)
                    try:
                        run = wrk_latencies(dep.url, "/invocations", body, 1, WINDOW_S)
                    finally:
                        if burner is not None:
                            burner.kill()
                            burner.wait()
                    pair[burning] = Counter(run["latencies"])
                found[pattern].append((pair[False], pair[True]))
            print(f"pair {k + 1}/{PAIRS} done", flush=True)
    finally:
        dep.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{PAIRS} pairs of {WINDOW_S} s windows, one connection; client p99 with the neighbour / without")
    for pattern, pairs in found.items():
        busy, period = (float(x) for x in pattern.split("/"))
        low, high = interval(pairs)
        print(f"busy {busy:g} ms of every {period:g} ms ({busy / period:5.1%} of a core): "
              f"{ratio(pairs):.3f} (90 % interval {low:.3f} to {high:.3f})")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["--burn"]:
        burn(float(sys.argv[2]), float(sys.argv[3]))
    else:
        main(sys.argv[1:] or list(PATTERNS))
