"""A packaged deployment (``%deploy package --to kuberay``) as a Ray Serve application: the
``import_path`` of the RayService's ``serveConfigV2`` names :func:`app`, an application
builder Serve calls with the config's ``args``.

Each replica is the serving core of ``--target ray`` (:class:`~nbdeploy.serving.ray_app.Replica`)
without the monitoring hub: on a cluster someone else runs, each replica answers
``/metrics`` for Prometheus, and its request log is on its own pod.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nbdeploy.privacy import keeps_private
from nbdeploy.serving.container import ContainerError, read_token
from nbdeploy.serving.loader import read_signature
from nbdeploy.spec import DeploymentSpec

__all__ = ["app"]


def app(args: dict[str, Any] | None = None) -> Any:
    """The Serve application: ``args`` may set ``replicas`` and ``num_cpus`` per replica."""
    from nbdeploy.serving.ray_app import replica_app

    args = args or {}
    package = Path(os.environ.get("NBDEPLOY_PACKAGE", "/app"))
    token = read_token()  # a ContainerError names what is missing, in Serve's log of the application
    spec = DeploymentSpec.from_dict(json.loads((package / "deployment.json").read_text()))
    if keeps_private(spec.log_inputs, spec.redact):
        raise ContainerError("private request logs (--log-inputs, --redact) are not available on Ray yet: "
                             "package this deployment --to k8s.")  # fmt: skip
    spec.monitor, spec.require_token = False, True
    entry = spec.current
    entry.model_path = str(package / "model")
    inputs, _ = read_signature(entry.model_path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        tar.add(entry.model_path, arcname="model")
    replica_args = {
        "spec": spec.to_dict(), "folder": os.environ.get("NBDEPLOY_STATE", "/tmp/nbdeploy"), "hub_app": None,
        "entry": {**asdict(entry), "profile_path": None}, "token": token,
        "columns": [str(c["name"]) for c in inputs or [] if "name" in c],
    }  # fmt: skip
    return replica_app(replica_args, buf.getvalue(), int(args.get("replicas", 1)), float(args.get("num_cpus", 1)))
