"""The route table of the serving app, with each route's :class:`Access`, and the core endpoints:
MLflow's scoring protocol (``/invocations``, ``/ping``, ``/health``, ``/version``) plus
``/info``, ``/metrics`` and ``/admin/reload``.

Endpoints raise :class:`ProtocolError` for a request at fault; the app's exception handlers
(:mod:`nbdeploy.serving.responses`) answer it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from nbdeploy.experiment import CHAMPION, VARIANT_HEADER
from nbdeploy.model_entry import read_serving_example
from nbdeploy.privacy import LogPrivacy, keeps_private, key_from_hex, read_key
from nbdeploy.serving.auth import Access, Guard, GuardedRoute
from nbdeploy.serving.batching import PredictError
from nbdeploy.serving.bodies import parse_body, read_body
from nbdeploy.serving.experiment_routes import ExperimentRoutes
from nbdeploy.serving.forgetting import Forgetting
from nbdeploy.serving.loader import load
from nbdeploy.serving.monitor_routes import MonitorBackend, MonitorRoutes
from nbdeploy.serving.openapi import document
from nbdeploy.serving.protocol import ProtocolError, check_method, parse
from nbdeploy.serving.responses import error_answer, json_response
from nbdeploy.serving.server import Call, Server
from nbdeploy.serving.token_routes import TokenRoutes

__all__ = ["routes"]


def routes(server: Server, monitor: MonitorBackend, guard: Guard) -> list[GuardedRoute]:
    """Every route of the app, each declaring once who may call it."""
    core, mon = CoreRoutes(server, monitor), MonitorRoutes(monitor, server.settings.max_body_bytes)
    exp = ExperimentRoutes(server, monitor)
    settings = server.settings  # to match hashed values: the folder's key (a Ray replica's: from its arguments)
    key = read_key(Path(settings.folder)) if settings.folder else key_from_hex(settings.log_key)
    matcher = LogPrivacy("full", (), key, lambda: server.schema.names)
    forget = Forgetting(server, matcher, getattr(monitor, "forget", None))
    server.forgetting = forget  # a Ray replica's forwarder runs the hub's orders with it
    folder = Path(server.settings.folder) if server.settings.folder else None
    toks = TokenRoutes(folder, server.settings.name, guard.book, monitor)
    public, predict, observe, admin = Access.PUBLIC, Access.PREDICT, Access.OBSERVE, Access.ADMIN
    post = ["POST"]
    return [
        GuardedRoute("/ping", core.ping, public, guard),
        GuardedRoute("/health", core.ping, public, guard),
        GuardedRoute("/version", core.version, public, guard),
        GuardedRoute("/openapi.json", core.openapi, predict, guard),  # the contract of what a predict token calls
        GuardedRoute("/invocations", core.invocations, predict, guard, post),
        GuardedRoute("/info", core.info, observe, guard),
        GuardedRoute("/metrics", core.metrics, observe, guard),
        GuardedRoute("/monitor", mon.monitor, observe, guard),
        GuardedRoute("/feedback", mon.feedback, Access.FEEDBACK, guard, post),
        GuardedRoute("/admin/reload", core.reload, admin, guard, post),
        GuardedRoute("/admin/alerts", mon.set_alerts, admin, guard, post),
        GuardedRoute("/admin/forget", forget.forget, admin, guard, post),
        GuardedRoute("/admin/tokens", toks.change, admin, guard, post),
        GuardedRoute("/experiment", exp.state, observe, guard),
        GuardedRoute("/admin/experiment", exp.change, admin, guard, post),
    ]


class CoreRoutes:
    """The endpoints over one :class:`Server`."""

    def __init__(self, server: Server, monitor: MonitorBackend) -> None:
        self.server, self.settings, self.monitor = server, server.settings, monitor

    async def ping(self, request: Request) -> Response:
        return Response("\n", media_type="application/json")

    async def version(self, request: Request) -> Response:
        return Response(self.server.mlflow_version, media_type="application/json")

    async def invocations(self, request: Request) -> Response:
        server = self.server
        rid = server.request_id(request)
        call = Call(rid, {"ts": time.time(), "id": rid, "version": server.version})
        label = getattr(request.state, "token_label", None)
        if label is not None:  # who asked, by the token's label (never its value)
            call.record["token"] = label
        headers = None if self.settings.proxy_request_id else {"X-Request-Id": call.rid}
        request.state.answer_headers = headers  # errors too are answered with the request id
        error: Exception | None = None
        server.answering += 1
        try:
            await self._predict(request, call)
        except Exception as exc:  # answered below, once logged
            error = exc
        finally:
            server.answering -= 1
        status, body = error_answer(error) if error is not None else (200, {"predictions": call.predictions})
        call.failed = status >= 500 or isinstance(error, PredictError)
        if server.experiment is not None or call.variant != CHAMPION:  # the client sees which variant answered
            headers = {**(headers or {}), VARIANT_HEADER: call.variant}
        server.answered(call, status, body)  # before the response: an answered request is always logged
        server.after_answer(call, status)
        if server.answering == 0 and server.experiment is not None:  # runs after this response is sent
            asyncio.get_running_loop().call_soon(server.experiment.quiet)
        if status == 500:  # a bug of ours: its traceback in server.log; the connection stays usable
            private = server.log.privacy is not None and server.log.privacy.active
            if private and error is not None:  # its message may quote an input: the stack and the type only
                print("".join(traceback.format_tb(error.__traceback__)) + type(error).__name__, flush=True)
            else:
                traceback.print_exception(error, file=sys.stdout)
        return json_response(body, status, headers)

    async def _predict(self, request: Request, call: Call) -> None:
        settings, record = self.settings, call.record
        body = await read_body(request, settings.max_body_bytes)
        parsed = await parse_body(
            body, parse, request.headers.get("content-type"), self.server.schema, process=self.server.parse_pool.run
        )
        record["rows"] = parsed.rows
        if parsed.values is not None:
            call.values = parsed.values
        elif parsed.frame is not None:
            record["columns"] = [str(c) for c in parsed.frame.columns]
            call.values = parsed.frame.to_numpy()
        if call.values is not None:
            record["inputs"] = call.values[: settings.log_rows].tolist()
        call.parsed = parsed
        challenger = self.server.route(request, call, parsed)
        method = parsed.method
        if method != "predict":  # logged as the model's outputs: no prediction to monitor, compare or label
            record["method"] = method
            who = "the champion" if challenger is None else f"the challenger (version {call.variant})"
            check_method(method, challenger.model.methods if challenger else self.server.model.methods, who)
        if challenger is not None:
            call.predictions = await challenger.predict(parsed)
        else:
            call.predictions = await self.server.batcher.submit(parsed)
        record["predictions" if method == "predict" else "outputs"] = call.predictions[: settings.log_rows]
        confidence = getattr(call.predictions, "confidence", None)
        if confidence is not None:  # replayed into the windows after a restart, like the predictions
            record["confidence"] = [round(c, 6) for c in confidence[: settings.log_rows]]

    async def openapi(self, request: Request) -> Response:
        server = self.server
        settings = self.settings
        private = keeps_private(settings.log_inputs, settings.redact)  # the example is often a real row
        doc = document(settings.name, server.schema, server.model.outputs, set(server.model.methods),
                       require_token=settings.require_token, version=server.version,
                       example=None if private else read_serving_example(server.model.path))  # fmt: skip
        return json_response(doc)

    async def info(self, request: Request) -> Response:
        server, settings = self.server, self.settings
        return json_response(
            {
                "name": settings.name,
                "ref": server.ref,
                "version": server.version,
                "signature": {"inputs": server.model.inputs, "outputs": server.model.outputs},
                "methods": sorted(server.model.methods),  # what params' predict_method may ask for
                "uptime_s": round(time.time() - server.started, 3),
                "started": server.started,
                "pid": os.getpid(),
                "batching": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms},
                "max_body_bytes": settings.max_body_bytes,
                "token_required": settings.require_token,
            }
        )

    async def metrics(self, request: Request) -> Response:
        # off the event loop: the monitoring summary computes drift over the last minute
        try:  # the experiment as /experiment shows it: on Ray, merged over the replicas by the hub
            self.server.experiment_snapshot = (await self.monitor.experiment())["experiment"]
        except ProtocolError:  # the hub away (Ray restarts it): the other metrics still answer
            self.server.experiment_snapshot = None
        text = await asyncio.to_thread(generate_latest, self.server.metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def reload(self, request: Request) -> Response:
        settings = self.settings
        if not settings.reload:
            message = "This server is one replica of a Ray deployment: change its model with update (a rolling update)."
            raise ProtocolError(409, message, "INVALID_STATE")
        path, ref, version, profile_path, task = _reload_body(await request.body())
        models = (Path(settings.folder) / "models").resolve() if settings.folder else None
        if models is not None and not Path(path).resolve().is_relative_to(models):
            raise ProtocolError(400, "The field 'path' must name a model inside the deployment's models folder.")
        try:
            model = await asyncio.to_thread(load, path)
        except Exception as exc:  # whatever the folder holds, the model serving now stays
            message = f"The model at 'path' could not be loaded: {type(exc).__name__}: {exc}."
            raise ProtocolError(400, message) from exc
        self.server.swap(model, ref, version)
        has_profile = bool(profile_path) and Path(profile_path).exists()
        self.server.monitor.set_profile(json.loads(Path(profile_path).read_text()) if has_profile else None, task)
        return json_response({"ref": self.server.ref, "version": self.server.version})


def _reload_body(body: bytes) -> tuple[Any, str, Any, Any, Any]:
    """``path``, ``ref``, ``version``, ``profile_path`` and ``task`` of a ``POST /admin/reload`` body."""
    try:
        doc = json.loads(body)
        return doc["path"], str(doc["ref"]), doc.get("version"), doc.get("profile_path"), doc.get("task")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ProtocolError(400, "The body must be JSON with 'path' and 'ref' fields.") from exc
