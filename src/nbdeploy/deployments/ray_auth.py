"""Ray's token authentication on the cluster nbdeploy starts for you.

Ray's GCS listens on every interface whatever the node address, and without a token anyone
who reaches its port runs code on the machine. nbdeploy's own head therefore runs in Ray's
token mode (``RAY_AUTH_MODE=token``) with a token of its own, owner-only in
``NBDEPLOY_HOME/.ray/auth_token-PORT`` (one file per head: Ray's processes read it while the
head lives). Ray's processes inherit its path from the head; nbdeploy's drivers (``ray_ctl``,
the batch driver) are given it when they connect to that cluster, and only then. A cluster
you start yourself keeps your own settings.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from nbdeploy import config
from nbdeploy._files import write_atomic

__all__ = ["cluster_folder", "driver_env", "head_env", "token_path"]

# every variable by which Ray picks its mode or token; Kubernetes' TokenReview would stand in for the file
_AUTH = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_K8S_TOKEN_AUTH")


def cluster_folder() -> Path:
    """``NBDEPLOY_HOME/.ray``: the record, log and token of nbdeploy's own cluster."""
    return config.home() / ".ray"


def token_path(record: dict[str, Any]) -> Path | None:
    """The token file of the head ``record`` (cluster.json) names, if it is one nbdeploy made."""
    path = Path(record["token"]) if isinstance(record.get("token"), str) else None
    return path if path and path.parent == cluster_folder() and path.name.startswith("auth_token-") else None


def head_env(path: Path) -> dict[str, str]:
    """Write a new token to ``path``; the environment of a head that requires it."""
    write_atomic(path, secrets.token_hex(32), private=True)
    return _with_token(_ray_env(), path)


def driver_env(address: str | None, record: dict[str, Any] | None) -> dict[str, str]:
    """The environment of a Ray driver for ``address``: the token of nbdeploy's own head when
    ``record`` (its cluster.json) names that address and a token (earlier heads had none)."""
    env = _ray_env()
    path = token_path(record) if record and address and record.get("address") == address else None
    if path is not None:
        return _with_token(env, path)
    if Path(env.get("RAY_AUTH_TOKEN_PATH", "")).parent == cluster_folder():
        env.pop("RAY_AUTH_TOKEN_PATH")  # nbdeploy's token is never sent to another cluster
    return env


def _ray_env() -> dict[str, str]:
    """This process's environment for a Ray process of nbdeploy's (a head or a driver)."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    # a driver's or worker's wait to connect to its node's raylet (Ray: 10 s), which a busy
    # 2-core machine can exceed; a user's own setting wins
    env.setdefault("RAY_raylet_start_wait_time_s", "120")
    return env


def _with_token(env: dict[str, str], path: Path) -> dict[str, str]:
    for name in _AUTH:  # a setting of the user's for their own clusters must not stand in for this one
        env.pop(name, None)
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(path))
    return env
