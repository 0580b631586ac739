"""What a shadow costs a client, measured in pairs of short windows: the issue's "client p99
with a shadow <= 1.10x without (same run)".

    apt-get install -y wrk
    python bench/shadow_cost.py

bench/experiments.py switches one deployment between modes, 6 s each; on a shared 2-core
machine whose speed moves by up to 2x within a minute, its round-by-round ratios of p99
spread from 0.6 to 2.0, wider than the effect to be measured. Here two deployments of the
quickstart forest run side by side for the whole run: one alone, one shadowed (a second
forest, every request mirrored). Each pair of windows measures both, one after the other
(the order alternating), with wrk at one connection and at 16, so the machine's drift falls
on both within seconds. Before each window the shadow has written down every mirror
of the window before (its backlog must not slow the deployment alone), and the deployment
measured gets a short warm-up (the shadow's batches are flowing when its window starts); the
other deployment idles meanwhile.

The latencies of every window are pooled per deployment (wrk's own histograms), and the
ratio of the pooled 99th percentiles is printed with a 90 % bootstrap interval over the
pairs (pairs resampled with replacement: it assumes the pairs are exchangeable, which the
alternating order and the drift being slow against one pair make reasonable; it is an
interval for this machine on this day, not for another). Beside it, the median of the pairs'
own p99 ratios, with a bootstrap interval the same way: one host stall of hundreds of
milliseconds in one window moves the pooled p99 of a whole run, and only that pair's ratio.

``BENCH_PAIRS`` (default 16) and ``BENCH_WINDOW_S`` (3) set the pairs and a window's length;
``BENCH_CONNECTIONS`` (``1,16``) the connections. ``BENCH_SHADOW=log-sketch`` replaces
nbdeploy's shadow by ``bench/shadow_sketch.py``, a process that predicts the same forest on
the rows of the shadowed deployment's request log every 2 s (``BENCH_SKETCH_S``), the server
doing nothing for it: what a shadow fed from the log could cost at best.
``BENCH_SHADOW_TREES`` (100) sizes the shadow's forest: a heavier challenger than the champion.
``BENCH_FREEZE_SHADOW=1`` stops the shadowed server's child processes (``SIGSTOP``) for each
of its windows, and starts them again after: the server's own part of the shadow.

``BENCH_TARGET=ray`` serves both deployments with ``--target ray`` on a one-node cluster
nbdeploy starts on loopback (``pip install -e ".[ray]"``), each with ``BENCH_REPLICAS``
(default 2) replicas of half a CPU (Ray's bookkeeping: the four replicas share the machine's
two cores with Ray's proxy, both hubs and wrk). There the shadow is counted by the
deployment's hub, and a window starts once the hub has counted a shadow answer for every
request the champion answered.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).parent))
import serving
from serving import quickstart_model, wrk_latencies

PAIRS = int(os.environ.get("BENCH_PAIRS", "16"))
WINDOW_S = int(os.environ.get("BENCH_WINDOW_S", "3"))
CONNECTIONS = tuple(int(c) for c in os.environ.get("BENCH_CONNECTIONS", "1,16").split(","))
WARM_UP = 150  # sequential requests before each window: the shadow's first batch is on its way
BOOTSTRAP = 2000
MODES = ("alone", "shadowed")
SHADOW = os.environ.get("BENCH_SHADOW", "nbdeploy")
SKETCH_S = os.environ.get("BENCH_SKETCH_S", "2")
TARGET = os.environ.get("BENCH_TARGET", "local")
REPLICAS = int(os.environ.get("BENCH_REPLICAS", "2"))
FREEZE = os.environ.get("BENCH_FREEZE_SHADOW") == "1"
SHADOW_TREES = int(os.environ.get("BENCH_SHADOW_TREES", "100"))


def percentile(latencies: Counter[int], q: float) -> float:
    """The ``q`` quantile (0..1) of a histogram {microseconds: count}, in milliseconds."""
    total = sum(latencies.values())
    rank, seen = q * total, 0
    for value in sorted(latencies):
        seen += latencies[value]
        if seen >= rank:
            return value / 1000
    return float("nan")


def pooled(windows: list[dict[str, Counter[int]]]) -> dict[str, Counter[int]]:
    """Each deployment's latencies over all ``windows``."""
    return {mode: sum((w[mode] for w in windows), Counter()) for mode in MODES}


