"""Kubernetes manifests of a packaged deployment: a Deployment (resource requests from the
version's last load test), a Service, a HorizontalPodAutoscaler, a Secret template and, for
KubeRay, a RayService. Plain dicts, written as YAML by :mod:`~nbdeploy.deployments.package`.

>>> sizing = Sizing.of({"best": {"cpu_pct": 150.0, "connections": 16}, "peak_rss_mb": 300.0})
>>> sizing.cpu, sizing.memory, sizing.memory_limit
('1500m', '375Mi', '750Mi')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["PLACEHOLDER", "Sizing", "kubernetes", "rayservice", "secret"]

PORT = 8080


@dataclass(frozen=True)
class Sizing:
    """Requests of one pod: the CPU the server used at its capacity, the memory it peaked at
    plus a quarter; a memory limit of twice that, and no CPU limit (throttling a server
    costs latency; the request is what the scheduler and the autoscaler count)."""

    cpu: str
    memory: str
    memory_limit: str
    measured: bool
    cores: float = 0.5  # the CPU request in cores (a Ray replica's num_cpus)

    @classmethod
    def of(cls, loadtest: dict[str, Any] | None) -> Sizing:
        """From a load test's summary; a test of a Ray deployment measured all its replicas
        together (``replicas``): one pod is sized for one replica's share."""
        levels = (loadtest or {}).get("levels") or []
        busiest: dict[str, Any] = max(levels, key=lambda lv: lv.get("rps") or 0, default={})
        best: dict[str, Any] = (loadtest or {}).get("best") or busiest  # within the gates, else the busiest
        servers = max(1, int((loadtest or {}).get("replicas") or 1))
        cpu_pct, peak = best.get("cpu_pct"), (loadtest or {}).get("peak_rss_mb")
        if not cpu_pct or cpu_pct <= 0 or not peak or peak <= 0:
            return cls("500m", "512Mi", "1Gi", measured=False)
        millicores = max(100, math.ceil(cpu_pct / servers * 10 / 100) * 100)  # % of a core -> millicores, 100m steps
        memory = math.ceil(peak / servers * 1.25)
        return cls(f"{millicores}m", f"{memory}Mi", f"{2 * memory}Mi", measured=True, cores=millicores / 1000)


def kubernetes(name: str, image: str, sizing: Sizing, replicas: int = 2) -> list[dict[str, Any]]:
    """Deployment, Service, HorizontalPodAutoscaler and Secret (a template: put the token in it)."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "nbdeploy"}
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3}
    container = {
        "name": "server",
        "image": image,
        "ports": [{"name": "http", "containerPort": PORT}],
        "env": [{"name": "NBDEPLOY_TOKEN_FILE", "value": "/var/run/secrets/nbdeploy/token"}],
        "resources": {"requests": {"cpu": sizing.cpu, "memory": sizing.memory},
                      "limits": {"memory": sizing.memory_limit}},
        "readinessProbe": {**probe, "initialDelaySeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/ping", "port": "http"}, "periodSeconds": 10,
                          "failureThreshold": 6, "initialDelaySeconds": 30},
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/nbdeploy", "readOnly": True},
                         {"name": "state", "mountPath": "/tmp"}],
    }  # fmt: skip
    pod = {"metadata": {"labels": labels},
           "spec": {"containers": [container],
                    "volumes": [{"name": "token", "secret": {"secretName": f"{name}-token"}},
                                {"name": "state", "emptyDir": {}}]}}  # fmt: skip
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": pod}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
         "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                  "minReplicas": replicas, "maxReplicas": max(replicas, 10),
                  "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                      "type": "Utilization", "averageUtilization": 70}}}]}},
        secret(name),
    ]  # fmt: skip


PLACEHOLDER = "REPLACE-WITH-A-LONG-RANDOM-TOKEN"  # the container refuses to start with it


def secret(name: str) -> dict[str, Any]:
    """The Secret template of the token (and, for private request logs, the key of their hashes)."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-token"}, "type": "Opaque",
            "stringData": {"token": PLACEHOLDER, "log-key": PLACEHOLDER}}  # fmt: skip


def rayservice(name: str, image: str, sizing: Sizing, replicas: int = 2) -> dict[str, Any]:
    """A KubeRay ``RayService`` whose Serve application is the packaged server, one replica per
    worker pod (:func:`nbdeploy.serving.ray_package.app`: each replica asks the CPUs a worker
    pod requests, and the head runs none); the token Secret is mounted in every pod."""
    mount = {"volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/nbdeploy", "readOnly": True}]}
    volumes = [{"name": "token", "secret": {"secretName": f"{name}-token"}}]
    worker = {"name": "server", "image": image, **mount,
              "resources": {"requests": {"cpu": sizing.cpu, "memory": sizing.memory},
                            "limits": {"memory": sizing.memory_limit}}}  # fmt: skip
    head = {"name": "ray-head", "image": image, "ports": [{"containerPort": 8000, "name": "serve"}], **mount,
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}}  # fmt: skip
    app = {"name": name, "route_prefix": "/", "import_path": "nbdeploy.serving.ray_package:app",
           "args": {"replicas": replicas, "num_cpus": sizing.cores},
           "runtime_env": {"env_vars": {"NBDEPLOY_PACKAGE": "/app", "NBDEPLOY_TOKEN_FILE":
                                        "/var/run/secrets/nbdeploy/token"}},
           }  # fmt: skip
    import yaml

    return {
        "apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": name},
        "spec": {"serveConfigV2": yaml.safe_dump({"applications": [app]}, sort_keys=False),
                 "rayClusterConfig": {
                     "headGroupSpec": {"rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                                       "template": {"spec": {"containers": [head], "volumes": volumes}}},
                     "workerGroupSpecs": [{"groupName": "servers", "replicas": replicas, "minReplicas": 1,
                                           "maxReplicas": max(replicas, 10), "rayStartParams": {},
                                           "template": {"spec": {"containers": [worker],
                                                                 "volumes": volumes}}}]}},
    }  # fmt: skip
