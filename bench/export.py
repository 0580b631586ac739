"""Export benchmark: 1M logged requests from request logs to Parquet, beside pandas reading
the same rows from Parquet; and peak memory as the log grows.

    python bench/export.py [REQUESTS] [ROUNDS]

1. A request log of REQUESTS (default 1,000,000) one-row requests of 30 features, written
   as the server writes it (one JSON line each, with predictions and confidences).
2. The anchor: ``pandas.read_parquet`` of the exported file (the same rows, already in
   Parquet).
3. ``export`` that parses the whole log (``export_logs(columns=False)``: what an export did
   before the log had a columnar copy, and does for bytes the copy has not reached): the
   median of 3 runs, over the anchor.
4. The columnar copy made as the server's idle converter makes it (``convert_file``, the
   converter's code): its time is paid while the log is written, off the request path.
5. ``export`` as a user runs it (``export_logs``: rows read from the copy, the rest parsed),
   ROUNDS rounds (default 7), each against the anchor run just before it: the median of the
   ratios and every round. The output file is removed before each round, outside the timing
   (an export writes a new file; replacing one of 250 MB costs the file system 0.05 s more).
6. What the writer costs: the same rows written from memory by pyarrow's writer and by
   polars's (the one ``export`` uses), over the anchor.
7. For scale, ``pandas.read_json(lines=True)`` on the first 100,000 lines of the log.
8. Peak RSS of a fresh process exporting a quarter of the log and all of it, from the copy
   and parsing: memory bounded by a block (``CHUNK_BYTES``) or a segment grows little with
   the log; the log's size is printed beside it.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serving import peak_rss_mib

FEATURES = 30


def write_log(path: Path, requests: int, seed: int = 0) -> None:
    """``requests`` records shaped like the server's (see ``serving/routes.py``)."""
    rng = np.random.default_rng(seed)
    now = time.time() - requests * 0.001
    with path.open("w") as fh:
        for start in range(0, requests, 100_000):
            n = min(100_000, requests - start)
            X = rng.normal(size=(n, FEATURES)).round(6)
            lines = []
            for i in range(n):
                t = now + (start + i) * 0.001
                doc = {"ts": t, "id": f"r{start + i:08d}", "version": 1, "rows": 1, "inputs": [X[i].tolist()],
                       "predictions": [int(X[i, 0] > 0)], "confidence": [0.9], "latency_ms": 1.3, "status": 200,
                       "answered": t + 0.0013}  # fmt: skip
                lines.append(json.dumps(doc, separators=(",", ":")))
            fh.write("\n".join(lines) + "\n")


def features() -> object:
    from nbdeploy.deployments.export_rows import Features

    return Features([f"f{i}" for i in range(FEATURES)], ["double"] * FEATURES)


def export_once(folder: Path, out: Path, columns: bool = True) -> float:
    from nbdeploy.deployments.export import export_logs

    out.unlink(missing_ok=True)  # a new file, as an export writes (outside the timing)
    t0 = time.perf_counter()
    result = export_logs(folder, features(), out, columns=columns)
    elapsed = time.perf_counter() - t0
    assert result.skipped == 0, result
    return elapsed


def convert(folder: Path) -> float:
    """Seconds to make the log's columnar copy, as the server's converter makes it."""
    import os

    from nbdeploy.deployments.export_files import open_logs
    from nbdeploy.deployments.log_converter import convert_file

    t0 = time.perf_counter()
    logs = open_logs(folder, None)
    for fh, size in logs.files:
        convert_file(folder, fh.fileno(), size, features(), [])
        assert os.fstat(fh.fileno()).st_size == size
    logs.close()
    return time.perf_counter() - t0


def peak_rss(folder: Path, columns: bool) -> float:
    """MiB of the largest resident set of a process that exports ``folder``'s log."""
    return peak_rss_mib(
        "import sys; from pathlib import Path; sys.path.insert(0, 'bench'); import export as b;"
        f"b.export_once(Path({str(folder)!r}), Path({str(folder)!r}) / 'out.parquet', {columns})"
    )


