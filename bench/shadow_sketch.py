"""A sketch of a shadow fed from the request log, for ``BENCH_SHADOW=log-sketch python
bench/shadow_cost.py``: what a shadow would cost a client if the server did no work for it.

    python bench/shadow_sketch.py LOG MODEL.pkl OUT INTERVAL_S

Every INTERVAL_S seconds it reads the lines the server appended to LOG since its last look,
predicts the champion's logged rows with the pickled model, and appends one record per
request to OUT (the request's id, the shadow's predictions). After each look it writes how
far into LOG it has read to ``OUT.pos``, so the bench can wait for it to catch up. It runs
under ``SCHED_IDLE``, as nbdeploy's shadow process does.

Not nbdeploy's shadow (which the server mirrors requests to, and which keeps accounts): no
rotation, no accounts, no labels. It bounds from below what the server's part of a shadow
costs a client.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def look(log: Path, position: int, model: object, out: Path) -> int:
    """Predict the requests appended to ``log`` after ``position``; the new position."""
    try:
        with log.open("rb") as fh:
            fh.seek(position)
            data = fh.read()
    except FileNotFoundError:
        return position
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next look
    records = [r for r in map(json.loads, data[:end].splitlines()) if "inputs" in r]
    if records:
        rows = [row for r in records for row in r["inputs"]]
        started = time.perf_counter()
        predicted = model.predict(np.asarray(rows, dtype=float)).tolist()  # type: ignore[attr-defined]
        latency_ms = (time.perf_counter() - started) * 1000
        lines, at = [], 0
        for r in records:
            n = len(r["inputs"])
            doc = {"ts": r["ts"], "id": r["id"], "shadow": True, "predictions": predicted[at : at + n],
                   "status": 200, "latency_ms": latency_ms, "answered": time.time()}  # fmt: skip
            lines.append(json.dumps(doc, separators=(",", ":")) + "\n")
            at += n
        with out.open("a") as fh:
            fh.write("".join(lines))
    return position + end


def main() -> None:
    log, model_path, out, interval = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    warnings.simplefilter("ignore")  # the forest was fitted with column names; the rows come without
    model = pickle.loads(model_path.read_bytes())
    position = 0
    while True:
        time.sleep(interval)
        position = look(log, position, model, out)
        Path(f"{out}.pos").write_text(str(position))


if __name__ == "__main__":
    main()
