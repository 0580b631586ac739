"""Where a Ray deployment's replicas and hub write, on the machine each runs on."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["node_folder"]


def node_folder(args: dict[str, Any]) -> Path:
    """The deployment folder when this node can write it (same machine or a shared disk);
    otherwise a folder of this node's own, so a replica on another machine still logs."""
    name = args["spec"]["name"]
    for candidate in (Path(args["folder"]), Path(tempfile.gettempdir()) / "nbdeploy" / name):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            if os.access(candidate, os.W_OK):
                return candidate
        except OSError:
            continue
    raise RuntimeError(f"no writable folder for deployment {name!r}")
