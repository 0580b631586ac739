"""``GET /monitor``, ``POST /feedback``, ``POST /admin/alerts`` and the monitoring loops.

The three routes are written once, over a :class:`MonitorBackend`: :class:`LocalMonitor`
(this process's :class:`~nbdeploy.monitoring.windows.RequestWindows` and alert book) or,
on Ray, the deployment's monitoring hub (:class:`nbdeploy.serving.ray_app.HubMonitor`).
``/monitor`` takes ``?window=1m,5m`` to limit the windows computed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from nbdeploy.monitoring.alerts import AlertBook, RuleError, attach_alerts, with_alert_window
from nbdeploy.monitoring.resources import ProcessSampler, ResourceMeter
from nbdeploy.monitoring.windows import RequestWindows
from nbdeploy.serving.bodies import parse_body, read_body
from nbdeploy.serving.protocol import ProtocolError
from nbdeploy.serving.requestlog import apply_labels
from nbdeploy.serving.responses import json_response
from nbdeploy.serving.server import Server

__all__ = [
    "LocalMonitor",
    "MonitorBackend",
    "MonitorRoutes",
    "alert_loop",
    "checked_rules",
    "feedback_body",
    "fold_loop",
    "resource_loop",
    "window_names",
]

RULES_BODY = "The body must be JSON with a 'rules' list of {'rule': ..., 'k': ..., 'webhook': ...}."


class MonitorBackend(Protocol):
    """What the monitoring routes ask. Methods raise :class:`ProtocolError` for an answer
    other than 200 (rules that do not parse: 400; a Ray hub that does not answer: 503)."""

    @property
    def windows(self) -> Sequence[str]:
        """The window names ``?window=`` may ask for."""
        ...

    async def snapshot(self, names: list[str] | None) -> dict[str, Any]:
        """The ``/monitor`` document (``names``: the windows to compute, ``None``: all)."""
        ...

    async def feedback(self, ids: list[Any], targets: list[Any]) -> dict[str, Any]:
        """Labels for answered requests: ``{"accepted": n, "unknown": [ids...]}``."""
        ...

    async def experiment(self) -> dict[str, Any]:
        """``GET /experiment``: ``{"experiment": state or None, "events": [the last ends]}``."""
        ...

    async def set_alerts(self, rules: Any) -> dict[str, Any]:
        """Replace the alert rules; the alert book as ``to_dict`` gives it."""
        ...


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
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: deep nesting
        pass
    raise ValueError("The body must be JSON with 'ids' and 'targets' lists of one length.")


def checked_rules(book: AlertBook, rules: Any) -> None:
    """``book.set_rules(rules)``, or a 400 :class:`ProtocolError` saying what is wrong with them."""
    try:
        book.set_rules(rules)
    except RuleError as exc:
        raise ProtocolError(400, str(exc)) from exc
    except (ValueError, KeyError, TypeError) as exc:  # not a list of {'rule': ...}, a 'k' that is no number
        raise ProtocolError(400, RULES_BODY) from exc


class MonitorRoutes:
    """The endpoints of ``/monitor``, ``/feedback`` and ``/admin/alerts`` over one backend."""

    def __init__(self, backend: MonitorBackend, max_body_bytes: int) -> None:
        self.backend, self.max_body_bytes = backend, max_body_bytes

    async def monitor(self, request: Request) -> Response:
        try:
            names = window_names(request, self.backend.windows)
        except ValueError as exc:
            raise ProtocolError(400, str(exc)) from exc
        return json_response(await self.backend.snapshot(names))

    async def feedback(self, request: Request) -> Response:
        body = await read_body(request, self.max_body_bytes)
        try:
            ids, targets = await parse_body(body, feedback_body)
        except ValueError as exc:
            raise ProtocolError(400, str(exc)) from exc
        return json_response(await self.backend.feedback(ids, targets))

    async def set_alerts(self, request: Request) -> Response:
        try:
            rules = json.loads(await request.body())["rules"]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ProtocolError(400, RULES_BODY) from exc
        return json_response(await self.backend.set_alerts(rules))


class LocalMonitor:
    """The windows and alert book of this process; labels are appended to the deployment's
    feedback log (``Server.feedback_log``), so that a restarted server replays them."""

    def __init__(self, server: Server) -> None:
        self.server = server

    @property
    def windows(self) -> Sequence[str]:
        return list(self.server.monitor.windows)

    async def snapshot(self, names: list[str] | None) -> dict[str, Any]:
        server, now = self.server, time.time()
        doc: dict[str, Any] = await asyncio.to_thread(
            server.monitor.snapshot, now, with_alert_window(names, server.alerts)
        )
        attach_alerts(doc, server.alerts, names)  # read on this same snapshot
        doc.update(
            name=server.settings.name, ref=server.ref, version=server.version, now=now,
            uptime_s=round(now - server.started, 3), columns=server.monitor.columns, task=server.monitor.task,
            processes=server.sampler.processes(),
        )  # fmt: skip
        doc["experiment"] = (await self.experiment())["experiment"]  # the variants side by side
        return doc

    async def experiment(self) -> dict[str, Any]:
        experiment = self.server.experiment
        state = await asyncio.to_thread(experiment.state) if experiment is not None else None
        return {"experiment": state, "events": list(self.server.events)}

    async def feedback(self, ids: list[Any], targets: list[Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self._feedback, ids, targets)  # many labels: not on the loop

    def _feedback(self, ids: list[Any], targets: list[Any]) -> dict[str, Any]:
        return apply_labels(ids, targets, self.server.label, self.server.feedback_log)

    async def set_alerts(self, rules: Any) -> dict[str, Any]:
        checked_rules(self.server.alerts, rules)
        return self.server.alerts.to_dict()


async def fold_loop(monitor: RequestWindows, interval: float = 1.0) -> None:
    """Fold the queued requests into the monitoring rings off the event loop, every second."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(monitor.fold)
        except Exception as exc:  # never let monitoring end serving
            print(f"monitoring fold failed: {type(exc).__name__}: {exc}", flush=True)


async def resource_loop(sampler: ProcessSampler, meter: ResourceMeter, interval: float = 1.0) -> None:
    """Sample the CPU and memory of the server's processes every second (psutil, off the loop)."""
    while True:
        try:
            meter.add_sample(*await asyncio.to_thread(sampler.read))
        except Exception as exc:  # never let a reading end serving
            print(f"resource sampling failed: {type(exc).__name__}: {exc}", flush=True)
        await asyncio.sleep(interval)


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
