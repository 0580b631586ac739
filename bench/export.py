"""Export benchmark: 1M logged requests from request logs to Parquet, beside pandas reading
the same rows from Parquet; and peak memory as the log grows.

    python bench/export.py [REQUESTS]

1. A request log of REQUESTS (default 1,000,000) one-row requests of 30 features, written
   as the server writes it (one JSON line each, with predictions and confidences), is
   exported (``export_logs``, the code of ``%deploy export``) — the median of 3 runs.
2. The anchor: ``pandas.read_parquet`` of the exported file (the same rows, already in
   Parquet) — the median of 3 runs. Prints export / anchor.
3. What any export that writes a Parquet file pays before it reads a row: writing the same
   rows, from memory (``pyarrow.parquet.write_table``), with the export's settings and with
   the fastest ones (no compression, no statistics), as a ratio to the anchor. Then what an
   export whose rows were already in Parquet would take through Arrow: the rows read from an
   uncompressed Parquet copy and written with the fastest settings, five rounds, each against
   the anchor run just before it.
4. For scale, ``pandas.read_json(lines=True)`` on the first 100,000 lines of the log.
5. Peak RSS of a fresh process exporting a quarter of the log and all of it: memory bounded by
   the block (``CHUNK_BYTES``) grows little with the log; the log's size is printed beside it.
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


def export_once(folder: Path, out: Path) -> float:
    from nbdeploy.deployments.export import export_logs

    t0 = time.perf_counter()
    result = export_logs(folder, features(), out)
    elapsed = time.perf_counter() - t0
    assert result.skipped == 0, result
    return elapsed


def peak_rss(folder: Path) -> float:
    """MiB of the largest resident set of a process that exports ``folder``'s log."""
    return peak_rss_mib(
        "import sys; from pathlib import Path; sys.path.insert(0, 'bench'); import export as b;"
        f"b.export_once(Path({str(folder)!r}), Path({str(folder)!r}) / 'out.parquet')"
    )


def anchor(exported: Path) -> float:
    """Seconds ``pandas.read_parquet`` takes to read the exported rows."""
    import pandas as pd

    t = time.perf_counter()
    pd.read_parquet(exported)
    return time.perf_counter() - t


def write_floor(exported: Path, anchor_s: float) -> None:
    """Print the time to write the exported rows, already in memory, and to copy them from
    Parquet to Parquet, beside the anchor."""
    import pyarrow.parquet as pq

    from nbdeploy.deployments.export_schema import VARIANT, VERSION, public_names

    table = pq.read_table(exported)
    names = public_names(features())
    dictionary = [names[VARIANT], names[VERSION]]  # the columns export writes with dictionaries
    settings = {"as export writes them": {"use_dictionary": dictionary},
                "no compression, no statistics": {"use_dictionary": False, "compression": "none",
                                                  "write_statistics": False}}  # fmt: skip

    def write(options: dict[str, object]) -> float:
        t = time.perf_counter()
        pq.write_table(table, exported.with_name("floor.parquet"), **options)  # type: ignore[arg-type]
        return time.perf_counter() - t

    for label, options in settings.items():
        write_s = statistics.median(write(options) for _ in range(3))
        print(f"writing the same rows from memory, {label}: {write_s:.2f} s, "
              f"{write_s / anchor_s:.2f}x the anchor")  # fmt: skip
    converted = exported.with_name("converted.parquet")  # the rows as a log converted to Parquet would hold them
    pq.write_table(table, converted, compression="none")
    fastest = settings["no compression, no statistics"]

    def copy() -> float:
        t = time.perf_counter()
        pq.write_table(pq.read_table(converted, memory_map=True), exported.with_name("copy.parquet"), **fastest)
        return time.perf_counter() - t

    ratios = []
    for _ in range(5):  # side by side: each round against the anchor run just before it
        anchor_s = anchor(exported)
        ratios.append(copy() / anchor_s)
    print(f"reading the same rows from Parquet and writing them through Arrow, fastest settings: "
          f"{statistics.median(ratios):.2f}x the anchor (rounds {', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip


def main() -> None:
    import pandas as pd

    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
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
        export_s = statistics.median(export_once(folder, out) for _ in range(3))
        rows = len(pd.read_parquet(out))
        assert rows == requests, rows

        anchor_s = statistics.median(anchor(out) for _ in range(3))
        print(f"export {export_s:.2f} s   pandas.read_parquet of the same rows {anchor_s:.2f} s   "
              f"ratio {export_s / anchor_s:.2f}x (target <= 2x)")  # fmt: skip
        write_floor(out, anchor_s)
        t = time.perf_counter()
        pd.read_json(folder / "requests.jsonl", lines=True, chunksize=100_000).__iter__().__next__()
        first = time.perf_counter() - t
        print(f"for scale: pandas.read_json(lines=True) parses the first 100,000 lines of the log in {first:.2f} s "
              f"(~{first * requests / 100_000:.0f} s for the log)")  # fmt: skip
        small, full = peak_rss(quarter), peak_rss(folder)
        print(f"peak RSS exporting {requests // 4:,} requests {small:.0f} MiB, {requests:,} requests {full:.0f} MiB "
              f"(log {size:,.0f} MiB; ratio {full / small:.2f}x for 4x the log)")  # fmt: skip
        print(f"this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB peak")


if __name__ == "__main__":
    main()