def pooled_ratio(windows: list[dict[str, Counter[int]]], q: float = 0.99) -> float:
    """The shadowed deployment's pooled ``q`` quantile over the alone one's."""
    both = pooled(windows)
    return percentile(both["shadowed"], q) / percentile(both["alone"], q)


def interval(windows: list[dict[str, Counter[int]]], seed: int = 0) -> tuple[float, float]:
    """A 90 % bootstrap interval of :func:`pooled_ratio`, the pairs resampled (each window's
    histogram as arrays: summing Counters of 16 connections' latencies took minutes)."""
    import numpy as np

    arrays = [{m: (np.fromiter(w[m].keys(), float), np.fromiter(w[m].values(), float)) for m in MODES}
              for w in windows]  # fmt: skip

    def p99(picked: list[int], mode: str) -> float:
        values = np.concatenate([arrays[i][mode][0] for i in picked])
        counts = np.concatenate([arrays[i][mode][1] for i in picked])
        order = np.argsort(values, kind="stable")
        seen = np.cumsum(counts[order])
        return float(values[order][np.searchsorted(seen, 0.99 * seen[-1])])

    rng = random.Random(seed)
    ratios = []
    for _ in range(BOOTSTRAP):
        picked = rng.choices(range(len(windows)), k=len(windows))
        ratios.append(p99(picked, "shadowed") / p99(picked, "alone"))
    ratios.sort()
    return ratios[int(0.05 * BOOTSTRAP)], ratios[int(0.95 * BOOTSTRAP) - 1]


def pair_ratios(windows: list[dict[str, Counter[int]]]) -> list[float]:
    """Each pair's p99 ratio, shadowed over alone."""
    return [percentile(w["shadowed"], 0.99) / percentile(w["alone"], 0.99) for w in windows]


def median_ratio(windows: list[dict[str, Counter[int]]], seed: int = 0) -> tuple[float, float, float]:
    """The median of the pairs' p99 ratios, with a 90 % bootstrap interval (pairs resampled):
    a figure one host stall in one window cannot decide, as it can the pooled p99's."""
    ratios = pair_ratios(windows)
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(BOOTSTRAP))
    return statistics.median(ratios), medians[int(0.05 * BOOTSTRAP)], medians[int(0.95 * BOOTSTRAP) - 1]


def drained(dep: Any, timeout: float = 30.0) -> None:
    """Return once the shadow has answered and written down every mirror: a backlog left from
    its own window must not slow the other deployment's."""
    deadline = time.monotonic() + timeout
    if SHADOW == "log-sketch":
        log, read = dep.path / "requests.jsonl", dep.path / "sketch.jsonl.pos"
        while not read.exists() or int(read.read_text() or 0) < log.stat().st_size:
            if time.monotonic() > deadline:
                raise SystemExit(f"the sketch is still behind the log after {timeout:.0f} s")
            time.sleep(0.05)
        return
    while (left := in_flight(dep.experiment().state)) > 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"the shadow still has {left} mirrors in flight after {timeout:.0f} s")
        time.sleep(0.05)


@contextlib.contextmanager
def frozen(dep: Any) -> Iterator[None]:
    """The shadowed server's child processes (the shadow's) stopped for a window (``None``:
    nothing stopped): what the server's own part of a shadow costs."""
    import psutil

    children = psutil.Process(dep.pid).children() if dep is not None else []
    for child in children:
        child.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for child in children:
            child.send_signal(signal.SIGCONT)


def in_flight(state: dict[str, Any] | None) -> int:
    """Mirrors not written down yet: as the local server says, or (a Ray hub's accounts) the
    champion's answers the shadow has not answered yet."""
    if state is None:
        return 0
    if "mirrors_in_flight" in state:
        return int(state["mirrors_in_flight"])
    counts = state["counts"]
    shadowed = counts.get(state["challenger"]["label"], {}).get("shadowed", 0)
    return int(counts.get("champion", {}).get("requests", 0) - shadowed)


