"""Entry point of a packaged deployment (``%deploy package``): ``python -m nbdeploy.serving.container``.

The build context holds ``deployment.json`` (the deployment's spec, its model at
``model/``), the model and this package. At start the entry point writes a deployment
folder in a writable place and runs the server on it, as ``serve`` does on a laptop:

- ``HOST`` (default ``0.0.0.0``: a container is reached from outside) and ``PORT``
  (default 8080);
- the token from ``NBDEPLOY_TOKEN``, else the file ``NBDEPLOY_TOKEN_FILE`` (default
  ``/var/run/secrets/nbdeploy/token``, where a Kubernetes Secret is mounted); none is one
  sentence and exit 2, since the server listens beyond loopback;
- ``NBDEPLOY_STATE`` (default ``/tmp/nbdeploy``): the request log, labels and alerts.

TLS belongs to what is in front (an ingress, a load balancer): the server speaks HTTP.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from nbdeploy._files import write_atomic
from nbdeploy.spec import DeploymentSpec

__all__ = ["main", "prepare", "read_token"]

DEFAULT_TOKEN_FILE = "/var/run/secrets/nbdeploy/token"


def read_token() -> str | None:
    """``NBDEPLOY_TOKEN``, else the contents of ``NBDEPLOY_TOKEN_FILE`` (``None``: neither)."""
    given = os.environ.get("NBDEPLOY_TOKEN", "").strip()
    if given:
        return given
    path = Path(os.environ.get("NBDEPLOY_TOKEN_FILE", DEFAULT_TOKEN_FILE))
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def prepare(package: Path, state: Path, host: str, port: int, token: str) -> Path:
    """Write the deployment folder ``state`` for the packaged spec; returns it."""
    doc = json.loads((package / "deployment.json").read_text())
    spec = DeploymentSpec.from_dict(doc)
    spec.host, spec.port, spec.require_token, spec.insecure_http = host, port, True, True
    entry = spec.current
    entry.model_path = str((package / "model").resolve())
    profile = package / "profile.json"
    entry.profile_path = str(profile.resolve()) if profile.exists() else None
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    spec.save(state)
    write_atomic(state / "token", token, private=True)
    return state


def main() -> int:
    token = read_token()
    if token is None:
        print("nbdeploy: no token: set NBDEPLOY_TOKEN, or mount one at NBDEPLOY_TOKEN_FILE "
              f"(default {DEFAULT_TOKEN_FILE}); the server listens beyond loopback.", file=sys.stderr)  # fmt: skip
        return 2
    try:
        port = int(os.environ.get("PORT", "8080"))
    except ValueError:
        print(f"nbdeploy: PORT must be a number, not {os.environ['PORT'][:20]!r}.", file=sys.stderr)
        return 2
    package = Path(os.environ.get("NBDEPLOY_PACKAGE", Path.cwd()))
    state = prepare(package, Path(os.environ.get("NBDEPLOY_STATE", "/tmp/nbdeploy")),
                    os.environ.get("HOST", "0.0.0.0"), port, token)  # fmt: skip
    from nbdeploy.serving.__main__ import main as serve

    return serve([str(state)])


if __name__ == "__main__":
    sys.exit(main())
