"""Finding deployments by name, listing them, stopping them: the folders under ``NBDEPLOY_HOME``.

>>> get("cancer").state()     # doctest: +SKIP
'running'
>>> stop(all=True)            # doctest: +SKIP
'Stopped cancer.'
"""

from __future__ import annotations

from nbdeploy import config
from nbdeploy.deployments.handle import Deployment
from nbdeploy.deployments.retrain_files import JobFiles
from nbdeploy.deployments.views import DeploymentList
from nbdeploy.errors import DeploymentError, DeploymentNotFoundError, InvalidInputError, NbdeployError
from nbdeploy.refs import validate_name

__all__ = ["deployments", "get", "stop", "stop_all"]


def _all() -> list[Deployment]:
    home = config.home()
    if not home.is_dir():
        return []
    return [Deployment(p.name, p) for p in sorted(home.iterdir()) if (p / "spec.json").exists()]


def get(name: str) -> Deployment:
    """The deployment called ``name`` (running, dead or stopped)."""
    validate_name(name)
    folder = config.home() / name
    if not (folder / "spec.json").exists():
        known = ", ".join(d.name for d in _all()) or "none"
        raise DeploymentNotFoundError(f"No deployment is named {name!r}; deployments: {known}.")
    return Deployment(name, folder)


def deployments() -> DeploymentList:
    """Every deployment this machine knows (in ``NBDEPLOY_HOME``), with its state."""
    return DeploymentList(_all())


def stop_all() -> list[str]:
    """Stop every running or dead deployment; returns their names. One that cannot be stopped
    does not keep the others running: the error names it after the rest are stopped."""
    stopped, failed = [], []
    for d in _all():
        JobFiles(d.path).stop()  # a deployment stopped by the user has nothing left to retrain
        if d.pid is None and not d.deployed:
            continue
        try:
            if d.stop():
                stopped.append(d.name)
        except NbdeployError as exc:
            failed.append(f"{d.name} ({exc})")
    if failed:
        done = f"Stopped {', '.join(stopped)}; " if stopped else ""
        raise DeploymentError(f"{done}could not stop {'; '.join(failed)}")
    return stopped


def stop(name: str | None = None, *, all: bool = False) -> str:
    """Stop one deployment by name, or ``all`` of them; returns the sentence that says what happened."""
    if all == bool(name):
        raise InvalidInputError("Give either a deployment NAME or --all to stop.")
    if all:
        names = stop_all()
        return f"Stopped {', '.join(names)}." if names else "No deployment was running."
    assert name is not None
    dep = get(name)
    job = JobFiles(dep.path).stop()  # a deployment stopped by the user has nothing left to retrain
    stopped = dep.stop() or job
    return f"Stopped {name}." if stopped else f"{name} was not running."
