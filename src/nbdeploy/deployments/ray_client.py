"""Deployments on a Ray cluster, from the kernel's side (which never imports Ray).

Deploying, updating and deleting run in a short-lived driver process
(:mod:`nbdeploy.serving.ray_ctl`); serving traffic and monitoring go over HTTP through Ray's
proxy, as for a local server. With no address (and no ``RAY_ADDRESS``) nbdeploy starts a
one-node cluster of its own, records it in ``NBDEPLOY_HOME/.ray/cluster.json`` and stops it
with the last deployment on it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nbdeploy import config
from nbdeploy._files import open_log, write_atomic
from nbdeploy.deployments import processes
from nbdeploy.deployments.ray_auth import cluster_folder, driver_env, head_env, token_path
from nbdeploy.deployments.ray_gcs import HEAD_WAIT_S, gcs_failure, registered
from nbdeploy.errors import DeploymentError, Docs
from nbdeploy.spec import DeploymentSpec, ModelEntry

__all__ = [
    "CTL", "ctl", "driver_environment", "free_port", "listening", "ray_cli", "require_ray", "resolve_address",
    "stop_local_cluster", "stop_local_cluster_if_unused",
]  # fmt: skip

CTL = "nbdeploy.serving.ray_ctl"
INSTALL = "pip install 'nbdeploy[ray]'"
_TEMP = re.compile(r"/tmp/nbd-ray-[A-Za-z0-9_]+")  # what _spawn_head makes: the only folder _discard removes


def require_ray() -> None:
    """Raise the one-sentence error that says what to install when Ray Serve is missing.

    Looks without importing: ``find_spec("ray.serve")`` would import ``ray`` into the kernel.
    ``ray`` without its ``[serve]`` extra lacks FastAPI and uvicorn.
    """
    try:
        ray = importlib.util.find_spec("ray")
        serve = ray is not None and any(
            (Path(p) / "serve" / "__init__.py").exists() for p in ray.submodule_search_locations or []
        )
        found = serve and all(importlib.util.find_spec(name) is not None for name in ("fastapi", "uvicorn"))
    except (ImportError, ValueError):
        found = False
    if not found:
        raise DeploymentError(
            f"--target ray needs Ray Serve, which is not installed here: {INSTALL}.", docs=Docs.EXTRAS
        )


def ray_cli() -> list[str]:
    return [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"]


def _cluster_file() -> Path:
    return cluster_folder() / "cluster.json"


def _record() -> dict[str, Any] | None:
    """What cluster.json says (unchecked), or ``None`` when it is missing or not a JSON object."""
    try:
        record = json.loads(_cluster_file().read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with contextlib.suppress(OSError, ValueError), socket.create_connection((host, int(port)), timeout=1):
        return True
    return False


def _cluster_lock() -> contextlib.AbstractContextManager[None]:
    """One kernel at a time starts or stops nbdeploy's local cluster."""
    return processes.locked(_cluster_file().parent)


def _local_cluster() -> dict[str, Any] | None:
    """The cluster nbdeploy started, while its head process lives (listening or starting). The
    record of a head that died (a kernel killed meanwhile) is removed with its temp folder."""
    info = _record()
    if info is None or not (isinstance(info.get("pid"), int) and isinstance(info.get("address"), str)
                            and isinstance(info.get("temp_dir"), str) and _TEMP.fullmatch(info["temp_dir"])):
        return None  # nothing to go by: never adopt, stop or remove what it names
    if processes.alive(info["pid"], _marker(info)):
        return info
    _discard(info)
    return None


def _marker(info: dict[str, Any]) -> str:
    """The argument that identifies a head's processes: its own temp folder."""
    return f"--temp-dir={info['temp_dir']}"


def _say(text: str) -> None:
    """A line of nbdeploy's own in ray.log, beside what Ray's heads write there."""
    with open_log(_cluster_file().parent / "ray.log", text=True) as log:
        log.write(f"nbdeploy: {text}\n")


def free_port() -> int:
    """A port free on every interface: a head's GCS listens on all of them, whatever its node address."""
    with socket.socket() as s:
        s.bind(("", 0))
        port: int = s.getsockname()[1]
        return port


def _spawn_head(folder: Path) -> dict[str, Any]:
    port = free_port()
    temp = tempfile.mkdtemp(prefix="nbd-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    token = folder / f"auth_token-{port}"
    cmd = [
        *ray_cli(), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
        "--include-dashboard=false", "--disable-usage-stats", f"--num-cpus={os.cpu_count() or 1}",
        f"--temp-dir={temp}",
    ]  # fmt: skip
    with open_log(folder / "ray.log") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=head_env(token),  # Ray's token mode: its GCS listens on every interface
        )  # fmt: skip
    processes.children[proc.pid] = proc
    info = {"address": f"127.0.0.1:{port}", "pid": proc.pid, "temp_dir": temp, "started": time.time(),
            "token": str(token)}
    write_atomic(_cluster_file(), json.dumps(info))
    return info


