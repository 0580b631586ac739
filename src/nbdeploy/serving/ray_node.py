"""Where a Ray deployment's replicas and hub write, on the machine each runs on."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["node_folder"]


def node_folder(args: dict[str, Any]) -> Path:
    """The deployment folder when this node can write it (same machine or a shared disk);
    otherwise a folder of this node's own, so a replica on another machine still logs. That
    one is made owner-only, and one that another user made (or may write) is refused: the
    request logs and the hub's state (token hashes) must not be theirs to read or replace."""
    name = args["spec"]["name"]
    shared, own = Path(args["folder"]), Path(tempfile.gettempdir()) / "nbdeploy" / name
    for candidate in (shared, own):
        try:
            candidate.mkdir(parents=True, exist_ok=True, mode=0o700)
            info = candidate.stat()
            if candidate == own and (info.st_uid != os.getuid() or info.st_mode & 0o077):
                continue  # another user's, or open to others
            if os.access(candidate, os.W_OK):
                return candidate
        except OSError:
            continue
    raise RuntimeError(f"no writable folder of this user's own for deployment {name!r}")
