"""Process entry: ``python -m nbdeploy.serving DEPLOYMENT_DIR``.

Reads the :class:`~nbdeploy.spec.DeploymentSpec` and ``token`` from the deployment folder, loads the model, binds the
socket (port 0 picks a free one), writes the bound port to ``port`` and serves until
SIGTERM. With ``attach`` in the spec it also exits when the kernel that started it is gone.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from nbdeploy._files import write_atomic
from nbdeploy.log_files import sweep
from nbdeploy.privacy import LOG_KEY, LogPrivacy, keeps_private, read_key
from nbdeploy.spec import DeploymentSpec


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


async def _watch_parent(parent: int) -> None:
    """End the server when the kernel that attached it exits (even by ``kill -9``)."""
    while True:
        await asyncio.sleep(0.5)
        try:
            os.kill(parent, 0)
            alive = os.getppid() == parent
        except OSError:
            alive = False
        if not alive:
            print(f"parent process {parent} is gone; stopping (attached deployment)", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _rebuild(server: Any, folder: Path) -> None:
    """After a restart, refill the monitoring windows and a running experiment's counts from
    the request log (read once for both) and the feedback log, and say so in server.log."""
    from nbdeploy.monitoring.replay import logged_feedback, logged_request, read_records

    monitor, experiment = server.monitor if server.settings.monitor else None, server.experiment
    if monitor is None and experiment is None:
        return
    records = read_records(folder / "requests.jsonl")
    if experiment is not None:
        counted = experiment.replay(records)
        for rid, values in logged_feedback(folder / "feedback.jsonl", since=experiment.spec.started):
            experiment.add_labels(rid, values)
        print(f"resumed the {experiment.spec.kind} of {experiment.label} ({counted} logged requests)", flush=True)
    if monitor is None:
        return
    requests = labels = 0
    since = time.time() - max(monitor.windows.values())
    for record in records:
        item = logged_request(record, since)
        if item is not None:
            monitor.add(*item)
            requests += 1
    for rid, values in logged_feedback(folder / "feedback.jsonl", since=since):
        monitor.feedback(rid, values)
        labels += 1
    if requests or labels:
        print(f"rebuilt monitoring windows from {requests} logged requests and {labels} labels", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m nbdeploy.serving DEPLOYMENT_DIR", file=sys.stderr)
        return 2
    folder = Path(args[0])
    started = time.perf_counter()
    spec = DeploymentSpec.load(folder)
    token_file = folder / "token"
    token = token_file.read_text().strip() if token_file.exists() else None

    import prometheus_client

    prometheus_client.disable_created_metrics()  # *_created series only add noise to /metrics

    from nbdeploy.serving.app import create_app
    from nbdeploy.serving.loader import load
    from nbdeploy.serving.requestlog import RequestLog

    model = load(spec.current.model_path)
    settings = spec.server_settings(token=token, folder=folder)
    sweep(folder)  # copies of log records a forget killed mid-way left
    log = RequestLog(folder / "requests.jsonl", max_bytes=spec.log_max_bytes)
    parent = spec.attach_to
    app = create_app(settings, model, log, background=(lambda: _watch_parent(parent)) if parent else None)
    if keeps_private(spec.log_inputs, spec.redact):
        key = read_key(folder)
        if key is None:
            print(f"cannot hash the logged inputs: {folder / LOG_KEY} is missing or damaged; serve again",
                  file=sys.stderr, flush=True)  # fmt: skip
            return 3
        server = app.state.server
        log.privacy = LogPrivacy(spec.log_inputs, spec.redact, key, lambda: server.schema.names)
    _rebuild(app.state.server, folder)
    try:
        sock = _bind(spec.host, spec.port)
    except OSError as exc:
        print(f"cannot listen on {spec.host}:{spec.port}: {exc.strerror}", file=sys.stderr, flush=True)
        return 3
    port = sock.getsockname()[1]
    # The model and libraries are loaded for good: move them out of the collector's sight so
    # that full collections (which otherwise walk every tree of a forest) stay short. No
    # collection first: it cost ~0.1 s of every start, for the few cycles imports leave.
    gc.freeze()
    write_atomic(folder / "port", str(port))
    print(
        f"nbdeploy serving {spec.name} ({settings.ref}) on {'https' if spec.tls_cert else 'http'}://{spec.host}:"
        f"{port}, pid {os.getpid()}, ready in {time.perf_counter() - started:.2f} s",
        flush=True,
    )
    _run_uvicorn(app, sock, spec.tls_cert, spec.tls_key)
    log.close()
    print("nbdeploy server stopped", flush=True)
    return 0


def _run_uvicorn(app: Any, sock: socket.socket, cert: str | None, key: str | None) -> None:
    """Serve ``app`` on ``sock`` (HTTPS with ``cert`` and ``key``) until a signal stops it."""
    import uvicorn

    from nbdeploy.serving.http_limits import LimitedHttpToolsProtocol

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    config = uvicorn.Config(
        app,
        loop=loop,
        http=LimitedHttpToolsProtocol,  # httptools with limits on the head (size, fields, time)
        ws="none",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
        ssl_certfile=cert,
        ssl_keyfile=key,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