def _wait_for_head(info: dict[str, Any], timeout: float) -> tuple[str, bool] | None:
    """``None`` once the head listens and its raylet has registered; otherwise why it did not
    come up, and whether another head may fare better (this one ended at once, as when its
    port was taken meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not processes.alive(info["pid"], _marker(info)):
            proc = processes.children.get(info["pid"])
            code = proc.poll() if proc is not None else None
            exited = f"its head process (pid {info['pid']}) exited"
            return exited + (f" with code {code}" if code is not None else ""), True
        if listening(info["address"]) and registered(info["temp_dir"], info.get("started")):
            return None
        failure = gcs_failure(info["temp_dir"])
        if failure is not None:
            _say(f"the GCS server's fatal line: {failure.line}")  # its own log goes with the head's temp folder
            return f"its GCS server exited: {failure.reason}", True
        time.sleep(0.2)
    return f"its head process (pid {info['pid']}) was not up on {info['address']} after {timeout:.0f} s", False


def start_local_cluster(timeout: float = HEAD_WAIT_S, tries: int = 2) -> dict[str, Any]:
    """Start a one-node Ray cluster on loopback (``ray start --head --block`` in its own
    process group), or return the one nbdeploy started before. The cluster is recorded
    before it is waited for, so an interrupted start leaves nothing ``stop`` cannot find.
    A head that ends at once (a port taken meanwhile) is started once more."""
    log_file = _cluster_file().parent / "ray.log"
    why = "no head was started (tries=0)"
    for attempt in range(1, tries + 1):
        with _cluster_lock():
            info = _local_cluster() or _spawn_head(_cluster_file().parent)
        if token_path(info) is None:
            _say(f"using the Ray head at {info['address']}, which an earlier nbdeploy started without a token: "
                 "it runs without authentication until its last deployment stops")  # fmt: skip
        failed = _wait_for_head(info, timeout)
        if failed is None:
            return info
        with _cluster_lock():
            _discard(info)
        why, retry = failed
        again = retry and attempt < tries
        _say(f"the Ray head at {info['address']} stopped: {why}" + ("; starting another" if again else ""))
        if not again:
            break
    tail = log_file.read_text(errors="replace").splitlines()[-10:] if log_file.exists() else []
    said = "\n".join(tail) or "(empty)"
    raise DeploymentError(f"The local Ray cluster did not start: {why}; the end of {log_file}:\n{said}", docs=Docs.RAY)


def resolve_address(address: str | None) -> tuple[str, bool]:
    """The cluster to deploy to, and whether nbdeploy started it (so may stop it)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        return address, False
    return start_local_cluster()["address"], True


def stop_local_cluster(address: str) -> bool:
    """Stop the cluster nbdeploy started at ``address`` (never one it did not start)."""
    with _cluster_lock():
        info = _local_cluster()
        if info is None or info["address"] != address:
            return False
        _discard(info)
        return True


def _discard(info: dict[str, Any]) -> None:
    """Stop a head (if it still runs) and remove its record and temp folder: a head that died
    on start would otherwise leave both behind. Called under the cluster's lock; the record
    is removed only while it still names this head."""
    # then SIGKILL: a throwaway cluster. An idle head ends in about 1 s on SIGTERM; one that ran
    # Serve drains for up to 30 s (its controller and proxy are detached actors) and was killed anyway
    processes.stop_group(info["pid"], _marker(info), timeout=2)
    record = _record()
    if record is not None and record.get("pid") == info["pid"]:
        _cluster_file().unlink(missing_ok=True)
    token = token_path(info)
    if token is not None:  # this head's alone
        token.unlink(missing_ok=True)
    if _TEMP.fullmatch(info["temp_dir"]):
        shutil.rmtree(info["temp_dir"], ignore_errors=True)


def stop_local_cluster_if_unused(address: str) -> bool:
    """Stop nbdeploy's cluster at ``address`` when no deployment on it is deployed any more."""
    home = config.home()
    for folder in home.iterdir() if home.is_dir() else ():
        if not (folder / "deployed").exists():
            continue
        try:
            ray = DeploymentSpec.load(folder).ray
        except (OSError, DeploymentError):  # cannot tell where it runs: it may be on this cluster
            return False
        if ray is not None and ray.address == address:
            return False
    return stop_local_cluster(address)


def driver_environment(address: str | None) -> dict[str, str]:
    """The environment of a Ray driver for ``address`` (the token of nbdeploy's own head, if it is that)."""
    return driver_env(address, _record())


def _address_of(folder: Path) -> str | None:
    try:
        ray = DeploymentSpec.load(folder).ray
    except (OSError, DeploymentError):  # the controller says what is wrong with the spec
        return None
    return ray.address if ray is not None else None


def ctl(folder: Path, command: str, entry: ModelEntry | None = None, timeout: float = 180.0) -> dict[str, Any]:
    """Run ``ray_ctl COMMAND FOLDER`` and return its JSON answer; its stderr goes to server.log.

    The controller answers one JSON line on stdout, ``{"ok": true, ...}`` or ``{"ok": false,
    "error": SENTENCE}``; anything else (it crashed) is reported with the log's place.
    """
    with open_log(folder / "server.log") as log:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", CTL, command, str(folder)],
                input=json.dumps(asdict(entry)) if entry else "",
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**driver_environment(_address_of(folder)), "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            log.write(exc.stderr if isinstance(exc.stderr, bytes) else (exc.stderr or "").encode())
            raise DeploymentError(
                f"Ray {command} of {folder.name!r} did not finish in {timeout:.0f} s; see {folder / 'server.log'}."
            ) from None
        log.write(proc.stderr.encode())
    try:
        out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        ok = bool(out["ok"])
    except (ValueError, IndexError, KeyError, TypeError):
        raise DeploymentError(
            f"Ray {command} of {folder.name!r} ended with code {proc.returncode} and no answer; "
            f"see {folder / 'server.log'}."
        ) from None
    if not ok:
        error = str(out.get("error") or f"Ray {command} of {folder.name!r} failed.")
        with open_log(folder / "server.log", text=True) as log_text:  # so that %deploy logs shows why
            log_text.write(f"ray {command} failed: {error}\n")
        raise DeploymentError(error)
    return out
