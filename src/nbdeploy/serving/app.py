"""The serving app: MLflow's scoring protocol plus ``/info``, ``/metrics``, ``/monitor`` and ``/admin``.

Built by :func:`create_app` from explicit settings (no globals, no import-time work):

>>> app = create_app(ServerSettings(name="cancer", ref="cancer/1", version=1), model, log)  # doctest: +SKIP

The parts, one module each: the route table with each route's access level
(:mod:`~nbdeploy.serving.routes`, checked by :mod:`~nbdeploy.serving.auth`), the exception
handlers (:mod:`~nbdeploy.serving.responses`), the server's state
(:mod:`~nbdeploy.serving.server`), ``/metrics`` (:mod:`~nbdeploy.serving.metrics`) and the
monitoring routes (:mod:`~nbdeploy.serving.monitor_routes`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from nbdeploy.serving.audit import AdminAudit
from nbdeploy.serving.auth import Guard
from nbdeploy.serving.decisions import decision_loop
from nbdeploy.serving.experiment_routes import prepare
from nbdeploy.serving.forgetting import retention_loop
from nbdeploy.serving.loader import LoadedModel
from nbdeploy.serving.log_columns_process import LogColumns
from nbdeploy.serving.monitor_routes import LocalMonitor, MonitorBackend, alert_loop, fold_loop, resource_loop
from nbdeploy.serving.protocol import ProtocolError
from nbdeploy.serving.requestlog import RequestLog
from nbdeploy.serving.responses import EXCEPTION_HANDLERS
from nbdeploy.serving.routes import routes
from nbdeploy.serving.server import Observer, Server
from nbdeploy.serving.tokens import TokenBook
from nbdeploy.spec import ServerSettings

__all__ = ["Observer", "ServerSettings", "create_app"]


def create_app(
    settings: ServerSettings,
    model: LoadedModel,
    log: RequestLog,
    background: Callable[[], Any] | None = None,
    observers: Sequence[Observer] = (),
    monitor: MonitorBackend | None = None,
) -> Starlette:
    """A Starlette app serving ``model``; ``background`` is started as a task in its lifespan.

    ``observers`` see every answered request besides the server's own monitor (the Ray
    replicas forward them to the deployment's monitoring hub). ``monitor`` answers
    ``/monitor``, ``/feedback`` and ``/admin/alerts``: by default this server's own windows,
    on Ray the deployment's monitoring hub.
    """
    server = Server(settings, model, log, observers)
    if settings.experiment is not None:  # a restart in the middle of an experiment resumes it
        try:
            # a hub's backend (a Ray replica's) counts the experiment over every replica
            server.experiment = prepare(server, settings.experiment, counts_here=monitor is None)
        except ProtocolError as exc:  # the champion serves on; the log says why the challenger does not
            print(f"the experiment in the spec was not resumed: {exc.message}", flush=True)
    folder = Path(settings.folder) if settings.folder else None  # none on a Ray replica: the owner token only
    audit_folder = Path(settings.audit_folder) if settings.audit_folder else folder  # a Ray replica's node folder
    audit = AdminAudit(audit_folder, settings.name, lambda: server.version)
    book = TokenBook(folder, settings.token, settings.token_book, settings.token_issued)
    guard = Guard(book, settings.require_token, audit)
    app = Starlette(
        routes=routes(server, monitor or LocalMonitor(server), guard),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=_lifespan(server, background),
    )
    app.state.server = server
    app.state.tokens = guard.book  # a Ray replica replaces it with each book the hub relays
    app.state.settings = asdict(settings) | {"token": None, "token_book": None, "log_key": None}
    return app


def _lifespan(server: Server, background: Callable[[], Any] | None) -> Callable[[Starlette], Any]:
    settings = server.settings

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.batcher.start()
        columns = LogColumns.of(settings)
        columns.start()
        server.log_copy = columns.process.pid if columns.process is not None else None
        if server.experiment is not None:
            server.experiment.start()
        if settings.parse_process:
            server.parse_pool.start()
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(background())] if background else []
        if settings.reload:  # on Ray the hub decides, over every replica's requests
            tasks.append(loop.create_task(decision_loop(server)))
        if settings.retention_s:
            tasks.append(loop.create_task(retention_loop(server, settings.retention_s)))
        if settings.monitor:
            tasks.append(loop.create_task(fold_loop(server.monitor)))
            tasks.append(loop.create_task(resource_loop(server.sampler, server.monitor.resources)))
            tasks.append(
                loop.create_task(
                    alert_loop(server.monitor, server.alerts, settings.alert_window, settings.alert_interval_s)
                )
            )
        try:
            yield
        finally:
            try:
                if server.experiment is not None:  # before the last forward to a Ray hub, which sends what is logged
                    await server.experiment.drop_mirrors()
                for task in tasks:
                    task.cancel()
                if tasks:  # let them finish what they do on cancellation (a last forward to the Ray hub)
                    await asyncio.wait(tasks, timeout=5)
                if server.experiment is not None:
                    await server.experiment.close(server.batcher)
                await server.batcher.stop()
                server.parse_pool.stop()
            finally:
                await asyncio.to_thread(columns.stop)  # its wait off the loop; stopped whatever failed above

    return lifespan
