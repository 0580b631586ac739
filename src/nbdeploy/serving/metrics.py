"""What ``GET /metrics`` exposes in Prometheus' text format.

:class:`Metrics` holds the server's own counters (one registry per app, never the global
one: two apps in one process, as in the tests, must not share series);
:class:`MonitorCollector` adds a summary of the monitoring windows at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from nbdeploy.monitoring.alerts import AlertBook
from nbdeploy.monitoring.windows import RequestWindows

__all__ = ["Metrics", "MonitorCollector"]


class Metrics:
    """Requests by status, their latency, batch sizes and requests in flight."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "nbdeploy_requests",
            "Answered /invocations requests by status",
            ["status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nbdeploy_request_latency_seconds",
            "Latency of /invocations requests",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "nbdeploy_batch_rows",
            "Rows per predict call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "nbdeploy_batch_requests",
            "Requests per predict call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.in_flight = Gauge("nbdeploy_in_flight", "Requests being answered", registry=self.registry)
        self.log_dropped = Gauge(
            "nbdeploy_request_log_dropped_records",
            "Request-log records deleted by rotation since the server started (the oldest file replaced)",
            registry=self.registry,
        )
        self.feedback_dropped = Gauge(
            "nbdeploy_feedback_log_dropped_records",
            "Labels deleted by rotation of feedback.jsonl since the server started (the oldest file replaced)",
            registry=self.registry,
        )


class MonitorCollector(Collector):
    """Summarises one window (the alerts' window, 1m by default) in ``/metrics``: drift per
    feature, alerts firing, live accuracy."""

    def __init__(self, monitor: RequestWindows, alerts: AlertBook, window: str) -> None:
        self.monitor, self.alerts, self.window = monitor, alerts, window

    def collect(self) -> Any:
        win: Mapping[str, Any] = self.monitor.snapshot(time.time(), [self.window])["windows"][self.window]
        psi = GaugeMetricFamily("nbdeploy_drift_psi", "PSI of served inputs vs training", labels=["feature"])
        for d in win["drift"]:
            if d["psi"] is not None:
                psi.add_metric([d["name"]], d["psi"])
        yield psi
        yield GaugeMetricFamily(
            "nbdeploy_drifted_features", "Features flagged as drifted", value=len(win["drifted_features"])
        )
        yield GaugeMetricFamily(
            "nbdeploy_alerts_firing", "Alert rules firing", value=sum(r.firing for r in self.alerts.rules)
        )
        if win.get("accuracy") is not None:
            yield GaugeMetricFamily("nbdeploy_live_accuracy", "Accuracy on labelled requests", value=win["accuracy"])
