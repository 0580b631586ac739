"""Lineage tags: where a model version came from."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from nbdeploy._version import __version__

__all__ = ["ENV_RUN", "RUN_TAG", "git_info", "lineage_tags", "retrain_tags"]

#: A version registered by a retraining job's notebook names the job's run: the job finds it by that tag.
RUN_TAG = "nbdeploy.retrain.run"
ENV_RUN = "NBDEPLOY_RETRAIN_RUN"  # set by the job in the notebook's kernel (nbdeploy.retraining)


def retrain_tags() -> dict[str, str]:
    """The tag :func:`nbdeploy.register` adds inside a retraining job's notebook (none elsewhere)."""
    run = os.environ.get(ENV_RUN, "").strip()
    return {RUN_TAG: run[:250]} if run else {}


def git_info(cwd: Path | None = None) -> dict[str, str]:
    """``git.commit`` and ``git.dirty`` of the repository holding ``cwd``, or ``{}`` outside one."""
    where = str(cwd or Path.cwd())

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git.commit": commit, "git.dirty": str(dirty).lower()}


def lineage_tags(*, source: str | None, data_fingerprint: str | None) -> dict[str, str]:
    """Tags recorded on every registered version (nbdeploy, Python and scikit-learn versions…)."""
    import sklearn

    tags = {
        "nbdeploy.version": __version__,
        "python.version": platform.python_version(),
        "sklearn.version": sklearn.__version__,
        "user": os.environ.get("USER", ""),
    }
    if source:
        tags["notebook.path"] = source
    if data_fingerprint:
        tags["data.fingerprint"] = data_fingerprint
    tags.update(git_info())
    return {k: v for k, v in tags.items() if v}
