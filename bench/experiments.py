"""What an experiment costs the clients of a deployment: one variant, a 10 % canary, a shadow.

    apt-get install -y wrk
    python bench/experiments.py

The quickstart forest (100 trees) is the champion; a second forest of the same size is the
challenger, so a canary's requests cost what the champion's do and any difference is the
routing and the second batcher. One deployment is switched between the three modes in
interleaved rounds (so drift in the machine's speed falls on all three), each measured with
wrk (one-row JSON requests) at 1 connection (a client alone: the shadow's work falls on the
other core) and 16 connections (the machine saturated). It prints medians and the ratios the
issue names: throughput with a canary / without, client p99 with a shadow / without. A fourth
mode runs the canary with every request pinned to the champion (``X-Nbdeploy-Variant``): the
cost of routing alone, without the challenger's predictions. A fifth runs a 10 % canary of a
light challenger (a logistic regression, whose ``predict`` costs little per call): the cost
of the split, the second batcher and the challenger's process, without a forest's fixed
cost per call, which a tenth of the traffic, arriving one or two requests at a time, pays
in full.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import serving
from serving import quickstart_model, wrk

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CONNECTIONS = (1, 16)
MODES = ("one variant", "canary 10%", "canary, pinned", "shadow 100%", "canary 10%, light")


def switch(dep: Any, mode: str, challenger: str, light: str) -> None:
    if dep.spec.experiment is not None:
        dep.conclude(abort=True)
    if mode == "canary 10%, light":
        dep.canary(light, percent=10)
    elif mode in ("canary 10%", "canary, pinned"):
        dep.canary(challenger, percent=10)
    elif mode == "shadow 100%":
        dep.shadow(challenger, percent=100)


def main() -> None:
    serving.DURATION = int(os.environ.get("BENCH_SECONDS", "6"))
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import nbdeploy

    _tmp, X, _model, body = quickstart_model()
    y = (X["mean radius"] > X["mean radius"].median()).astype(int)  # any labels: only the cost matters
    challenger = RandomForestClassifier(n_estimators=100, random_state=1).fit(X, y)
    mv = nbdeploy.register(challenger, "cancer", X, y)
    light = nbdeploy.register(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), "cancer", X, y)
    dep = nbdeploy.serve("cancer/1", name="bench-exp")
    runs: dict[tuple[str, int], list[dict[str, float]]] = {(m, c): [] for m in MODES for c in CONNECTIONS}
    try:
        for r in range(ROUNDS):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                switch(dep, mode, mv.ref, light.ref)
                for c in CONNECTIONS:
                    pin = {"X-Nbdeploy-Variant": "champion"} if mode == "canary, pinned" else None
                    runs[mode, c].append(wrk(dep.url, "/invocations", body, c, pin))
                shown = ", ".join(f"c{c} {runs[mode, c][-1]['rps']:.0f} req/s p99 {runs[mode, c][-1]['p99']:.1f} ms"
                                  for c in CONNECTIONS)  # fmt: skip
                print(f"round {r + 1} {mode:<12} {shown}", flush=True)
        shadowed = dep.experiment().state if dep.spec.experiment is not None else None
    finally:
        dep.stop()

    def med(mode: str, c: int, key: str) -> float:
        return statistics.median(x[key] for x in runs[mode, c])

    print(f"\n{ROUNDS} interleaved rounds of {serving.DURATION} s, medians")
    print(f"{'':14}" + "".join(f"{f'c{c} req/s':>12}{f'c{c} p99 ms':>12}" for c in CONNECTIONS))
    for mode in MODES:
        print(f"{mode:<14}" + "".join(f"{med(mode, c, 'rps'):>12.0f}{med(mode, c, 'p99'):>12.1f}" for c in CONNECTIONS))
    base = "one variant"
    for c in CONNECTIONS:
        canary = med("canary 10%", c, "rps") / med(base, c, "rps")
        light_canary = med("canary 10%, light", c, "rps") / med(base, c, "rps")
        routing = med("canary, pinned", c, "rps") / med(base, c, "rps")
        shadow = med("shadow 100%", c, "p99") / med(base, c, "p99")
        print(f"c{c}: throughput with a 10% canary / one variant: {canary:.3f} (a light challenger: "
              f"{light_canary:.3f}; routing alone, every request pinned to the champion: {routing:.3f}); "
              f"client p99 with a shadow / one variant: {shadow:.3f}")  # fmt: skip
    if shadowed is not None:
        print("shadow counts at the end:", shadowed["counts"])


if __name__ == "__main__":
    main()