def anchor(exported: Path) -> float:
    """Seconds ``pandas.read_parquet`` takes to read the exported rows."""
    import pandas as pd

    t = time.perf_counter()
    pd.read_parquet(exported)
    return time.perf_counter() - t


def writers(exported: Path, anchor_s: float) -> None:
    """Print the time pyarrow's writer and polars's take to write the exported rows from memory."""
    import polars as pl
    import pyarrow.parquet as pq

    from nbdeploy.deployments.export_schema import VARIANT, VERSION, public_names

    table = pq.read_table(exported)
    names = public_names(features())
    target = exported.with_name("writer.parquet")

    def by_pyarrow() -> None:
        pq.write_table(table, target, use_dictionary=[names[VARIANT], names[VERSION]])

    def by_polars() -> None:
        pl.from_arrow(table).write_parquet(target, compression="snappy", statistics=True)  # type: ignore[union-attr]

    for label, write in (("pyarrow", by_pyarrow), ("polars", by_polars)):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            write()
            times.append(time.perf_counter() - t)
        print(f"writing the same rows from memory with {label}'s writer: {statistics.median(times):.2f} s, "
              f"{statistics.median(times) / anchor_s:.2f}x the anchor")  # fmt: skip


def main() -> None:
    import pandas as pd

    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    with tempfile.TemporaryDirectory() as tmp:
        folder, quarter = Path(tmp) / "full", Path(tmp) / "quarter"
        folder.mkdir()
        quarter.mkdir()
        t0 = time.perf_counter()
        write_log(folder / "requests.jsonl", requests)
        write_log(quarter / "requests.jsonl", requests // 4)
        size = (folder / "requests.jsonl").stat().st_size / (1 << 20)
        print(f"log of {requests:,} requests: {size:,.0f} MiB, written in {time.perf_counter() - t0:.1f} s")
        out = Path(tmp) / "export.parquet"
        parse_s = statistics.median(export_once(folder, out, columns=False) for _ in range(3))
        rows = len(pd.read_parquet(out))
        assert rows == requests, rows
        anchor_s = statistics.median(anchor(out) for _ in range(3))
        print(f"export parsing the whole log {parse_s:.2f} s   pandas.read_parquet of the same rows {anchor_s:.2f} s"
              f"   ratio {parse_s / anchor_s:.1f}x")  # fmt: skip
        convert_s = convert(folder)
        print(f"the log's columnar copy, made while it is written (the server's idle converter): {convert_s:.2f} s "
              f"for the whole log ({requests / convert_s:,.0f} requests/s)")  # fmt: skip
        parsed = pd.read_parquet(out)
        ratios, times = [], []
        for _ in range(rounds):  # side by side: each round against the anchor run just before it
            a = anchor(out)
            times.append(export_once(folder, out))
            ratios.append(times[-1] / a)
        pd.testing.assert_frame_equal(pd.read_parquet(out), parsed)  # the same rows as parsing gives
        print(f"export {statistics.median(times):.2f} s (median of {rounds}), over the anchor run before each: "
              f"median {statistics.median(ratios):.2f}x (target <= 2x); rounds "
              f"{', '.join(f'{r:.2f}' for r in ratios)}")  # fmt: skip
        writers(out, statistics.median(anchor(out) for _ in range(3)))
        t = time.perf_counter()
        pd.read_json(folder / "requests.jsonl", lines=True, chunksize=100_000).__iter__().__next__()
        first = time.perf_counter() - t
        print(f"for scale: pandas.read_json(lines=True) parses the first 100,000 lines of the log in {first:.2f} s "
              f"(~{first * requests / 100_000:.0f} s for the log)")  # fmt: skip
        convert(quarter)
        for columns in (True, False):
            small, full = peak_rss(quarter, columns), peak_rss(folder, columns)
            how = "from the copy" if columns else "parsing"
            print(f"peak RSS exporting {how}: {requests // 4:,} requests {small:.0f} MiB, {requests:,} requests "
                  f"{full:.0f} MiB (log {size:,.0f} MiB; ratio {full / small:.2f}x for 4x the log)")  # fmt: skip
        print(f"this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB peak")


if __name__ == "__main__":
    main()
