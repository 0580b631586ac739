"""One client sending the worst bodies under the size limit must not hurt another: the
second client's ``/ping`` and one-row predictions keep p99 <= 100 ms (the bound the trust
issue sets), and the server's memory stops growing after the first round of bodies.

This is the one test that compares a latency with a bound, because the bound is the
requirement; it prints the figures it measured."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

# p99 bounds under attack: measured with the machine to itself (conftest.py runs it alone)
pytestmark = [pytest.mark.timeout(600), pytest.mark.alone]

LIMIT = 16 << 20  # the default body limit


def _under_limit(make: Any, n: int = 1000) -> bytes:
    """``make(n)`` for the largest ``n`` (growing by 25 %) whose body stays under the limit."""
    body = make(n)
    while len(grown := make(int(n * 1.25))) < LIMIT:
        body, n = grown, int(n * 1.25)
    return body


def worst_bodies(X: pd.DataFrame) -> dict[str, tuple[bytes, str]]:
    cols, rows = list(X.columns), X.to_numpy()
    tile = lambda n: np.tile(rows, (n // len(rows) + 1, 1))[:n]  # noqa: E731
    js = lambda doc: json.dumps(doc).encode()  # noqa: E731
    return {
        "rows (split)": (_under_limit(lambda n: js({"dataframe_split": {"columns": cols, "data": tile(n).tolist()}})),
                         "application/json"),
        "rows (records)": (_under_limit(lambda n: js({"dataframe_records": [dict(zip(cols, r, strict=True))
                                                                            for r in tile(n).tolist()]})),
                           "application/json"),
        "rows (csv)": (_under_limit(lambda n: pd.DataFrame(tile(n), columns=cols).to_csv(index=False).encode()),
                       "text/csv"),
        "a million keys": (_under_limit(lambda n: js({f"k{i}": 0 for i in range(n)}), 100_000), "application/json"),
        "deep nesting": (b"[" * (LIMIT - 1), "application/json"),
        "1024 columns": (_under_limit(lambda n: js({"dataframe_split": {"columns": cols + [f"x{i}" for i in range(994)],
                                                                        "data": [[1.0] * 1024] * n}})),
                         "application/json"),
        "strings for numbers": (_under_limit(lambda n: js({"dataframe_split": {"columns": cols,
                                                                               "data": [["abc"] * 30] * n}})),
                                "application/json"),
    }  # fmt: skip


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


def test_the_worst_bodies_do_not_hurt_another_client(dep: Any, cancer: Any) -> None:
    bodies = worst_bodies(cancer["X_test"])
    assert all(len(body) <= LIMIT for body, _ in bodies.values())
    one_row = {"dataframe_split": json.loads(cancer["X_test"].head(1).to_json(orient="split", index=False))}
    noisy: dict[str, list[int]] = {what: [] for what in bodies}
    rss: list[float] = []
    stop = threading.Event()

    def noisy_client() -> None:
        with httpx.Client(base_url=dep.url, timeout=120) as client:
            for _round in range(4):
                for what, (body, content_type) in bodies.items():
                    noisy[what].append(client.post("/invocations", content=body,
                                                   headers={"Content-Type": content_type}).status_code)  # fmt: skip
                rss.append(_rss_mb(dep.pid))
        stop.set()

    latencies: dict[str, list[float]] = {"ping": [], "predict": []}
    thread = threading.Thread(target=noisy_client)
    thread.start()
    with httpx.Client(base_url=dep.url, timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            assert client.get("/ping").status_code == 200
            latencies["ping"].append(time.perf_counter() - started)
            started = time.perf_counter()
            assert client.post("/invocations", json=one_row).status_code == 200
            latencies["predict"].append(time.perf_counter() - started)
            time.sleep(0.01)
    thread.join()
    p99 = {what: float(np.percentile(values, 99)) * 1000 for what, values in latencies.items()}
    print(f"noisy neighbour: {len(latencies['ping'])} pings and predictions; p99 ms {p99}; RSS MB {rss}; "
          f"statuses {noisy}")  # fmt: skip
    assert all(s < 500 for statuses in noisy.values() for s in statuses), noisy
    assert {noisy["rows (split)"][0], noisy["rows (csv)"][0], noisy["a million keys"][0]} == {200, 400}
    assert len(latencies["ping"]) > 50
    assert p99["ping"] <= 100 and p99["predict"] <= 100, p99
    # A leak grows every round: a request's body kept would add 7 x 16 MiB a round. The
    # allocator's high-water mark may rise after the first round too (+60 MB seen in one run
    # of three, +71 MB in another: 361, 352, 391, 423 MB), so the bound is on the rounds after
    # it, and above what the allocator was seen to do.
    assert max(rss[2:]) - rss[1] < 96 and rss[-1] - rss[0] < 128, rss
