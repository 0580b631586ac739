"""The Ray Serve face of the serving core: N replicas of the same app behind Ray's proxy.

Imported only where Ray runs: on the cluster's workers, and by :mod:`nbdeploy.serving.ray_ctl`
(the short-lived process that deploys). The kernel never imports it.

Two Serve applications per deployment:

- ``NAME`` (route prefix ``/NAME``): :class:`Replica`, each building exactly the Starlette
  app of the local server (:func:`nbdeploy.serving.app.create_app`: protocol, schema errors,
  micro-batching, request log), with the deployment's hub behind ``/monitor``, ``/feedback``
  and ``/admin/alerts`` (:class:`HubMonitor`). Rolling updates replace these replicas.
- ``NAME-monitor`` (no route): one :class:`Hub` that receives every answered request from
  every replica and keeps the windows of the whole deployment and of each replica from the
  raw records, so merged percentiles are exact. It lives across updates.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import serve

from nbdeploy._files import append_private
from nbdeploy.monitoring.resources import ProcessSampler
from nbdeploy.privacy import LogPrivacy, keeps_private, key_from_hex
from nbdeploy.serving.app import create_app
from nbdeploy.serving.hub_monitor import HubMonitor
from nbdeploy.serving.loader import load
from nbdeploy.serving.ray_hub import Hub
from nbdeploy.serving.ray_node import node_folder
from nbdeploy.serving.requestlog import RequestLog
from nbdeploy.spec import DeploymentSpec, ModelEntry

__all__ = ["Hub", "HubMonitor", "Replica", "hub_app", "replica_app"]

FORWARD_S = 0.5


def _unpack(model_tar: bytes) -> Path:
    """The model's files on this node, unpacked once per model (replicas and restarts share them)."""
    digest = hashlib.sha256(model_tar).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "nbdeploy-models" / digest
    if not (folder / "model" / "MLmodel").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{digest}-", dir=folder.parent))
        with tarfile.open(fileobj=io.BytesIO(model_tar), mode="r:gz") as tar:
            tar.extractall(staging, filter="data")
        try:
            staging.replace(folder)  # atomic: a replica starting beside this one sees all or nothing
        except OSError:  # another replica got there first
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def _say(folder: Path, who: str, message: str) -> None:
    """One line in the deployment's ``server.log`` (what ``%deploy logs`` shows)."""
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{who}] {message}\n"
    append_private(folder / "server.log", line)


class _Forwarder:
    """An observer of the serving app that ships what it saw to the hub twice a second."""

    def __init__(self, hub: Any, replica: str, meta: dict[str, Any]) -> None:
        self.hub, self.replica, self.meta = hub, replica, meta
        self.requests: list[tuple[Any, ...]] = []
        self.batches: list[tuple[float, int, int]] = []
        self.records: list[dict[str, Any]] = []  # request-log records of a running experiment
        self.sampler: ProcessSampler | None = None  # the replica's CPU, memory and predictions, for the hub
        self.tokens: Any = None  # the app's TokenBook: the hub answers with a newer book when there is one
        self.forgetting: Any = None  # the app's Forgetting: runs the hub's forget orders on this replica's log
        self.done: dict[int, Any] = {}  # forget orders carried out, for the next report

    def add(self, ts: float, latency_ms: float, status: int, rid: str, inputs: Any = None, predictions: Any = None,
            confidence: Any = None) -> None:  # fmt: skip
        self.requests.append((ts, latency_ms, status, rid, inputs, predictions, confidence))

    def add_batch(self, ts: float, requests: int, rows: int) -> None:
        self.batches.append((ts, requests, rows))

    async def send(self) -> None:
        requests, self.requests = self.requests, []
        batches, self.batches = self.batches, []
        records, self.records = self.records, []
        if self.sampler is not None:
            try:  # (time, CPU seconds, RSS, predictions): the hub keeps each replica's samples
                self.meta["resources"] = await asyncio.to_thread(self.sampler.read)
            except Exception as exc:  # a reading must never cost the forwarding
                print(f"resource reading failed: {type(exc).__name__}: {exc}", flush=True)
        digest = self.tokens.digest if self.tokens is not None else None
        done, self.done = self.done, {}
        try:
            answer = await self.hub.record.remote(self.replica, self.meta, requests, batches, records, digest, done)
        except Exception as exc:  # the hub restarting must not end serving; the request log has it all
            print(f"monitoring hub unreachable, {len(requests)} records not forwarded: {exc}", flush=True)
            self.done.update(done)  # said again next time
            return
        book = answer.get("tokens") if isinstance(answer, dict) else None
        if book is not None and self.tokens is not None:
            self.tokens.replace(book["book"], float(book["issued"]))
        for order in (answer.get("orders") if isinstance(answer, dict) else None) or []:
            await self._forget(order)

    async def _forget(self, order: dict[str, Any]) -> None:
        """One forget order of the hub, on this replica's own log (off the loop); one that fails
        is said and left undone, so the hub hands it over again with the next report."""
        if self.forgetting is None:
            return
        try:
            self.done[order["n"]] = await asyncio.to_thread(self.forgetting.run_order, order["ids"], order["where"])
        except Exception as exc:  # the forwarding (and the next try) must go on
            print(f"forget order {order.get('n')} failed: {type(exc).__name__}: {exc}", flush=True)

    async def loop(self) -> None:
        try:
            while True:
                await asyncio.sleep(FORWARD_S)
                await self.send()
        except asyncio.CancelledError:  # the replica is stopping (an update, a scale-down): send the rest
            await asyncio.wait_for(self.send(), timeout=5)
            raise


