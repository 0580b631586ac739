"""Batch-scoring benchmark: 1M rows x 30 features through ``nbdeploy.batch`` with 1 and 2
scoring processes, beside the model predicting in this process; and memory against the input.

    python bench/batch.py [ROWS]

1. A 200-tree forest (depth 12) on 30 features, registered; ROWS (default 1,000,000) rows in a
   Parquet file.
2. The anchor: ``predict_proba`` of the whole frame in this process (one core, as scikit-learn's
   forest predicts with ``n_jobs=None``).
3. ``nbdeploy.batch`` with 1 worker and with 2 (chunks of 50,000 rows), alternated twice; each
   run's output is checked against the anchor's predictions (equal, row for row). Prints
   rows/s and the ratio 2 workers / 1 worker (target >= 1.6x on this 2-core machine).
4. Peak RSS of a fresh process scoring a quarter of the rows and all of them (VmHWM; the
   scoring processes each hold one chunk): bounded by the chunk, not the input.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serving import peak_rss_mib

CHUNK = 50_000


def peak_rss(ref: str, data: Path, out: Path) -> float:
    return peak_rss_mib(
        f"import nbdeploy; nbdeploy.batch({ref!r}, {str(data)!r}, {str(out)!r}, workers=2, log_run=False)"
    )


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    tmp = Path(tempfile.mkdtemp(prefix="nbdeploy-bench-batch-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    os.environ["NBDEPLOY_HOME"] = str(tmp / "home")
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    import nbdeploy

    X, y = make_classification(n_samples=20_000, n_features=30, n_informative=12, random_state=0)
    columns = [f"f{i}" for i in range(30)]
    train = pd.DataFrame(X, columns=columns)
    model = RandomForestClassifier(n_estimators=200, max_depth=12, random_state=0).fit(train, y)
    ref = nbdeploy.register(model, "bench-batch", train, y).ref
    big = pd.DataFrame(np.random.default_rng(1).normal(size=(rows, 30)), columns=columns)
    big.to_parquet(tmp / "in.parquet")
    big.iloc[: rows // 4].to_parquet(tmp / "quarter.parquet")

    t0 = time.perf_counter()
    expected = model.predict_proba(big).argmax(axis=1)
    anchor = time.perf_counter() - t0
    print(f"in-process predict_proba: {rows / anchor:,.0f} rows/s ({anchor:.1f} s)")

    rate: dict[int, list[float]] = {1: [], 2: []}
    steady: dict[int, list[float]] = {1: [], 2: []}  # after the processes have loaded the model
    for _ in range(2):
        for workers in (1, 2):
            out = tmp / f"out-{workers}.parquet"
            result = nbdeploy.batch(ref, tmp / "in.parquet", out, workers=workers, chunk_rows=CHUNK, log_run=False)
            got = pd.read_parquet(out, columns=["row", "prediction"])
            assert len(got) == rows and (got["row"].to_numpy() == np.arange(rows)).all()
            assert (got["prediction"].to_numpy() == model.classes_[expected]).all()
            rate[workers].append(rows / result.seconds)
            steady[workers].append(rows / (result.seconds - result.startup_seconds))
    one, two = statistics.median(rate[1]), statistics.median(rate[2])
    print(f"batch, 1 worker: {one:,.0f} rows/s   2 workers: {two:,.0f} rows/s   ratio {two / one:.2f}x "
          f"(target >= 1.6x); 1 worker / in-process {one * anchor / rows:.2f}x")  # fmt: skip
    one, two = statistics.median(steady[1]), statistics.median(steady[2])
    print(f"  once the model is loaded: 1 worker {one:,.0f} rows/s, 2 workers {two:,.0f} rows/s, "
          f"ratio {two / one:.2f}x; 1 worker / in-process {one * anchor / rows:.2f}x")  # fmt: skip
    small = peak_rss(ref, tmp / "quarter.parquet", tmp / "q-out.parquet")
    full = peak_rss(ref, tmp / "in.parquet", tmp / "f-out.parquet")
    print(f"peak RSS of the process running batch: {rows // 4:,} rows {small:.0f} MiB, {rows:,} rows {full:.0f} MiB "
          f"(input {(tmp / 'in.parquet').stat().st_size >> 20} MiB of Parquet; chunks of {CHUNK:,} rows)")  # fmt: skip


if __name__ == "__main__":
    main()
