"""The serving app: MLflow's scoring protocol plus ``/info``, ``/metrics`` and ``/admin/reload``.

Built by :func:`create_app` from explicit settings (no globals, no import-time work):

>>> app = create_app(ServerSettings(name="cancer", ref="cancer/1", version=1), model, log)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nbdeploy.monitoring.alerts import AlertBook
from nbdeploy.monitoring.windows import RequestWindows
from nbdeploy.serving.batching import Batcher, PredictError
from nbdeploy.serving.loader import LoadedModel, load
from nbdeploy.serving.monitor_routes import MonitorCollector, alert_loop, fold_loop, monitor_routes
from nbdeploy.serving.protocol import ProtocolError, Schema, parse
from nbdeploy.serving.requestlog import RequestLog
from nbdeploy.spec import ServerSettings

__all__ = ["Observer", "ServerSettings", "create_app", "guard", "json_response"]

_RID = re.compile(r"^[\w.\-]{1,64}$")


class _Metrics:
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


class Observer(Protocol):
    """Receives every answered request and every batch (as :class:`RequestWindows` does)."""

    def add(
        self, ts: float, latency_ms: float, status: int, rid: str, inputs: Any = None, predictions: Any = None
    ) -> None: ...

    def add_batch(self, ts: float, requests: int, rows: int) -> None: ...


class _Server:
    """Mutable state of one running server: the model serving now, its batcher and log."""

    def __init__(
        self, settings: ServerSettings, model: LoadedModel, log: RequestLog, observers: Sequence[Observer] = ()
    ) -> None:
        self.settings, self.log = settings, log
        self.metrics = _Metrics()
        self.started = time.time()
        self.boot = os.urandom(4).hex()
        self.seq = 0
        self.mlflow_version = _dist_version("mlflow")
        self._swap(model, settings.ref, settings.version)
        folder = Path(settings.folder) if settings.folder else None
        self.monitor = RequestWindows(self.schema.names, settings.profile, settings.task, settings.windows)
        self.alerts = AlertBook(folder / "alerts.jsonl" if folder else None)
        self.alerts.set_rules(settings.alerts)
        self.observers: list[Observer] = [*([self.monitor] if settings.monitor else []), *observers]
        if settings.monitor:
            self.metrics.registry.register(MonitorCollector(self.monitor, self.alerts, settings.alert_window))
        self.batcher = Batcher(
            self._serving,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            on_batch=self._on_batch,
        )

    def _swap(self, model: LoadedModel, ref: str, version: int | None) -> None:
        # One assignment of one tuple: a batch reads model and schema together, and a batch
        # in flight keeps the model it started with.
        self._current = (model, Schema.from_signature(model.inputs), ref, version)

    def _serving(self) -> tuple[Any, tuple[str, ...]]:
        model, schema, _, _ = self._current
        return model.predict, schema.names

    @property
    def model(self) -> LoadedModel:
        return self._current[0]

    @property
    def schema(self) -> Schema:
        return self._current[1]

    @property
    def ref(self) -> str:
        return self._current[2]

    @property
    def version(self) -> int | None:
        return self._current[3]

    def _on_batch(self, requests: int, rows: int) -> None:
        self.metrics.batch_requests.observe(requests)
        self.metrics.batch_rows.observe(rows)
        now = time.time()
        for observer in self.observers:
            observer.add_batch(now, requests, rows)

    def request_id(self, request: Request) -> str:
        given = request.headers.get("x-request-id")
        if given and (_RID.match(given) or (self.settings.proxy_request_id and len(given) <= 256)):
            return given
        self.seq += 1
        return f"{self.boot}-{self.seq}"


def _dist_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":"), default=str)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


json_response = _json


def guard(app: Starlette, request: Request, always: bool = False) -> Response | None:
    """The app's token check for routes added around it: a 401/403 response, or ``None``."""
    return _auth_error(app.state.server, request, always)


def _auth_error(server: _Server, request: Request, always: bool = False) -> Response | None:
    """401 without a bearer token, 403 with a wrong one; ``None`` when the request may pass."""
    token = server.settings.token
    if not (always or server.settings.require_token):
        return None
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        err = ProtocolError(401, "This endpoint needs the header 'Authorization: Bearer <token>'.", "UNAUTHENTICATED")
        return _json(err.body(), 401, {"WWW-Authenticate": "Bearer"})
    if not token or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _json(ProtocolError(403, "The bearer token is not valid.", "PERMISSION_DENIED").body(), 403)
    return None


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise ProtocolError(413, f"The body is larger than the limit of {limit} bytes.", "REQUEST_TOO_LARGE")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(413, f"The body is larger than the limit of {limit} bytes.", "REQUEST_TOO_LARGE")
        chunks.append(chunk)
    return b"".join(chunks)


