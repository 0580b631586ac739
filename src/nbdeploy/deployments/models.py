"""Local copies of the models a deployment serves: ``FOLDER/models/NAME-vN/``.

Servers load from these copies, so they need neither MLflow nor the tracking store.

>>> entry = fetch("cancer@champion", Path(".nbdeploy/cancer"))   # doctest: +SKIP
>>> entry.model_path                                            # doctest: +SKIP
'.../.nbdeploy/cancer/models/cancer-v3/model'
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from nbdeploy import model_copy
from nbdeploy._files import write_atomic
from nbdeploy.config import display_uri
from nbdeploy.errors import DeploymentError
from nbdeploy.refs import parse_ref
from nbdeploy.spec import ModelEntry

__all__ = ["fetch"]


def fetch(ref: str, folder: Path) -> ModelEntry:
    """Resolve ``ref`` and copy its model (and training profile) into the deployment folder.

    A copy made before is reused only when it came from the same model in the same tracking
    store and its files are unchanged (:mod:`nbdeploy.model_copy`); otherwise it is copied again.
    """
    from nbdeploy import registry

    r = parse_ref(ref)
    if r.run_id is not None:
        uri, version, label = r.uri, None, str(r)
        dst = folder / "models" / f"run-{r.run_id}"
        profile, task, run_id = None, None, str(r.run_id)
    else:
        mv = registry.resolve(r)
        uri, version, label = mv.source or mv.uri, mv.version, f"{mv.name}/{mv.version}"
        dst = folder / "models" / f"{mv.name}-v{mv.version}"  # one name may serve another model later
        profile, task, run_id = registry.load_profile(mv), mv.tags.get("nbdeploy.task"), str(mv.run_id or "")
    source = {"tracking_uri": display_uri(registry.tracking_uri()), "uri": uri, "run_id": run_id, "version": version}
    path = _copy(uri, dst, source)
    profile_path = None
    if profile is not None:
        profile_path = dst / "profile.json"
        write_atomic(profile_path, json.dumps(profile))  # a server may be reading the last one
    return ModelEntry(
        ref=ref, resolved=label, version=version, model_path=str(path), task=task,
        profile_path=str(profile_path) if profile_path else None, at=time.time(),
    )  # fmt: skip


def _model_folder(dst: Path) -> Path | None:
    if (dst / "model" / "MLmodel").exists():
        return dst / "model"
    # MLflow keeps the last path segment for runs:/ URIs
    return next((p.parent for p in dst.rglob("MLmodel")), None)


def _copy(uri: str, dst: Path, source: dict[str, Any]) -> Path:
    """The model folder of a sound copy of ``source`` in ``dst``, downloading it when needed."""
    from nbdeploy import registry

    path = _model_folder(dst)
    if path is not None and model_copy.origin(path) == source:
        return path
    shutil.rmtree(dst / "model", ignore_errors=True)  # another model, a changed copy, or not ours
    registry.download_model(uri, dst / "model")
    path = _model_folder(dst)
    if path is None:
        raise DeploymentError(f"The model at {uri} has no MLmodel file: it is not an MLflow model.")
    model_copy.write_manifest(path, source)
    return path
