"""Starting a deployment: resolve and copy the model, write the spec, spawn, wait for health.

>>> d = serve("cancer@champion", port=5050)   # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

from nbdeploy import config
from nbdeploy._files import open_log, write_atomic
from nbdeploy.deployments import events, http, processes, ray_client, serve_options
from nbdeploy.deployments import tls as tls_module
from nbdeploy.deployments.handle import Deployment
from nbdeploy.deployments.models import fetch
from nbdeploy.errors import DeploymentError, InvalidInputError
from nbdeploy.privacy import LOG_KEY
from nbdeploy.refs import parse_ref, validate_name
from nbdeploy.spec import (
    DEFAULT_ALERT_K,
    DEFAULT_WINDOWS,
    DEFAULTS,
    RAY_DEFAULTS,
    DeploymentSpec,
    parse_windows,
)

__all__ = ["MARKER", "serve"]

MARKER = "nbdeploy.serving"  # the server's module, and what identifies its processes


def serve(
    ref: str,
    *,
    name: str | None = None,
    port: int = DEFAULTS.port,
    host: str = DEFAULTS.host,
    token: str | None = None,
    max_batch: int = DEFAULTS.max_batch,
    max_wait_ms: float = DEFAULTS.max_wait_ms,
    max_body_bytes: int = DEFAULTS.max_body_bytes,
    attach: bool = False,
    monitor: bool = DEFAULTS.monitor,
    alerts: Sequence[str] = (),
    webhook: str | None = None,
    alert_k: int = DEFAULT_ALERT_K,
    alert_interval_s: float = DEFAULTS.alert_interval_s,
    windows: str | Sequence[str] = tuple(DEFAULT_WINDOWS),
    timeout: float = 60.0,
    target: str = DEFAULTS.target,
    replicas: int = RAY_DEFAULTS.replicas,
    address: str | None = None,
    replica_cpus: float = RAY_DEFAULTS.num_cpus,
    tls: bool = False,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    insecure_http: bool = False,
    log_inputs: str = DEFAULTS.log_inputs,
    redact: Sequence[str] = (),
    retention: str | None = None,
    core_hour_price: float | None = None,
) -> Deployment:
    """Start a server for ``ref`` in its own process and return when ``/health`` answers.

    ``port=0`` picks a free port; a host other than loopback requires a bearer token
    (generated when not given) and ``tls`` (a certificate made for the deployment, or
    ``tls_cert``/``tls_key`` of your own) or ``insecure_http``. ``attach=True`` ends the server
    with this process. ``alerts`` are rules such as ``"p95_ms>50"`` on the first of ``windows``,
    firing after ``alert_k`` breaches, posted to ``webhook``. ``log_inputs`` (``full``,
    ``hashed``, ``none``) and ``redact`` say what of the inputs the request log keeps,
    ``retention`` (``"30d"``) for how long; ``core_hour_price`` prices ``/monitor``'s CPU.
    ``target="ray"`` runs ``replicas`` copies on the Ray cluster at ``address`` (or
    ``RAY_ADDRESS``, or one nbdeploy starts) behind Ray's proxy.

    >>> d = serve("cancer@champion", port=5050)   # doctest: +SKIP
    >>> d = serve("cancer@champion", target="ray", replicas=2)   # doctest: +SKIP
    """
    from nbdeploy.deployments.watching import check_priced, with_baseline
    from nbdeploy.monitoring.alerts import rule_specs

    r = parse_ref(ref)
    core_hour_price = config.core_hour_price() if core_hour_price is None else core_hour_price
    alerts = [with_baseline(rule, ref) for rule in check_priced(alerts, core_hour_price)]
    spec = DeploymentSpec(
        name=validate_name(name or r.name or f"run-{r.run_id}"), host=host, port=port,
        require_token=bool(token) or not config.is_loopback(host), max_batch=max_batch, max_wait_ms=max_wait_ms,
        max_body_bytes=max_body_bytes, attach_to=os.getpid() if attach else None, monitor=monitor,
        alerts=rule_specs(alerts, webhook, alert_k), alert_interval_s=alert_interval_s,
        windows=parse_windows(windows), target=target, core_hour_price=core_hour_price,
    )  # fmt: skip
    serve_options.set_transport(spec, tls, tls_cert, tls_key, insecure_http)
    serve_options.set_privacy(spec, log_inputs, redact, retention)
    if target == "ray":
        spec.ray = serve_options.ray_spec(host, port, replicas, replica_cpus, attach)
    spec.validate()
    return _launch(spec, ref, token, address, timeout, make_certificate=tls and not tls_cert)


def _launch(spec: DeploymentSpec, ref: str, token: str | None, address: str | None, timeout: float,
            make_certificate: bool = False) -> Deployment:  # fmt: skip
    folder = config.home() / spec.name
    with processes.locked(folder):
        existing = Deployment(spec.name, folder)
        if (folder / "spec.json").exists() and existing.state() == "running":
            raise DeploymentError(
                f"Deployment {spec.name!r} is already running at {existing.url}: "
                "stop it first or choose another name."
            )
        spec.history = [fetch(ref, folder)]
        serve_options.check_redacted(spec)
        if (spec.log_inputs == "hashed" or spec.redact) and not (folder / LOG_KEY).exists():
            # kept across serves: hashes of one deployment stay comparable (forget --where, counts by value)
            write_atomic(folder / LOG_KEY, secrets.token_hex(32), private=True)
        write_atomic(folder / "token", token or secrets.token_urlsafe(24), private=True)
        if make_certificate:
            spec.tls_cert, spec.tls_key = tls_module.make_certificate(folder, spec.host)
        else:  # a key of an earlier serve --tls is no one's now
            shutil.rmtree(folder / "tls", ignore_errors=True)
        for stale in ("pid", "port", "deployed"):
            with contextlib.suppress(FileNotFoundError):
                (folder / stale).unlink()
        dep = Deployment(spec.name, folder)
        started = _start_ray(dep, spec, address, timeout) if spec.ray is not None else None
        if started is None:
            spec.save(folder)
            started = _start(dep, timeout, attach=spec.attach_to is not None)
        events.record(folder, "served", spec.current, target="ray" if spec.ray is not None else "local")
        return started


def _start_ray(dep: Deployment, spec: DeploymentSpec, address: str | None, timeout: float) -> Deployment:
    assert spec.ray is not None
    spec.ray.address, spec.ray.started_cluster = ray_client.resolve_address(address)
    spec.save(dep.path)
    # "deployed" before deploying: whatever interrupts what follows, stop() deletes the applications
    write_atomic(dep.path / "deployed", "")
    try:
        result = ray_client.ctl(dep.path, "deploy", timeout=max(timeout, 120.0))
        spec.ray.url = result["url"]
        spec.require_token = result["require_token"]  # a proxy already listening off loopback needs it
        spec.save(dep.path)
        write_atomic(dep.path / "deployed", result["url"])
        if not _answers_within(result["url"], timeout):
            raise DeploymentError(f"{result['url']}/health did not answer within {timeout:.0f} s.")
        return dep
    except BaseException as exc:  # an error, or Ctrl-C in the notebook: leave nothing deployed
        with contextlib.suppress(Exception):
            dep.stop()
        if isinstance(exc, DeploymentError):
            raise DeploymentError(
                f"The Ray deployment of {dep.name!r} failed: {exc} The last lines of its log:\n{dep.logs(15)}"
            ) from None
        raise


def _answers_within(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http.answers(url):
            return True
        time.sleep(0.1)
    return False


def _wait_healthy(dep: Deployment, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Return once the server answers ``/health``; a server that exits or never answers is
    stopped and reported with the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            dep.stop()
            raise DeploymentError(
                f"The server for {dep.name!r} exited with code {proc.returncode} before it was ready; "
                f"the last lines of its log:\n{dep.logs(15)}"
            )
        if dep.port and http.answers(dep.url, tls_module.verify(dep.spec.tls_cert), timeout=1):
            return
        time.sleep(0.02)
    dep.stop()
    raise DeploymentError(
        f"The server for {dep.name!r} was not ready after {timeout:.0f} s; the last lines of its log:\n{dep.logs(15)}"
    )


def _start(dep: Deployment, timeout: float, attach: bool) -> Deployment:
    with open_log(dep.path / "server.log") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", MARKER, str(dep.path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    processes.children[proc.pid] = proc
    write_atomic(dep.path / "pid", str(proc.pid))
    if attach:
        processes.attached[proc.pid] = str(dep.path)
        atexit.register(processes.stop_attached)
    _wait_healthy(dep, timeout, proc)
    return dep


def start(name: str, timeout: float = 60.0) -> Deployment:
    """Start the local server of a stopped (or dead) deployment again, from the spec in its
    folder; it is not tied to any kernel, whatever ``--attach`` said the first time.

    >>> start("cancer")   # doctest: +SKIP
    """
    from nbdeploy.deployments.store import get

    dep = get(name)  # names the deployments there are, and creates no folder
    with processes.locked(dep.path):
        spec = dep.spec
        if spec.ray is not None:
            raise InvalidInputError(f"Deployment {name!r} runs on Ray: serve it again with --target ray.")
        if dep.state() == "running":
            raise DeploymentError(f"Deployment {name!r} is already running at {dep.url}.")
        dep.stop()  # a dead server's pid and port files
        if spec.attach_to is not None:  # that kernel's pid would end the new server at once
            spec.attach_to = None
            spec.save(dep.path)
        started = _start(dep, timeout, attach=False)
        events.record(dep.path, "served", spec.current, target="local", restarted=True)
        return started
