"""``GET /monitor``, ``POST /feedback``, ``POST /admin/alerts`` and the alert loop.

The server records every answered request in a :class:`~nbdeploy.monitoring.windows.
RequestWindows`; these routes read it. ``/monitor`` takes ``?window=1m,5m`` to limit the
windows computed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nbdeploy.monitoring.alerts import AlertBook, RuleError
from nbdeploy.monitoring.windows import RequestWindows

__all__ = ["MonitorCollector", "alert_loop", "feedback_body", "fold_loop", "monitor_routes", "window_names"]

Json = Callable[..., Response]
Guard = Callable[[Request, bool], Response | None]


def _error(json_response: Json, status: int, message: str) -> Response:
    return json_response({"error_code": "BAD_REQUEST", "message": message}, status)


def window_names(request: Request, known: Iterable[str]) -> list[str] | None:
    """The windows asked by ``?window=1m,5m`` (``None``: all); ValueError names an unknown one."""
    known = list(known)
    names = [w for w in request.query_params.get("window", "").split(",") if w] or None
    unknown = [w for w in names or [] if w not in known]
    if unknown:
        raise ValueError(f"Unknown window {unknown[0]!r}; windows: {', '.join(known)}.")
    return names


def feedback_body(body: bytes) -> tuple[list[Any], list[Any]]:
    """``ids`` and ``targets`` of a ``POST /feedback`` body; ValueError with the message to answer."""
    try:
        doc = json.loads(body)
        ids, targets = doc["ids"], doc["targets"]
        if isinstance(ids, list) and isinstance(targets, list) and len(ids) == len(targets):
            return ids, targets
    except (ValueError, KeyError, TypeError):
        pass
    raise ValueError("The body must be JSON with 'ids' and 'targets' lists of one length.")


def monitor_routes(server: Any, json_response: Json, guard: Guard, folder: Path | None) -> list[Route]:
    """Routes over ``server.monitor`` (RequestWindows) and ``server.alerts`` (AlertBook)."""

    async def monitor(request: Request) -> Response:
        denied = guard(request, False)
        if denied is not None:
            return denied
        try:
            names = window_names(request, server.monitor.windows)
        except ValueError as exc:
            return _error(json_response, 400, str(exc))
        now = time.time()
        doc = await asyncio.to_thread(server.monitor.snapshot, now, names)
        doc.update(
            name=server.settings.name, ref=server.ref, version=server.version, now=now,
            uptime_s=round(now - server.started, 3), alerts=server.alerts.to_dict(),
            columns=server.monitor.columns, task=server.monitor.task,
        )  # fmt: skip
        return json_response(doc)

    async def feedback(request: Request) -> Response:
        denied = guard(request, False)
        if denied is not None:
            return denied
        try:
            ids, targets = feedback_body(await request.body())
        except ValueError as exc:
            return _error(json_response, 400, str(exc))
        unknown = []
        lines = []
        for rid, target in zip(ids, targets, strict=True):
            labels = target if isinstance(target, list) else [target]
            if not server.monitor.feedback(str(rid), labels):
                unknown.append(rid)
            lines.append(json.dumps({"id": str(rid), "labels": labels}) + "\n")
        if folder is not None and lines:
            fd = os.open(folder / "feedback.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, "".join(lines).encode())
            finally:
                os.close(fd)
        return json_response({"accepted": len(ids) - len(unknown), "unknown": unknown})

    async def set_alerts(request: Request) -> Response:
        denied = guard(request, True)
        if denied is not None:
            return denied
        try:
            rules = json.loads(await request.body())["rules"]
            server.alerts.set_rules(rules)
        except RuleError as exc:
            return _error(json_response, 400, str(exc))
        except (ValueError, KeyError, TypeError):
            message = "The body must be JSON with a 'rules' list of {'rule': ..., 'k': ..., 'webhook': ...}."
            return _error(json_response, 400, message)
        return json_response(server.alerts.to_dict())

    return [
        Route("/monitor", monitor),
        Route("/feedback", feedback, methods=["POST"]),
        Route("/admin/alerts", set_alerts, methods=["POST"]),
    ]


async def fold_loop(monitor: RequestWindows, interval: float = 1.0) -> None:
    """Fold the queued requests into the monitoring rings off the event loop, every second."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(monitor.fold)
        except Exception as exc:  # never let monitoring end serving
            print(f"monitoring fold failed: {type(exc).__name__}: {exc}", flush=True)


async def alert_loop(monitor: RequestWindows, alerts: AlertBook, window: str, interval: float) -> None:
    """Evaluate the alert rules on ``window`` every ``interval`` seconds."""
    while True:
        await asyncio.sleep(interval)
        if not alerts.rules:
            continue
        try:
            doc = await asyncio.to_thread(monitor.snapshot, time.time(), [window])
            alerts.evaluate(doc["windows"][window])
        except Exception as exc:  # one bad evaluation must not end alerting for good
            print(f"alert evaluation failed: {type(exc).__name__}: {exc}", flush=True)


class MonitorCollector(Collector):
    """Summarises one window (the alerts' window, 1m by default) in ``/metrics``: drift per
    feature, alerts firing, live accuracy."""

    def __init__(self, monitor: RequestWindows, alerts: AlertBook, window: str = "1m") -> None:
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
