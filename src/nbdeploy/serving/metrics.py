"""What ``GET /metrics`` exposes in Prometheus' text format.

:class:`Metrics` holds the server's own counters (one registry per app, never the global
one: two apps in one process, as in the tests, must not share series);
:class:`MonitorCollector` adds a summary of the monitoring windows at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from nbdeploy.monitoring.alerts import AlertBook
from nbdeploy.monitoring.resources import ProcessSampler
from nbdeploy.monitoring.windows import RequestWindows

__all__ = ["ExperimentCollector", "Metrics", "MonitorCollector"]


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
        self.log_deleted = Counter(
            "nbdeploy_log_records_deleted",
            "Records taken out of the request and feedback logs: past --retention, or asked to be forgotten",
            ["log", "reason"],
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
        if win.get("est_accuracy") is not None:
            yield GaugeMetricFamily("nbdeploy_estimated_accuracy", "Accuracy estimated from the model's "
                                    "probabilities, before labels", value=win["est_accuracy"])  # fmt: skip
        resources = win.get("resources") or {}
        for key, text in _RESOURCE_GAUGES.items():
            if resources.get(key) is not None:
                yield GaugeMetricFamily(f"nbdeploy_{key}", f"{text}, over the last {self.window}", value=resources[key])


_RESOURCE_GAUGES = {
    "cpu_pct": "CPU of the serving processes, in percent of one core",
    "cpu_s_per_1k": "CPU seconds per 1,000 predictions",
    "cost_per_1m": "Cost of 1M predictions at the core-hour price",
    "cost_per_day": "Cost of a day at this CPU use and the core-hour price",
}


class ResourceCollector(Collector):
    """Running totals of what serving costs: CPU seconds and memory of each serving
    process (by role: server, a challenger's), and predictions answered."""

    def __init__(self, sampler: ProcessSampler) -> None:
        self.sampler = sampler

    def collect(self) -> Any:
        cpu = CounterMetricFamily("nbdeploy_process_cpu_seconds", "CPU seconds the serving processes of each "
                                  "role used since the server was ready", labels=["process"])  # fmt: skip
        rss = GaugeMetricFamily("nbdeploy_process_resident_memory_bytes", "Resident memory of each serving process",
                                labels=["process"])  # fmt: skip
        for role, cpu_s in self.sampler.spent_by_role().items():  # ended processes kept: a counter never drops
            cpu.add_metric([role], cpu_s)
        memory: dict[str, float] = {}
        for p in self.sampler.processes():
            memory[p["role"]] = memory.get(p["role"], 0.0) + p["rss_mb"] * 1024 * 1024
        for role, rss_bytes in memory.items():
            rss.add_metric([role], rss_bytes)
        yield cpu
        yield rss
        yield CounterMetricFamily("nbdeploy_predictions", "Predictions answered (rows)", value=self.sampler.predictions)


class ExperimentCollector(Collector):
    """A running experiment in ``/metrics``, each figure with a ``variant`` label: requests,
    failures and each metric's mean since it started, the challenger's lift with its
    always-valid bounds, and a shadow's agreement. Nothing while no experiment runs."""

    def __init__(self, state: Callable[[], Mapping[str, Any] | None]) -> None:
        self.state = state

    def collect(self) -> Any:
        s = self.state()
        if s is None:
            return
        requests = CounterMetricFamily("nbdeploy_variant_requests", "Requests answered (or mirrored) per variant",
                                       labels=["variant"])  # fmt: skip
        failures = CounterMetricFamily("nbdeploy_variant_failures", "Requests the model failed on, per variant",
                                       labels=["variant"])  # fmt: skip
        for variant, counts in s["counts"].items():
            requests.add_metric([variant], counts.get("requests", 0) + counts.get("shadowed", 0))
            failures.add_metric([variant], counts.get("errors", 0) + counts.get("shadow_errors", 0))
        yield requests
        yield failures
        value = GaugeMetricFamily("nbdeploy_variant_value", "A metric per variant since the experiment began: its "
                                  "mean, or for p95_ms the 95th percentile", labels=["variant", "metric"])  # fmt: skip
        lift = GaugeMetricFamily("nbdeploy_experiment_lift", "Challenger minus champion, with always-valid bounds",
                                 labels=["metric", "bound"])  # fmt: skip
        for metric, fig in s.get("stats", {}).items():
            for variant, figure in fig["value"].items():
                if figure is not None:
                    value.add_metric([variant, metric], figure)
            for bound in ("lift", "low", "high"):
                if fig.get(bound) is not None:
                    lift.add_metric([metric, bound], fig[bound])
        yield value
        yield lift
        drift = GaugeMetricFamily("nbdeploy_variant_drift_max_psi", "Highest input PSI against the champion's "
                                  "training profile, per variant since the experiment began",
                                  labels=["variant"])  # fmt: skip
        against = GaugeMetricFamily("nbdeploy_variant_prediction_psi", "PSI of a challenger's predictions against "
                                    "the champion's since the experiment began", labels=["variant"])  # fmt: skip
        for variant, d in s.get("distributions", {}).items():
            if d.get("drift_max_psi") is not None:
                drift.add_metric([variant], d["drift_max_psi"])
            if d.get("prediction_psi") is not None:
                against.add_metric([variant], d["prediction_psi"])
        yield drift
        yield against
        agreement = s.get("agreement")
        if agreement and agreement.get("rate") is not None:
            yield GaugeMetricFamily("nbdeploy_shadow_agreement", "Share of mirrored rows the shadow predicted "
                                    "as the champion answered", value=agreement["rate"])  # fmt: skip