def _routes(server: _Server) -> list[Route]:
    settings = server.settings

    async def ping(request: Request) -> Response:
        return Response("\n", media_type="application/json")

    async def version(request: Request) -> Response:
        return Response(server.mlflow_version, media_type="application/json")

    async def invocations(request: Request) -> Response:
        started = time.perf_counter()
        values = predictions = None
        rid = server.request_id(request)
        denied = _auth_error(server, request)
        if denied is not None:
            return denied
        server.metrics.in_flight.inc()
        record: dict[str, Any] = {"ts": time.time(), "id": rid, "version": server.version}
        try:
            body = await _read_body(request, settings.max_body_bytes)
            parsed = parse(body, request.headers.get("content-type"), server.schema)
            record["rows"] = parsed.rows
            if parsed.values is not None:
                values = parsed.values
                record["inputs"] = values[: settings.log_rows].tolist()
            elif parsed.frame is not None:
                record["columns"] = [str(c) for c in parsed.frame.columns]
                values = parsed.frame.to_numpy()
                record["inputs"] = values[: settings.log_rows].tolist()
            predictions = await server.batcher.submit(parsed)
            status = 200
            payload: dict[str, Any] = {"predictions": predictions}
            record["predictions"] = predictions[: settings.log_rows]
        except ProtocolError as exc:
            status, payload = exc.status, exc.body()
        except PredictError as exc:
            status = 400
            payload = {
                "error_code": "BAD_REQUEST",
                "message": f"The model could not predict on this input: {exc}.",
            }
        except Exception as exc:  # a bug of ours: still a JSON answer, logged, and the server stays up
            status = 500
            payload = {"error_code": "INTERNAL_ERROR", "message": f"The server failed: {type(exc).__name__}."}
        finally:
            server.metrics.in_flight.dec()
        if record.get("rows", 0) > settings.log_rows:
            record["truncated"] = True
        latency = time.perf_counter() - started
        record.update(status=status, latency_ms=round(latency * 1000, 3))
        if status != 200:
            record["error"] = payload["message"]
        server.log.append(record)  # before the response: an answered request is always logged
        for observer in server.observers:
            observer.add(record["ts"], record["latency_ms"], status, rid, values, predictions)
        server.metrics.requests.labels(str(status)).inc()
        server.metrics.latency.observe(latency)
        return _json(payload, status, None if settings.proxy_request_id else {"X-Request-Id": rid})

    async def info(request: Request) -> Response:
        denied = _auth_error(server, request)
        if denied is not None:
            return denied
        return _json(
            {
                "name": settings.name,
                "ref": server.ref,
                "version": server.version,
                "signature": {"inputs": server.model.inputs, "outputs": server.model.outputs},
                "uptime_s": round(time.time() - server.started, 3),
                "started": server.started,
                "pid": os.getpid(),
                "batching": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms},
                "max_body_bytes": settings.max_body_bytes,
                "token_required": settings.require_token,
            }
        )

    async def metrics(request: Request) -> Response:
        denied = _auth_error(server, request)
        if denied is not None:
            return denied
        # off the event loop: the monitoring summary computes drift over the last minute
        text = await asyncio.to_thread(generate_latest, server.metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def reload(request: Request) -> Response:
        denied = _auth_error(server, request, always=True)
        if denied is not None:
            return denied
        if not settings.reload:
            message = "This server is one replica of a Ray deployment: change its model with update (a rolling update)."
            return _json(ProtocolError(409, message, "INVALID_STATE").body(), 409)
        try:
            doc = json.loads(await request.body())
            path, ref, version = doc["path"], str(doc["ref"]), doc.get("version")
            profile_path, task = doc.get("profile_path"), doc.get("task")
        except (ValueError, KeyError, TypeError):
            err = ProtocolError(400, "The body must be JSON with 'path' and 'ref' fields.")
            return _json(err.body(), 400)
        models = (Path(settings.folder) / "models").resolve() if settings.folder else None
        if models is not None and not Path(path).resolve().is_relative_to(models):
            err = ProtocolError(400, "The field 'path' must name a model inside the deployment's models folder.")
            return _json(err.body(), 400)
        try:
            model = await asyncio.to_thread(load, path)
        except Exception as exc:
            err = ProtocolError(400, f"The model at 'path' could not be loaded: {type(exc).__name__}: {exc}.")
            return _json(err.body(), 400)
        server._swap(model, ref, version)
        has_profile = bool(profile_path) and Path(profile_path).exists()
        server.monitor.set_profile(json.loads(Path(profile_path).read_text()) if has_profile else None, task)
        return _json({"ref": server.ref, "version": server.version})

    return [
        Route("/ping", ping),
        Route("/health", ping),
        Route("/version", version),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/info", info),
        Route("/metrics", metrics),
        Route("/admin/reload", reload, methods=["POST"]),
        *monitor_routes(
            server,
            _json,
            lambda r, always: _auth_error(server, r, always),
            Path(settings.folder) if settings.folder else None,
        ),
    ]


def create_app(
    settings: ServerSettings,
    model: LoadedModel,
    log: RequestLog,
    background: Callable[[], Any] | None = None,
    observers: Sequence[Observer] = (),
) -> Starlette:
    """A Starlette app serving ``model``; ``background`` is started as a task in its lifespan.

    ``observers`` see every answered request besides the server's own monitor (the Ray
    replicas forward them to the deployment's monitoring hub).
    """
    server = _Server(settings, model, log, observers)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.batcher.start()
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(background())] if background else []
        if settings.monitor:
            tasks.append(loop.create_task(fold_loop(server.monitor)))
            tasks.append(
                loop.create_task(
                    alert_loop(server.monitor, server.alerts, settings.alert_window, settings.alert_interval_s)
                )
            )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if tasks:  # let them finish what they do on cancellation (a last forward to the Ray hub)
                await asyncio.wait(tasks, timeout=5)
            await server.batcher.stop()

    app = Starlette(routes=_routes(server), lifespan=lifespan)
    app.state.server = server
    app.state.settings = asdict(settings) | {"token": None}
    return app