def main() -> None:
    from sklearn.ensemble import RandomForestClassifier

    import nbdeploy

    tmp, X, _model, body = quickstart_model()
    y = (X["mean radius"] > X["mean radius"].median()).astype(int)  # any labels: only the cost matters
    forest = RandomForestClassifier(n_estimators=SHADOW_TREES, random_state=1).fit(X, y)
    challenger = nbdeploy.register(forest, "cancer", X, y)
    deployments: dict[str, Any] = {}
    windows: dict[int, list[dict[str, Counter[int]]]] = {c: [] for c in CONNECTIONS}
    requests: dict[tuple[str, int], int] = Counter()
    sketch: subprocess.Popen[bytes] | None = None
    try:
        where = {"target": "ray", "replicas": REPLICAS, "replica_cpus": 0.5} if TARGET == "ray" else {}
        for mode in MODES:
            deployments[mode] = nbdeploy.serve("cancer/1", name=f"bench-{mode}", **where)
        sketch = start_shadow(deployments["shadowed"], challenger.ref, X, y)
        for k in range(PAIRS):
            for c in CONNECTIONS:
                pair: dict[str, Counter[int]] = {}
                for mode in MODES if k % 2 == 0 else MODES[::-1]:
                    dep = deployments[mode]
                    drained(deployments["shadowed"])
                    url = urlsplit(dep.url)
                    serving.sequential(url.hostname, url.port, body, n=WARM_UP, route=url.path + "/invocations")
                    with frozen(dep if mode == "shadowed" and FREEZE else None):
                        run = wrk_latencies(dep.url, "/invocations", body, c, WINDOW_S)
                    if run["errors"]:
                        raise SystemExit(f"{mode}: {run['errors']} errors at {c} connections")
                    pair[mode] = Counter(run["latencies"])
                    requests[mode, c] += run["requests"]
                windows[c].append(pair)
                shown = "  ".join(f"{m} p99 {percentile(pair[m], 0.99):.1f} ms" for m in MODES)
                print(f"pair {k + 1:>2} c{c:<3} {shown}", flush=True)
        drained(deployments["shadowed"])
        state = deployments["shadowed"].experiment().state
        if sketch is not None:
            print("records the sketch wrote:", sum(1 for _ in (deployments["shadowed"].path / "sketch.jsonl").open()))
    finally:
        if sketch is not None:
            sketch.kill()
            sketch.wait()
        for dep in deployments.values():
            try:
                dep.stop()
            except Exception as exc:  # the other one is stopped all the same
                print(f"could not stop {dep.name}: {exc}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    report(windows, requests, state)


def start_shadow(dep: Any, ref: str, X: Any, y: Any) -> subprocess.Popen[bytes] | None:
    """nbdeploy's shadow of ``ref`` on ``dep`` (``None``), or the log-fed sketch's process."""
    if SHADOW != "log-sketch":
        dep.shadow(ref, percent=100)
        return None
    from sklearn.ensemble import RandomForestClassifier

    model = dep.path / "sketch.pkl"  # the challenger's forest, fitted as main() registered it
    model.write_bytes(pickle.dumps(RandomForestClassifier(n_estimators=SHADOW_TREES, random_state=1).fit(X, y)))
    script = Path(__file__).with_name("shadow_sketch.py")
    args = [str(dep.path / "requests.jsonl"), str(model), str(dep.path / "sketch.jsonl"), SKETCH_S]
    return subprocess.Popen([sys.executable, str(script), *args])


def report(windows: dict[int, list[dict[str, Counter[int]]]], requests: dict[tuple[str, int], int],
           state: Any) -> None:  # fmt: skip
    print(f"\n{PAIRS} pairs of {WINDOW_S} s windows; latencies pooled per deployment")
    for c, pairs in windows.items():
        both = pooled(pairs)
        shown = "  ".join(f"{m}: {requests[m, c] / (PAIRS * WINDOW_S):.0f} req/s, p50 {percentile(both[m], 0.5):.2f}"
                          f" p99 {percentile(both[m], 0.99):.2f} ms" for m in MODES)  # fmt: skip
        low, high = interval(pairs)
        print(f"c{c}: {shown}")
        print(f"c{c}: client p99 with a shadow / without {pooled_ratio(pairs):.3f} "
              f"(90 % bootstrap interval over pairs {low:.3f} to {high:.3f}; target <= 1.10)")  # fmt: skip
        middle, low, high = median_ratio(pairs)
        print(f"c{c}: median of the pairs' p99 ratios {middle:.3f} (90 % bootstrap interval {low:.3f} to {high:.3f})")
    if state is not None:
        print(
            "shadow counts at the end:",
            state["counts"],
            "mirrors dropped:",
            state["counts"].get(state["challenger"]["label"], {}).get("mirror_dropped", 0),
        )


if __name__ == "__main__":
    main()
