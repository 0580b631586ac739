"""The local copy of a model version, tied to what the registry holds.

When nbdeploy copies a model into a deployment folder it writes a manifest beside the
model's files: where the model came from (tracking store, model URI, run id, version) and
the SHA-256 of every file. The launcher reuses a copy only if its origin matches what the
registry holds now, and the server loads only a copy whose files match their checksums: a
folder nbdeploy did not write, or one changed since, is never loaded.

>>> write_manifest(Path("models/cancer-v1/model"), {"uri": "models:/m-1", "run_id": "abc"})   # doctest: +SKIP
>>> verify(Path("models/cancer-v1/model"))["run_id"]                                         # doctest: +SKIP
'abc'
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from nbdeploy._files import write_atomic
from nbdeploy.errors import DeploymentError

__all__ = ["MANIFEST", "origin", "verify", "write_manifest"]

MANIFEST = ".nbdeploy-copy.json"


def _digests(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            out[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return out


def write_manifest(folder: Path, source: dict[str, Any]) -> None:
    """Record ``source`` (where the copy came from) and the checksum of every file in ``folder``."""
    write_atomic(folder / MANIFEST, json.dumps({"source": source, "files": _digests(folder)}, indent=1))


def verify(folder: Path) -> dict[str, Any]:
    """The source of the copy in ``folder`` when its files are the ones nbdeploy wrote;
    otherwise a :class:`DeploymentError` saying what is wrong and what to do."""
    try:
        doc = json.loads((folder / MANIFEST).read_text())
        source, files = doc["source"], doc["files"]
        if not isinstance(source, dict) or not isinstance(files, dict):
            raise TypeError("fields")
    except FileNotFoundError:
        raise DeploymentError(
            f"The model folder {folder} was not written by nbdeploy (no {MANIFEST}); "
            "serve the model again from the registry."
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise DeploymentError(f"The manifest {folder / MANIFEST} is damaged; serve the model again.") from None
    found = _digests(folder)
    if found != files:
        changed = sorted(set(found) ^ set(files) | {f for f in found if files.get(f) != found[f]})
        raise DeploymentError(
            f"The model copy in {folder} changed since nbdeploy wrote it ({', '.join(changed[:3])}); "
            "serve the model again to copy it afresh."
        )
    return source


def origin(folder: Path) -> dict[str, Any] | None:
    """The source of a sound copy in ``folder``, or ``None`` (no copy, changed, or damaged)."""
    try:
        return verify(folder)
    except DeploymentError:
        return None
