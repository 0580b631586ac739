"""Deploy to and delete from a Ray cluster: ``python -m nbdeploy.serving.ray_ctl deploy|delete FOLDER``.

A short-lived Ray driver, so that the kernel never becomes one (a driver in a kernel prints
every worker's logs into the notebook and keeps Ray's threads in it). ``deploy`` reads the
deployment's ``spec.json`` and the history entry to serve (JSON on stdin, or the last one),
runs the serving and monitoring applications, waits until they run and prints one JSON
line: ``{"ok": true, "url": ..., "replicas": N}``. A failure prints ``{"ok": false, "error":
SENTENCE}`` and ends with code 1; Ray's own chatter goes to stderr (the deployment's log).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import tarfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nbdeploy import tokens
from nbdeploy.config import is_loopback
from nbdeploy.errors import NbdeployError
from nbdeploy.experiment import ExperimentSpec
from nbdeploy.privacy import LOG_KEY, read_key
from nbdeploy.spec import DeploymentSpec, ModelEntry, RaySpec

MAX_MODEL_BYTES = 256 << 20


class CtlError(Exception):
    """A failure to report as one sentence (the kernel shows it as a DeploymentError)."""


def _connect(ray_spec: RaySpec) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        address=ray_spec.address,
        namespace="nbdeploy",
        log_to_driver=False,
        logging_level=logging.WARNING,
        configure_logging=False,
    )


def _model_tar(model_path: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        tar.add(model_path, arcname="model")
    data = buf.getvalue()
    if len(data) > MAX_MODEL_BYTES:
        raise CtlError(f"The model is {len(data) >> 20} MB packed; Ray deployments take models up to 256 MB.")
    return data


def _args(folder: Path, spec: DeploymentSpec, entry: ModelEntry, ray_spec: RaySpec) -> dict[str, Any]:
    """What every replica and the hub are built from: the spec itself, the entry, the token."""
    from nbdeploy.serving.loader import read_signature

    inputs, _ = read_signature(entry.model_path)
    token_file = folder / "token"
    return {
        "spec": spec.to_dict(), "folder": str(folder), "hub_app": f"{spec.name}-monitor",
        "created": ray_spec.created, "entry": {**asdict(entry), "profile_path": None},
        "columns": [str(c["name"]) for c in inputs or [] if "name" in c],
        "token": token_file.read_text().strip() if token_file.exists() else None,
        # the tokens with roles (hashes): a replica reads no file, it may run on another machine. Without a
        # hub no change could reach the replicas, so they take the owner's only (a revoke could not reach them)
        "token_book": tokens.book(tokens.read_entries(folder) if spec.monitor else [], token_file.read_text().strip())
        if token_file.exists() else None,
        "issued": time.time(),  # when this book was read: a replica never takes an older one
        # the key of the logged inputs' hashes, the same on every replica (like the owner token, in Ray's GCS)
        "log_key": _log_key(folder, spec),
    }  # fmt: skip


def _log_key(folder: Path, spec: DeploymentSpec) -> str | None:
    if spec.log_inputs != "hashed" and not spec.redact:  # nothing is hashed
        return None
    key = read_key(folder)
    if key is None:
        raise CtlError(f"cannot hash the logged inputs: {folder / LOG_KEY} is missing or damaged; serve again")
    return key.hex()


def _model_config(entry: ModelEntry, experiment: ExperimentSpec | None) -> dict[str, Any]:
    """What the hub measures: the model served, and the experiment the replicas run (if any)."""
    return {
        "ref": entry.ref, "version": entry.version, "profile": entry.profile(), "task": entry.task,
        "experiment": experiment.to_dict() if experiment is not None else None,
    }  # fmt: skip


def _challenger_tar(entry: ModelEntry, experiment: ExperimentSpec | None) -> bytes | None:
    """The experiment's challenger packed for the replicas, after the checks a local server
    makes when it starts one (the replicas would otherwise serve the champion alone, silently)."""
    from nbdeploy.serving.loader import read_signature
    from nbdeploy.serving.protocol import Schema

    if experiment is None:
        return None
    names = [Schema.from_signature(read_signature(path)[0]).names for path in (entry.model_path,
             experiment.challenger.model_path)]  # fmt: skip
    if names[0] != names[1]:
        raise CtlError("The challenger takes other input columns than the champion: an experiment compares "
                       "models of the same inputs.")  # fmt: skip
    column = experiment.sticky_column
    if column is not None and column not in names[0]:
        raise CtlError(f"The sticky column {column[:60]!r} is not an input of the model.")
    return _model_tar(experiment.challenger.model_path)


def _proxy(ray_spec: RaySpec) -> tuple[str, int]:
    """Start Serve on the cluster (a no-op when it runs) and return its proxy's address."""
    from ray import serve

    serve.start(
        http_options={"host": ray_spec.http_host, "port": ray_spec.http_port},
        proxy_location="HeadOnly",  # one proxy: nodes sharing a machine would fight over its port
    )
    try:  # the proxy of a cluster where Serve already ran keeps its own address
        from ray.serve.context import _get_global_client

        http = _get_global_client().http_config  # type: ignore[union-attr]
        return str(http.host), int(http.port)
    except Exception:
        return ray_spec.http_host, ray_spec.http_port


