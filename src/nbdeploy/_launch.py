"""Starting servers: resolve and copy the model, write the spec, spawn, wait for health.

>>> d = serve("cancer@champion", port=5050)   # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nbdeploy import _procs, _ray, config
from nbdeploy._deployments import MARKER, Deployment, _folder, _save_spec
from nbdeploy.errors import DeploymentError, InvalidInputError
from nbdeploy.refs import parse_ref, validate_name

__all__ = ["alert_specs", "fetch", "serve"]


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def fetch(ref: str, folder: Path) -> dict[str, Any]:
    """Resolve ``ref`` and copy its model (and profile) into the deployment folder."""
    from nbdeploy import registry

    r = parse_ref(ref)
    if r.run_id is not None:
        uri, version, label = r.uri, None, str(r)
        dst = folder / "models" / f"run-{r.run_id}"
        profile, task = None, None
    else:
        mv = registry.resolve(r)
        uri, version, label = mv.source or mv.uri, mv.version, f"{mv.name}/{mv.version}"
        dst = folder / "models" / f"{mv.name}-v{mv.version}"  # one name may serve another model later
        profile, task = registry.load_profile(mv), mv.tags.get("nbdeploy.task")
    if not (dst / "model" / "MLmodel").exists():
        registry.download_model(uri, dst / "model")
    path = dst / "model"
    if not (path / "MLmodel").exists():  # MLflow keeps the last path segment for runs:/ URIs
        path = next(p.parent for p in dst.rglob("MLmodel"))
    profile_path = None
    if profile is not None:
        profile_path = dst / "profile.json"
        profile_path.write_text(json.dumps(profile))
    return {
        "ref": ref, "resolved": label, "version": version, "model_path": str(path), "task": task,
        "profile_path": str(profile_path) if profile_path else None, "at": time.time(),
    }  # fmt: skip


def alert_specs(rules: Sequence[str], webhook: str | None, k: int) -> list[dict[str, Any]]:
    """Validate alert rules in the kernel so a typo fails here, not in the server."""
    from nbdeploy.monitoring.alerts import Rule, RuleError

    out = []
    for text in rules:
        try:
            rule = Rule.parse(text, k=k, webhook=webhook)
        except RuleError as exc:
            raise InvalidInputError(str(exc)) from None
        out.append({"rule": rule.text, "k": k, "webhook": webhook})
    return out


def _window_spec(windows: Sequence[str]) -> dict[str, float]:
    """``["1m", "15m"]`` -> ``{"1m": 60.0, "15m": 900.0}``; alerts use the first window."""
    from nbdeploy.monitoring.windows import parse_window

    if not windows:
        raise InvalidInputError("Give at least one monitoring window, for example 1m.")
    try:
        return {w.strip(): parse_window(w) for w in windows}
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def serve(
    ref: str,
    *,
    name: str | None = None,
    port: int = 0,
    host: str = "127.0.0.1",
    token: str | None = None,
    max_batch: int = 1024,
    max_wait_ms: float = 2.0,
    max_body_bytes: int = 16 << 20,
    attach: bool = False,
    monitor: bool = True,
    alerts: Sequence[str] = (),
    webhook: str | None = None,
    alert_k: int = 3,
    alert_interval_s: float = 5.0,
    windows: Sequence[str] = ("1m", "5m", "1h"),
    timeout: float = 60.0,
    target: str = "local",
    replicas: int = 1,
    address: str | None = None,
    replica_cpus: float = 0.5,
) -> Deployment:
    """Start a server for ``ref`` in its own process and return when ``/health`` answers.

    ``port=0`` picks a free port. A host other than loopback requires a bearer token
    (generated when not given). With ``attach=True`` the server ends with this process.
    ``windows`` are the monitoring windows (``"30s"``, ``"5m"``, ``"1h"``…). ``alerts`` are
    rules such as ``"p95_ms>50"`` (see :mod:`nbdeploy.monitoring.alerts`), evaluated on the
    first window every ``alert_interval_s`` seconds, each firing after ``alert_k`` breaching
    evaluations, posted to ``webhook`` if given.

    ``target="ray"`` runs ``replicas`` copies of the same server as a Ray Serve application
    on the cluster at ``address`` (or ``RAY_ADDRESS``; nbdeploy starts a local cluster when
    neither is given), behind Ray's HTTP proxy on ``host:port`` (port 8000 by default), each
    replica reserving ``replica_cpus`` CPUs.

    >>> d = serve("cancer@champion", port=5050)   # doctest: +SKIP
    >>> d = serve("cancer@champion", target="ray", replicas=2)   # doctest: +SKIP
    """
    r = parse_ref(ref)
    name = validate_name(name or r.name or f"run-{r.run_id}")
    if not 0 <= port <= 65535:
        raise InvalidInputError(f"Invalid port {port}: use 1-65535, or 0 for a free port.")
    if max_batch < 1:
        raise InvalidInputError(f"Invalid max batch {max_batch}: a predict call takes at least 1 row.")
    if max_wait_ms < 0:
        raise InvalidInputError(f"Invalid max wait {max_wait_ms} ms: use 0 or more milliseconds.")
    if max_body_bytes < 1:
        raise InvalidInputError(f"Invalid body limit {max_body_bytes} bytes: use a positive size.")
    if target not in ("local", "ray"):
        raise InvalidInputError(f"Unknown target {target!r}: use local or ray.")
    if target == "ray":
        _ray.require_ray()
        _ray.validate(replicas, replica_cpus)
        if attach:
            raise InvalidInputError(
                "--attach ties a local server to this kernel; Ray deployments live on their cluster."
            )
    rules = alert_specs(alerts, webhook, alert_k)
    window_spec = _window_spec(windows)
    folder = _folder(name)
    with _procs.locked(folder):
        existing = Deployment(name, folder)
        if (folder / "spec.json").exists() and existing.state() == "running":
            raise DeploymentError(
                f"Deployment {name!r} is already running at {existing.url}: stop it first or choose another name."
            )
        entry = fetch(ref, folder)
        _write_private(folder / "token", token or secrets.token_urlsafe(24))
        spec = {
            "name": name,
            "host": host,
            "port": port,
            "require_token": bool(token) or not config.is_loopback(host),
            "max_batch": max_batch,
            "max_wait_ms": max_wait_ms,
            "max_body_bytes": max_body_bytes,
            "attach_to": os.getpid() if attach else None,
            "monitor": monitor,
            "alerts": rules,
            "alert_interval_s": alert_interval_s,
            "log_rows": 100,  # rows of inputs and predictions kept per request in the log
            "log_max_bytes": 64 << 20,  # the request log rotates past this size
            "windows": window_spec,
            "alert_window": next(iter(window_spec)),
            "history": [entry],
            "target": target,
        }
        for stale in ("pid", "port", "deployed"):
            with contextlib.suppress(FileNotFoundError):
                (folder / stale).unlink()
        if target == "ray":
            spec["ray"] = {
                "address": None, "started_cluster": False, "replicas": replicas, "num_cpus": replica_cpus,
                "http_host": host, "http_port": port or 8000, "url": None, "created": time.time(),
            }  # fmt: skip
            return _start_ray(Deployment(name, folder), spec, address, timeout)
        _save_spec(folder, spec)
        return _start(Deployment(name, folder), timeout, attach)


def _start_ray(dep: Deployment, spec: dict[str, Any], address: str | None, timeout: float) -> Deployment:
    import httpx

    spec["ray"]["address"], spec["ray"]["started_cluster"] = _ray.resolve_address(address)
    _save_spec(dep.path, spec)
    # "deployed" before deploying: whatever interrupts what follows, stop() deletes the applications
    (dep.path / "deployed").write_text("")
    try:
        result = _ray.ctl(dep.path, "deploy", timeout=max(timeout, 120.0))
        spec["ray"]["url"] = result["url"]
        spec["require_token"] = result["require_token"]  # a proxy already listening off loopback needs it
        _save_spec(dep.path, spec)
        (dep.path / "deployed").write_text(result["url"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(result["url"] + "/health", timeout=2).status_code == 200:
                    return dep
            time.sleep(0.1)
        raise DeploymentError(f"{result['url']}/health did not answer within {timeout:.0f} s.")
    except BaseException as exc:  # an error, or Ctrl-C in the notebook: leave nothing deployed
        with contextlib.suppress(Exception):
            dep.stop()
        if isinstance(exc, DeploymentError):
            raise DeploymentError(
                f"The Ray deployment of {dep.name!r} failed: {exc} The last lines of its log:\n{dep.logs(15)}"
            ) from None
        raise


def _start(dep: Deployment, timeout: float, attach: bool) -> Deployment:
    import httpx

    with (dep.path / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", MARKER, str(dep.path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    _procs.children[proc.pid] = proc
    (dep.path / "pid").write_text(str(proc.pid))
    if attach:
        _procs.attached[proc.pid] = str(dep.path)
        atexit.register(_procs.stop_attached)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            dep.stop()
            raise DeploymentError(
                f"The server for {dep.name!r} exited with code {proc.returncode} before it was ready; "
                f"the last lines of its log:\n{dep.logs(15)}"
            )
        if dep.port:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(dep.url + "/health", timeout=1).status_code == 200:
                    return dep
        time.sleep(0.02)
    dep.stop()
    raise DeploymentError(
        f"The server for {dep.name!r} was not ready after {timeout:.0f} s; the last lines of its log:\n{dep.logs(15)}"
    )