class _ForwardedLog(RequestLog):
    """The replica's request log; the records of a running experiment (those with a
    ``variant``) also go to the hub, which keeps the experiment's accounts for all replicas."""

    def __init__(self, path: Path, max_bytes: int, forward: _Forwarder | None) -> None:
        super().__init__(path, max_bytes=max_bytes)
        self.forward = forward

    def append(self, record: dict[str, Any]) -> None:
        super().append(record)
        if self.forward is not None and "variant" in record:
            self.forward.records.append(record)

    def append_many(self, records: list[dict[str, Any]]) -> None:
        super().append_many(records)
        if self.forward is not None:
            self.forward.records.extend(record for record in records if "variant" in record)


def _experiment(spec: DeploymentSpec, challenger_tar: bytes | None) -> dict[str, Any] | None:
    """The spec's experiment with the challenger's files on this node (``None``: none)."""
    if spec.experiment is None or challenger_tar is None:
        return None
    doc = spec.experiment.to_dict()
    doc["challenger"].update(model_path=str(_unpack(challenger_tar) / "model"), profile_path=None)
    return doc


@serve.deployment
@serve.ingress()
class Replica:
    """One replica: the local server's app, its request log in ``requests-<replica>.jsonl``."""

    def __init__(self, args: dict[str, Any], model_tar: bytes, challenger_tar: bytes | None = None) -> None:
        ctx = serve.get_replica_context()
        self.replica = ctx.replica_id.unique_id
        self.folder = node_folder(args)
        self.model = load(_unpack(model_tar) / "model")
        spec, entry = DeploymentSpec.from_dict(args["spec"]), ModelEntry.from_dict(args["entry"])
        # the hub monitors; a replica's model changes by a rolling update; Ray's proxy gives request ids
        self.settings = spec.server_settings(
            token=args.get("token"),
            folder=None,
            entry=entry,
            monitor=False,
            reload=False,
            proxy_request_id=True,
            parse_process=False,  # a Ray worker spawns no processes of its own (a canary's challenger: a thread)
            shadow_actor=True,  # a shadow's: an actor Ray starts on this node, outside the replica's process
            shadow_hub=args["hub_app"] if spec.monitor else None,  # ... which reads this replica's log
            experiment=_experiment(spec, challenger_tar),
            token_book=args.get("token_book"),  # the kernel's at deploy time; the hub relays newer ones
            token_issued=float(args.get("issued", 0.0)),
            log_key=args.get("log_key"),  # to find a value among hashed inputs (forget --where)
            audit_folder=str(self.folder),  # admin calls of other tokens, refused attempts: audit.jsonl here
        )
        node = str(ray.get_runtime_context().get_node_id())
        meta: dict[str, Any] = {"pid": os.getpid(), "node": node, "started": time.time()}
        self.hub = serve.get_deployment_handle("Hub", app_name=args["hub_app"]) if spec.monitor else None
        self.forward = _Forwarder(self.hub, self.replica, meta) if self.hub is not None else None
        log_path = self.folder / f"requests-{self.replica}.jsonl"
        self.log = _ForwardedLog(log_path, spec.log_max_bytes, self.forward)
        if keeps_private(spec.log_inputs, spec.redact):  # before a record is written (or forwarded to the hub)
            key, columns = key_from_hex(args.get("log_key")), list(args["columns"])
            self.log.privacy = LogPrivacy(spec.log_inputs, spec.redact, key, lambda: columns)
        _say(self.folder, self.replica, f"serving {entry.ref} (pid {os.getpid()}, node {node[:12]})")

    def __serve_build_asgi_app__(self) -> Any:
        forward = self.forward
        app = create_app(
            self.settings,
            self.model,
            self.log,
            background=forward.loop if forward is not None else None,
            observers=[forward] if forward is not None else [],
            monitor=HubMonitor(self.hub, self.settings.windows) if self.hub is not None else None,
        )
        if forward is not None:
            forward.sampler, forward.tokens = app.state.server.sampler, app.state.tokens
            forward.forgetting = app.state.server.forgetting
        return app


def hub_app(args: dict[str, Any], model: dict[str, Any]) -> Any:
    """The monitoring application of one deployment (``model``: ref, version, profile, task)."""
    return Hub.options(user_config=model).bind(args)  # type: ignore[attr-defined]


def replica_app(
    args: dict[str, Any], model_tar: bytes, replicas: int, num_cpus: float, challenger_tar: bytes | None = None
) -> Any:
    """The serving application: ``replicas`` copies of the serving core (each with the
    experiment's challenger, when the spec runs one)."""
    return Replica.options(  # type: ignore[attr-defined]
        num_replicas=replicas,
        ray_actor_options={"num_cpus": num_cpus},
        # Ray's default of 5 would cap every micro-batch at 5 requests
        max_ongoing_requests=max(64, min(args["spec"]["max_batch"], 1024)),  # not a default: a cap
        graceful_shutdown_timeout_s=30,
    ).bind(args, model_tar, challenger_tar)
