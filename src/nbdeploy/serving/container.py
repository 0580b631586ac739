"""Entry point of a packaged deployment (``%deploy package``): ``python -m nbdeploy.serving.container``.

The build context holds ``deployment.json`` (the deployment's spec, its model at
``model/``), the model and this package. At start the entry point writes a deployment
folder in a writable place and runs the server on it, as ``serve`` does on a laptop:

- ``HOST`` (default ``0.0.0.0``: a container is reached from outside) and ``PORT``
  (default 8080);
- the token from ``NBDEPLOY_TOKEN``, else the file ``NBDEPLOY_TOKEN_FILE`` (default
  ``/var/run/secrets/nbdeploy/token``, where a Kubernetes Secret is mounted); none, the
  Secret template's placeholder or one under 16 characters is one sentence and exit 2,
  since the server listens beyond loopback;
- for a deployment that logs inputs as keyed hashes, their key from ``NBDEPLOY_LOG_KEY``
  or ``NBDEPLOY_LOG_KEY_FILE`` (default ``/var/run/secrets/nbdeploy/log-key``), the same
  on every replica so that hashes stay comparable;
- ``NBDEPLOY_STATE`` (default ``/tmp/nbdeploy``): the request log, labels and alerts.

TLS belongs to what is in front (an ingress, a load balancer): the server speaks HTTP.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from nbdeploy._files import write_atomic
from nbdeploy.privacy import LOG_KEY, keeps_private
from nbdeploy.spec import DeploymentSpec

__all__ = ["ContainerError", "main", "prepare", "read_token"]

DEFAULT_TOKEN_FILE = "/var/run/secrets/nbdeploy/token"


PLACEHOLDER = "REPLACE-WITH-A-LONG-RANDOM-TOKEN"  # the Secret template's (deployments/manifests.py)
MIN_TOKEN = 16


class ContainerError(Exception):
    """One sentence for the container's log, and exit 2."""


def _secret(env: str, file_env: str, default_file: str) -> str | None:
    given = os.environ.get(env, "").strip()
    if given:
        return given
    try:
        return Path(os.environ.get(file_env, default_file)).read_text().strip() or None
    except OSError:
        return None


def read_token() -> str:
    """``NBDEPLOY_TOKEN``, else the contents of ``NBDEPLOY_TOKEN_FILE``; none, the Secret
    template's placeholder or a short one is a :class:`ContainerError`."""
    token = _secret("NBDEPLOY_TOKEN", "NBDEPLOY_TOKEN_FILE", DEFAULT_TOKEN_FILE)
    if token is None:
        raise ContainerError("no token: set NBDEPLOY_TOKEN, or mount one at NBDEPLOY_TOKEN_FILE (default "
                             f"{DEFAULT_TOKEN_FILE}); the server listens beyond loopback.")  # fmt: skip
    if token == PLACEHOLDER or len(token) < MIN_TOKEN:
        raise ContainerError(f"the token is the Secret template's placeholder or shorter than {MIN_TOKEN} "
                             "characters: put a long random one in it (openssl rand -hex 24).")  # fmt: skip
    return token


def _log_key(spec: DeploymentSpec) -> str | None:
    """The key of the logged inputs' hashes, the same on every replica (``None``: none needed)."""
    if not keeps_private(spec.log_inputs, spec.redact):
        return None
    key = _secret("NBDEPLOY_LOG_KEY", "NBDEPLOY_LOG_KEY_FILE", DEFAULT_TOKEN_FILE.replace("token", "log-key"))
    try:
        size = len(bytes.fromhex(key or ""))
    except ValueError:
        size = 0
    if not 16 <= size <= 64:  # BLAKE2b takes keys of up to 64 bytes
        raise ContainerError("this deployment logs inputs as keyed hashes: set NBDEPLOY_LOG_KEY (or mount "
                             "NBDEPLOY_LOG_KEY_FILE) to a hex key, the same on every replica (openssl rand -hex 32).")
    return key


def prepare(package: Path, state: Path, host: str, port: int, token: str) -> Path:
    """Write the deployment folder ``state`` for the packaged spec; returns it."""
    doc = json.loads((package / "deployment.json").read_text())
    spec = DeploymentSpec.from_dict(doc)
    spec.host, spec.port, spec.require_token, spec.insecure_http = host, port, True, True
    spec.attach_to = None  # no kernel here to stop with
    key = _log_key(spec)
    entry = spec.current
    entry.model_path = str((package / "model").resolve())
    profile = package / "profile.json"
    entry.profile_path = str(profile.resolve()) if profile.exists() else None
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    spec.save(state)
    write_atomic(state / "token", token, private=True)
    if key is not None:
        write_atomic(state / LOG_KEY, key, private=True)
    return state


def main() -> int:
    try:
        token = read_token()
        try:
            port = int(os.environ.get("PORT", "8080"))
        except ValueError:
            raise ContainerError(f"PORT must be a number, not {os.environ['PORT'][:20]!r}.") from None
        package = Path(os.environ.get("NBDEPLOY_PACKAGE", Path.cwd()))
        state = prepare(package, Path(os.environ.get("NBDEPLOY_STATE", "/tmp/nbdeploy")),
                        os.environ.get("HOST", "0.0.0.0"), port, token)  # fmt: skip
    except ContainerError as exc:
        print(f"nbdeploy: {exc}", file=sys.stderr)
        return 2
    from nbdeploy.serving.__main__ import main as serve

    return serve([str(state)])


if __name__ == "__main__":
    sys.exit(main())
