"""The Ray Serve face of the serving core: N replicas of the same app behind Ray's proxy.

Imported only where Ray runs: on the cluster's workers, and by :mod:`nbdeploy.serving.ray_ctl`
(the short-lived process that deploys). The kernel never imports it.

Two Serve applications per deployment:

- ``NAME`` (route prefix ``/NAME``): :class:`Replica`, each building exactly the Starlette
  app of the local server (:func:`nbdeploy.serving.app.create_app`: protocol, schema errors,
  micro-batching, request log). Rolling updates replace these replicas.
- ``NAME-monitor`` (no route): one :class:`Hub` that receives every answered request from
  every replica and keeps the windows of the whole deployment and of each replica from the
  raw records, so merged percentiles are exact. It lives across updates.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import ray
from ray import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from nbdeploy.monitoring.alerts import AlertBook, RuleError
from nbdeploy.monitoring.windows import DEFAULT_WINDOWS, RequestWindows
from nbdeploy.serving.app import ServerSettings, create_app, guard, json_response
from nbdeploy.serving.loader import load
from nbdeploy.serving.requestlog import RequestLog

__all__ = ["Hub", "Replica", "hub_app", "replica_app"]

HUB_LAG_S = 1.5  # records from several replicas are put in time order once they are this old
FORWARD_S = 0.5


def _folder(args: dict[str, Any]) -> Path:
    """The deployment folder when this node can write it (same machine or a shared disk);
    otherwise a folder of this node's own, so a replica on another machine still logs."""
    for candidate in (Path(args["folder"]), Path(tempfile.gettempdir()) / "nbdeploy" / args["name"]):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            if os.access(candidate, os.W_OK):
                return candidate
        except OSError:
            continue
    raise RuntimeError(f"no writable folder for deployment {args['name']!r}")


