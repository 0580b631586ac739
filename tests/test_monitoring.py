"""Monitoring through a real server: windows, drift, feedback, alerts, restart, widget, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import nbdeploy
from tests.helpers import eventually, usage_error


@pytest.fixture
def mon(serving: Any, two_versions: str, name: str) -> nbdeploy.Deployment:
    """Version 1 of the shared model, with an alert rule evaluated five times a second."""
    return serving(f"{two_versions}/1", name=name, alerts=["requests>10"], alert_k=1, alert_interval_s=0.2)


def send(mon: nbdeploy.Deployment, X: Any) -> list[str]:
    """One request per row; returns the request ids."""
    ids = []
    with httpx.Client(base_url=mon.url) as client:
        for row in X.to_numpy().tolist():
            r = client.post("/invocations", json={"dataframe_split": {"columns": list(X.columns), "data": [row]}})
            assert r.status_code == 200
            ids.append(r.headers["x-request-id"])
    return ids


def test_windows_drift_feedback_alerts_and_restart(
    mon: nbdeploy.Deployment, cancer: dict[str, Any], two_versions: str
) -> None:
    X, y = cancer["X_test"], cancer["y_test"]
    ids = send(mon, X.head(60))
    win = mon.snapshot("1m")["windows"]["1m"]
    assert (win["requests"], win["rows"], win["error_rate"]) == (60, 60, 0.0)
    assert sum(win["predictions"]["counts"].values()) == 60
    assert win["drifted_features"] == []
    assert win["latency_ms"]["p50"] > 0 and win["accuracy"] is None

    drifted = X.head(120).assign(**{"mean radius": X["mean radius"].head(120) * 3})
    send(mon, drifted)
    win = mon.snapshot("1m")["windows"]["1m"]
    assert "mean radius" in win["drifted_features"]
    status = {d["name"]: d["status"] for d in win["drift"]}
    assert status["mean radius"] == "drift" and status["mean texture"] != "drift"

    result = mon.feedback(ids, y.head(60))
    assert result == {"accepted": 60, "unknown": []}
    win = mon.snapshot("1m")["windows"]["1m"]
    expected = float((cancer["model"].predict(X.head(60)) == y.head(60).to_numpy()).mean())
    assert win["labelled"] == 60 and win["accuracy"] == pytest.approx(expected)

    firing = eventually(lambda: mon.snapshot("1m")["alerts"]["firing"])
    assert firing == ["requests>10"]
    events = [json.loads(line) for line in (mon.path / "alerts.jsonl").read_text().splitlines()]
    assert events[0]["rule"] == "requests>10" and events[0]["state"] == "fired"

    metrics = {f.name: f for f in text_string_to_metric_families(httpx.get(mon.url + "/metrics").text)}
    psi = {s.labels["feature"]: s.value for s in metrics["nbdeploy_drift_psi"].samples}
    assert psi["mean radius"] >= 0.25 and metrics["nbdeploy_drifted_features"].samples[0].value >= 1
    assert metrics["nbdeploy_alerts_firing"].samples[0].value == 1
    assert metrics["nbdeploy_live_accuracy"].samples[0].value == pytest.approx(expected)

    mon.stop()  # a restarted server rebuilds its windows from the request log and feedback
    again = nbdeploy.serve(f"{two_versions}/1", name=mon.name)
    doc = again.snapshot("1m")
    assert doc["total_requests"] == 180 and doc["windows"]["1m"]["labelled"] == 60
    assert "rebuilt monitoring windows from 180 logged requests and 60 labels" in again.logs(5)
    assert doc["alerts"]["events"][0]["state"] == "fired"


def test_widget_updates_while_the_kernel_is_busy(
    mon: nbdeploy.Deployment, cancer: dict[str, Any], two_versions: str
) -> None:
    widget = mon.monitor(interval=0.1)
    seen: list[int] = []
    widget.observe(lambda change: seen.append(change["new"].get("total_requests", 0)), "snapshot")
    X = cancer["X_test"]
    started = time.monotonic()
    # the "cell" keeps the main thread busy until the panel has moved three times (a minute at
    # most: a fixed 2 s saw only two snapshots on a machine loaded by another test worker)
    while (len(set(seen)) < 3 or widget.polls < 3) and time.monotonic() - started < 60:
        send(mon, X.head(5))
    assert len(set(seen)) >= 3 and seen == sorted(seen) and seen[-1] > seen[0]
    assert widget.status == "live" and widget.polls >= 3
    text = repr(widget)
    assert text.startswith(f"{mon.name} ({two_versions}/1, version 1)") and "requests" in text and "0x" not in text
    mon.stop()
    assert eventually(lambda: not widget.polling)
    assert widget.status.startswith("stopped")
    widget.close()


def test_widget_stops_when_closed_or_replaced(mon: nbdeploy.Deployment) -> None:
    widget = mon.monitor(interval=0.1)
    assert eventually(lambda: widget.polls >= 1)
    again = mon.monitor(interval=0.1)  # re-running the cell replaces the panel
    assert eventually(lambda: not widget.polling)
    assert again.polling
    again.close()
    assert eventually(lambda: not again.polling)


def test_deployments_panel_buttons(mon: nbdeploy.Deployment) -> None:
    from nbdeploy.widgets.deployments import DeploymentsPanel

    panel = DeploymentsPanel(nbdeploy.deployments())
    assert [mon.name, "running"] in [row[:2] for row in panel.rows]
    text = panel._repr_mimebundle_()["text/plain"]  # what a saved notebook keeps: every column
    assert text == repr(nbdeploy.deployments()) and len(text) > 110 and mon.url in text
    panel.buttons[(mon.name, "rollback")].click()
    assert "nothing to roll back to" in panel.message.value
    panel.buttons[(mon.name, "stop")].click()
    assert mon.state() == "stopped" and panel.message.value == f"stop: {mon.name} done."
    assert panel.buttons[(mon.name, "stop")].disabled


def test_magics_and_cli(
    ip: Any, mon: nbdeploy.Deployment, cancer: dict[str, Any], two_versions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = send(mon, cancer["X_test"].head(4))
    ip.user_ns["ids"], ip.user_ns["y4"] = ids, cancer["y_test"].head(4)
    ip.run_line_magic("deploy", f"feedback {mon.name} --ids ids --target y4")
    assert capsys.readouterr().out.strip() == "4 labelled, 0 unknown request id(s)."
    ip.run_line_magic("deploy", f"alerts {mon.name} --add 'p95_ms>5000' --k 2")
    out = capsys.readouterr().out
    assert "requests>10" in out and "p95_ms>5000" in out
    assert [r["rule"] for r in nbdeploy.get(mon.name).spec.alerts] == ["requests>10", "p95_ms>5000"]
    widget = ip.run_line_magic("deploy", f"monitor {mon.name} --interval 0.5 --window 5m")
    assert (widget.window, widget.interval) == ("5m", 0.5)
    widget.close()
    assert usage_error(ip, f"monitor {mon.name} --window 2m") == (
        f"Unknown window '2m'; windows of {mon.name!r}: 1m, 5m, 1h. See docs/monitor.md#windows"
    )
    assert usage_error(ip, f"alerts {mon.name} --add 'p95>1'") == (
        "Unknown alert metric 'p95' in 'p95>1'; metrics: rps, requests, p50_ms, p95_ms, p99_ms, error_rate, psi, "
        "drifted_features, accuracy, est_accuracy, rmse, cpu_pct, rss_mb, cpu_s_per_1k, "
        "predictions_per_cpu_s, cost_per_1m, cost_per_day. See docs/monitor.md#alerts"
    )
    env = {**os.environ}
    out = subprocess.run(
        [sys.executable, "-m", "nbdeploy.cli", "monitor", mon.name, "--once", "--json"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    doc = json.loads(out.stdout)
    assert doc["name"] == mon.name and doc["windows"]["1m"]["requests"] >= 4 and doc["windows"]["1m"]["labelled"] == 4
    text = subprocess.run(
        [sys.executable, "-m", "nbdeploy.cli", "monitor", mon.name, "--once"], capture_output=True, text=True, env=env
    ).stdout
    assert text.startswith(f"{mon.name} ({two_versions}/1, version 1)") and "live (4 labelled rows)  accuracy" in text


def test_custom_windows_and_the_side_panel(two_versions: str, name: str) -> None:
    d = nbdeploy.serve(f"{two_versions}/1", name=name, windows=["30s", "2m"])
    try:
        assert set(d.snapshot()["windows"]) == {"30s", "2m"}
        with pytest.raises(nbdeploy.InvalidInputError) as err:
            d.monitor(window="1m")
        assert str(err.value) == f"Unknown window '1m'; windows of {name!r}: 30s, 2m."
        assert d.monitor(window="2m", panel=True) is None  # displayed in a sidecar instead
        from nbdeploy.widgets.monitor import _open

        widget = _open[name]
        assert eventually(lambda: widget.polls >= 1)
        assert widget.window == "2m"
        widget.close()
        metrics = {f.name for f in text_string_to_metric_families(httpx.get(d.url + "/metrics").text)}
        assert "nbdeploy_drift_psi" in metrics
    finally:
        d.stop()
    with pytest.raises(nbdeploy.InvalidInputError, match=r"^Invalid window '5': use a number followed by s, m or h"):
        nbdeploy.serve(f"{two_versions}/1", name=name, windows=["5"])


def test_the_panel_holds_a_real_snapshot_when_the_cell_returns(mon: nbdeploy.Deployment) -> None:
    widget = mon.monitor(interval=60)  # no second poll during the test
    try:
        assert widget.polls == 1 and widget.status == "live"
        assert repr(widget).startswith(f"{mon.name} (") and "starting" not in repr(widget)
    finally:
        widget.close()


def test_the_terminal_monitor_writes_no_control_codes_into_a_pipe(mon: nbdeploy.Deployment) -> None:
    import os
    import signal

    env = {**os.environ, "NBDEPLOY_HOME": str(mon.path.parent)}
    # started with SIGINT ignored, as a shell starts a job in the background: Ctrl-C still ends it
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbdeploy.cli", "monitor", mon.name, "--interval", "0.2"],
        stdout=subprocess.PIPE, text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline() + proc.stdout.readline()  # a refresh or two has been written
    proc.send_signal(signal.SIGINT)  # how a user ends it
    rest, _ = proc.communicate(timeout=30)
    assert mon.name in first + rest and "\x1b[" not in first + rest
    assert proc.returncode == 0