def _ray_spec(folder: Path, spec: DeploymentSpec) -> RaySpec:
    if spec.ray is None:
        raise CtlError(f"Deployment {spec.name!r} ({folder}) is not a Ray deployment.")
    return spec.ray


def _check_cpus(ray_spec: RaySpec) -> None:
    import ray

    need, total = ray_spec.replicas * ray_spec.num_cpus, ray.cluster_resources().get("CPU", 0.0)
    if need > total:
        raise CtlError(
            f"The cluster has {total:g} CPUs and {ray_spec.replicas} replicas of {ray_spec.num_cpus:g} CPUs "
            f"need {need:g}: lower --replicas or --replica-cpus, or add nodes."
        )


def _current_hub(status: Any, app_name: str) -> bool:
    """Whether the deployment's hub runs and speaks this nbdeploy's protocol."""
    from ray import serve

    from nbdeploy.serving.ray_hub import HUB_PROTOCOL

    if status is None or str(status.status).rsplit(".", 1)[-1] != "RUNNING":
        return False
    try:
        hub = serve.get_deployment_handle("Hub", app_name=app_name)
        return bool(hub.protocol.remote().result(timeout_s=30) == HUB_PROTOCOL)
    except Exception:  # no such method: a hub of an earlier version
        return False


def deploy(folder: Path, entry: ModelEntry | None) -> dict[str, Any]:
    from ray import serve

    from nbdeploy.serving import ray_app

    spec = DeploymentSpec.load(folder)
    entry = entry or spec.current
    ray_spec = _ray_spec(folder, spec)
    _connect(ray_spec)
    _check_cpus(ray_spec)
    host, port = _proxy(ray_spec)
    # a proxy that already listened off loopback (Serve started earlier) exposes this deployment too
    spec.require_token = spec.require_token or not is_loopback(host)
    args = _args(folder, spec, entry, ray_spec)
    experiment = spec.experiment if entry is spec.current else None  # an update with an entry runs none
    model = {**_model_config(entry, experiment), "deployed_at": time.time()}
    challenger = _challenger_tar(entry, experiment)
    app = ray_app.replica_app(args, _model_tar(entry.model_path), ray_spec.replicas, ray_spec.num_cpus, challenger)
    targets = [serve.RunTarget(app, name=spec.name, route_prefix=f"/{spec.name}")]
    if spec.monitor:
        hub = serve.status().applications.get(args["hub_app"])
        if _current_hub(hub, args["hub_app"]):  # it keeps its windows across updates; it learns the new model
            serve.get_deployment_handle("Hub", app_name=args["hub_app"]).reconfigure.remote(model).result()
        else:  # none, not running, or an earlier nbdeploy's (it restarts from hub.json and the logs)
            targets.append(serve.RunTarget(ray_app.hub_app(args, model), name=args["hub_app"], route_prefix=None))
    started = time.perf_counter()
    serve.run_many(targets)  # both applications at once; returns when they run
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: reach it at the head node's address
        host = (ray_spec.address or "127.0.0.1").rsplit(":", 1)[0]
    shown = f"[{host}]" if ":" in host else host
    return {
        "url": f"http://{shown}:{port}/{spec.name}",
        "require_token": spec.require_token,
        "replicas": ray_spec.replicas,
        "seconds": round(time.perf_counter() - started, 2),
    }


def delete(folder: Path) -> dict[str, Any]:
    from ray import serve

    spec = DeploymentSpec.load(folder)
    _connect(_ray_spec(folder, spec))
    name = spec.name
    existing = serve.status().applications
    deleted = [app for app in (name, f"{name}-monitor") if app in existing]
    for app in deleted:  # all at once: each waits for its replicas' in-flight requests
        serve.delete(app, _blocking=False)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        left = [app for app in deleted if app in serve.status().applications]
        if not left:
            break
        time.sleep(0.2)
    if left:
        raise CtlError(f"Ray Serve still lists {', '.join(left)} after deleting it.")
    return {"deleted": deleted}


def _run(command: str, folder: Path) -> dict[str, Any]:
    if command == "deploy":
        text = "" if sys.stdin.isatty() else sys.stdin.read().strip()
        return deploy(folder, ModelEntry.from_dict(json.loads(text)) if text else None)
    return delete(folder)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("deploy", "delete"):
        print("usage: python -m nbdeploy.serving.ray_ctl deploy|delete DEPLOYMENT_DIR", file=sys.stderr)
        return 2
    try:
        result = {"ok": True, **_run(args[0], Path(args[1]))}
    except (CtlError, NbdeployError) as exc:
        result = {"ok": False, "error": str(exc)}
    except ConnectionError as exc:
        result = {"ok": False, "error": f"Could not connect to the Ray cluster: {exc}"}
    except Exception as exc:
        result = {"ok": False, "error": f"Ray {args[0]} failed: {type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # The answer is out and what was deployed lives in Serve's detached controller: leave
    # without Ray's driver shutdown, which took 1.5-5 s of every command on 2 busy cores
    os._exit(code)
