"""Ray's token authentication on the cluster nbdeploy starts for you.

Ray's GCS listens on every interface whatever the node address, and without a token anyone
who reaches its port runs code on the machine. nbdeploy's own head therefore runs in Ray's
token mode (``RAY_AUTH_MODE=token``) with a token of its own, owner-only in
``NBDEPLOY_HOME/.ray/auth_token``: Ray's processes inherit it from the head, and nbdeploy's
drivers (``ray_ctl``, the batch driver) are given it when they connect to that cluster. A
cluster you start yourself keeps your own settings.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from nbdeploy import config
from nbdeploy._files import write_atomic

__all__ = ["driver_env", "head_env", "token_file"]

_AUTH = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def token_file() -> Path:
    return config.home() / ".ray" / "auth_token"


def head_env() -> dict[str, str]:
    """A new token, and the environment of a head that requires it."""
    write_atomic(token_file(), secrets.token_hex(32), private=True)
    return _with_token(dict(os.environ))


def driver_env(address: str | None) -> dict[str, str]:
    """The environment of a Ray driver for ``address``: nbdeploy's own cluster's token, when
    ``address`` is that cluster's and it was started with one (earlier ones were not)."""
    try:
        own = json.loads((config.home() / ".ray" / "cluster.json").read_text())
        ours = bool(address) and own["address"] == address and own.get("auth") == "token"
    except (OSError, ValueError, TypeError, KeyError):
        ours = False
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return _with_token(env) if ours else env


def _with_token(env: dict[str, str]) -> dict[str, str]:
    for name in _AUTH:  # a token of the user's for their own clusters must not stand in for this one
        env.pop(name, None)
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file()))
    return env
