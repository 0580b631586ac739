"""Deploy to and delete from a Ray cluster: ``python -m nbdeploy.serving.ray_ctl deploy|delete FOLDER``.

A short-lived Ray driver, so that the kernel never becomes one (a driver in a kernel prints
every worker's logs into the notebook and keeps Ray's threads in it). ``deploy`` reads the
deployment's ``spec.json`` and the history entry to serve (JSON on stdin, or the last one),
runs the serving and monitoring applications, waits until they run and prints one JSON
line: ``{"url": ..., "replicas": N}``. Errors end it with code 1 and one sentence on stderr.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from nbdeploy.config import is_loopback

MAX_MODEL_BYTES = 256 << 20


def _connect(spec: dict[str, Any]) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        address=spec["ray"]["address"],
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
        raise SystemExit(f"The model is {len(data) >> 20} MB packed; Ray deployments take models up to 256 MB.")
    return data


def _args(folder: Path, spec: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    from nbdeploy.serving.loader import read_signature

    inputs, _ = read_signature(entry["model_path"])
    token_file = folder / "token"
    return {
        "name": spec["name"], "folder": str(folder), "hub_app": f"{spec['name']}-monitor",
        "created": spec["ray"].get("created"),
        "entry": {k: entry.get(k) for k in ("ref", "resolved", "version", "task")},
        "columns": [str(c["name"]) for c in inputs or [] if "name" in c],
        "token": token_file.read_text().strip() if token_file.exists() else None,
        "require_token": spec["require_token"], "max_body_bytes": spec["max_body_bytes"],
        "max_batch": spec["max_batch"], "max_wait_ms": spec["max_wait_ms"], "log_rows": spec.get("log_rows", 100),
        "log_max_bytes": spec.get("log_max_bytes", 64 << 20), "monitor": spec.get("monitor", True),
        "windows": spec.get("windows"), "alerts": spec.get("alerts", []), "alert_window": spec.get("alert_window"),
        "alert_interval_s": spec.get("alert_interval_s", 5.0),
    }  # fmt: skip


def _model_config(entry: dict[str, Any]) -> dict[str, Any]:
    profile = None
    if entry.get("profile_path") and Path(entry["profile_path"]).exists():
        profile = json.loads(Path(entry["profile_path"]).read_text())
    return {"ref": entry["ref"], "version": entry.get("version"), "profile": profile, "task": entry.get("task")}


def _proxy(spec: dict[str, Any]) -> tuple[str, int]:
    """Start Serve on the cluster (a no-op when it runs) and return its proxy's address."""
    from ray import serve

    ray_spec = spec["ray"]
    serve.start(
        http_options={"host": ray_spec["http_host"], "port": ray_spec["http_port"]},
        proxy_location="HeadOnly",  # one proxy: nodes sharing a machine would fight over its port
    )
    try:  # the proxy of a cluster where Serve already ran keeps its own address
        from ray.serve.context import _get_global_client

        http = _get_global_client().http_config  # type: ignore[union-attr]
        return str(http.host), int(http.port)
    except Exception:
        return str(ray_spec["http_host"]), int(ray_spec["http_port"])


def deploy(folder: Path, entry: dict[str, Any] | None) -> dict[str, Any]:
    from ray import serve

    from nbdeploy.serving import ray_app

    spec = json.loads((folder / "spec.json").read_text())
    entry = entry or spec["history"][-1]
    name, ray_spec = spec["name"], spec["ray"]
    _connect(spec)
    import ray

    need, total = ray_spec["replicas"] * ray_spec["num_cpus"], ray.cluster_resources().get("CPU", 0.0)
    if need > total:
        raise SystemExit(
            f"The cluster has {total:g} CPUs and {ray_spec['replicas']} replicas of {ray_spec['num_cpus']:g} CPUs "
            f"need {need:g}: lower --replicas or --replica-cpus, or add nodes."
        )
    host, port = _proxy(spec)
    args = _args(folder, spec, entry)
    # a proxy that already listened off loopback (Serve started earlier) exposes this deployment too
    args["require_token"] = bool(spec["require_token"]) or not is_loopback(host)
    model = {**_model_config(entry), "deployed_at": time.time()}
    app = ray_app.replica_app(args, _model_tar(entry["model_path"]), ray_spec["replicas"], ray_spec["num_cpus"])
    targets = [serve.RunTarget(app, name=name, route_prefix=f"/{name}")]
    if args["monitor"]:
        hub = serve.status().applications.get(args["hub_app"])
        if hub is None or str(hub.status).rsplit(".", 1)[-1] != "RUNNING":
            targets.append(serve.RunTarget(ray_app.hub_app(args, model), name=args["hub_app"], route_prefix=None))
        else:  # the hub keeps its windows across updates; it learns the new model's profile
            serve.get_deployment_handle("Hub", app_name=args["hub_app"]).reconfigure.remote(model).result()
    started = time.perf_counter()
    serve.run_many(targets)  # both applications at once; returns when they run
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: reach it at the head node's address
        host = ray_spec["address"].rsplit(":", 1)[0]
    shown = f"[{host}]" if ":" in host else host
    return {
        "url": f"http://{shown}:{port}/{name}",
        "require_token": args["require_token"],
        "replicas": ray_spec["replicas"],
        "seconds": round(time.perf_counter() - started, 2),
    }


def delete(folder: Path) -> dict[str, Any]:
    from ray import serve

    spec = json.loads((folder / "spec.json").read_text())
    _connect(spec)
    name = spec["name"]
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
        raise SystemExit(f"Ray Serve still lists {', '.join(left)} after deleting it.")
    return {"deleted": deleted}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("deploy", "delete"):
        print("usage: python -m nbdeploy.serving.ray_ctl deploy|delete DEPLOYMENT_DIR", file=sys.stderr)
        return 2
    folder = Path(args[1])
    try:
        if args[0] == "deploy":
            text = "" if sys.stdin.isatty() else sys.stdin.read().strip()
            result = deploy(folder, json.loads(text) if text else None)
        else:
            result = delete(folder)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 1
    except ConnectionError as exc:
        print(f"Could not connect to the Ray cluster: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"Ray {args[0]} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
