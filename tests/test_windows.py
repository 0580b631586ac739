"""Monitoring windows against numpy on known data."""

from __future__ import annotations

import numpy as np
import pytest

from nbdeploy.monitoring.windows import RequestWindows, parse_window
from nbdeploy.stats import drift
from nbdeploy.stats.profile import compute_profile


def make(profile: dict | None = None, task: str = "classification", **kw: int) -> RequestWindows:
    return RequestWindows(columns=["a", "b"], profile=profile, task=task, **kw)


def test_counts_rates_percentiles_and_status_classes() -> None:
    rng = np.random.default_rng(1)
    latencies = rng.gamma(2.0, 3.0, 500).astype(np.float32)
    statuses = np.where(np.arange(500) % 50 == 0, 400, 200)
    statuses[7] = 500
    w = make()
    for i, (lat, st) in enumerate(zip(latencies, statuses, strict=True)):
        w.add(
            ts=1000.0 + i * 0.5, latency_ms=float(lat), status=int(st), rid=str(i), inputs=[[1.0, 2.0]], predictions=[1]
        )
    now = 1000.0 + 499 * 0.5
    doc = w.snapshot(now)
    last_minute = (1000.0 + np.arange(500) * 0.5) >= now - 60
    win = doc["windows"]["1m"]
    assert win["requests"] == int(last_minute.sum()) == 121
    assert win["rps"] == pytest.approx(121 / 60)
    expected = np.percentile(latencies[last_minute], [50, 95, 99])
    assert [win["latency_ms"][k] for k in ("p50", "p95", "p99")] == pytest.approx(expected.tolist())
    errors = statuses[last_minute]
    assert win["status_classes"] == {"2xx": int((errors == 200).sum()), "4xx": int((errors == 400).sum()), "5xx": 0}
    assert win["error_rate"] == pytest.approx((errors >= 500).mean())  # a client's 4xx is not the server's error
    whole = doc["windows"]["5m"]
    assert whole["requests"] == 500 and whole["status_classes"]["5xx"] == 1 and whole["error_rate"] == 1 / 500
    assert doc["total_requests"] == 500
    assert sum(doc["series"]["rps"]) * 10 == pytest.approx(500)


def test_rings_wrap_and_keep_the_newest() -> None:
    w = make(request_capacity=100, row_capacity=50)
    for i in range(250):
        w.add(ts=float(i), latency_ms=float(i), status=200, rid=str(i), inputs=[[i, i]], predictions=[i % 3])
    win = w.snapshot(now=250.0)["windows"]["5m"]
    assert win["requests"] == 100 and win["sampled"] is True
    assert win["latency_ms"]["p50"] == pytest.approx(np.percentile(np.arange(150, 250), 50))
    assert win["rows"] == 50
    assert win["predictions"]["counts"] == {str(k): int(np.sum(np.arange(200, 250) % 3 == k)) for k in range(3)}


def test_window_drift_equals_the_drift_module() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (2000, 2))
    import pandas as pd

    profile = compute_profile(pd.DataFrame(train, columns=["a", "b"]))
    served = np.column_stack([rng.normal(0, 1, 600), rng.normal(2.0, 1, 600)])  # b has drifted
    w = make(profile)
    for i in range(0, 600, 3):
        w.add(ts=10.0, latency_ms=1.0, status=200, rid=str(i), inputs=served[i : i + 3].tolist(), predictions=[0, 1, 0])
    found = {d["name"]: d for d in w.snapshot(now=11.0)["windows"]["1m"]["drift"]}
    for j, name in enumerate(["a", "b"]):
        col = {**profile["columns"][j], "rows": profile["rows"]}
        expected = drift.column_drift(col, served[:, j].astype(np.float32)).to_dict()
        assert found[name] == expected
    assert found["b"]["status"] == "drift" and found["a"]["status"] == "ok"
    assert w.snapshot(now=11.0)["windows"]["1m"]["drifted_features"] == ["b"]


def test_feedback_gives_live_accuracy_and_rmse() -> None:
    w = make()
    w.add(ts=1.0, latency_ms=1.0, status=200, rid="r1", inputs=[[0, 0], [1, 1]], predictions=[1, 0])
    w.add(ts=1.0, latency_ms=1.0, status=200, rid="r2", inputs=[[0, 0]], predictions=[1])
    assert w.feedback("r1", [1, 1]) and w.feedback("r2", [1])
    assert not w.feedback("nope", [1])
    win = w.snapshot(now=2.0)["windows"]["1m"]
    assert (win["labelled"], win["accuracy"]) == (3, pytest.approx(2 / 3))
    reg = make(task="regression")
    reg.add(ts=1.0, latency_ms=1.0, status=200, rid="x", inputs=[[0, 0], [0, 0]], predictions=[1.0, 3.0])
    reg.feedback("x", [2.0, 2.0])
    assert reg.snapshot(now=2.0)["windows"]["1m"]["rmse"] == pytest.approx(1.0)
    hist = reg.snapshot(now=2.0)["windows"]["1m"]["predictions"]
    assert hist["kind"] == "histogram" and sum(hist["counts"]) == 2


def test_feedback_before_the_request_is_kept() -> None:
    w = make()
    assert not w.feedback("early", [1])
    w.add(ts=1.0, latency_ms=1.0, status=200, rid="early", inputs=[[0, 0]], predictions=[1])
    assert w.snapshot(now=2.0)["windows"]["1m"]["accuracy"] == 1.0


def test_parse_window() -> None:
    assert [parse_window(t) for t in ("30s", "5m", "1h", "1.5m")] == [30, 300, 3600, 90]
    with pytest.raises(ValueError, match="Invalid window '5'"):
        parse_window("5")