def _say(folder: Path, who: str, message: str) -> None:
    """One line in the deployment's ``server.log`` (what ``%deploy logs`` shows)."""
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{who}] {message}\n"
    fd = os.open(folder / "server.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class _Forwarder:
    """An observer of the serving app that ships what it saw to the hub twice a second."""

    def __init__(self, hub: Any, replica: str, meta: dict[str, Any]) -> None:
        self.hub, self.replica, self.meta = hub, replica, meta
        self.requests: list[tuple[Any, ...]] = []
        self.batches: list[tuple[float, int, int]] = []

    def add(
        self, ts: float, latency_ms: float, status: int, rid: str, inputs: Any = None, predictions: Any = None
    ) -> None:
        self.requests.append((ts, latency_ms, status, rid, inputs, predictions))

    def add_batch(self, ts: float, requests: int, rows: int) -> None:
        self.batches.append((ts, requests, rows))

    async def send(self) -> None:
        requests, self.requests = self.requests, []
        batches, self.batches = self.batches, []
        try:
            await self.hub.record.remote(self.replica, self.meta, requests, batches)
        except Exception as exc:  # the hub restarting must not end serving; the request log has it all
            print(f"monitoring hub unreachable, {len(requests)} records not forwarded: {exc}", flush=True)

    async def loop(self) -> None:
        try:
            while True:
                await asyncio.sleep(FORWARD_S)
                await self.send()
        except asyncio.CancelledError:  # the replica is stopping (an update, a scale-down): send the rest
            await asyncio.wait_for(self.send(), timeout=5)
            raise


@serve.deployment
@serve.ingress()
class Replica:
    """One replica: the local server's app, its request log in ``requests-<replica>.jsonl``."""

    def __init__(self, args: dict[str, Any], model_tar: bytes) -> None:
        ctx = serve.get_replica_context()
        self.replica = ctx.replica_id.unique_id
        self.args = args
        self.folder = _folder(args)
        models = Path(tempfile.mkdtemp(prefix=f"nbdeploy-{args['name']}-"))
        with tarfile.open(fileobj=io.BytesIO(model_tar), mode="r:gz") as tar:
            tar.extractall(models, filter="data")
        self.model = load(models / "model")
        entry = args["entry"]
        self.settings = ServerSettings(
            name=args["name"], ref=entry["ref"], version=entry.get("version"), token=args.get("token"),
            require_token=args["require_token"], max_body_bytes=args["max_body_bytes"],
            max_batch=args["max_batch"], max_wait_ms=args["max_wait_ms"], log_rows=args.get("log_rows", 100),
            monitor=False, windows=args.get("windows"), reload=False,
        )  # fmt: skip
        log_bytes = args.get("log_max_bytes", 64 << 20)
        self.log = RequestLog(self.folder / f"requests-{self.replica}.jsonl", max_bytes=log_bytes)
        node = str(ray.get_runtime_context().get_node_id())
        meta: dict[str, Any] = {"pid": os.getpid(), "node": node, "started": time.time()}
        self.hub = serve.get_deployment_handle("Hub", app_name=args["hub_app"]) if args.get("monitor", True) else None
        self.forward = _Forwarder(self.hub, self.replica, meta) if self.hub is not None else None
        _say(self.folder, self.replica, f"serving {entry['ref']} (pid {os.getpid()}, node {node[:12]})")

    def __serve_build_asgi_app__(self) -> Any:
        forward = self.forward
        core = create_app(
            self.settings,
            self.model,
            self.log,
            background=forward.loop if forward is not None else None,
            observers=[forward] if forward is not None else [],
        )
        app = core if self.hub is None else _with_hub_routes(core, self.hub, self.settings)
        return _RequestIdOnce(app)


class _RequestIdOnce:
    """Ray's proxy gives every request an ``x-request-id`` (the client's, or a new one) that
    the core app uses as its id, and adds it to the response itself: drop the core's copy so
    clients see one header (``X-Request-Id`` is what ``feedback`` takes)."""

    def __init__(self, app: Starlette) -> None:
        self.app, self.state = app, app.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_once(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
            await send(message)

        await self.app(scope, receive, send_once)


def _with_hub_routes(core: Starlette, hub: Any, settings: ServerSettings) -> Starlette:
    """``/monitor``, ``/feedback`` and ``/admin/alerts`` answered by the hub, the rest by ``core``."""
    windows = list(settings.windows or {"1m": 60, "5m": 300, "1h": 3600})

    def error(status: int, message: str) -> Response:
        return json_response({"error_code": "BAD_REQUEST", "message": message}, status)

    async def monitor(request: Request) -> Response:
        denied = guard(core, request)
        if denied is not None:
            return denied
        names = [w for w in request.query_params.get("window", "").split(",") if w] or None
        unknown = [w for w in names or [] if w not in windows]
        if unknown:
            return error(400, f"Unknown window {unknown[0]!r}; windows: {', '.join(windows)}.")
        return json_response(await hub.snapshot.remote(names))

    async def feedback(request: Request) -> Response:
        denied = guard(core, request)
        if denied is not None:
            return denied
        try:
            doc = json.loads(await request.body())
            ids, targets = doc["ids"], doc["targets"]
            if not isinstance(ids, list) or not isinstance(targets, list) or len(ids) != len(targets):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return error(400, "The body must be JSON with 'ids' and 'targets' lists of one length.")
        return json_response(await hub.feedback.remote([str(i) for i in ids], targets))

    async def set_alerts(request: Request) -> Response:
        denied = guard(core, request, always=True)
        if denied is not None:
            return denied
        try:
            rules = json.loads(await request.body())["rules"]
        except (ValueError, KeyError, TypeError):
            message = "The body must be JSON with a 'rules' list of {'rule': ..., 'k': ..., 'webhook': ...}."
            return error(400, message)
        result = await hub.set_alerts.remote(rules)
        return error(400, result["error"]) if "error" in result else json_response(result)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with core.router.lifespan_context(core):
            yield

    app = Starlette(
        routes=[
            Route("/monitor", monitor),
            Route("/feedback", feedback, methods=["POST"]),
            Route("/admin/alerts", set_alerts, methods=["POST"]),
            Mount("/", app=core),
        ],
        lifespan=lifespan,
    )
    app.state.server = core.state.server
    return app


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class Hub:
    """Windows of the whole deployment and of each replica, from every replica's records.

    Records arrive in bursts from each replica; they are held :data:`HUB_LAG_S` seconds and
    released in time order, so the rings stay sorted and the merged figures are those of the
    union of all requests (percentiles included), not an average of per-replica figures.
    """

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.folder = _folder(args)
        self.columns: list[str] = args["columns"]
        self.windows = args.get("windows")
        self.started = time.time()
        self.model: dict[str, Any] = {"ref": None, "version": None, "profile": None, "task": None}
        self.all = RequestWindows(self.columns, None, None, self.windows)
        self.per: dict[str, RequestWindows] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.pending: list[tuple[str, tuple[Any, ...]]] = []
        self.pending_batches: list[tuple[str, tuple[float, int, int]]] = []
        self.lock = threading.Lock()
        self.alerts = AlertBook(self.folder / "alerts.jsonl")
        self.alerts.set_rules(args.get("alerts", []))
        self.alert_window = args.get("alert_window") or next(iter(self.windows or {"1m": 60}))
        self.rebuilt = self._rebuild()
        self.stopping = threading.Event()
        threading.Thread(target=self._release_loop, daemon=True, name="nbdeploy-hub-release").start()
        threading.Thread(target=self._alert_loop, daemon=True, name="nbdeploy-hub-alerts").start()

    def _rebuild(self) -> int:
        """Queue the requests of the replicas' logs still inside the longest window, so a hub
        that Ray restarted (or a deployment served again) starts from what was answered."""
        from nbdeploy.serving.requestlog import read_records

        self.rebuilt_at = time.time()
        self.rebuilt_ids: set[str] = set()  # what replicas forwarded before the restart arrives too
        horizon = self.rebuilt_at - max((self.windows or DEFAULT_WINDOWS).values())
        count = 0
        for path in sorted(self.folder.glob("requests-*.jsonl")):
            replica = path.name.removeprefix("requests-").removesuffix(".jsonl")
            items = [
                (r["ts"], r.get("latency_ms", 0.0), r.get("status", 0), r.get("id", ""),
                 r.get("inputs") if "columns" not in r else None, r.get("predictions"))
                for r in read_records(path)
                if r.get("ts", 0) >= horizon
            ]  # fmt: skip
            if items:
                self.per[replica] = RequestWindows(self.columns, None, None, self.windows)
                self.meta[replica] = {"pid": None, "node": None, "last_seen": max(i[0] for i in items)}
                self.pending.extend((replica, item) for item in items)
                self.rebuilt_ids.update(item[3] for item in items)
                count += len(items)
        return count

    def reconfigure(self, config: dict[str, Any]) -> None:
        """The model being served (Serve calls this with the app's ``user_config``)."""
        self.model = dict(config)
        with self.lock:
            for windows in [self.all, *self.per.values()]:
                windows.set_profile(config.get("profile"), config.get("task"))

    def record(
        self,
        replica: str,
        meta: dict[str, Any],
        requests: Sequence[tuple[Any, ...]],
        batches: Sequence[tuple[float, int, int]],
    ) -> int:
        if self.rebuilt_ids:  # already read from the request logs
            if time.time() > self.rebuilt_at + 600:
                self.rebuilt_ids = set()
            requests = [r for r in requests if r[0] > self.rebuilt_at or r[3] not in self.rebuilt_ids]
        with self.lock:
            self.meta[replica] = {**meta, "last_seen": time.time()}
            if replica not in self.per:
                self.per[replica] = RequestWindows(
                    self.columns, self.model.get("profile"), self.model.get("task"), self.windows
                )
            self.pending.extend((replica, r) for r in requests)
            self.pending_batches.extend((replica, b) for b in batches)
        return len(requests)

    def _release(self, cut: float) -> None:
        with self.lock:
            ready = sorted((p for p in self.pending if p[1][0] <= cut), key=lambda p: p[1][0])
            self.pending = [p for p in self.pending if p[1][0] > cut]
            ready_b = sorted((p for p in self.pending_batches if p[1][0] <= cut), key=lambda p: p[1][0])
            self.pending_batches = [p for p in self.pending_batches if p[1][0] > cut]
            for replica, item in ready:
                self.all.add(*item)
                self.per[replica].add(*item)
            for replica, b in ready_b:
                self.all.add_batch(*b)
                self.per[replica].add_batch(*b)
            for windows in [self.all, *self.per.values()]:
                windows.fold()

    def _release_loop(self) -> None:
        while not self.stopping.wait(0.5):
            try:
                self._release(time.time() - HUB_LAG_S)
            except Exception as exc:  # monitoring must keep going
                print(f"monitoring hub fold failed: {type(exc).__name__}: {exc}", flush=True)

    def _alert_loop(self) -> None:
        while not self.stopping.wait(self.args.get("alert_interval_s", 5.0)):
            if not self.alerts.rules:
                continue
            try:
                with self.lock:
                    doc = self.all.snapshot(time.time(), [self.alert_window])
                self.alerts.evaluate(doc["windows"][self.alert_window])
            except Exception as exc:
                print(f"alert evaluation failed: {type(exc).__name__}: {exc}", flush=True)

    def snapshot(self, names: list[str] | None = None) -> dict[str, Any]:
        """The ``/monitor`` document: the deployment as a whole, plus ``replicas``."""
        now = time.time()
        with self.lock:
            doc = self.all.snapshot(now, names)
            doc["replicas"] = {
                rid: {**self.meta[rid], "windows": windows.snapshot(now, names)["windows"]}
                for rid, windows in self.per.items()
            }
        doc.update(
            name=self.args["name"], ref=self.model.get("ref"), version=self.model.get("version"), now=now,
            uptime_s=round(now - self.started, 3), alerts=self.alerts.to_dict(), columns=self.columns,
            task=self.all.task, target="ray", hub={"pid": os.getpid(), "rebuilt": self.rebuilt},
        )  # fmt: skip
        return doc

    def feedback(self, ids: list[str], targets: list[Any]) -> dict[str, Any]:
        self._release(time.time() + 1)  # labels may follow their requests closely
        unknown, lines = [], []
        with self.lock:
            for rid, target in zip(ids, targets, strict=True):
                labels = target if isinstance(target, list) else [target]
                known = self.all.feedback(rid, labels)
                for windows in self.per.values():
                    windows.feedback(rid, labels)
                if not known:
                    unknown.append(rid)
                lines.append(json.dumps({"id": rid, "labels": labels}) + "\n")
        with (self.folder / "feedback.jsonl").open("a") as fh:
            fh.write("".join(lines))
        return {"accepted": len(ids) - len(unknown), "unknown": unknown}

    def set_alerts(self, rules: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            self.alerts.set_rules(rules)
        except RuleError as exc:
            return {"error": str(exc)}
        except (KeyError, TypeError):
            return {"error": "The body must be JSON with a 'rules' list of {'rule': ..., 'k': ..., 'webhook': ...}."}
        result: dict[str, Any] = self.alerts.to_dict()
        return result

    def __del__(self) -> None:
        self.stopping.set()


def hub_app(args: dict[str, Any], model: dict[str, Any]) -> Any:
    """The monitoring application of one deployment (``model``: ref, version, profile, task)."""
    return Hub.options(user_config=model).bind(args)  # type: ignore[attr-defined]


def replica_app(args: dict[str, Any], model_tar: bytes, replicas: int, num_cpus: float) -> Any:
    """The serving application: ``replicas`` copies of the serving core."""
    return Replica.options(  # type: ignore[attr-defined]
        num_replicas=replicas,
        ray_actor_options={"num_cpus": num_cpus},
        # Ray's default of 5 would cap every micro-batch at 5 requests
        max_ongoing_requests=max(64, min(args["max_batch"], 1024)),
        graceful_shutdown_timeout_s=30,
    ).bind(args, model_tar)
