"""Process bookkeeping for servers nbdeploy starts: liveness by identity, group stops."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from nbdeploy._files import flocked

__all__ = ["alive", "attached", "children", "find_server", "locked", "stop_attached", "stop_group"]

# Servers started by this process, kept so that their exit status is reaped (no zombies).
children: dict[int, subprocess.Popen[bytes]] = {}
# Servers attached to this process: pid -> folder. Stopped at exit by pid, never by reading
# the pid file again (by then the name may belong to a server someone else started).
attached: dict[int, str] = {}


def stop_attached() -> None:
    """Stop the servers attached to this process (registered with ``atexit``)."""
    for pid, folder in list(attached.items()):
        stop_group(pid, folder)
        attached.pop(pid, None)


def alive(pid: int | None, marker: str) -> bool:
    """True if ``pid`` runs and ``marker`` is one of its arguments (so a reused pid is not ours).

    Servers are started as ``python -m nbdeploy.serving FOLDER``: ``marker`` is either the
    folder (this deployment) or ``nbdeploy.serving`` (any server).
    """
    if not pid:
        return False
    proc = children.get(pid)
    if proc is not None:  # started here: what it runs is known, and just after the fork its
        # /proc command line is still this process's, not yet the one it is started with
        return proc.poll() is None and marker in [str(a) for a in proc.args]  # type: ignore[union-attr]
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.parent.exists():  # Linux: check identity and zombie state
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return marker in args and state != "Z"
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def find_server(folder: str) -> int | None:
    """The pid of the live server of ``folder``, found by its identity (its command line is
    ``python -m nbdeploy.serving FOLDER``), whatever its pid file says; ``None`` if none runs."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return None
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").rstrip("\0").split("\0")
        except OSError:
            continue
        if args[-3:] == ["-m", "nbdeploy.serving", folder] and alive(int(entry.name), folder):
            return int(entry.name)
    return None


def stop_group(pid: int, marker: str, timeout: float = 10.0) -> bool:
    """SIGTERM the process group of ``pid``, wait, then SIGKILL; True if it had to be killed."""
    killed = False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not alive(pid, marker):
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        killed = sig == signal.SIGKILL
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive(pid, marker):
            time.sleep(0.02)
    proc = children.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1)
    return killed


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` (an exclusive ``flock``): one process at a time starts or stops
    what lives in ``folder`` (a deployment, nbdeploy's local Ray cluster)."""
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # NBDEPLOY_HOME: owner-only too
    folder.mkdir(exist_ok=True, mode=0o700)
    with flocked(folder / ".lock"):
        yield
