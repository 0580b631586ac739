"""Lineage tags: where a model version came from."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from nbdeploy._version import __version__

__all__ = ["git_info", "lineage_tags"]


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
