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
in full. A sixth shadows the light challenger: what a shadow costs the clients apart from
its model's work. A seventh runs a shadow that mirrors one request in 10,000 (the least a
shadow may take): what an experiment's accounts of each request cost, with no mirror.

``BENCH_ROUNDS`` (default 5) and ``BENCH_SECONDS`` (6) set the rounds and their length;
``BENCH_MODES="one variant|shadow 100%"`` and ``BENCH_CONNECTIONS=1`` measure a part of the
table (the ratios need ``one variant``).
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
WARM_UP = 400  # requests sent after each switch, before a mode is measured
ALL_MODES = (
    "one variant",
    "canary 10%",
    "canary, pinned",
    "shadow 100%",
    "canary 10%, light",
    "shadow 100%, light",
    "shadow 0.01%",
)
# a part of the table, for a quicker look: BENCH_MODES="one variant|shadow 100%" BENCH_CONNECTIONS=1
MODES = tuple(os.environ.get("BENCH_MODES", "|".join(ALL_MODES)).split("|"))
CONNECTIONS = tuple(int(c) for c in os.environ.get("BENCH_CONNECTIONS", "1,16").split(","))
if set(MODES) - set(ALL_MODES):
    raise SystemExit(f"BENCH_MODES: unknown {sorted(set(MODES) - set(ALL_MODES))}; the modes are {'|'.join(ALL_MODES)}")


def switch(dep: Any, mode: str, challenger: str, light: str) -> None:
    if dep.spec.experiment is not None:
        dep.conclude(abort=True)
    if mode == "canary 10%, light":
        dep.canary(light, percent=10)
    elif mode in ("canary 10%", "canary, pinned"):
        dep.canary(challenger, percent=10)
    elif mode == "shadow 100%":
        dep.shadow(challenger, percent=100)
    elif mode == "shadow 100%, light":
        dep.shadow(light, percent=100)
    elif mode == "shadow 0.01%":
        dep.shadow(challenger, percent=0.01)


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
    host, port = dep.url.removeprefix("http://").split(":")
    runs: dict[tuple[str, int], list[dict[str, float]]] = {(m, c): [] for m in MODES for c in CONNECTIONS}
    try:
        for r in range(ROUNDS):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                switch(dep, mode, mv.ref, light.ref)
                # a mode's first second is not measured: the experiment just ended is still
                # being let go (its challenger's process stopped, its accounts collected)
                serving.sequential(host, int(port), body, n=WARM_UP)
                for c in CONNECTIONS:
                    pin = {"X-Nbdeploy-Variant": "champion"} if mode == "canary, pinned" else None
                    runs[mode, c].append(wrk(dep.url, "/invocations", body, c, pin))
                shown = ", ".join(f"c{c} {runs[mode, c][-1]['rps']:.0f} req/s p99 {runs[mode, c][-1]['p99']:.1f} ms"
                                  for c in CONNECTIONS)  # fmt: skip
                print(f"round {r + 1} {mode:<18} {shown}", flush=True)
        shadowed = dep.experiment().state if dep.spec.experiment is not None else None
    finally:
        dep.stop()

    def med(mode: str, c: int, key: str) -> float:
        return statistics.median(x[key] for x in runs[mode, c])

    print(f"\n{ROUNDS} interleaved rounds of {serving.DURATION} s, medians")
    print(f"{'':18}" + "".join(f"{f'c{c} req/s':>12}{f'c{c} p99 ms':>12}" for c in CONNECTIONS))
    for mode in MODES:
        print(f"{mode:<18}" + "".join(f"{med(mode, c, 'rps'):>12.0f}{med(mode, c, 'p99'):>12.1f}" for c in CONNECTIONS))
    base = "one variant"
    ratios = {"canary 10%": ("rps", "throughput with a 10% canary"),
              "canary 10%, light": ("rps", "a light challenger's"),
              "canary, pinned": ("rps", "routing alone, every request pinned to the champion"),
              "shadow 100%": ("p99", "client p99 with a shadow"),
              "shadow 100%, light": ("p99", "client p99 with a light shadow"),
              "shadow 0.01%": ("p99", "client p99 with the accounts alone (a shadow of 0.01%)")}  # fmt: skip
    for c in CONNECTIONS if base in MODES else ():
        shown = [f"{what} {med(mode, c, key) / med(base, c, key):.3f}" for mode, (key, what) in ratios.items()
                 if mode in MODES]  # fmt: skip
        print(f"c{c}, against one variant: " + "; ".join(shown))
        # each round's modes run back to back, so a round's own ratio is spared the machine's
        # drift between rounds (its speed moves by up to 2x here over minutes)
        for mode, (key, what) in ratios.items():
            if mode in MODES:
                paired = sorted(x[key] / b[key] for x, b in zip(runs[mode, c], runs[base, c], strict=True))
                print(f"  {what}, round by round: median {statistics.median(paired):.3f}, "
                      f"from {paired[0]:.3f} to {paired[-1]:.3f}")  # fmt: skip
    if shadowed is not None:
        print("shadow counts at the end:", shadowed["counts"])


if __name__ == "__main__":
    main()
