"""Monitoring windows are exact: under overlapping requests, every snapshot's window holds
exactly the requests the request log says were answered in it."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import numpy as np
import pytest

from nbdeploy.monitoring.replay import answer_time
from nbdeploy.monitoring.windows import RequestWindows
from nbdeploy.serving.requestlog import read_records

WINDOW = "2s"  # short, so that its lower edge sweeps through the traffic during the test


def test_windows_count_requests_by_the_time_they_were_answered() -> None:
    rng = np.random.default_rng(0)
    start = np.sort(rng.uniform(0, 10, 4000))
    answered = start + rng.exponential(0.05, start.size)  # overlapping: order of answer != of start
    windows = RequestWindows(["x"], None, "regression", windows={"1s": 1.0})
    order = np.argsort(answered, kind="stable")
    for k, i in enumerate(order):
        windows.add(answered[i], 1.0, 200, f"r{i}", [[float(i)]], [0.0])
        if k % 97 == 0:  # read while the rings fill, as /monitor does
            now = float(answered[i]) + rng.uniform(-0.5, 0.5)
            w = windows.snapshot(now)["windows"]["1s"]
            added = np.isin(np.arange(answered.size), order[: k + 1])
            expected = int(np.sum((answered >= now - 1) & (answered <= now) & added))
            assert (w["requests"], w["rows"]) == (expected, expected), now


def test_entries_out_of_order_or_behind_a_clock_step_keep_the_rings_sorted() -> None:
    windows = RequestWindows(["x"], None, "regression", windows={"1s": 1.0})
    for ts in (5.0, 3.0, 4.0):
        windows.add(ts, 1.0, 200, f"r{ts}", [[ts]], [0.0])
    windows.fold()
    windows.add(2.0, 1.0, 200, "late", [[2.0]], [0.0])  # the wall clock stepped back
    windows.fold()
    assert windows.requests.take("ts", 0, 4)[0].tolist() == [3.0, 4.0, 5.0, 5.0]
    assert windows.snapshot(5.0)["windows"]["1s"]["requests"] == 3


async def _request(port: int, body: bytes, pause: float) -> int:
    """One /invocations request whose body arrives ``pause`` seconds after its headers, so
    that requests overlap and are answered in another order than they started."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    await asyncio.sleep(pause)
    writer.write(body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


async def _traffic(port: int, bodies: list[bytes], clients: int) -> tuple[list[int], list[dict[str, Any]]]:
    rng = random.Random(1)
    queue = list(bodies)
    statuses: list[int] = []
    snapshots: list[dict[str, Any]] = []

    async def client() -> None:
        while queue:
            statuses.append(await _request(port, queue.pop(), rng.expovariate(1 / 0.05)))

    async def watcher() -> None:
        while queue:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /monitor?window={WINDOW} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            raw = await reader.read()
            writer.close()
            snapshots.append(json.loads(raw.split(b"\r\n\r\n", 1)[1]))
            await asyncio.sleep(0.05)

    await asyncio.gather(watcher(), *(client() for _ in range(clients)))
    return statuses, snapshots


def test_overlapping_requests_are_counted_exactly(serving: Any, two_versions: str, name: str, cancer: Any) -> None:
    dep = serving(f"{two_versions}/1", name=name, windows=[WINDOW, "1m"])
    rows = cancer["X_test"].to_numpy()
    columns = list(cancer["X_test"].columns)
    bodies = [
        json.dumps({"dataframe_split": {"columns": columns, "data": [rows[i % len(rows)].tolist()]}}).encode()
        for i in range(3000)
    ]
    statuses, snapshots = asyncio.run(_traffic(dep.port, bodies, clients=48))
    assert statuses.count(200) == len(bodies)
    answered = np.array([answer_time(r) for r in read_records(dep.path / "requests.jsonl")])
    latency = np.array([r["latency_ms"] for r in read_records(dep.path / "requests.jsonl")], dtype=np.float32)
    starts = np.array([r["ts"] for r in read_records(dep.path / "requests.jsonl")])
    assert np.any(np.diff(starts) < 0), "the requests did not overlap: the test shows nothing"
    assert len(snapshots) > 20
    mid_traffic = 0
    for doc in snapshots:
        now, window = doc["now"], doc["windows"][WINDOW]
        inside = (answered >= now - 2.0) & (answered <= now)
        mid_traffic += 0 < inside.sum() < len(answered)
        assert window["requests"] == window["rows"] == int(inside.sum()), now
        if inside.any():
            expected = np.percentile(latency[inside], [50, 95, 99])
            got = [window["latency_ms"][p] for p in ("p50", "p95", "p99")]
            assert got == pytest.approx(expected.tolist(), rel=1e-6)
    assert mid_traffic > 10  # the window's edge crossed the traffic in most snapshots
